"""Segment statistics shown under each segment's size: largest diameter and mean intensity.

Computed from the segment's binary labelmap and the volume it was drawn on (both on the volume's
grid: the segmentation's reference geometry is the volume's). The largest diameter is the longest
distance between two voxel centres of the segment, in millimetres (world RAS), found among the
vertices of their convex hull; the mean intensity is the mean of the volume's voxels inside the
segment, in the volume's units (Hounsfield units for CT).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from slicer import vtkMRMLScalarVolumeNode, vtkSegment, vtkSegmentationConverter
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonMath import vtkMatrix4x4

HULL_MIN_POINTS = 5


def _matrix(vtk_matrix: vtkMatrix4x4) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def max_diameter_mm(points_mm: np.ndarray) -> float:
    """Largest distance between two of the (N, 3) points (0 for fewer than two)."""
    if len(points_mm) < 2:
        return 0.0
    candidates = points_mm
    if len(points_mm) >= HULL_MIN_POINTS:
        from scipy.spatial import ConvexHull, QhullError

        try:  # "QJ" joggles flat input (a segment on one slice) instead of failing
            candidates = points_mm[ConvexHull(points_mm, qhull_options="QJ").vertices]
        except QhullError:
            candidates = points_mm
    if len(candidates) > 4000:  # degenerate hulls only: keep the cost bounded
        candidates = candidates[:: len(candidates) // 4000 + 1]
    differences = candidates[:, None, :] - candidates[None, :, :]
    return float(np.sqrt((differences**2).sum(axis=2)).max())


def segment_statistics(segment: vtkSegment, volume_node: Optional[vtkMRMLScalarVolumeNode]) -> Optional[dict]:
    """{"diameter_mm", "mean"} of a segment (mean None without a volume on the same grid); None when empty."""
    image = segment.GetRepresentation(vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        return None
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    labels = vtk_to_numpy(scalars).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    inside = labels == segment.GetLabelValue()
    if not inside.any():
        return None
    matrix = vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    image_to_world = _matrix(matrix)
    k, j, i = np.nonzero(inside)
    ijk = np.c_[i + i0, j + j0, k + k0, np.ones(len(i))]
    diameter = max_diameter_mm((ijk @ image_to_world.T)[:, :3])
    mean = None
    if volume_node is not None and volume_node.GetImageData() is not None:
        volume_matrix = vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(volume_matrix)
        ni, nj, nk = volume_node.GetImageData().GetDimensions()
        same_grid = np.allclose(_matrix(volume_matrix), image_to_world, atol=1e-6)
        if same_grid and min(i0, j0, k0) >= 0 and i1 < ni and j1 < nj and k1 < nk:
            volume = vtk_to_numpy(volume_node.GetImageData().GetPointData().GetScalars()).reshape(nk, nj, ni)
            mean = float(volume[k + k0, j + j0, i + i0].mean())
    return {"diameter_mm": diameter, "mean": mean}


def describe_statistics(statistics: Optional[dict]) -> str:
    """What the list shows under the size: "max diameter 41.2 mm · mean 83.5" ("" when empty)."""
    if statistics is None:
        return ""
    text = f"max diameter {statistics['diameter_mm']:.1f} mm"
    if statistics["mean"] is not None:
        text += f" · mean {statistics['mean']:.1f}"
    return text
