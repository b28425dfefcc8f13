"""Coordinate handling between Slicer's world (RAS) space, volume IJK and 2D slices.

Conventions (the engine's, see SAMSegmenterLib.volume):
* A volume array is indexed [k, j, i] (as ``slicer.util.arrayFromVolume`` returns it).
* A slice axis is the numpy axis of that array: 0 = K, 1 = J, 2 = I.
* Points in IJK are rows (i, j, k) of continuous voxel coordinates; voxel centres are integers.
* Inside a slice, x is the column and y the row of ``take_slice(volume, axis, index)``:
  axis 0 (K): x = i, y = j;  axis 1 (J): x = i, y = k;  axis 2 (I): x = j, y = k.
* RAS here means Slicer's world coordinates, which markups report with
  ``GetNthControlPointPositionWorld``; parent transforms of the volume are taken into account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import slicer
import vtk

from SAMSegmenterLib.errors import InputError, PromptError
from SAMSegmenterLib.volume import parse_axis

AXIS_NAMES = ("K", "J", "I")
"""Name of each slice axis, indexed by the numpy axis of a [k, j, i] array."""

Axis = Union[int, str]

_XY_COLUMNS = {0: (0, 1), 1: (0, 2), 2: (1, 2)}
"""For each slice axis, the IJK components that give (x, y) inside the slice."""


@dataclass(frozen=True)
class SliceRef:
    """One slice of a volume: ``axis`` is the numpy axis (0 = K, 1 = J, 2 = I), ``index`` its position."""

    axis: int
    index: int

    @property
    def axis_name(self) -> str:
        return AXIS_NAMES[self.axis]


def axis_number(axis: Axis) -> int:
    """Numpy axis for 0/1/2 or "K"/"J"/"I" (case-insensitive): the engine's ``parse_axis``,
    raising PromptError (a prompt problem in the editor's terms)."""
    try:
        return parse_axis(axis.strip() if isinstance(axis, str) else axis)
    except InputError:
        raise PromptError(f"unknown slice axis {axis!r}: use 'K', 'J' or 'I' (or 0, 1, 2)") from None


def normal_component(axis: int) -> int:
    """Which IJK component (0 = i, 1 = j, 2 = k) is constant on a slice of ``axis``."""
    return 2 - axis


def volume_shape(volume_node: slicer.vtkMRMLVolumeNode) -> tuple[int, int, int]:
    """Shape (k, j, i) of the volume's voxel array, as ``slicer.util.arrayFromVolume`` returns it."""
    i, j, k = volume_node.GetImageData().GetDimensions()
    return int(k), int(j), int(i)


def volume_ijk_to_world(volume_node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """(4, 4) matrix from the volume's IJK to world RAS, including linear parent transforms.

    Raises InputError when the volume is under a non-linear transform.
    """
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    to_world = vtk.vtkMatrix4x4()
    parent = volume_node.GetParentTransformNode()
    if parent is not None and not parent.GetMatrixTransformToWorld(to_world):
        raise InputError(f"volume '{volume_node.GetName()}' is under a non-linear transform: harden it first")
    return slicer.util.arrayFromVTKMatrix(to_world) @ slicer.util.arrayFromVTKMatrix(ijk_to_ras)


def world_to_ijk(points_ras: np.ndarray, ijk_to_world: np.ndarray) -> np.ndarray:
    """Map (N, 3) world RAS points to (N, 3) continuous IJK (columns i, j, k)."""
    points = np.asarray(points_ras, dtype=float).reshape(-1, 3)
    homogeneous = np.c_[points, np.ones(len(points))]
    return (homogeneous @ np.linalg.inv(ijk_to_world).T)[:, :3]


def ijk_to_world(points_ijk: np.ndarray, ijk_to_world: np.ndarray) -> np.ndarray:
    """Map (N, 3) IJK points (columns i, j, k) to (N, 3) world RAS."""
    points = np.asarray(points_ijk, dtype=float).reshape(-1, 3)
    homogeneous = np.c_[points, np.ones(len(points))]
    return (homogeneous @ np.asarray(ijk_to_world, dtype=float).T)[:, :3]


def round_index(values: np.ndarray) -> np.ndarray:
    """Nearest voxel index, halves rounded up (deterministic, unlike numpy's half-to-even)."""
    return np.floor(np.asarray(values, dtype=float) + 0.5).astype(int)


def shared_axes(points_ijk: np.ndarray) -> list[int]:
    """Slice axes along which all points share the same rounded index (the slices they lie on)."""
    rounded = round_index(points_ijk)
    return [
        axis for axis in (0, 1, 2) if np.all(rounded[:, normal_component(axis)] == rounded[0, normal_component(axis)])
    ]


def choose_slice(points_ijk: np.ndarray, shape_kji: Sequence[int], axis: Optional[Axis] = None) -> SliceRef:
    """The slice that holds all prompt points.

    points_ijk: (N, 3) continuous IJK of every prompt point (box corners included).
    shape_kji: shape of the volume array [k, j, i].
    axis: the slice axis if known (e.g. from the slice view); otherwise the unique axis along
    which all points share one rounded index. Raises PromptError when the points do not lie
    on one slice of the given axis, when the axis is ambiguous, or when the slice is outside.
    """
    points = np.asarray(points_ijk, dtype=float).reshape(-1, 3)
    if len(points) == 0:
        raise PromptError("no prompt: give at least one point or a box")
    candidates = shared_axes(points)
    if axis is not None:
        chosen = axis_number(axis)
        if chosen not in candidates:
            indices = sorted(set(round_index(points[:, normal_component(chosen)]).tolist()))
            raise PromptError(
                f"the prompts lie on different {AXIS_NAMES[chosen]} slices {indices}: "
                "all prompts of one call must lie on one slice"
            )
    elif len(candidates) == 1:
        chosen = candidates[0]
    elif not candidates:
        raise PromptError("the prompts do not lie on one slice along any of the K, J, I axes")
    else:
        names = ", ".join(AXIS_NAMES[a] for a in candidates)
        raise PromptError(f"the prompts lie on one slice of several axes ({names}): give axis= explicitly")
    index = int(round_index(points[0, normal_component(chosen)]))
    if not 0 <= index < shape_kji[chosen]:
        raise PromptError(f"slice {AXIS_NAMES[chosen]}={index} is outside the volume (0..{shape_kji[chosen] - 1})")
    return SliceRef(chosen, index)


def slice_xy(points_ijk: np.ndarray, axis: int) -> np.ndarray:
    """(N, 2) continuous in-slice coordinates (x = column, y = row) of (N, 3) IJK points."""
    points = np.asarray(points_ijk, dtype=float).reshape(-1, 3)
    return points[:, list(_XY_COLUMNS[axis])]


def xy_to_ijk(points_xy: np.ndarray, ref: SliceRef) -> np.ndarray:
    """(N, 3) IJK of (N, 2) in-slice (x, y) points on the slice ``ref``."""
    points = np.asarray(points_xy, dtype=float).reshape(-1, 2)
    ijk = np.empty((len(points), 3))
    ijk[:, list(_XY_COLUMNS[ref.axis])] = points
    ijk[:, normal_component(ref.axis)] = ref.index
    return ijk


def view_slice(
    slice_to_ras: np.ndarray, ijk_to_world: np.ndarray, shape_kji: Sequence[int], tolerance_degrees: float = 1.0
) -> SliceRef:
    """The volume slice shown by a slice view.

    slice_to_ras: (4, 4) SliceToRAS matrix of the vtkMRMLSliceNode (its third column is the
    view normal, its fourth the plane origin, both in world RAS).
    Raises PromptError when the view plane is not perpendicular (within ``tolerance_degrees``)
    to one IJK axis of the volume, or when it does not cut the volume.
    """
    normal = np.asarray(slice_to_ras, dtype=float)[:3, 2]
    normal = normal / np.linalg.norm(normal)
    directions = np.asarray(ijk_to_world, dtype=float)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0)
    cosines = np.abs(directions.T @ normal)  # per IJK component
    component = int(np.argmax(cosines))
    if cosines[component] < np.cos(np.radians(tolerance_degrees)):
        angle = float(np.degrees(np.arccos(min(1.0, cosines[component]))))
        raise PromptError(
            f"the slice view is {angle:.1f} degrees off the volume's axes: "
            "use 'Rotate to volume plane' in the slice view controller"
        )
    axis = 2 - component
    origin = world_to_ijk(np.asarray(slice_to_ras, dtype=float)[:3, 3], ijk_to_world)[0]
    index = int(round_index(origin[component]))
    if not 0 <= index < shape_kji[axis]:
        raise PromptError(f"the slice view is outside the volume ({AXIS_NAMES[axis]}={index})")
    return SliceRef(axis, index)
