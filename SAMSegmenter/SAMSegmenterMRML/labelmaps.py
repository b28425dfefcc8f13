"""Masks computed on a volume's voxel grid, turned into segment editor modifier labelmaps.

A segment edit is a list of `LabelmapEdit` (a binary ``vtkOrientedImageData`` in the
segmentation node's coordinates, an "add" or "remove" operation and the extent it touches).
The same list is executed by the console writer (vtkSlicerSegmentEditorLogic) and by the
Segment Editor effect (``scriptedEffect.modifySelectedSegmentByLabelmap``), so masking,
overwrite and undo behave as for Slicer's own effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from SAMSegmenterLib.errors import InputError

from .geometry import SliceRef, normal_component, volume_shape

WRITE_MODES = ("replace", "add", "remove")
"""replace: the slab's voxels become the mask (inside the editable area); add: union; remove: subtract."""

INVALID_EXTENT = (0, -1, 0, -1, 0, -1)


@dataclass(frozen=True)
class Slab:
    """Consecutive slices ``first..last`` (inclusive) of one axis (numpy axis of [k, j, i])."""

    axis: int
    first: int
    last: int

    @classmethod
    def of(cls, ref: SliceRef) -> "Slab":
        return cls(ref.axis, ref.index, ref.index)

    def extent(self, shape_kji: tuple[int, int, int]) -> tuple[int, int, int, int, int, int]:
        """VTK extent (i0, i1, j0, j1, k0, k1) of the slab in the volume's IJK grid."""
        extent = [0, shape_kji[2] - 1, 0, shape_kji[1] - 1, 0, shape_kji[0] - 1]
        component = normal_component(self.axis)
        extent[2 * component], extent[2 * component + 1] = self.first, self.last
        return tuple(extent)

    def shape(self, shape_kji: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape of the slab's part of a [k, j, i] array of ``shape_kji``."""
        shape = list(shape_kji)
        shape[self.axis] = self.last - self.first + 1
        return tuple(shape)

    def index(self) -> tuple[slice, slice, slice]:
        """Numpy index of the slab in a [k, j, i] array."""
        index = [slice(None)] * 3
        index[self.axis] = slice(self.first, self.last + 1)
        return tuple(index)


@dataclass
class LabelmapEdit:
    """One modification of the selected segment by ``labelmap`` (non-zero voxels).

    operation: "add" or "remove".

    extent: VTK extent touched, or INVALID_EXTENT for the whole labelmap.
    """

    labelmap: slicer.vtkOrientedImageData
    operation: str
    extent: tuple[int, int, int, int, int, int]


def volume_ijk_to_segmentation(
    volume_node: slicer.vtkMRMLVolumeNode, segmentation_node: slicer.vtkMRMLSegmentationNode
) -> np.ndarray:
    """(4, 4) matrix from the volume's IJK to the segmentation node's coordinates (parent transforms applied)."""
    volume_to_segmentation = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
        volume_node.GetParentTransformNode(), segmentation_node.GetParentTransformNode(), volume_to_segmentation
    ):
        raise InputError("the volume and the segmentation are related by a non-linear transform: harden it first")
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    return slicer.util.arrayFromVTKMatrix(volume_to_segmentation) @ slicer.util.arrayFromVTKMatrix(ijk_to_ras)


def oriented_labelmap(
    values_kji: np.ndarray, extent: tuple[int, int, int, int, int, int], ijk_to_local: np.ndarray
) -> slicer.vtkOrientedImageData:
    """A uint8 vtkOrientedImageData holding ``values_kji`` at ``extent`` of a grid with ``ijk_to_local`` geometry.

    values_kji: array shaped like the extent, indexed [k, j, i]; non-zero voxels are set to 1.
    """
    image = slicer.vtkOrientedImageData()
    image.SetExtent(*extent)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.SetGeometryFromImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijk_to_local))
    dims = image.GetDimensions()
    if values_kji.shape != (dims[2], dims[1], dims[0]):
        raise InputError(f"mask shape {values_kji.shape} does not match extent {extent}")
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    scalars[...] = values_kji != 0
    image.GetPointData().GetScalars().Modified()
    return image


def labelmap_array(image: slicer.vtkOrientedImageData) -> np.ndarray:
    """The scalars of a single-component image as a [k, j, i] numpy view (empty for an empty extent)."""
    dims = image.GetDimensions()
    if min(dims) <= 0 or image.GetPointData().GetScalars() is None:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])


def _on_reference_grid(image: slicer.vtkOrientedImageData, reference: slicer.vtkOrientedImageData) -> np.ndarray:
    """``image`` resampled (nearest neighbour) onto the grid and extent of ``reference``, as a bool [k, j, i] array."""
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(image, reference, resampled)
    return labelmap_array(resampled) > 0


def labelmap_on_volume(image: slicer.vtkOrientedImageData, volume_node: slicer.vtkMRMLScalarVolumeNode,
                       segmentation_node: slicer.vtkMRMLSegmentationNode) -> np.ndarray:
    """A labelmap in the segmentation node's coordinates (e.g. from :func:`segment_labelmap`) on the volume's
    voxel grid (nearest neighbour), as a bool [k, j, i] array of the volume's shape."""
    grid = slicer.vtkOrientedImageData()
    grid.SetExtent(volume_node.GetImageData().GetExtent())
    grid.SetGeometryFromImageToWorldMatrix(
        slicer.util.vtkMatrixFromArray(volume_ijk_to_segmentation(volume_node, segmentation_node)))
    return _on_reference_grid(image, grid)


def _cropped(
    values_kji: np.ndarray, extent: tuple[int, int, int, int, int, int], keep_kji: np.ndarray, ijk_to_local: np.ndarray
) -> slicer.vtkOrientedImageData:
    """Labelmap of ``values_kji`` (laid out on ``extent``) cropped to the bounding box of ``keep_kji``."""
    nonzero = np.argwhere(keep_kji)
    low, high = nonzero.min(axis=0), nonzero.max(axis=0)
    crop = tuple(slice(lo, hi + 1) for lo, hi in zip(low, high))
    sub_extent = (
        extent[0] + low[2],
        extent[0] + high[2],
        extent[2] + low[1],
        extent[2] + high[1],
        extent[4] + low[0],
        extent[4] + high[0],
    )
    return oriented_labelmap(values_kji[crop], tuple(int(v) for v in sub_extent), ijk_to_local)


def _image_to_local(image: slicer.vtkOrientedImageData) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def labelmap_edits(
    slab_mask: np.ndarray,
    slab: Slab,
    shape_kji: tuple[int, int, int],
    ijk_to_local: np.ndarray,
    reference: slicer.vtkOrientedImageData,
    current: slicer.vtkOrientedImageData | None = None,
    mode: str = "replace",
    editable_segment: slicer.vtkOrientedImageData | None = None,
) -> list[LabelmapEdit]:
    """The edits that write a mask into a segment on ``slab``, applied in order with the editor's masking.

    slab_mask: bool array of the slab of the volume, indexed [k, j, i] (``volume[slab.index()]``'s shape).
    shape_kji: shape of the whole volume array.
    ijk_to_local: volume IJK to segmentation-node coordinates (see volume_ijk_to_segmentation).
    reference: the segmentation's reference geometry image (the editor's ``referenceGeometryImage()``):
    labelmaps are put on its grid (nearest neighbour when the volume's grid differs), as the
    editor needs for intensity masking.
    current: the segment's present labelmap (the editor's ``selectedSegmentLabelmap()``); used by "replace".
    mode: "replace": on the slab, the segment becomes the mask inside the editable area; elsewhere
    nothing changes, in this segment or any other. It is a "remove" of the segment's voxels on the
    slab that the mask leaves out, then an "add" of the mask, both bounded by the slab (a "set"
    would rewrite the whole segment and, with overwrite on, erase other segments wherever it lies).
    "add": union with the mask; "remove": the mask is erased (with the editor's Erase semantics).
    editable_segment: with "Editable area: inside one segment" (see :func:`editable_segment_id`), that
    segment's labelmap: "replace" then removes only voxels inside it, because Slicer hands voxels
    erased there back to that segment.
    """
    if mode not in WRITE_MODES:
        raise InputError(f"write mode must be one of {WRITE_MODES}, got {mode!r}")
    extent = slab.extent(tuple(int(n) for n in shape_kji))
    region = np.asarray(slab_mask, dtype=bool)
    mask_image = oriented_labelmap(region, extent, ijk_to_local)
    same_grid = slicer.vtkOrientedImageDataResample.DoGeometriesMatch(mask_image, reference)
    if same_grid:
        addition = LabelmapEdit(mask_image, "remove" if mode == "remove" else "add", extent)
    else:
        resampled = slicer.vtkOrientedImageData()
        slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            mask_image, reference, resampled
        )
        addition = LabelmapEdit(resampled, "remove" if mode == "remove" else "add", INVALID_EXTENT)
    if mode != "replace":
        return [addition]
    slab_on_grid = _on_reference_grid(oriented_labelmap(np.ones_like(region), extent, ijk_to_local), reference)
    if not slab_on_grid.any():
        raise InputError("the slab lies outside the segmentation's reference geometry")
    if current is None or not labelmap_array(current).size:
        return [addition]
    removal = _on_reference_grid(current, reference) & slab_on_grid & ~_on_reference_grid(mask_image, reference)
    if editable_segment is not None:
        removal &= _on_reference_grid(editable_segment, reference)
    if not removal.any():
        return [addition]
    reference_extent = tuple(int(v) for v in reference.GetExtent())
    removed = _cropped(removal.astype(np.uint8), reference_extent, removal, _image_to_local(reference))
    return [LabelmapEdit(removed, "remove", INVALID_EXTENT), addition]


def editable_segment_id(editor_node: slicer.vtkMRMLSegmentEditorNode, segment_id: str) -> str | None:
    """The segment the editable area is limited to ("inside one segment"), unless it is ``segment_id`` itself."""
    if editor_node.GetMaskMode() != slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment:
        return None
    mask_id = editor_node.GetMaskSegmentID()
    return mask_id if mask_id and mask_id != segment_id else None


def segment_labelmap(segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str) -> slicer.vtkOrientedImageData:
    """A segment as a 0/1 labelmap in the segmentation node's coordinates (a copy; shared layers resolved)."""
    image = slicer.vtkOrientedImageData()
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise InputError(f"segment {segment_id!r} not found in '{segmentation_node.GetName()}'")
    if not segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image):
        raise InputError(f"segment {segment_id!r} has no binary labelmap: make binary labelmap the segmentation's "
                         "source representation (Segmentations module)")
    return image


class SegmentWriter(Protocol):
    """Where a front end's Apply writes: its Segment Editor (Slicer's effect, trame-slicer's modifier, or
    :class:`editor.SegmentEditorSession` for scripts). ``write`` saves the state for undo, then applies the
    edits in order through the segment editor logic, with the editor node's masking and overwrite settings."""

    segmentation_node: slicer.vtkMRMLSegmentationNode
    editor_node: slicer.vtkMRMLSegmentEditorNode

    def reference_geometry(self) -> slicer.vtkOrientedImageData: ...

    def write(self, segment_id: str, edits: list[LabelmapEdit]) -> None: ...


def write_slab(
    writer: SegmentWriter,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segment_id: str,
    slab_mask: np.ndarray,
    slab: Slab,
    mode: str = "replace",
) -> None:
    """Write ``slab_mask`` (bool [k, j, i] of ``slab`` of ``volume_node``) into ``segment_id`` with ``mode``."""
    shape = volume_shape(volume_node)
    if tuple(slab_mask.shape) != slab.shape(shape):
        raise InputError(f"mask shape {slab_mask.shape} does not match the slab {slab.shape(shape)}")
    node = writer.segmentation_node
    reference = writer.reference_geometry()  # first: it also makes binary labelmap the source representation
    current = segment_labelmap(node, segment_id) if mode == "replace" else None
    editable_id = editable_segment_id(writer.editor_node, segment_id)
    editable = segment_labelmap(node, editable_id) if editable_id and mode == "replace" else None
    edits = labelmap_edits(slab_mask, slab, shape, volume_ijk_to_segmentation(volume_node, node), reference,
                           current, mode, editable)
    writer.write(segment_id, edits)
