"""Mask clean-up (SimpleITK): components, hole filling, inside distances, on synthetic and real masks."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.propagation import postprocess
from SAMSegmenterLib.propagation.postprocess import (
    components_touching,
    fill_holes,
    fill_holes_per_slice,
    inside_distance,
    label_components,
    largest_component,
    largest_component_per_slice,
    outside_distance,
)


def _two_blobs() -> np.ndarray:
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:8, 2:8] = True  # 36 px
    mask[10:18, 15:25] = True  # 80 px
    return mask


def test_label_components_sorted_by_size():
    labels, sizes = label_components(_two_blobs())
    assert sizes.tolist() == [80, 36]
    assert labels[12, 20] == 1 and labels[4, 4] == 2 and labels[0, 0] == 0


def test_connectivity_faces_or_full():
    diagonal = np.eye(4, dtype=bool)
    assert label_components(diagonal)[1].tolist() == [1, 1, 1, 1]
    assert label_components(diagonal, full_connectivity=True)[1].tolist() == [4]


def test_largest_component_2d_and_3d():
    mask = _two_blobs()
    assert largest_component(mask).sum() == 80
    volume = np.zeros((5, 20, 30), dtype=bool)
    volume[1:4] = mask  # two 3D components: 3 x 80 and 3 x 36 voxels
    volume[0, 2:8, 2:8] = True  # the small one grows to 4 x 36 = 144 < 240
    assert largest_component(volume).sum() == 240
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_components_touching_keeps_overlapping_ones():
    mask = _two_blobs()
    reference = np.zeros_like(mask)
    reference[5, 5] = True  # inside the small blob only
    kept = components_touching(mask, reference)
    assert kept.sum() == 36 and kept[4, 4]
    # no overlap: the largest component stays, so a moving structure is not lost
    assert components_touching(mask, np.zeros_like(mask)).sum() == 80
    with pytest.raises(InputError):
        components_touching(mask, reference[:5])


def test_components_touching_agrees_with_the_labelled_components():
    """``components_touching`` labels without sorting by size; on random masks, 2D and 3D, equal blobs included, it
    keeps what the size-sorted labels of ``label_components`` say it should."""
    rng = np.random.default_rng(7)
    shapes = [(40, 50), (12, 20, 24)]
    for trial in range(60):
        shape = shapes[trial % 2]
        mask = rng.random(shape) < rng.uniform(0.05, 0.6)
        reference = rng.random(shape) < rng.uniform(0.0, 0.02)
        if trial % 3 == 0:
            reference[:] = False  # the fallback: the largest component (the first of equal ones in raster order)
        labels, sizes = label_components(mask)
        touching = np.unique(labels[reference & mask])
        expected = np.isin(labels, touching) if touching.size else labels == 1
        np.testing.assert_array_equal(components_touching(mask, reference), expected)
    squares = np.zeros((10, 10), dtype=bool)
    squares[1:3, 1:3] = squares[6:8, 6:8] = True  # two equal components, no overlap: the first in raster order
    kept = components_touching(squares, np.zeros_like(squares))
    assert kept[1, 1] and not kept[6, 6]
    assert not components_touching(np.zeros((4, 4), bool), np.ones((4, 4), bool)).any()


def test_fill_holes_2d_and_per_slice():
    ring = np.zeros((9, 9), dtype=bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert fill_holes(ring).sum() == 25
    open_ring = ring.copy()
    open_ring[2, 4] = open_ring[3, 4] = False  # hole now reaches the background
    assert fill_holes(open_ring).sum() == open_ring.sum()
    volume = np.stack([ring, ring, ring])  # the 2D holes form a tube open at both ends
    assert fill_holes(volume).sum() == volume.sum()
    assert fill_holes_per_slice(volume, 0).sum() == 75
    assert fill_holes_per_slice(volume, "J").sum() == volume.sum()  # along J the hole is not enclosed


def test_largest_component_per_slice_along_axis():
    volume = np.zeros((3, 20, 30), dtype=bool)
    volume[1] = _two_blobs()
    assert largest_component_per_slice(volume, 0).sum() == 80
    # along I each slice cuts the blobs into separate segments of rows
    assert largest_component_per_slice(volume, 2).sum() == volume.sum()


def test_inside_distance():
    mask = np.zeros((9, 9), dtype=bool)
    mask[2:7, 2:7] = True
    depth = inside_distance(mask)
    assert depth[4, 4] == 3 and depth[2, 2] == 1 and depth[0, 0] == 0
    assert inside_distance(np.ones((3, 3), bool))[1, 1] == 2  # the array border counts as outside


def test_outside_distance():
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    distance = outside_distance(mask)
    assert distance[4, 4] == 0 and distance[4, 6] == 2 and distance[0, 0] == pytest.approx(np.hypot(4, 4))
    with pytest.raises(InputError):
        outside_distance(np.zeros((3, 3), bool))


def test_real_mask_cleanup(mni152_masks):
    """On nilearn's real brain mask: one axial slice splits into several components; cleanup keeps the biggest."""
    brain = mni152_masks["brain"]
    axial = brain[30]  # low axial slice: cerebellum and the two temporal poles
    labels, sizes = label_components(axial)
    assert sizes.size >= 3
    assert largest_component(axial).sum() == sizes[0]
    assert fill_holes(axial).sum() >= axial.sum()


def test_rejects_1d():
    with pytest.raises(InputError):
        largest_component(np.ones(5, bool))


def test_a_slice_is_processed_in_one_piece_and_a_volume_as_simpleitk_splits_it():
    """Splitting a 2D slice over ITK's threads costs more than it gains (docs/speed.md): slices run in one work
    unit on one thread; volumes keep SimpleITK's defaults."""
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:15, 5:15] = mask[20:30, 30:45] = True
    labeller = sitk.ConnectedComponentImageFilter()
    default = (labeller.GetNumberOfWorkUnits(), labeller.GetNumberOfThreads())
    sliced = sitk.GetArrayFromImage(postprocess._run(labeller, sitk.GetImageFromArray(mask.astype(np.uint8))))
    assert (labeller.GetNumberOfWorkUnits(), labeller.GetNumberOfThreads()) == (1, 1)
    assert set(np.unique(sliced)) == {0, 1, 2}
    volume = sitk.GetImageFromArray(np.stack([mask, mask]).astype(np.uint8))
    labeller = sitk.ConnectedComponentImageFilter()
    postprocess._run(labeller, volume)
    assert (labeller.GetNumberOfWorkUnits(), labeller.GetNumberOfThreads()) == default
