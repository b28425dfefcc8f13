"""Saving the segmentation from the web app: files the browser downloads, on the volume's own grid.

Two formats, both written by Slicer's own storage nodes so that 3D Slicer reads them back as it
wrote them:

- ``seg.nrrd``: Slicer's segmentation file (every segment with its name and colour, the layers of
  the shared labelmap). It is written on the full extent of the segmentation's reference geometry,
  which the app sets to the volume's: same dimensions, spacing, origin and directions as the
  volume, so it opens on top of it in 3D Slicer.
- ``nii.gz``: a NIfTI labelmap (an int16 label per voxel, 0 = background, segment n of the list
  = label n) on the volume's grid, for tools that read NIfTI. NIfTI keeps the geometry in
  single-precision floats (the sform), so origin and spacing match to about 1e-5 mm.

- ``dcm``: a DICOM Segmentation (highdicom) on the source images' grid, for a volume read from DICOM
  files (dicom_seg.py).

`export_segmentation` returns the file's name and bytes; the web app sends them as a download.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSegmentationStorageNode,
    vtkMRMLVolumeArchetypeStorageNode,
    vtkSegmentation,
    vtkSlicerSegmentationsModuleLogic,
)
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from SAMSegmenterLib.errors import InputError

FORMATS = {"seg.nrrd": "Slicer segmentation (.seg.nrrd)", "nii.gz": "NIfTI labelmap (.nii.gz)"}
DICOM_FORMAT = "dcm"  # DICOM SEG, offered for volumes read from DICOM files (see dicom_seg.py)
ALL_FORMATS = {**FORMATS, DICOM_FORMAT: "DICOM SEG (.dcm)"}


def export_file_name(volume_name: str, file_format: str) -> str:
    """The download's name: the volume's name, "_segmentation", the format's suffix."""
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in volume_name).strip("._") or "volume"
    return f"{stem}_segmentation.{file_format}"


def export_segmentation(
    segmentation_node: vtkMRMLSegmentationNode,
    volume_node: vtkMRMLScalarVolumeNode,
    file_format: str,
    dicom_headers: Sequence = (),
) -> tuple[str, bytes]:
    """(file name, file content) of the segmentation in ``file_format`` (a key of ALL_FORMATS), on the volume's
    grid; DICOM SEG ("dcm") on the grid of the source images whose headers are ``dicom_headers``.

    Raises InputError when the format is unknown (or "dcm" without DICOM headers) or there is no segment.
    """
    if file_format not in ALL_FORMATS or (file_format == DICOM_FORMAT and not dicom_headers):
        known = sorted(ALL_FORMATS if dicom_headers else FORMATS)
        raise InputError(f"unknown export format {file_format!r} for this volume; expected one of {known}")
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        raise InputError("nothing to save: the segmentation has no segment")
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    name = export_file_name(volume_node.GetName(), file_format)
    with tempfile.TemporaryDirectory(prefix="samsegmenter-export-") as folder:
        path = Path(folder) / name
        if file_format == "seg.nrrd":
            _write_seg_nrrd(segmentation_node, path)
        elif file_format == DICOM_FORMAT:
            return name, _dicom_seg(segmentation_node, dicom_headers)
        else:
            _write_labelmap(segmentation_node, volume_node, path)
        return name, path.read_bytes()


def _write_seg_nrrd(segmentation_node: vtkMRMLSegmentationNode, path: Path) -> None:
    storage = vtkMRMLSegmentationStorageNode()
    storage.SetCropToMinimumExtent(False)  # the reference geometry's whole extent: the volume's grid
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentation_node):
        raise InputError(f"cannot write {path.name}")


def _write_labelmap(
    segmentation_node: vtkMRMLSegmentationNode, volume_node: vtkMRMLScalarVolumeNode, path: Path
) -> None:
    """Export every segment into a labelmap node on the volume's grid and write it with Slicer's volume writer."""

    def write(labelmap: vtkMRMLLabelMapVolumeNode) -> None:
        storage = vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(labelmap):
            raise InputError(f"cannot write {path.name}")

    _with_labelmap(segmentation_node, path.name, write)


def _dicom_seg(segmentation_node: vtkMRMLSegmentationNode, headers: Sequence) -> bytes:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    from .dicom_seg import dicom_seg_bytes

    segmentation = segmentation_node.GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]

    def to_bytes(labelmap: vtkMRMLLabelMapVolumeNode) -> bytes:
        image = labelmap.GetImageData()
        labels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
        matrix = vtkMatrix4x4()
        labelmap.GetIJKToRASMatrix(matrix)
        ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        return dicom_seg_bytes(labels, ijk_to_ras, names, headers)

    return _with_labelmap(segmentation_node, "DICOM SEG", to_bytes)


def _with_labelmap(segmentation_node: vtkMRMLSegmentationNode, name: str, use: Callable[[Any], Any]) -> Any:
    """``use(labelmap node)``: every segment exported (label n = segment n of the list) on the volume's grid;
    the labelmap node and its colour table leave the scene afterwards."""
    scene = segmentation_node.GetScene()
    labelmap = vtkMRMLLabelMapVolumeNode()
    labelmap.SetName(name)
    scene.AddNode(labelmap)
    try:
        exported = vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(
            segmentation_node, labelmap, vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        if not exported or labelmap.GetImageData() is None:
            raise InputError(f"cannot export the segmentation ({name})")
        return use(labelmap)
    finally:
        display = labelmap.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        scene.RemoveNode(labelmap)
        if color is not None and color.GetName().startswith(name):
            scene.RemoveNode(color)
