"""Slice predictor on real and synthetic images with the real LiteMedSAM."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import dice

from SAMSegmenterLib.cache import EmbeddingCache
from SAMSegmenterLib.errors import InputError, PromptError
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt, box_from_mask
from SAMSegmenterLib.volume import put_slice, take_slice


def _ellipse(shape, center, radii):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return ((rr - center[0]) / radii[0]) ** 2 + ((cc - center[1]) / radii[1]) ** 2 <= 1.0


@pytest.fixture(scope="module")
def phantom():
    """A 3-slice volume [k, j, i] with a bright ellipse (rows = j, cols = i) on noisy background."""
    rng = np.random.default_rng(1)
    target = _ellipse((150, 200), (60, 120), (30, 45))
    volume = 100 + 10 * rng.standard_normal((3, 150, 200))
    volume[1][target] += 200
    return volume.astype(np.float32), target


def test_box_on_synthetic_ellipse(litemedsam, phantom):
    volume, target = phantom
    predictor = SlicePredictor(litemedsam, volume)
    result = predictor.predict(0, 1, Prompt(box=box_from_mask(target)))
    assert result.mask.shape == (150, 200) and result.mask.dtype == bool
    assert dice(result.mask, target) > 0.95
    assert 0.5 < result.score <= 1.0
    assert result.low_res_logits.shape == (256, 256)


def test_cache_and_mask_input(litemedsam, phantom):
    volume, target = phantom
    cache = EmbeddingCache()
    predictor = SlicePredictor(litemedsam, volume, cache=cache)
    box = Prompt(box=box_from_mask(target) + [-10, -10, 10, 10])
    first = predictor.predict(0, 1, box)
    assert dice(first.mask, target) > 0.95
    predictor.predict(0, 1, Prompt(box=box_from_mask(target)))
    assert predictor.encoder_calls == 1
    # the previous low-resolution mask as extra input keeps the answer
    refined = predictor.predict(0, 1, Prompt(box=box.box, mask_input=first.low_res_logits))
    assert dice(refined.mask, target) > 0.95
    # a second predictor on the same content shares the cache (content fingerprint)
    other = SlicePredictor(litemedsam, volume.copy(), cache=cache)
    other.predict(0, 1, box)
    assert other.encoder_calls == 0 and cache.hits >= 1


def test_a_slice_is_embedded_once_for_its_prompt_and_features_without_a_cache(litemedsam, phantom):
    """A propagated slice reads its embedding twice (to decode, then for its mask features): with a cache that keeps
    nothing, the predictor's last embedding serves the second read."""
    from SAMSegmenterLib.propagation.slice_quality import surround

    volume, target = phantom
    predictor = SlicePredictor(litemedsam, volume, cache=EmbeddingCache(max_bytes=0))
    mask = predictor.predict(0, 1, Prompt(box=box_from_mask(target))).mask
    assert predictor.mask_features(0, 1, mask, surround(mask)) is not None
    assert predictor.encoder_calls == 1 and len(predictor.cache) == 0
    predictor.embedding(0, 2)
    predictor.embedding(0, 1)  # no longer the last one: embedded again
    assert predictor.encoder_calls == 3


def test_box_only_model_refuses_points(litemedsam, phantom):
    """LiteMedSAM was trained on boxes: points would silently give an empty mask, so they are refused."""
    volume, target = phantom
    predictor = SlicePredictor(litemedsam, volume)
    with pytest.raises(PromptError, match="box prompts only"):
        predictor.predict(0, 1, Prompt(points=[(120, 60)], labels=[1]))
    with pytest.raises(PromptError, match="box prompts only"):
        predictor.predict(0, 1, Prompt(points=[(120, 60)], labels=[1], box=box_from_mask(target)))


def test_four_candidates_and_the_selection_rules(litemedsam, phantom):
    """One decoder pass gives the single output and the three multimask outputs; each rule picks one of them."""
    volume, target = phantom
    predictor = SlicePredictor(litemedsam, volume)
    prompt = Prompt(box=box_from_mask(target))
    default = predictor.predict(0, 1, prompt)
    assert default.masks.shape == (4, 150, 200) and default.scores.shape == (4,)
    # a clear object: a multimask output reproduces the single output, which box_fit then keeps
    assert (default.selection, default.index) == ("box_fit", 0) and "unambiguous" in default.reason
    assert np.array_equal(default.mask, default.masks[default.index])
    assert default.score == pytest.approx(float(default.scores[default.index]))
    embedding = predictor.embedding(0, 1)
    single, multi = litemedsam.decode(embedding, prompt), litemedsam.decode(embedding, prompt, multimask=True)
    logits = np.concatenate([single.low_res_logits, multi.low_res_logits])
    np.testing.assert_allclose(default.low_res_logits, logits[default.index], atol=1e-4)
    for rule, index in (("single", 0), ("best_score", 1 + int(np.argmax(multi.scores)))):
        result = predictor.predict(0, 1, prompt, selection=rule)
        assert (result.selection, result.index) == (rule, index)
    chosen = predictor.predict(0, 1, prompt, selection="single")
    np.testing.assert_allclose(chosen.low_res_logits, logits[0], atol=1e-4)
    np.testing.assert_allclose(chosen.scores, np.concatenate([single.scores, multi.scores]), atol=1e-5)
    assert np.mean(chosen.masks != np.concatenate([single.masks, multi.masks])) < 1e-4  # float rounding at most
    reference = copy.copy(litemedsam)
    reference.fast_decoder = None  # segment-anything's own decoder gives the same four
    np.testing.assert_allclose(reference.decode_candidates(embedding, prompt).low_res_logits, logits, atol=1e-3)
    assert predictor.encoder_calls == 1
    with pytest.raises(PromptError, match="unknown mask selection 'multimask'"):
        predictor.predict(0, 1, prompt, selection="multimask")


def test_another_candidate_can_be_chosen_with_its_own_logits(litemedsam, phantom):
    """A walk may keep another of the four candidates (propagation's ``candidate_margin``): ``choose`` swaps in that
    candidate's mask, score and logits; a prediction without the candidates' logits (from the service) refuses."""
    volume, target = phantom
    predictor = SlicePredictor(litemedsam, volume)
    prompt = Prompt(box=box_from_mask(target))
    single = predictor.predict(0, 1, prompt, selection="single")
    assert single.candidate_logits.shape == (4, 256, 256)
    best = predictor.predict(0, 1, prompt, selection="best_score")
    chosen = single.choose(best.index, "seed_features", "a test")
    assert (chosen.index, chosen.selection, chosen.reason) == (best.index, "seed_features", "a test")
    assert np.array_equal(chosen.mask, best.mask) and chosen.score == pytest.approx(best.score)
    np.testing.assert_array_equal(chosen.low_res_logits, best.low_res_logits)
    assert np.array_equal(single.mask, single.masks[0]) and single.index == 0  # the original is unchanged
    with pytest.raises(ValueError, match="candidate 4 does not exist"):
        single.choose(4, "seed_features", "")
    from SAMSegmenterLib.service.protocol import prediction_from_json, prediction_to_json

    sent = prediction_to_json(single, logits=True)
    assert "candidate_logits" not in sent  # never sent: a megabyte the client has no use for
    received = prediction_from_json(sent)
    assert received.candidate_logits is None and np.array_equal(received.mask, single.mask)
    with pytest.raises(ValueError, match="needs the candidates' logits"):
        received.choose(1, "seed_features", "")


def test_real_ct_vertebra(litemedsam, ct_small):
    """pydicom's CT_small: the vertebral body (bone > 200 HU, largest component in the lower half)."""
    import SimpleITK as sitk

    volume, _ = ct_small
    image = volume[0]
    bone = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(
        sitk.GetImageFromArray((image > 200).astype(np.uint8))), sortByObjectSize=True)) == 1
    assert 200 < bone.sum() < 3000
    predictor = SlicePredictor(litemedsam, volume, window="bone")
    result = predictor.predict(0, 0, Prompt(box=box_from_mask(bone)))
    assert dice(result.mask, bone) > 0.7  # measured 0.733 (the threshold ground truth is imperfect)


def test_mni152_slices_along_each_axis(litemedsam, mni152, mni152_masks):
    """Box prompts on the brain mask of the MNI152 template, one slice per axis (best of the four candidates)."""
    volume, _ = mni152
    brain = mni152_masks["brain"]
    predictor = SlicePredictor(litemedsam, volume)
    for axis in (0, 1, 2):
        index = volume.shape[axis] // 2
        truth = take_slice(brain, axis, index)
        result = predictor.predict(axis, index, Prompt(box=box_from_mask(truth)))
        assert result.mask.shape == truth.shape
        best = max(dice(m, truth) for m in result.masks)
        assert best > 0.75, (axis, best)


def test_bad_prompts_and_slices(litemedsam, phantom):
    volume, _ = phantom
    predictor = SlicePredictor(litemedsam, volume)
    with pytest.raises(PromptError, match="empty prompt"):
        predictor.predict(0, 1, Prompt())
    with pytest.raises(PromptError, match="outside"):
        predictor.predict(0, 1, Prompt(box=(10, 10, 250, 50)))
    with pytest.raises(PromptError, match="inverted"):
        predictor.predict(0, 1, Prompt(box=(50, 10, 20, 50)))
    with pytest.raises(PromptError, match="outside"):
        predictor.predict(0, 1, Prompt(points=[(-1, 5)]))
    with pytest.raises(PromptError, match="only exclude"):
        Prompt(points=[(5, 5)], labels=[0]).validate((150, 200))
    with pytest.raises(InputError, match="slice 3 is outside"):
        predictor.predict(0, 3, Prompt(box=(1, 1, 5, 5)))
    with pytest.raises(InputError, match="3D volume"):
        SlicePredictor(litemedsam, np.zeros((4, 4)))
    with pytest.raises(InputError, match="real numbers"):
        SlicePredictor(litemedsam, volume.astype(np.complex64))
    with pytest.raises(PromptError, match="must be a Prompt"):
        predictor.predict(0, 1, None)
    for fields, message in ((dict(box=("a", "b", "c", "d")), "a box must be numbers"),
                            (dict(points=[1, 2, 3]), r"\(x, y\) pairs, got 3 numbers"),
                            (dict(points=[(1, 2), (3,)]), "points must be numbers"),
                            (dict(points=[(5, 5)], labels=[0.5]), r"must be 1 \(include\) or 0"),
                            (dict(mask_input=np.full((256, 256), np.nan)), "NaN or infinite logits")):
        with pytest.raises(PromptError, match=message):
            Prompt(**fields)
    assert predictor.encoder_calls == 0  # nothing was embedded for invalid requests
    mask = SlicePredictor(litemedsam, volume > volume.mean()).predict(0, 1, Prompt(box=(10, 10, 60, 60))).mask
    assert mask.shape == volume.shape[1:]  # a boolean volume is segmented as its 0/1 grey levels


def test_prefetch_fills_cache(litemedsam, phantom):
    volume, _ = phantom
    predictor = SlicePredictor(litemedsam, volume)
    predictor.prefetch(0, 2)
    embedding = predictor.embedding(0, 2)
    assert predictor.is_cached(0, 2) and predictor.encoder_calls == 1
    assert predictor.embedding(0, 2) is embedding
    predictor.close()


def test_take_and_put_slice_orientation():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert take_slice(volume, 0, 1).shape == (3, 4)
    assert take_slice(volume, 1, 2).shape == (2, 4)
    assert take_slice(volume, 2, 3).shape == (2, 3)
    assert take_slice(volume, 2, 3)[1, 2] == volume[1, 2, 3]  # row = k, column = j
    out = np.zeros_like(volume)
    put_slice(out, 1, 2, np.ones((2, 4)))
    assert out[:, 2, :].all() and out.sum() == 8


def test_cache_memory_bound(litemedsam, phantom):
    volume, _ = phantom
    one = litemedsam.encode(np.zeros((8, 8), np.float32)).nbytes
    cache = EmbeddingCache(max_bytes=2 * one)
    predictor = SlicePredictor(litemedsam, volume, cache=cache)
    for index in range(3):
        predictor.embedding(0, index)
    assert len(cache) == 2 and cache.nbytes == 2 * one
    assert not predictor.is_cached(0, 0) and predictor.is_cached(0, 2)


def test_mask_features_follow_the_tissue(litemedsam, mni152, mni152_masks):
    """The image features in and around a mask (what the propagation's ``features`` stop and confidence read): the
    same tissue on neighbouring slices of the template is closer than white and grey matter on one slice."""
    from SAMSegmenterLib.propagation.slice_quality import feature_similarity, prototype_iou, surround

    volume, _ = mni152
    white = mni152_masks["wm"] & ~mni152_masks["gm"]
    grey = mni152_masks["gm"] & ~mni152_masks["wm"]
    predictor = SlicePredictor(litemedsam, volume)
    k = 90
    features = {(name, index): predictor.mask_features(0, index, mask[index], surround(mask[index]))
                for name, mask in (("white", white), ("grey", grey)) for index in (k, k + 3)}
    inside = features["white", k].inside
    assert inside.shape == (256,) and inside.dtype == np.float64
    across = feature_similarity(features["white", k], features["grey", k])
    # measured (2026-12-07): 0.99 along each tissue, 0.84 across
    assert feature_similarity(features["white", k], features["white", k + 3]) > across + 0.05
    assert feature_similarity(features["grey", k], features["grey", k + 3]) > across + 0.05
    # the cells that look like the seed's white matter rather than its surround are white matter three slices on
    assert prototype_iou(features["white", k + 3], features["white", k]) > prototype_iou(features["grey", k + 3],
                                                                                        features["white", k])
    embedding = predictor.embedding(0, k)
    whole = embedding.cell_coverage(np.ones(embedding.original_size, bool))
    stride = max(embedding.input_size) // whole.shape[0]
    assert whole.sum() * stride ** 2 == np.prod(embedding.input_size)  # the padding is never covered
    assert whole[whole > 0].max() == 1.0
    np.testing.assert_allclose(embedding.cell_coverage(white[k]).sum() * stride ** 2,
                               white[k].sum() * np.prod(embedding.input_size) / np.prod(embedding.original_size),
                               rtol=0.02)
    region = surround(white[k])
    assert embedding.mask_features(np.zeros_like(region), region) is None  # nothing to judge
    with pytest.raises(ValueError, match="slice's shape"):
        embedding.mask_features(white[k][:-1], region[:-1])


def test_cell_coverage_for_every_input_geometry():
    """The mask's share of each feature cell, for LiteMedSAM's 256 px input (a slice larger and one smaller than it)
    and SAM's 1024 px input, kept aspect or stretched (MedSAM): what the slice's pixels cover, the padding never."""
    import torch

    from SAMSegmenterLib.models.embedding import ImageEmbedding

    rng = np.random.default_rng(5)
    features = torch.zeros(1, 256, 64, 64)
    for shape, input_size in (((512, 400), (256, 200)), ((122, 100), (256, 210)), ((300, 512), (600, 1024)),
                              ((300, 512), (1024, 1024))):
        embedding = ImageEmbedding(features, shape, input_size)
        stride = max(input_size) // 64
        whole = embedding.cell_coverage(np.ones(shape, bool))
        reached = (-(-input_size[0] // stride), -(-input_size[1] // stride))  # cells the image reaches
        assert whole[:reached[0], :reached[1]].min() > 0 and not whole[reached[0]:].any()
        assert not whole[:, reached[1]:].any()
        mask = rng.random(shape) < 0.3
        # every input pixel samples exactly one slice pixel: a mask's and its complement's shares add up to the whole
        np.testing.assert_allclose(embedding.cell_coverage(mask) + embedding.cell_coverage(~mask), whole)
        corner = np.zeros(shape, bool)
        corner[: shape[0] // 4, : shape[1] // 4] = True
        share = embedding.cell_coverage(corner)
        assert share[0, 0] == 1.0 and not share[reached[0] // 2:].any()
    # a line one pixel thin on a slice twice the input's size can fall between the sampled pixels: not judged
    line = np.zeros((512, 512), bool)
    line[100, 50:400] = True
    assert ImageEmbedding(features, (512, 512), (256, 256)).mask_features(line, np.ones_like(line)) is None
