"""Metrics against hand-computed values and against an independent scipy implementation."""

import math

import numpy as np
import pytest
from scipy import ndimage

from SAMSegmenterLib.metrics import compute_metrics, dice, hd95, iou, nsd, slice_spacing, surface, surface_distances


def test_dice_and_iou_by_hand():
    pred = np.zeros((6, 6), bool)
    ref = np.zeros((6, 6), bool)
    pred[1:3, 1:3] = True  # 4 pixels
    ref[1:3, 2:5] = True   # 6 pixels, 2 shared with pred
    assert dice(pred, ref) == pytest.approx(2 * 2 / 10)
    assert iou(pred, ref) == pytest.approx(2 / 8)


def test_surface_is_face_connected_boundary_and_array_edge_counts_as_outside():
    cube = np.ones((3, 3, 3), bool)
    expected = np.ones((3, 3, 3), bool)
    expected[1, 1, 1] = False
    assert np.array_equal(surface(cube), expected)
    # A pixel touching its neighbours only by a corner is still on the surface.
    plus = np.zeros((5, 5), bool)
    plus[2, 1:4] = True
    plus[1:4, 2] = True
    assert surface(plus).sum() == 4 and not surface(plus)[2, 2]


def test_single_voxels_anisotropic_distance():
    spacing = (2.0, 0.5)
    ref = np.zeros((5, 6), bool)
    ref[0, 0] = True
    along_cols = np.zeros_like(ref)
    along_cols[0, 3] = True
    along_rows = np.zeros_like(ref)
    along_rows[3, 0] = True
    assert hd95(along_cols, ref, spacing) == pytest.approx(1.5, abs=1e-5)   # 3 columns x 0.5 mm
    assert hd95(along_rows, ref, spacing) == pytest.approx(6.0, abs=1e-5)   # 3 rows x 2.0 mm
    assert nsd(along_cols, ref, spacing, tolerance_mm=1.4) == 0.0
    assert nsd(along_cols, ref, spacing, tolerance_mm=1.6) == 1.0
    assert nsd(along_rows, ref, spacing, tolerance_mm=5.0) == 0.0


def test_hd95_is_max_of_directed_percentiles_in_mm():
    # ref: one voxel. pred: the same voxel and one more, 2 steps along k and 1 along j away.
    spacing = (2.5, 0.8, 0.7)
    ref = np.zeros((6, 5, 4), bool)
    ref[1, 1, 1] = True
    pred = ref.copy()
    pred[3, 2, 1] = True
    far = math.hypot(2 * 2.5, 1 * 0.8)
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing)
    assert sorted(pred_to_ref) == pytest.approx([0.0, far], abs=1e-5)
    assert list(ref_to_pred) == pytest.approx([0.0], abs=1e-6)
    # Directed 95th percentiles (linear): pred->ref 0.95 * far, ref->pred 0.
    assert hd95(pred, ref, spacing) == pytest.approx(0.95 * far, abs=1e-5)
    assert nsd(pred, ref, spacing, tolerance_mm=5.0) == pytest.approx(2 / 3)
    assert nsd(pred, ref, spacing, tolerance_mm=5.1) == 1.0


def test_plates_shifted_across_and_along_anisotropic_axes():
    spacing = (3.0, 1.0, 0.5)
    ref = np.zeros((6, 5, 8), bool)
    ref[2, 1:4, 0:4] = True          # one-voxel-thick plate: every voxel is on its surface
    up = np.zeros_like(ref)
    up[3, 1:4, 0:4] = True           # same plate one k step (3 mm) away
    m = compute_metrics(up, ref, spacing, tolerance_mm=2.0)
    assert (m.dice, m.iou, m.nsd) == (0.0, 0.0, 0.0)
    assert m.hd95 == pytest.approx(3.0, abs=1e-5)
    assert nsd(up, ref, spacing, tolerance_mm=3.0) == 1.0
    side = np.zeros_like(ref)
    side[2, 1:4, 1:5] = True          # shifted one i step (0.5 mm): per row distances 0, 0, 0, 0.5
    m = compute_metrics(side, ref, spacing, tolerance_mm=0.25)
    assert m.dice == pytest.approx(2 * 9 / 24)
    assert m.iou == pytest.approx(9 / 15)
    assert m.hd95 == pytest.approx(0.5, abs=1e-5)     # 95th percentile of nine 0s and three 0.5s
    assert m.nsd == pytest.approx((9 + 9) / 24)


def test_empty_cases():
    spacing = (1.0, 1.0)
    empty = np.zeros((4, 4), bool)
    one = empty.copy()
    one[1, 1] = True
    both = compute_metrics(empty, empty, spacing, 1.0)
    assert (both.dice, both.iou, both.hd95, both.nsd) == (1.0, 1.0, 0.0, 1.0)
    for pred, ref in ((empty, one), (one, empty)):
        m = compute_metrics(pred, ref, spacing, 1.0)
        assert (m.dice, m.iou, m.nsd) == (0.0, 0.0, 0.0)
        assert math.isinf(m.hd95)
        assert math.isinf(hd95(pred, ref, spacing)) and nsd(pred, ref, spacing, 1.0) == 0.0
    assert hd95(empty, empty, spacing) == 0.0 and nsd(empty, empty, spacing, 1.0) == 1.0


def test_bad_arguments():
    a = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(a, a, (1.0,), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(a, a, (1.0, 0.0), 1.0)


def _scipy_reference(pred, ref, spacing, tolerance):
    """Independent implementation: scipy erosion for the surface, scipy EDT for the distances."""
    structure = ndimage.generate_binary_structure(pred.ndim, 1)

    def border(m):
        return m & ~ndimage.binary_erosion(m, structure, border_value=0)

    sp, sr = border(pred), border(ref)
    d_pr = ndimage.distance_transform_edt(~sr, sampling=spacing)[sp]
    d_rp = ndimage.distance_transform_edt(~sp, sampling=spacing)[sr]
    hd = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    ns = ((d_pr <= tolerance).sum() + (d_rp <= tolerance).sum()) / (d_pr.size + d_rp.size)
    return hd, ns


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 1.3), (0.5, 3.0, 0.9)])
def test_against_scipy_on_random_blobs(spacing):
    rng = np.random.default_rng(7)
    noise = ndimage.gaussian_filter(rng.random((24, 30, 28)), 2.0)
    ref = noise > np.percentile(noise, 80)
    pred = ndimage.gaussian_filter(noise + 0.02 * rng.random(noise.shape), 1.0) > np.percentile(noise, 78)
    ref[0, 5:9, 5:9] = True  # touch the array edge: the edge must count as outside for both
    m = compute_metrics(pred, ref, spacing, tolerance_mm=1.5)
    hd, ns = _scipy_reference(pred, ref, spacing, 1.5)
    assert m.hd95 == pytest.approx(hd, rel=1e-5)
    assert m.nsd == pytest.approx(ns)
    assert 0.0 < m.nsd < 1.0 and m.hd95 > 0.0  # the case is not trivial


def test_slice_spacing_follows_take_slice_axes():
    spacing = (2.5, 0.8, 0.7)  # (k, j, i)
    assert slice_spacing(spacing, 0) == (0.8, 0.7)
    assert slice_spacing(spacing, 1) == (2.5, 0.7)
    assert slice_spacing(spacing, 2) == (2.5, 0.8)
    # A 2D metric on a J slice equals the 3D metric of the same one-slice objects (two pixels
    # thick in-plane, so every pixel is on the surface in 2D as in 3D).
    vol_ref = np.zeros((7, 5, 9), bool)
    vol_pred = np.zeros_like(vol_ref)
    vol_ref[1:3, 2, 2:6] = True
    vol_pred[3:5, 2, 3:8] = True
    d2 = hd95(vol_pred[:, 2, :], vol_ref[:, 2, :], slice_spacing(spacing, 1))
    d3 = hd95(vol_pred, vol_ref, spacing)
    assert d2 == pytest.approx(d3, abs=1e-5) and d2 > 0
