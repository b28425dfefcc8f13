"""Thick-slice versions of a thin-slice volume, made as a scanner makes them (numpy only).

A scanner's thick slice records the anatomy averaged over its thickness (partial volume);
picking every n-th thin slice would not. :func:`thick_slices` averages consecutive thin
slices of a volume ``[k, j, i]`` along one axis into slabs; :func:`thick_labels` resamples
a binary label the same way and keeps a thick voxel where at least ``fraction`` of its
thin voxels are inside the label.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def _slabs(shape: tuple[int, ...], axis: int, factor: int) -> int:
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis}")
    if factor < 1:
        raise InputError(f"slab factor must be >= 1 thin slice, got {factor}")
    count = shape[axis] // factor
    if count < 1:
        raise InputError(f"axis {axis} has {shape[axis]} slices, fewer than one slab of {factor}")
    return count


def _slab_mean(volume: np.ndarray, axis: int, factor: int) -> np.ndarray:
    count = _slabs(volume.shape, axis, factor)
    moved = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, 0)[:count * factor]
    means = moved.reshape(count, factor, *moved.shape[1:]).mean(axis=1)
    return np.moveaxis(means, 0, axis)


def thick_slices(volume: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Float32 volume ``[k, j, i]`` whose slices along ``axis`` are means of ``factor`` consecutive thin
    slices (trailing thin slices that do not fill a slab are dropped); other axes unchanged."""
    return _slab_mean(volume, axis, factor)


def thick_labels(label: np.ndarray, axis: int, factor: int, fraction: float = 0.5) -> np.ndarray:
    """Bool label ``[k, j, i]`` on the grid of :func:`thick_slices`: True where at least ``fraction``
    of the slab's thin voxels are inside the bool ``label``."""
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction}")
    return _slab_mean(np.asarray(label, dtype=bool), axis, factor) >= fraction


def thick_spacing(spacing_kji: tuple[float, float, float], axis: int, factor: int) -> tuple[float, float, float]:
    """The (k, j, i) spacing in mm of :func:`thick_slices`' grid: the slab axis ``factor`` times thicker."""
    out = [float(s) for s in spacing_kji]
    out[axis] *= factor
    return out[0], out[1], out[2]
