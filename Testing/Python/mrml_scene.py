"""Headless MRML scene for the tests of the Slicer layer (runs on the Qt-free slicer-core).

`make_scene()` builds a real ``vtkMRMLScene`` with the application logic and the module
logics that ``slicer.util`` and the segment editor logic need, and publishes it as
``slicer.mrmlScene`` / ``slicer.modules.<name>.logic()`` the way the Slicer application
does. `write_volume`, `load_volume`, `save_segmentation` and `load_segmentation` go through
the real storage nodes, so files are written and read exactly as Slicer writes and reads them.
The `oblique` fixture (import it into a test module) loads a real MRI crop from a file
through those storage nodes on an oblique, LPS-flipped, anisotropic grid.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk


def make_scene() -> slicer.vtkMRMLScene:
    """Create a scene, register the module logics on it and make it ``slicer.mrmlScene``."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {
        "Colors": slicer.vtkSlicerColorLogic(),
        "Volumes": slicer.vtkSlicerVolumesLogic(),
        "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
        "SubjectHierarchy": slicer.vtkSlicerSubjectHierarchyModuleLogic(),
        "Markups": slicer.vtkSlicerMarkupsLogic(),
    }
    for name, logic in logics.items():
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
    logics["Colors"].AddDefaultColorNodes()
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        **{name.lower(): types.SimpleNamespace(logic=(lambda lg=logic: lg)) for name, logic in logics.items()}
    )
    scene.SAMSegmenterTestLogics = (app_logic, logics)  # keep the logics alive with the scene
    return scene


def volume_from_array(
    scene: slicer.vtkMRMLScene, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str
) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a scalar volume from a [k, j, i] array and a 4x4 IJK-to-RAS matrix."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, array_kji)
    node.CreateDefaultDisplayNodes()
    return node


def write_volume(node: slicer.vtkMRMLVolumeNode, path: Path) -> None:
    """Write a volume with Slicer's archetype storage node (NRRD or NIfTI by extension)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(node):
        raise OSError(f"could not write {path}")


def load_volume(scene: slicer.vtkMRMLScene, path: Path, name: str) -> slicer.vtkMRMLScalarVolumeNode:
    """Load a scalar volume through the Volumes module logic, as File > Add Data does."""
    logic = scene.SAMSegmenterTestLogics[1]["Volumes"]
    node = logic.AddArchetypeVolume(str(path), name)
    if node is None:
        raise OSError(f"could not load {path}")
    return node


def save_segmentation(node: slicer.vtkMRMLSegmentationNode, path: Path) -> None:
    """Write a segmentation as ``.seg.nrrd`` with Slicer's segmentation storage node."""
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"could not write {path}")


def load_segmentation(scene: slicer.vtkMRMLScene, path: Path, name: str) -> slicer.vtkMRMLSegmentationNode:
    """Load a ``.seg.nrrd`` through the Segmentations module logic."""
    logic = scene.SAMSegmenterTestLogics[1]["Segmentations"]
    node = logic.LoadSegmentationFromFile(str(path), False, name)
    if node is None:
        raise OSError(f"could not load {path}")
    return node


def matrix_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """A vtkMatrix4x4 as a (4, 4) float array."""
    return slicer.util.arrayFromVTKMatrix(matrix).copy()


def oblique_ijk_to_ras(
    spacing_ijk: tuple[float, float, float], origin_ras: tuple[float, float, float], degrees: float
) -> np.ndarray:
    """IJK-to-RAS of an oblique, LPS-flipped, anisotropic grid.

    Columns are the RAS directions of i, j, k: i and j point left and posterior (as in an
    LPS-ordered DICOM series), then the grid is rotated by ``degrees`` about the (1, 1, 1) axis.
    """
    axis = np.ones(3) / np.sqrt(3.0)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing_ijk)
    matrix[:3, 3] = origin_ras
    return matrix


def mni_crop(template_kji: np.ndarray) -> np.ndarray:
    """Six axial slices of the MNI152 template around z = -35 mm, every second voxel in-plane: int16 [6, 80, 80].

    The crop holds a whole brain cross-section with background around it.
    """
    crop = template_kji[37:43, 30:190:2, 20:180:2]
    return np.round(crop * 1000).astype(np.int16)


def brain_crop(brain_kji: np.ndarray) -> np.ndarray:
    """nilearn's brain mask on the grid of `mni_crop` (bool [6, 80, 80])."""
    return np.asarray(brain_kji[37:43, 30:190:2, 20:180:2], dtype=bool)


OBLIQUE_SPACING = (0.7, 0.9, 2.0)
OBLIQUE_ORIGIN = (12.5, -30.0, 41.0)
OBLIQUE_DEGREES = 25.0


@dataclass
class ObliqueCase:
    """A scene holding the MNI crop loaded from ``path``.

    volume: the loaded node; array: its voxels [k, j, i]; ijk_to_ras: the grid written to the
    file; brain: the brain mask on that grid.
    """

    scene: slicer.vtkMRMLScene
    volume: slicer.vtkMRMLScalarVolumeNode
    array: np.ndarray
    ijk_to_ras: np.ndarray
    path: Path
    brain: np.ndarray

    def new_segmentation(self, name: str, *segments: str) -> slicer.vtkMRMLSegmentationNode:
        """A segmentation node in the scene on the volume's grid, with display nodes and empty ``segments``
        (each segment's ID is its name)."""
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
        for segment in segments:
            node.GetSegmentation().AddEmptySegment(segment, segment)
        return node


@pytest.fixture(scope="module")
def oblique(tmp_path_factory, mni152, mni152_masks) -> ObliqueCase:
    """The MNI152 crop written as NRRD on the oblique grid and loaded back into a new scene."""
    array = mni_crop(mni152[0])
    ijk_to_ras = oblique_ijk_to_ras(OBLIQUE_SPACING, OBLIQUE_ORIGIN, OBLIQUE_DEGREES)
    path = tmp_path_factory.mktemp("oblique") / "mni_oblique.nrrd"
    scene = make_scene()
    written = volume_from_array(scene, array, ijk_to_ras, "written")
    write_volume(written, path)
    scene.RemoveNode(written)
    volume = load_volume(scene, path, "MNI oblique")
    return ObliqueCase(scene, volume, array, ijk_to_ras, path, brain_crop(mni152_masks["brain"]))
