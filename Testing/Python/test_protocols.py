"""Prompt protocols: geometry by hand, sampling rules, determinism for a seed."""

import os
import subprocess
import sys

import numpy as np
import pytest

from SAMSegmenterLib.evaluation.protocols import (
    POINT_COUNTS,
    PROTOCOL_HELP,
    PROTOCOLS,
    SLICE_PROTOCOLS,
    center_point,
    enlarged_box,
    jittered_box,
    make_prompt,
    protocol_rng,
    tight_box,
)


def _ellipse(shape=(64, 80), centre=(30, 45), radii=(9, 14)):
    rows, cols = np.indices(shape)
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def test_every_protocol_is_documented():
    assert set(PROTOCOL_HELP) == set(PROTOCOLS)


def test_tight_box_is_inclusive_x_column_y_row():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True  # rows 2..4, columns 3..8
    assert tight_box(mask) == (3, 2, 8, 4)


def test_jittered_box_moves_each_side_outwards_0_to_20_and_clips():
    mask = _ellipse()
    x0, y0, x1, y1 = tight_box(mask)
    shifts = []
    for n in range(300):
        bx0, by0, bx1, by1 = jittered_box(mask, protocol_rng(0, n))
        shifts.append((x0 - bx0, y0 - by0, bx1 - x1, by1 - y1))
    shifts = np.array(shifts)
    assert shifts.min() == 0 and shifts.max() == 20
    assert len(np.unique(shifts[:, 0])) == 21  # every shift from 0 to 20 occurs
    # Against the image edge the box is clipped, never outside.
    edge = np.zeros((30, 30), bool)
    edge[0:5, 25:30] = True
    for n in range(50):
        bx0, by0, bx1, by1 = jittered_box(edge, protocol_rng(1, n))
        assert by0 == 0 and bx1 == 29 and 5 <= bx0 <= 25 and 4 <= by1 <= 24


def test_enlarged_box_doubles_about_centre_and_clips():
    assert enlarged_box((10, 20, 19, 29), (100, 100)) == (5, 15, 24, 34)  # 10 x 10 -> 20 x 20
    assert enlarged_box((0, 0, 9, 9), (12, 12)) == (0, 0, 11, 11)


def test_center_point_convex_and_outside_centroid():
    mask = np.zeros((20, 20), bool)
    mask[4:9, 10:17] = True  # centroid row 6, column 13
    assert center_point(mask) == (13, 6)
    ring = _ellipse((41, 41), (20, 20), (15, 15)) & ~_ellipse((41, 41), (20, 20), (10, 10))
    x, y = center_point(ring)
    assert not ring[20, 20] and ring[y, x]
    # The nearest ring pixel to (20, 20) is at distance just over the inner radius.
    assert 10 < np.hypot(x - 20, y - 20) <= 11.5


@pytest.mark.parametrize("protocol", sorted(POINT_COUNTS))
def test_point_protocols_sample_inside_and_in_enlarged_box(protocol):
    mask = _ellipse()
    prompt = make_prompt(protocol, mask, protocol_rng(3, "case", 1, protocol))
    total = POINT_COUNTS[protocol]
    labels = list(prompt.labels)
    assert labels.count(1) == (total + 1) // 2 and labels.count(0) == total // 2
    assert prompt.box is None
    points = prompt.points.astype(int)
    assert len({tuple(p) for p in points}) == total  # distinct
    ex0, ey0, ex1, ey1 = enlarged_box(tight_box(mask), mask.shape)
    for (x, y), label in zip(points, labels):
        if label == 1:
            assert mask[y, x]
        else:
            assert not mask[y, x] and ex0 <= x <= ex1 and ey0 <= y <= ey1
    prompt.validate(mask.shape)


def test_box_center_and_box_points_prompts():
    mask = np.zeros((20, 20), bool)
    mask[4:9, 10:17] = True
    rng = protocol_rng(0)
    assert tuple(make_prompt("box", mask, rng).box) == (10, 4, 16, 8)
    center = make_prompt("center", mask, rng)
    assert center.points.tolist() == [[13, 6]] and center.labels.tolist() == [1] and center.box is None
    both = make_prompt("box_points", mask, rng)
    assert tuple(both.box) == (10, 4, 16, 8) and both.points.tolist() == [[13, 6]]


def test_small_mask_gives_all_its_pixels():
    mask = np.zeros((10, 10), bool)
    mask[5, 5] = mask[5, 6] = True
    prompt = make_prompt("points10", mask, protocol_rng(0))
    assert list(prompt.labels).count(1) == 2 and list(prompt.labels).count(0) == 5


def test_same_seed_same_prompts_other_seed_or_slice_other_prompts():
    mask = _ellipse()

    def draw(seed, slice_index):
        out = []
        for protocol in SLICE_PROTOCOLS:
            prompt = make_prompt(protocol, mask, protocol_rng(seed, "case01", 2, "K", slice_index, protocol))
            out.append((prompt.points.tolist(), prompt.labels.tolist(),
                        None if prompt.box is None else prompt.box.tolist()))
        return out

    assert draw(0, 12) == draw(0, 12)
    assert draw(0, 12) != draw(1, 12)
    assert draw(0, 12) != draw(0, 13)


def test_same_draw_in_another_process_with_other_hash_seed():
    code = ("from SAMSegmenterLib.evaluation.protocols import protocol_rng;"
            "print(protocol_rng(5, 'case01', 2, 'K', 7, 'points10').integers(0, 1 << 30, 4).tolist())")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = protocol_rng(5, "case01", 2, "K", 7, "points10").integers(0, 1 << 30, 4).tolist()
    assert out.stdout.strip() == str(here)


def test_bad_requests():
    mask = _ellipse()
    with pytest.raises(ValueError, match="unknown protocol"):
        make_prompt("lasso", mask, protocol_rng(0))
    with pytest.raises(ValueError, match="3D protocol"):
        make_prompt("propagate3d", mask, protocol_rng(0))
    with pytest.raises(ValueError, match="non-empty"):
        make_prompt("box", np.zeros((5, 5), bool), protocol_rng(0))
