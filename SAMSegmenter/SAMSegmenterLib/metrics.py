"""Overlap and surface metrics between a predicted and a reference binary mask.

All functions take two boolean arrays of the same shape (a 2D slice ``(rows, cols)`` or a
3D volume ``(k, j, i)``) and, for the surface metrics, ``spacing``: the physical size in mm
of one step along each array axis, in the same order as the array axes. For a slice cut
from a ``[k, j, i]`` volume that is the spacing of the two remaining axes (see
:func:`slice_spacing`).

Definitions
-----------
* Dice ``2|P∩R| / (|P|+|R|)`` and IoU ``|P∩R| / |P∪R|``.
* Surface: the mask voxels that have at least one face neighbour (4-connectivity in 2D,
  6 in 3D) outside the mask; the outside of the array counts as outside the mask.
* Surface distance: Euclidean distance in mm from the centre of a surface voxel of one mask
  to the centre of the nearest surface voxel of the other (exact distance transform,
  ``SimpleITK.SignedMaurerDistanceMap`` with the image spacing).
* HD95: the larger of the two directed 95th percentiles (linear interpolation) of those
  distances, prediction to reference and reference to prediction.
* NSD (normalised surface Dice) at tolerance ``tau`` mm: the number of surface voxels of
  both masks that lie within ``tau`` of the other mask's surface, divided by the number of
  surface voxels of both masks. It counts voxels; it does not weight them by surface
  area as DeepMind's ``surface-distance`` package does, so on strongly anisotropic grids
  the two can differ by a few percent.

Empty masks
-----------
* Both empty: the masks agree that nothing is there. Dice = IoU = NSD = 1, HD95 = 0.
* Exactly one empty: Dice = IoU = NSD = 0 and HD95 = ``inf`` (there is no surface to
  measure a distance to). Summaries report how many HD95 values are infinite and compute
  HD95 statistics over the finite ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Metrics:
    """The four scores for one prediction against one reference."""

    dice: float
    iou: float
    hd95: float
    nsd: float


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm per array axis), got {spacing!r}")
    return values


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two same-shape boolean masks; 1.0 when both are empty."""
    pred, ref = _check_pair(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union of two same-shape boolean masks; 1.0 when both are empty."""
    pred, ref = _check_pair(pred, ref)
    union = int(np.logical_or(pred, ref).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, ref).sum()) / union


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean array of the same shape, True on mask voxels with a face neighbour outside the mask."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded.copy()
    for axis in range(mask.ndim):
        interior &= np.roll(padded, 1, axis=axis) & np.roll(padded, -1, axis=axis)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~interior[inner]


def _distance_to(target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from every element to the centre of the nearest True element of ``target``."""
    image = sitk.GetImageFromArray(target.astype(np.uint8))
    image.SetSpacing(tuple(reversed(spacing)))  # SimpleITK orders axes x, y(, z): the reverse of numpy
    signed = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                          useImageSpacing=True)
    # Outside the target the map is the distance to the nearest target voxel; inside it is <= 0.
    return np.maximum(sitk.GetArrayFromImage(signed), 0.0)


def surface_distances(pred: np.ndarray, ref: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (prediction surface to reference surface, reference to prediction).

    Each result is a 1D float array with one entry per surface voxel of the first mask.
    Both masks must be non-empty.
    """
    pred, ref = _check_pair(pred, ref)
    spacing = _check_spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    # Crop to the bounding box of both masks plus one voxel: every surface voxel stays inside,
    # so the distances between them are unchanged and the distance maps are much smaller.
    coords = np.argwhere(pred | ref)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, pred.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    pred_surface = surface(pred)[box]
    ref_surface = surface(ref)[box]
    pred_to_ref = _distance_to(ref_surface, spacing)[pred_surface]
    ref_to_pred = _distance_to(pred_surface, spacing)[ref_surface]
    return pred_to_ref.astype(np.float64), ref_to_pred.astype(np.float64)


def _hd95(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    return float(max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95)))


def _nsd(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray, tolerance_mm: float) -> float:
    close = int((pred_to_ref <= tolerance_mm).sum()) + int((ref_to_pred <= tolerance_mm).sum())
    return close / (pred_to_ref.size + ref_to_pred.size)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (0 when both empty, inf when one is)."""
    pred, ref = _check_pair(pred, ref)
    if not pred.any() or not ref.any():
        return 0.0 if pred.any() == ref.any() else float("inf")
    return _hd95(*surface_distances(pred, ref, spacing))


def nsd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """Normalised surface Dice at ``tolerance_mm`` (1 when both empty, 0 when one is)."""
    pred, ref = _check_pair(pred, ref)
    if not pred.any() or not ref.any():
        return 1.0 if pred.any() == ref.any() else 0.0
    return _nsd(*surface_distances(pred, ref, spacing), tolerance_mm)


def compute_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                    tolerance_mm: float) -> Metrics:
    """Dice, IoU, HD95 (mm) and NSD at ``tolerance_mm``, computing the surface distances once."""
    pred, ref = _check_pair(pred, ref)
    _check_spacing(spacing, pred.ndim)
    if tolerance_mm < 0:
        raise ValueError(f"NSD tolerance must be >= 0 mm, got {tolerance_mm}")
    if not pred.any() or not ref.any():
        agree = pred.any() == ref.any()
        return Metrics(dice=float(agree), iou=float(agree), hd95=0.0 if agree else float("inf"),
                       nsd=float(agree))
    distances = surface_distances(pred, ref, spacing)
    return Metrics(dice=dice(pred, ref), iou=iou(pred, ref), hd95=_hd95(*distances),
                   nsd=_nsd(*distances, tolerance_mm))


def slice_spacing(spacing_kji: Sequence[float], axis: int) -> tuple[float, float]:
    """In-plane spacing ``(row, col)`` in mm of a slice cut along array ``axis`` of a ``[k, j, i]`` volume.

    ``spacing_kji`` is the volume spacing per array axis (k, j, i); the slice keeps the two other
    axes in order, matching ``volume.take_slice``.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    rest = [float(s) for a, s in enumerate(spacing_kji) if a != axis]
    return rest[0], rest[1]
