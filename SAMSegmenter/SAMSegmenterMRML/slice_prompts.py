"""Prompts given in world RAS or volume IJK, turned into an engine Prompt on one slice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from SAMSegmenterLib.errors import PromptError
from SAMSegmenterLib.prompts import Prompt
from SAMSegmenterLib.volume import slice_shape

from .geometry import Axis, SliceRef, choose_slice, round_index, slice_xy, world_to_ijk

COORDINATE_SPACES = ("RAS", "IJK")


@dataclass(frozen=True)
class SlicePrompt:
    """A prompt on one slice of a volume.

    points: in-slice voxel coordinates (x = column, y = row) of ``take_slice(volume, ref.axis, ref.index)``.
    labels: 1 include, 0 exclude, one per point.
    box: (x0, y0, x1, y1) inclusive voxel bounds, or None.
    """

    ref: SliceRef
    points: tuple[tuple[int, int], ...] = ()
    labels: tuple[int, ...] = ()
    box: Optional[tuple[int, int, int, int]] = None

    def engine_prompt(self) -> Prompt:
        """The engine Prompt (coordinates in the slice's pixel grid)."""
        return Prompt(points=list(self.points), labels=list(self.labels), box=self.box)


def _as_points(values: Optional[Sequence[Sequence[float]]], what: str) -> np.ndarray:
    if values is None:
        return np.zeros((0, 3))
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return np.zeros((0, 3))
    if array.ndim == 1 and array.shape[0] == 3:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 3 or not np.all(np.isfinite(array)):
        raise PromptError(f"{what} must be a list of finite 3D points, got shape {array.shape}")
    return array


def build_slice_prompt(
    shape_kji: Sequence[int],
    ijk_to_world: np.ndarray,
    points: Optional[Sequence[Sequence[float]]] = None,
    labels: Optional[Sequence[int]] = None,
    box: Optional[Sequence[Sequence[float]]] = None,
    coordinates: str = "RAS",
    axis: Optional[Axis] = None,
) -> SlicePrompt:
    """Turn 3D prompt coordinates into a SlicePrompt.

    shape_kji: shape of the volume array [k, j, i]; ijk_to_world: (4, 4) volume IJK to world RAS.
    points: (N, 3) positions, in world RAS (coordinates="RAS", as markups report them) or as
    volume voxel indices (i, j, k) (coordinates="IJK"). labels: 1 include / 0 exclude per point
    (default all 1). box: two or more corners of the box (same space); the box is the smallest
    voxel rectangle on the slice that holds all of them. All prompts must lie on one slice;
    ``axis`` ("K"/"J"/"I" or 0/1/2) names its axis, otherwise it is inferred (see choose_slice).
    Points are snapped to the nearest voxel. Raises PromptError for empty, inconsistent or
    out-of-volume prompts.
    """
    space = coordinates.upper()
    if space not in COORDINATE_SPACES:
        raise PromptError(f"coordinates must be 'RAS' or 'IJK', got {coordinates!r}")
    point_array = _as_points(points, "points")
    box_array = _as_points(box, "box")
    if len(box_array) == 1:
        raise PromptError("a box needs at least two opposite corners")
    if labels is None:
        label_list = [1] * len(point_array)
    else:
        label_list = [int(v) for v in labels]
        if len(label_list) != len(point_array) or any(v not in (0, 1) for v in label_list):
            raise PromptError("labels must hold one 1 (include) or 0 (exclude) per point")
    if space == "RAS":
        point_array = world_to_ijk(point_array, ijk_to_world) if len(point_array) else point_array
        box_array = world_to_ijk(box_array, ijk_to_world) if len(box_array) else box_array
    ref = choose_slice(np.vstack([point_array, box_array]), shape_kji, axis)
    rows, cols = slice_shape(tuple(int(n) for n in shape_kji), ref.axis)
    where = f"slice {ref.axis_name}={ref.index}"

    xy_points = round_index(slice_xy(point_array, ref.axis)) if len(point_array) else np.zeros((0, 2), int)
    for (x, y), given in zip(xy_points, point_array):
        if not (0 <= x < cols and 0 <= y < rows):
            raise PromptError(f"point at IJK {np.round(given, 2).tolist()} is outside {where} ({cols} x {rows} voxels)")

    box_xy: Optional[tuple[int, int, int, int]] = None
    if len(box_array):
        corners = round_index(slice_xy(box_array, ref.axis))
        x0, y0 = corners.min(axis=0)
        x1, y1 = corners.max(axis=0)
        if x1 < 0 or y1 < 0 or x0 >= cols or y0 >= rows:
            raise PromptError(f"the box lies outside {where} ({cols} x {rows} voxels)")
        box_xy = (max(int(x0), 0), max(int(y0), 0), min(int(x1), cols - 1), min(int(y1), rows - 1))

    return SlicePrompt(
        ref=ref,
        points=tuple((int(x), int(y)) for x, y in xy_points),
        labels=tuple(label_list),
        box=box_xy,
    )


MIN_BOX_VOXELS = 3  # a drawn box thinner than this (either side, in voxels) outlines nothing
BOX_OVERHANG_VOXELS = 2.0  # how far past the image a drawn box may reach (the pointer's imprecision)


def drawn_box_problem(box_world: Sequence[Sequence[float]], ijk_to_world: np.ndarray, ref: SliceRef,
                      shape_kji: Sequence[int]) -> Optional[str]:
    """Why a box the user drew on slice ``ref`` is no prompt (a sentence), or None when it is one.

    box_world: (N >= 2, 3) RAS corners. Refused: a box thinner than MIN_BOX_VOXELS (a click-drag
    along one edge), and a box reaching more than BOX_OVERHANG_VOXELS past the image (dragged off
    the view: the model would outline air).
    """
    corners = slice_xy(world_to_ijk(np.asarray(box_world, dtype=float), ijk_to_world), ref.axis)
    low, high = corners.min(axis=0), corners.max(axis=0)
    width, height = (int(round_index(high[n]) - round_index(low[n])) + 1 for n in (0, 1))
    if min(width, height) < MIN_BOX_VOXELS:
        return (f"The box is {width} x {height} voxels: too thin to outline a structure. "
                "Drag a box around the whole structure.")
    rows, cols = slice_shape(tuple(int(n) for n in shape_kji), ref.axis)
    past = max(-low[0], -low[1], high[0] - (cols - 1), high[1] - (rows - 1))
    if past > BOX_OVERHANG_VOXELS:
        return (f"The box reaches {past:.0f} voxels past the edge of slice {ref.axis_name}={ref.index}. "
                "Drag it inside the image, around the structure.")
    return None
