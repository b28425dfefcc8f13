"""Volume propagation with the real LiteMedSAM on the real MNI152 template.

The reference structure is the cerebellum and brainstem below the temporal lobes:
the largest connected component of nilearn's brain mask on axial slices k <= 32
and rows j <= 115 (threshold-derived ground truth, so imperfect). Tests walk a
few slices around k = 16 only; embeddings are shared through one module predictor.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
from conftest import dice

from SAMSegmenterLib.errors import InputError, PromptError
from SAMSegmenterLib.models.registry import get_spec
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt, box_from_mask
from SAMSegmenterLib.propagation import (
    PropagationOptions,
    affected_range,
    box_fraction,
    exterior_points,
    grown_box,
    interior_points,
    margin_pixels,
    next_prompt,
    propagate,
    propagate_between,
    stop_reason,
)
from SAMSegmenterLib.propagation.postprocess import largest_component
from SAMSegmenterLib.volume import take_slice

SEED = 16
RANGE = (12, 20)


@pytest.fixture(scope="module")
def cerebellum(mni152_masks):
    """Reference mask [k, j, i] of the cerebellum + brainstem region (see module docstring)."""
    brain = mni152_masks["brain"]
    k, j, _ = np.indices(brain.shape, sparse=True)
    return largest_component(brain & (k <= 32) & (j <= 115))


@pytest.fixture(scope="module")
def predictor(litemedsam, mni152):
    return SlicePredictor(litemedsam, mni152[0])


@pytest.fixture(scope="module")
def seeded(predictor, cerebellum):
    """One propagation from the tight reference box on slice 16, both ways over slices 12..20."""
    calls = []
    result = propagate(predictor, 0, SEED, seed_prompt=Prompt(box=box_from_mask(cerebellum[SEED])),
                       slice_range=RANGE,
                       progress=lambda done, total: calls.append((done, total)))
    return result, calls


def _slab(mask: np.ndarray, first: int, last: int) -> np.ndarray:
    return mask[first:last + 1]


def test_propagation_recovers_cerebellum(seeded, cerebellum):
    result, calls = seeded
    assert result.mask.shape == cerebellum.shape and result.mask.dtype == bool
    assert result.slices == list(range(RANGE[0], RANGE[1] + 1))
    assert not result.mask[: RANGE[0]].any() and not result.mask[RANGE[1] + 1:].any()
    # measured 0.95 on slices 12..20
    assert dice(_slab(result.mask, *RANGE), _slab(cerebellum, *RANGE)) > 0.85
    assert result.stop_reasons == {"up": "range_end", "down": "range_end"}
    assert result.last == {"up": RANGE[1], "down": RANGE[0]}
    assert sorted(result.scores) == result.slices and all(0 < s <= 1 for s in result.scores.values())
    assert result.slices_visited == 9  # the seed and 8 neighbours
    assert result.encoder_calls <= result.slices_visited
    assert not result.cancelled
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and calls[-1][0] == calls[-1][1] == 8


def test_cached_slices_give_the_same_result(seeded, predictor, cerebellum):
    result, _ = seeded
    again = propagate(predictor, 0, SEED, seed_prompt=Prompt(box=box_from_mask(cerebellum[SEED])),
                      slice_range=RANGE)
    assert again.encoder_calls == 0  # every slice is cached now
    np.testing.assert_array_equal(again.mask, result.mask)


def test_cancel_leaves_a_consistent_partial_result(seeded, predictor):
    full, _ = seeded
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 3  # three slices, then stop

    result = propagate(predictor, 0, SEED, seed_mask=full.mask[SEED], slice_range=RANGE, cancel=cancel)
    assert result.cancelled
    assert set(result.stop_reasons.values()) == {"cancelled"}
    assert result.slices_visited == 3
    # walks alternate up and down: slices 17, 15, 18 are done, each exactly as in the full run
    assert result.slices == [15, 16, 17, 18]
    assert result.last == {"up": 18, "down": 15}
    assert "before slice 19" in result.stop_details["up"] and "before slice 14" in result.stop_details["down"]
    for index in result.slices:
        assert dice(result.mask[index], full.mask[index]) > 0.97


def test_direction_and_range_limits(seeded, predictor):
    full, _ = seeded
    up = propagate(predictor, 0, SEED, seed_mask=full.mask[SEED], direction="up", slice_range=(SEED, 18))
    assert up.slices == [16, 17, 18]
    assert up.stop_reasons == {"up": "range_end", "down": "not_requested"}
    down = propagate(predictor, "K", SEED, seed_mask=full.mask[SEED], direction="down", slice_range=(14, 20))
    assert down.slices == [14, 15, 16] and down.stop_reasons["down"] == "range_end"


def test_fill_between_two_key_slices(seeded, predictor, cerebellum):
    keys = {13: cerebellum[13], 19: cerebellum[19]}
    result = propagate_between(predictor, 0, keys, slice_range=(13, 19), extend=False)
    assert result.slices == list(range(13, 20))
    np.testing.assert_array_equal(result.mask[13], cerebellum[13])  # key slices are kept as given
    np.testing.assert_array_equal(result.mask[19], cerebellum[19])
    assert result.slices_visited == 5  # slices 14..18, each decoded once
    assert set(result.stop_reasons.values()) == {"met"}
    assert sorted(result.stop_reasons) == ["13 up", "19 down"]
    # walks from both ends meet in the middle
    assert result.last["13 up"] in (15, 16) and result.last["19 down"] in (16, 17)
    assert dice(result.mask[14:19], cerebellum[14:19]) > 0.85  # measured 0.95


def test_key_slices_are_embedded_only_for_a_walk_that_needs_them(litemedsam, mni152, cerebellum):
    """A key slice's image features (the anchor of the cues) are read when its walk first decodes a slice: keys
    with nothing between them cost no encode, and each key is embedded once however many walks start from it."""
    predictor = SlicePredictor(litemedsam, mni152[0])
    adjacent = propagate_between(predictor, 0, {14: cerebellum[14], 15: cerebellum[15]}, extend=False)
    assert adjacent.encoder_calls == 0 and adjacent.slices == [14, 15]
    one_gap = propagate_between(predictor, 0, {14: cerebellum[14], 16: cerebellum[16]}, extend=False)
    assert one_gap.slices_visited == 1 and one_gap.encoder_calls == 2  # slice 15, then its walk's key (14)
    assert sorted(one_gap.cues) == [15]


def test_between_with_an_empty_key_and_extension(seeded, predictor, cerebellum):
    """An empty key slice marks where the structure is absent: walks stop before it."""
    keys = {15: cerebellum[15], 18: np.zeros_like(cerebellum[18])}
    result = propagate_between(predictor, 0, keys, slice_range=(13, 20))
    assert result.slices == [13, 14, 15, 16, 17]
    assert result.stop_reasons == {"15 up": "met", "15 down": "range_end"}


def test_affected_range():
    keys = [10, 20, 30]
    assert affected_range(keys, 20, (0, 50)) == (10, 30)
    assert affected_range(keys + [25], 25, (0, 50)) == (20, 30)
    assert affected_range(keys, 10, (0, 50)) == (0, 20)
    assert affected_range(keys, 30, (5, 40)) == (20, 40)
    assert affected_range([], 7, (0, 9)) == (0, 9)
    with pytest.raises(InputError):
        affected_range(keys, 60, (0, 50))


def test_selection_option_chooses_every_predicted_slice(predictor, cerebellum):
    """``PropagationOptions.selection`` picks the seed prompt's mask and each walked slice's (single by default:
    measured, docs/accuracy.md); a bad rule, or box_fit without a box, is refused before any work."""
    box = box_from_mask(cerebellum[SEED])
    for selection in ("single", "box_fit"):
        result = propagate(predictor, 0, SEED, seed_prompt=Prompt(box=box), direction="up",
                           slice_range=(SEED, SEED + 1), options=PropagationOptions(selection=selection))
        seed = predictor.predict(0, SEED, Prompt(box=box), selection=selection)
        np.testing.assert_array_equal(result.mask[SEED], seed.mask)
        first_step = box_fraction(PropagationOptions(), int(seed.mask.sum()), None)
        walked = predictor.predict(0, SEED + 1, next_prompt(seed.mask, None, frozenset({"box"}), PropagationOptions(),
                                                            first_step), selection=selection)
        assert result.slices == [SEED, SEED + 1] and dice(result.mask[SEED + 1], walked.mask) > 0.99
    assert PropagationOptions().selection == "single"
    with pytest.raises(InputError, match="selection must be one of"):
        propagate(predictor, 0, SEED, seed_prompt=Prompt(box=box), options=PropagationOptions(selection="best"))
    points_model = dataclasses.replace(predictor.model.spec, point_prompts=True)
    with pytest.raises(InputError, match="box_fit chooses by the box"):
        PropagationOptions(prompt="points", selection="box_fit").check(points_model)


def test_stop_criteria_on_masks():
    previous = np.zeros((40, 40), bool)
    previous[10:20, 10:20] = True
    same = previous.copy()
    options = PropagationOptions(min_area=5, min_score=0.5, min_iou=0.5, max_area_ratio=2.0)
    assert stop_reason(same, 0.9, previous, options) is None
    assert stop_reason(np.zeros_like(previous), 0.9, previous, options)[0] == "empty"
    assert stop_reason(same, 0.3, previous, options)[0] == "low_score"
    shifted = np.roll(previous, 7, axis=1)
    assert stop_reason(shifted, 0.9, previous, options)[0] == "low_iou"
    grown = np.zeros_like(previous)
    grown[8:25, 8:25] = True  # 289 px > 2 x 100, IoU 0.35: the IoU criterion fires first
    assert stop_reason(grown, 0.9, previous, options)[0] == "low_iou"
    assert stop_reason(grown, 0.9, previous, PropagationOptions(max_area_ratio=2.0))[0] == "area_jump"
    defaults = PropagationOptions()  # empty (< 1 px) and IoU < 0.25
    assert stop_reason(grown, 0.1, previous, defaults) is None
    assert stop_reason(shifted, 0.9, previous, defaults)[0] == "low_iou"  # IoU 30 / 170


def test_prompt_helpers():
    mask = np.zeros((30, 60), bool)
    mask[5:25, 5:25] = True  # two square lobes joined by a thin bar
    mask[10:20, 35:55] = True
    mask[14:16, 25:35] = True
    points = interior_points(mask, 2)
    assert len(points) == 2 and all(mask[int(y), int(x)] for x, y in points)
    assert {int(x) < 25 for x, _ in points} == {True, False}  # one point per lobe
    box = grown_box(mask, 2, 0.1)
    np.testing.assert_allclose(box, [0, 1, 59, 28])  # x: 2 + 0.1 * 50 px, clipped; y: 2 + 0.1 * 20 px
    outside = exterior_points(mask, box, 1)
    assert len(outside) == 1 and not mask[int(outside[0][1]), int(outside[0][0])]
    logits = np.zeros((256, 256), np.float32)
    prompt = next_prompt(mask, logits, frozenset({"box", "mask"}),
                         PropagationOptions(box_margin=2, margin_unit="slice", box_fraction=0.1))
    np.testing.assert_allclose(prompt.box, box)
    # the default unit: pixels of the model's 256 px input, onto which the slice's longer side is scaled
    assert margin_pixels(PropagationOptions(box_margin=6), mask.shape) == pytest.approx(6 * max(mask.shape) / 256)
    assert prompt.mask_input is logits or np.array_equal(prompt.mask_input, logits)
    assert len(prompt.points) == 0
    with_points = next_prompt(mask, None, frozenset({"box", "points"}), PropagationOptions())
    assert with_points.labels.tolist() == [1, 0] and with_points.mask_input is None


@pytest.fixture
def spied(litemedsam, predictor):
    """(predictor, prompts): a copy of LiteMedSAM marked as taking points that records every prompt it
    gets and decodes only its box and mask input (the real LiteMedSAM refuses points), sharing the
    module predictor's cached embeddings. What reaches the model is tested here, not mask quality."""
    model = copy.copy(litemedsam)
    model.spec = dataclasses.replace(litemedsam.spec, point_prompts=True)
    prompts = []

    def decode_candidates(embedding, prompt):
        prompts.append(prompt)
        return litemedsam.decode_candidates(embedding, Prompt(box=prompt.box, mask_input=prompt.mask_input))

    model.decode_candidates = decode_candidates
    return SlicePredictor(model, predictor.volume, cache=predictor.cache), prompts


def test_points_and_mask_input_reach_the_model(seeded, spied, cerebellum):
    spy, prompts = spied
    seed_mask = cerebellum[SEED]
    propagate(spy, 0, SEED, seed_mask=seed_mask, direction="up", slice_range=(SEED, SEED + 1),
              options=PropagationOptions(prompt="box+points", include_points=2, exclude_points=1))
    assert spy.encoder_calls == 0  # same model weights and volume: the cached embeddings are reused
    (prompt,) = prompts
    assert prompt.labels.tolist() == [1, 1, 0] and prompt.box is not None and prompt.mask_input is None
    inside = [bool(seed_mask[int(y), int(x)]) for x, y in prompt.points]
    assert inside == [True, True, False]
    x0, y0, x1, y1 = prompt.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in prompt.points)
    prompts.clear()
    propagate(spy, 0, SEED, seed_prompt=Prompt(box=box_from_mask(seed_mask)), direction="up",
              slice_range=(SEED, SEED + 1), options=PropagationOptions(prompt="box+mask"))
    seed_prompt, next_one = prompts
    assert seed_prompt.mask_input is None and next_one.mask_input is not None
    assert next_one.mask_input.shape == (256, 256) and len(next_one.points) == 0


def test_bad_arguments(predictor, cerebellum):
    seed_mask = cerebellum[SEED]
    with pytest.raises(PromptError, match="empty"):
        propagate(predictor, 0, SEED, seed_mask=np.zeros_like(seed_mask))
    with pytest.raises(InputError, match="outside the volume"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, slice_range=(10, 500))
    with pytest.raises(InputError, match="inverted"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, slice_range=(20, 10))
    with pytest.raises(InputError, match="outside the slice range"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, slice_range=(0, 10))
    with pytest.raises(PromptError, match="exactly one seed"):
        propagate(predictor, 0, SEED)
    with pytest.raises(PromptError, match="exactly one seed"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, seed_prompt=Prompt(box=(0, 0, 5, 5)))
    with pytest.raises(InputError, match="shape"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask[:-1])
    with pytest.raises(InputError, match="direction"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, direction="sideways")
    with pytest.raises(InputError, match="axis"):
        propagate(predictor, 3, SEED, seed_mask=seed_mask)
    with pytest.raises(PromptError, match="box prompts only"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, options=PropagationOptions(prompt="box+points"))
    with pytest.raises(InputError, match="unknown prompt part"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, options=PropagationOptions(prompt="box+scribble"))
    with pytest.raises(PromptError, match="every key slice is empty"):
        propagate_between(predictor, 0, {3: np.zeros_like(seed_mask)})
    with pytest.raises(InputError, match="outside the slice range"):
        propagate_between(predictor, 0, {3: seed_mask}, slice_range=(5, 9))
    with pytest.raises(InputError, match=r"slice range is \(FIRST, LAST\)"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, slice_range=(9, 10, 11))
    with pytest.raises(InputError, match="first slice must be a whole number"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, slice_range=(9.7, 30))
    with pytest.raises(InputError, match="a key slice must be a whole number"):
        propagate_between(predictor, 0, {str(SEED): seed_mask})
    with pytest.raises(InputError, match="options must be PropagationOptions"):
        propagate(predictor, 0, SEED, seed_mask=seed_mask, options=None)
    for bad in (1.5, "3", True):
        with pytest.raises(InputError, match="slice must be a whole number"):
            predictor.predict(0, bad, Prompt(box=(0, 0, 5, 5)))


def test_every_option_is_checked_for_its_kind_and_range():
    spec = get_spec("litemedsam")
    for fields, message in ((dict(box_margin="x"), "box_margin must be a number"),
                            (dict(min_area=1.5), "min_area must be a whole number"),
                            (dict(fill_holes=1), "fill_holes must be True or False"),
                            (dict(cleanup=3), "cleanup must be text"),
                            (dict(min_iou=5), r"min_iou must be in \[0, 1\]"),
                            (dict(min_iou=float("nan")), "min_iou must be in"),
                            (dict(min_score=-0.1), "min_score must be in")):
        with pytest.raises(InputError, match=message):
            PropagationOptions(**fields).check(spec)
    PropagationOptions(min_iou=None, min_score=0.5, box_margin=np.float32(3), min_area=np.int64(2)).check(spec)


def test_walk_stops_at_the_top_of_the_brain(predictor, mni152_masks):
    """Without a range, the upward walk from near the top of the brain stops by itself.

    LiteMedSAM keeps returning masks (score ~0.77) on the empty slices above the brain; the
    criteria stop the walk there: the box over the black background above the brain holds no
    image structure, or the mask loses the neighbour (IoU), or it is empty.
    """
    brain = mni152_masks["brain"]
    top = int(np.flatnonzero(brain.any(axis=(1, 2)))[-1])  # 154
    seed = top - 3
    result = propagate(predictor, 0, seed, seed_prompt=Prompt(box=box_from_mask(take_slice(brain, 0, seed))),
                       direction="up")
    assert result.stop_reasons["up"] in {"no_structure", "empty", "low_iou"}
    assert result.last["up"] <= top and not result.mask[top + 1:].any()
    assert dice(result.mask[seed:], brain[seed:]) > 0.6  # measured 0.74
