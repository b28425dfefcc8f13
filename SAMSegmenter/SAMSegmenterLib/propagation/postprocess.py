"""Clean-up of binary masks: connected components, hole filling, inside distances.

Every function takes a boolean numpy array, 2D (rows, columns) for one slice or 3D
``[k, j, i]`` for a volume, and returns a new boolean array of the same shape
(or, for :func:`inside_distance`, float32 distances). Connectivity is by faces
(4 neighbours in 2D, 6 in 3D) unless ``full_connectivity`` is set (8 / 26).
Implemented with SimpleITK so that it runs inside 3D Slicer (which has no scipy).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volume import parse_axis


def _check(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def _image(mask: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(mask.astype(np.uint8))


def _run(image_filter: sitk.ImageFilter, image: sitk.Image) -> sitk.Image:
    """``image_filter`` on ``image``, in one piece on one thread for a 2D slice: splitting a slice of a few hundred
    pixels a side over ITK's threads costs more than it gains (docs/speed.md), and a walk cleans up to four
    candidates per slice. (With ITK's default threader the number of work units decides the split; the number of
    threads alone changes nothing.) Volumes keep SimpleITK's defaults."""
    if image.GetDimension() == 2:
        image_filter.SetNumberOfWorkUnits(1)
        image_filter.SetNumberOfThreads(1)
    return image_filter.Execute(image)


def _components(mask: np.ndarray, full_connectivity: bool) -> sitk.Image:
    labeller = sitk.ConnectedComponentImageFilter()
    labeller.SetFullyConnected(full_connectivity)
    return _run(labeller, _image(mask))


def _distance(mask: np.ndarray, inside_is_positive: bool) -> np.ndarray:
    """SimpleITK's signed Maurer distance map of ``mask`` in pixels (not squared), as a numpy array."""
    mapper = sitk.SignedMaurerDistanceMapImageFilter()
    mapper.SetInsideIsPositive(inside_is_positive)
    mapper.SetSquaredDistance(False)
    mapper.SetUseImageSpacing(False)
    return sitk.GetArrayFromImage(_run(mapper, _image(mask)))


def label_components(mask: np.ndarray, full_connectivity: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Connected components: (labels, sizes).

    labels: uint32 array of ``mask``'s shape, 0 outside, 1..n inside, numbered by
    decreasing size; sizes: (n,) int64 voxel counts, ``sizes[c - 1]`` for label c.
    """
    mask = _check(mask)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.uint32), np.zeros(0, dtype=np.int64)
    relabeller = sitk.RelabelComponentImageFilter()
    relabeller.SetSortByObjectSize(True)
    array = sitk.GetArrayFromImage(_run(relabeller, _components(mask, full_connectivity))).astype(np.uint32)
    return array, np.bincount(array.ravel())[1:].astype(np.int64)


def largest_component(mask: np.ndarray, full_connectivity: bool = False) -> np.ndarray:
    """The largest connected component of a 2D or 3D mask (empty stays empty)."""
    labels, sizes = label_components(mask, full_connectivity)
    return labels == 1 if sizes.size else labels.astype(bool)


def components_touching(mask: np.ndarray, reference: np.ndarray, full_connectivity: bool = False) -> np.ndarray:
    """The components of ``mask`` that overlap ``reference`` (same shape).

    When none overlaps, the largest component is kept, so a shifted structure is
    not lost. Used to drop islands that appear away from the neighbouring slice's mask.
    """
    mask, reference = _check(mask), _check(reference)
    if mask.shape != reference.shape:
        raise InputError(f"mask shape {mask.shape} differs from reference shape {reference.shape}")
    if not mask.any():
        return mask.copy()
    # raster-order labels, not relabelled by size (a walk cleans up to four candidates per slice: the relabelling
    # cost as much as the labelling); ties for the largest go to the lower label, as in label_components
    labels = sitk.GetArrayFromImage(_components(mask, full_connectivity))
    touching = np.unique(labels[reference & mask])
    if touching.size == 0:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        return labels == int(np.argmax(sizes))
    return np.isin(labels, touching)


def fill_holes(mask: np.ndarray, full_connectivity: bool = False) -> np.ndarray:
    """Fill background regions that do not reach the array border (in 2D, or 3D cavities in 3D)."""
    mask = _check(mask)
    if not mask.any():
        return mask.copy()
    filler = sitk.BinaryFillholeImageFilter()
    filler.SetFullyConnected(full_connectivity)
    filler.SetForegroundValue(1)
    return sitk.GetArrayFromImage(_run(filler, _image(mask))).astype(bool)


def _per_slice(operation: Callable[[np.ndarray], np.ndarray], volume_mask: np.ndarray,
               axis: int | str) -> np.ndarray:
    """``operation`` on each non-empty 2D slice of a 3D mask ``[k, j, i]`` along ``axis``."""
    volume_mask = _check(volume_mask)
    if volume_mask.ndim != 3:
        raise InputError(f"expected a 3D mask [k, j, i], got shape {volume_mask.shape}")
    axis = parse_axis(axis)
    out = np.moveaxis(volume_mask.copy(), axis, 0)
    for index in np.flatnonzero(out.reshape(out.shape[0], -1).any(axis=1)):
        out[index] = operation(out[index])
    return np.moveaxis(out, 0, axis)


def fill_holes_per_slice(volume_mask: np.ndarray, axis: int | str) -> np.ndarray:
    """:func:`fill_holes` on each 2D slice of a 3D mask ``[k, j, i]`` along ``axis``."""
    return _per_slice(fill_holes, volume_mask, axis)


def largest_component_per_slice(volume_mask: np.ndarray, axis: int | str) -> np.ndarray:
    """:func:`largest_component` on each 2D slice of a 3D mask ``[k, j, i]`` along ``axis``."""
    return _per_slice(largest_component, volume_mask, axis)


def outside_distance(mask: np.ndarray) -> np.ndarray:
    """Float32 distance in pixels from each pixel outside a non-empty mask to the nearest mask pixel (0 inside)."""
    mask = _check(mask)
    if not mask.any():
        raise InputError("the distance to an empty mask is undefined")
    # Outside, the map is the distance to the nearest mask pixel (1 next to it).
    return np.maximum(_distance(mask, inside_is_positive=False), 0.0).astype(np.float32)


def inside_distance(mask: np.ndarray) -> np.ndarray:
    """Float32 distance in pixels from each mask pixel to the nearest pixel outside it (0 outside).

    Pixels beyond the array border count as outside.
    """
    mask = _check(mask)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    distance = _distance(np.pad(mask, 1), inside_is_positive=True)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    # Inside, the map is the distance to the mask's own border pixels (0 on them); +1
    # makes it the distance to the nearest outside pixel.
    return np.where(mask, distance[inner] + 1.0, 0.0).astype(np.float32)
