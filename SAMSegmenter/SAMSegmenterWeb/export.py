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

`export_segmentation` returns the file's name and bytes; the web app sends them as a download.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSegmentationStorageNode,
    vtkMRMLVolumeArchetypeStorageNode,
    vtkSegmentation,
    vtkSlicerSegmentationsModuleLogic,
)

from SAMSegmenterLib.errors import InputError

FORMATS = {"seg.nrrd": "Slicer segmentation (.seg.nrrd)", "nii.gz": "NIfTI labelmap (.nii.gz)"}


def export_file_name(volume_name: str, file_format: str) -> str:
    """The download's name: the volume's name, "_segmentation", the format's suffix."""
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in volume_name).strip("._") or "volume"
    return f"{stem}_segmentation.{file_format}"


def export_segmentation(
    segmentation_node: vtkMRMLSegmentationNode, volume_node: vtkMRMLScalarVolumeNode, file_format: str
) -> tuple[str, bytes]:
    """(file name, file content) of the segmentation in ``file_format`` (a key of FORMATS), on the volume's grid.

    Raises InputError when the format is unknown or the segmentation has no segment.
    """
    if file_format not in FORMATS:
        raise InputError(f"unknown export format {file_format!r}; expected one of {sorted(FORMATS)}")
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        raise InputError("nothing to save: the segmentation has no segment")
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    name = export_file_name(volume_node.GetName(), file_format)
    with tempfile.TemporaryDirectory(prefix="samsegmenter-export-") as folder:
        path = Path(folder) / name
        if file_format == "seg.nrrd":
            _write_seg_nrrd(segmentation_node, path)
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
    scene = segmentation_node.GetScene()
    labelmap = vtkMRMLLabelMapVolumeNode()
    labelmap.SetName(path.name)
    scene.AddNode(labelmap)
    try:
        exported = vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(
            segmentation_node, labelmap, vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        )
        if not exported or labelmap.GetImageData() is None:
            raise InputError(f"cannot export the segmentation to {path.name}")
        storage = vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(labelmap):
            raise InputError(f"cannot write {path.name}")
    finally:
        display = labelmap.GetDisplayNode()
        color = display.GetColorNode() if display is not None else None
        scene.RemoveNode(labelmap)
        if color is not None and color.GetName().startswith(path.name):
            scene.RemoveNode(color)
