"""Slices of a volume indexed ``[k, j, i]`` (the order of Slicer's ``arrayFromVolume``).

Axis 0 (K) slice ``index``: ``volume[index, :, :]``, rows = j, columns = i.
Axis 1 (J) slice ``index``: ``volume[:, index, :]``, rows = k, columns = i.
Axis 2 (I) slice ``index``: ``volume[:, :, index]``, rows = k, columns = j.
In a slice, prompt ``x`` is the column and ``y`` the row.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

AXES = {"K": 0, "J": 1, "I": 2}


def parse_axis(axis: int | str) -> int:
    """0, 1, 2 or the names K, J, I (case-insensitive) -> 0, 1, 2."""
    if isinstance(axis, str) and axis.upper() in AXES:
        return AXES[axis.upper()]
    if isinstance(axis, (int, np.integer)) and 0 <= int(axis) <= 2:
        return int(axis)
    raise InputError(f"axis must be 0, 1, 2 or K, J, I; got {axis!r}")


def slice_number(value: object, what: str = "slice") -> int:
    """``value`` as a slice index: an int or a numpy integer (not a bool); InputError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def check_slice(shape: tuple[int, ...], axis: int, index: int) -> None:
    """Raise InputError unless ``index`` is a slice of a volume of ``shape`` along ``axis``."""
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume [k, j, i], got shape {tuple(shape)}")
    slice_number(index)
    if not 0 <= index < shape[axis]:
        raise InputError(f"slice {index} is outside the volume: axis {'KJI'[axis]} has slices 0..{shape[axis] - 1}")


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along ``axis`` (a view, rows x columns as in the module docstring)."""
    check_slice(volume.shape, axis, index)
    return volume[(slice(None),) * axis + (index,)]


def put_slice(volume: np.ndarray, axis: int, index: int, values: np.ndarray) -> None:
    """Write a 2D array into slice ``index`` along ``axis`` of ``volume`` in place."""
    check_slice(volume.shape, axis, index)
    selector = [slice(None)] * 3
    selector[axis] = index
    volume[tuple(selector)] = values


def occupied_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    """Indices along ``axis`` of the slices of a 3D boolean ``mask`` that hold any voxel, ascending."""
    return np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))


def slice_shape(shape: tuple[int, int, int], axis: int) -> tuple[int, int]:
    """(rows, columns) of a slice along ``axis``."""
    return tuple(s for a, s in enumerate(shape) if a != axis)  # type: ignore[return-value]
