"""Thick-slice volumes made as a scanner makes them (SAMSegmenterLib.evaluation.thick_slices)."""

from __future__ import annotations

import numpy as np
import pytest

from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.evaluation.thick_slices import thick_labels, thick_slices, thick_spacing


def test_slabs_are_means_of_thin_slices_along_the_axis():
    volume = np.arange(7 * 2 * 3, dtype=np.int16).reshape(7, 2, 3)
    thick = thick_slices(volume, 0, 3)
    assert thick.shape == (2, 2, 3) and thick.dtype == np.float32  # the 7th thin slice fills no slab
    np.testing.assert_allclose(thick[0], volume[0:3].mean(axis=0))
    np.testing.assert_allclose(thick[1], volume[3:6].mean(axis=0))
    along_i = thick_slices(volume, 2, 2)
    assert along_i.shape == (7, 2, 1)
    np.testing.assert_allclose(along_i[..., 0], volume[..., 0:2].mean(axis=2))


def test_labels_follow_the_partial_volume_fraction():
    label = np.zeros((6, 1, 1), bool)
    label[1:4] = True  # slab 0 holds 2 of 3 thin voxels, slab 1 holds 1 of 3
    assert thick_labels(label, 0, 3)[:, 0, 0].tolist() == [True, False]
    assert thick_labels(label, 0, 3, fraction=0.3)[:, 0, 0].tolist() == [True, True]
    assert thick_spacing((1.0, 0.5, 0.5), 0, 5) == (5.0, 0.5, 0.5)


def test_bad_arguments():
    volume = np.zeros((4, 2, 2))
    with pytest.raises(InputError, match="fewer than one slab"):
        thick_slices(volume, 0, 5)
    with pytest.raises(InputError, match="axis"):
        thick_slices(volume, 3, 2)
    with pytest.raises(InputError, match="fraction"):
        thick_labels(volume > 0, 0, 2, fraction=0)
