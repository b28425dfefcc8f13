"""Reading a segmentation the web app exported, as 3D Slicer would, and comparing its grid with the volume's.

`read_seg_nrrd` opens a downloaded ``.seg.nrrd`` with slicer-core's Segmentations logic in a fresh
scene next to the volume file it was drawn on, checks that every segment's labelmap lies on the
volume's grid (the file's sizes are the volume's dimensions, the IJK-to-RAS matrix is the volume's
to 1e-9 mm) and returns each segment's voxels.
`read_nifti_labelmap` does the same for the NIfTI labelmap (geometry to 1e-4 mm: NIfTI stores it
in single precision).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk
from mrml_scene import load_segmentation, load_volume, make_scene, matrix_array


def _volume(path: Path) -> tuple[slicer.vtkMRMLScene, slicer.vtkMRMLScalarVolumeNode, np.ndarray]:
    scene = make_scene()
    volume = load_volume(scene, path, "volume")
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return scene, volume, matrix_array(matrix)


def nrrd_header(path: Path) -> dict[str, str]:
    """The fields of a NRRD file's header (``key: value`` and ``key:=value`` lines up to the blank line)."""
    fields = {}
    with open(path, "rb") as stream:
        for raw in stream:
            line = raw.decode("latin-1").rstrip("\n")
            if not line:
                break
            for separator in (":=", ": "):
                if separator in line and not line.startswith("#"):
                    key, value = line.split(separator, 1)
                    fields[key] = value
                    break
    return fields


def read_seg_nrrd(seg_path: Path, volume_path: Path) -> dict[str, np.ndarray]:
    """segment name -> bool [k, j, i] mask on the volume's grid; AssertionError when the grid differs."""
    scene, volume, ijk_to_ras = _volume(volume_path)
    segmentation = load_segmentation(scene, seg_path, "downloaded")
    segments = segmentation.GetSegmentation()
    dims = volume.GetImageData().GetDimensions()
    sizes = nrrd_header(seg_path)["sizes"]
    assert tuple(int(n) for n in sizes.split()) == dims, f"the file's grid {sizes} is not the volume's {dims}"
    masks = {}
    for index in range(segments.GetNumberOfSegments()):
        segment_id = segments.GetNthSegmentID(index)
        labelmap = segments.GetSegment(segment_id).GetRepresentation("Binary labelmap")
        matrix = vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(matrix)
        np.testing.assert_allclose(matrix_array(matrix), ijk_to_ras, atol=1e-9, err_msg="segment grid != volume grid")
        extent = labelmap.GetExtent()  # Slicer crops each segment to its Segment<n>_Extent when it reads
        assert all(0 <= extent[2 * a] and extent[2 * a + 1] < dims[a] for a in range(3)), f"{extent} outside {dims}"
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)
        masks[segments.GetSegment(segment_id).GetName()] = np.asarray(mask) > 0
    return masks


def read_nifti_labelmap(nifti_path: Path, volume_path: Path) -> np.ndarray:
    """The labelmap's [k, j, i] labels; AssertionError when its grid differs from the volume's."""
    scene, _, ijk_to_ras = _volume(volume_path)
    labelmap = scene.SAMSegmenterTestLogics[1]["Volumes"].AddArchetypeVolume(str(nifti_path), "labels", 1)
    assert labelmap is not None and labelmap.IsA("vtkMRMLLabelMapVolumeNode"), "read back as a labelmap"
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(matrix_array(matrix), ijk_to_ras, atol=1e-4, err_msg="labelmap grid != volume grid")
    return slicer.util.arrayFromVolume(labelmap).copy()
