"""Volume propagation: from one or more segmented slices to a 3D mask.

A volume is indexed ``[k, j, i]``; slices along ``axis`` are cut as in
:func:`volume.take_slice` (2D arrays of rows x columns, prompt ``x`` = column,
``y`` = row). "up" means increasing slice index, "down" decreasing.

Each next slice is prompted from its neighbour's result (:func:`next_prompt`):
the neighbour's box grown by a margin, and optionally include/exclude points
(SAM ViT models only: box-only models such as LiteMedSAM refuse points) and the
neighbour's low-resolution logits as mask input. A walk stops at the first slice
that fails a stop criterion (that slice is left empty) and says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np

from ..errors import InputError, PromptError
from ..metrics import iou
from ..prompts import EXCLUDE, INCLUDE, Prompt, grown_box
from ..volume import parse_axis, put_slice
from ..windowing import box_contrast
from .plan import (
    CLEANUPS,
    DIRECTIONS,
    MODEL_SIDE,
    PROMPT_PARTS,
    CancelCheck,
    Progress,
    PropagationOptions,
    PropagationResult,
    affected_range,
    check_key_walk,
    check_range,
    check_seed_walk,
)
from .postprocess import components_touching, fill_holes, inside_distance, largest_component, outside_distance
from .slice_quality import Anchor, SliceCues, prototype_iou_on, slice_cues, surround, walk_confidence

if TYPE_CHECKING:
    from ..models.embedding import MaskFeatures
    from ..predictor import SlicePrediction, SlicePredictor

__all__ = ["CLEANUPS", "DIRECTIONS", "PROMPT_PARTS", "PropagationOptions", "PropagationResult", "affected_range",
           "box_fraction", "check_range", "clean_slice", "cue_stop", "grown_box", "margin_pixels", "next_box",
           "next_prompt", "propagate", "propagate_between", "seedlike_candidate", "stop_reason", "structure_stop"]


def margin_pixels(options: PropagationOptions, shape: tuple[int, int]) -> float:
    """``options.box_margin`` in pixels of a (rows, columns) slice: as given for the ``slice`` unit; for the
    ``model`` unit, pixels of the model's 256 px input, onto which the slice's longer side is scaled."""
    if options.margin_unit == "slice":
        return float(options.box_margin)
    return float(options.box_margin) * max(shape) / MODEL_SIDE


def _spread_maxima(depth: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` (x, y) maxima of a non-negative (rows, columns) map, each outside the others' reach.

    The highest pixel first; each next one is the highest pixel farther from the chosen
    ones than their own value, so points spread over separate lobes.
    """
    rows, cols = np.indices(depth.shape)
    points: list[tuple[float, float]] = []
    for _ in range(count):
        best = int(np.argmax(depth))
        if depth.flat[best] <= 0:
            break
        y, x = divmod(best, depth.shape[1])
        points.append((float(x), float(y)))
        depth = np.where((rows - y) ** 2 + (cols - x) ** 2 <= depth.flat[best] ** 2, 0.0, depth)
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def interior_points(mask: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` (x, y) points deep inside a (rows, columns) mask: spread distance-transform maxima."""
    return _spread_maxima(inside_distance(mask), count)


def exterior_points(mask: np.ndarray, box: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` (x, y) background points inside ``box`` (x0, y0, x1, y1), farthest from a non-empty ``mask``."""
    x0, y0 = (int(np.ceil(v)) for v in box[:2])
    x1, y1 = (int(np.floor(v)) for v in box[2:])
    in_box = np.zeros(mask.shape, dtype=bool)
    in_box[y0:y1 + 1, x0:x1 + 1] = True
    return _spread_maxima(np.where(in_box, outside_distance(mask), 0.0), count)


def box_fraction(options: PropagationOptions, area: int, previous_area: Optional[int]) -> float:
    """The fraction of the box added on each side for the next slice: ``box_fraction``, plus
    ``shrink_fraction`` unless the neighbour's mask (``area`` pixels) grew from the one before it."""
    grew = previous_area is not None and area > previous_area
    return options.box_fraction + (0.0 if grew else options.shrink_fraction)


def next_box(mask: np.ndarray, options: PropagationOptions, fraction: Optional[float] = None) -> np.ndarray:
    """The box (x0, y0, x1, y1) a slice is prompted with, from its neighbour's non-empty (rows, columns) mask:
    grown by the margin and ``fraction`` of its size per side (default ``options.box_fraction``)."""
    return grown_box(mask, margin_pixels(options, mask.shape), options.box_fraction if fraction is None else fraction)


def next_prompt(mask: np.ndarray, low_res_logits: Optional[np.ndarray], parts: frozenset[str],
                options: PropagationOptions, fraction: Optional[float] = None) -> Prompt:
    """The prompt for a slice from its neighbour's non-empty (rows, columns) mask and (256, 256) logits.

    ``mask`` in ``parts`` adds the logits as mask input when they are known (a slice
    given as a mask has none); fraction: as for :func:`next_box`.
    """
    box = next_box(mask, options, fraction)
    points = np.zeros((0, 2))
    labels = np.zeros(0, dtype=np.int64)
    if "points" in parts:
        inc = interior_points(mask, options.include_points)
        exc = exterior_points(mask, box, options.exclude_points)
        points = np.concatenate([inc, exc])
        labels = np.array([INCLUDE] * len(inc) + [EXCLUDE] * len(exc), dtype=np.int64)
    return Prompt(points, labels, box=box if "box" in parts else None,
                  mask_input=low_res_logits if "mask" in parts else None)


def clean_slice(mask: np.ndarray, previous: Optional[np.ndarray], options: PropagationOptions) -> np.ndarray:
    """Apply ``options.cleanup`` (relative to the neighbour's mask ``previous``) and hole filling."""
    if options.cleanup == "largest":
        mask = largest_component(mask)
    elif options.cleanup == "connected" and previous is not None:
        mask = components_touching(mask, previous)
    return fill_holes(mask) if options.fill_holes else mask


def seedlike_candidate(predictor: SlicePredictor, axis: int, index: int, prediction: SlicePrediction,
                       previous: np.ndarray, anchor: Anchor,
                       options: PropagationOptions
                       ) -> tuple[SlicePrediction, np.ndarray, Optional[MaskFeatures], float]:
    """The prediction a walk keeps on slice ``index``, its mask cleaned against the neighbour's mask ``previous``
    (:func:`clean_slice`), the image features in and around that mask (None where it covers no feature cell) and
    its gain in prototype IoU over ``prediction``'s own choice (0.0 when that is kept).

    With ``options.candidate_margin`` set and the anchor's features known, each of the decoder's other candidates
    is cleaned the same way, and the one whose :func:`slice_quality.prototype_iou` with ``anchor`` is highest
    (computed for all of them from one classification of the slice's feature cells, :func:`prototype_iou_on`)
    replaces ``prediction``'s choice when it beats that choice's by more than the margin (a candidate covering no
    feature cell is never taken). Reads the slice's embedding, which the prediction has just used: no model call.
    """
    mask = clean_slice(prediction.mask, previous, options)

    def kept(chosen: np.ndarray) -> Optional[MaskFeatures]:
        return predictor.mask_features(axis, index, chosen, surround(chosen)) if chosen.any() else None

    if options.candidate_margin is None or anchor.features is None or prediction.candidate_logits is None:
        return prediction, mask, kept(mask), 0.0
    embedding = predictor.embedding(axis, index)
    seed = anchor.features
    alike = embedding.alike_cells(seed.inside, seed.around) if seed.around.any() else None  # once for the slice
    own = prototype_iou_on(embedding, alike, mask, surround(mask)) if mask.any() else None
    best: Optional[tuple[float, int, np.ndarray]] = None
    for n, candidate in enumerate(prediction.masks):
        if n == prediction.index:
            continue
        cleaned = clean_slice(candidate, previous, options)
        value = prototype_iou_on(embedding, alike, cleaned, surround(cleaned)) if cleaned.any() else None
        if value is None:
            continue
        if (own is None or value > own + options.candidate_margin) and (best is None or value > best[0]):
            best = (value, n, cleaned)
    if best is None:
        return prediction, mask, kept(mask), 0.0
    value, n, cleaned = best
    reason = (f"its image features look more like the seed's (prototype IoU {value:.2f}, "
              f"{'no features' if own is None else f'{own:.2f}'} for the {prediction.selection} choice)")
    gain = value - (own if own is not None else 0.0)
    return prediction.choose(n, "seed_features", reason), cleaned, kept(cleaned), gain


def structure_stop(image: np.ndarray, previous: np.ndarray, options: PropagationOptions,
                   fraction: Optional[float] = None) -> Optional[tuple[str, str]]:
    """("no_structure", explanation) when the box grown from the neighbour's mask ``previous`` holds no image
    structure on the next slice (``image``: that slice windowed to [0, 1]), else None; see PropagationOptions."""
    if options.min_contrast is None:
        return None
    contrast = box_contrast(image, next_box(previous, options, fraction))
    if contrast >= options.min_contrast:
        return None
    return "no_structure", (f"the box holds no image structure (intensity spread {contrast:.4f} < "
                            f"{options.min_contrast:.4g} of the window)")


def stop_reason(mask: np.ndarray, score: float, previous: np.ndarray,
                options: PropagationOptions) -> Optional[tuple[str, str]]:
    """(code, explanation) of the first stop criterion a new slice mask fails, or None to accept it."""
    area, prev_area = int(mask.sum()), int(previous.sum())
    if area < options.min_area:
        return "empty", f"mask has {area} pixel(s), fewer than {options.min_area}"
    if options.min_score is not None and score < options.min_score:
        return "low_score", f"score {score:.3f} < {options.min_score:g}"
    if options.min_iou is not None:
        overlap = iou(mask, previous)
        if overlap < options.min_iou:
            return "low_iou", f"IoU with the neighbouring slice {overlap:.3f} < {options.min_iou:g}"
    if options.max_area_ratio is not None:
        ratio = max(area, prev_area) / max(1, min(area, prev_area))
        if ratio > options.max_area_ratio:
            return "area_jump", f"area {prev_area} -> {area} px changes by x{ratio:.2f} > {options.max_area_ratio:g}"
    return None


def cue_stop(cues: SliceCues, confidence: float, options: PropagationOptions) -> Optional[tuple[str, str]]:
    """(code, explanation) when a new slice's cues say the walk has left its structure, else None.

    ``appearance``: the mean intensity inside the mask differs from the seed's by more than
    ``options.max_intensity_shift`` of the seed's spread (the walk has moved onto other tissue);
    ``features``: the cosine of the mask's image features with the seed's is below
    ``options.min_feature_similarity`` (the encoder sees other tissue there);
    ``low_confidence``: the walk's confidence fell below ``options.min_confidence``.
    """
    limit = options.max_intensity_shift
    if limit is not None and cues.intensity_shift > limit:
        return "appearance", (f"mean intensity in the mask differs from the seed's by {cues.intensity_shift:.2f} "
                              f"of its spread (> {limit:g})")
    least = options.min_feature_similarity
    if least is not None and cues.feature_similarity < least:
        return "features", (f"the image features in the mask no longer match the seed's (cosine "
                            f"{cues.feature_similarity:.2f} < {least:g})")
    if options.min_confidence is not None and confidence < options.min_confidence:
        return "low_confidence", f"confidence {confidence:.2f} < {options.min_confidence:g}"
    return None


@dataclass
class _Walk:
    """One chain of slices from a start slice towards ``limit`` (inclusive) in steps of ``step``."""

    name: str
    step: int
    index: int  # last accepted slice
    limit: int
    limit_reason: str
    mask: np.ndarray
    logits: Optional[np.ndarray]
    start: int  # the slice it started from: its anchor (_Run.anchor)
    previous_area: Optional[int] = None  # of the mask accepted before ``mask``
    confidence: float = 1.0  # of the last accepted slice
    lowest: float = 1.0  # lowest own estimate of the walk's slices so far (slice_quality.walk_confidence)
    active: bool = True

    @property
    def next(self) -> int:
        return self.index + self.step

    def remaining(self) -> range:
        return range(self.next, self.limit + self.step, self.step) if self.active else range(0)


class _Run:
    """Shared state of one propagation: output mask, claimed slices, walks, counters, callbacks."""

    def __init__(self, predictor: SlicePredictor, axis: int, options: PropagationOptions,
                 slice_range: tuple[int, int], progress: Optional[Progress], cancel: Optional[CancelCheck]):
        self.predictor = predictor
        self.axis = axis
        if not isinstance(options, PropagationOptions):
            raise InputError(f"options must be PropagationOptions, got {type(options).__name__}")
        self.options = options
        self.parts = options.check(predictor.model.spec)
        self.progress = progress
        self.cancel = cancel
        self.start = time.perf_counter()
        self.calls_before = predictor.encoder_calls
        self.result = PropagationResult(mask=np.zeros(predictor.volume.shape, dtype=bool), axis=axis,
                                        range=slice_range)
        self.claimed: set[int] = set()
        self.start_masks: dict[int, np.ndarray] = {}  # the seed's or key slices' masks the walks start from
        self._anchors: dict[int, Anchor] = {}
        self.walks: list[_Walk] = []
        self.done = 0

    def anchor(self, start: int) -> Anchor:
        """The :class:`Anchor` of the walks from slice ``start`` (in ``start_masks``), made when a walk first needs
        it: its image features embed the slice if it is not cached (a seed or key slice given as a mask)."""
        if start not in self._anchors:
            mask = self.start_masks[start]
            features = self.predictor.mask_features(self.axis, start, mask, surround(mask))
            self._anchors[start] = Anchor.of(self.predictor.slice_image(self.axis, start), mask, features)
        return self._anchors[start]

    def accept(self, index: int, mask: np.ndarray, score: Optional[float]) -> None:
        put_slice(self.result.mask, self.axis, index, mask)
        self.claimed.add(index)
        if score is not None:
            self.result.scores[index] = score

    def stop(self, walk: _Walk, reason: str, detail: str) -> None:
        walk.active = False
        self.result.stop_reasons[walk.name] = reason
        self.result.stop_details[walk.name] = detail
        self.result.last[walk.name] = walk.index

    def total(self) -> int:
        pending = set()
        for walk in self.walks:
            pending.update(i for i in walk.remaining() if i not in self.claimed)
        return self.done + len(pending)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total())

    def _advance(self, walk: _Walk) -> None:
        """Segment the slice after ``walk``'s last one, or stop the walk."""
        index = walk.next
        if index in self.claimed:
            self.stop(walk, "met", f"slice {index} is already segmented")
            return
        image = self.predictor.slice_image(self.axis, index)
        fraction = box_fraction(self.options, int(walk.mask.sum()), walk.previous_area)
        flat = structure_stop(image, walk.mask, self.options, fraction)
        if flat is not None:
            self.stop(walk, flat[0], f"slice {index}: {flat[1]}")
            self.done += 1
            return
        prompt = next_prompt(walk.mask, walk.logits, self.parts, self.options, fraction)
        prediction = self.predictor.predict(self.axis, index, prompt, selection=self.options.selection)
        self.result.decodes += 1
        self.result.slices_visited += 1
        anchor = self.anchor(walk.start)
        prediction, mask, features, gain = seedlike_candidate(self.predictor, self.axis, index, prediction,
                                                              walk.mask, anchor, self.options)
        failed = stop_reason(mask, prediction.score, walk.mask, self.options)
        confidence, lowest = walk.confidence, walk.lowest
        if failed is None:
            cues = slice_cues(image, mask, walk.mask, anchor, prediction.score,
                              prediction.low_res_logits, prompt.box, prediction.masks, prediction.index, features,
                              gain)
            confidence, lowest = walk_confidence(walk.lowest, cues)
            failed = cue_stop(cues, confidence, self.options)
        if failed is not None:
            self.stop(walk, failed[0], f"slice {index}: {failed[1]}")
        else:
            self.accept(index, mask, prediction.score)
            self.result.cues[index] = cues.as_dict()
            self.result.confidence[index] = round(confidence, 4)
            walk.previous_area = int(walk.mask.sum())
            walk.index, walk.mask, walk.logits = index, mask, prediction.low_res_logits
            walk.confidence, walk.lowest = confidence, lowest
            if index == walk.limit:
                self.stop(walk, walk.limit_reason, f"reached slice {index}")
        self.done += 1

    def run(self) -> PropagationResult:
        """Advance the active walks in turn (round robin) until all have stopped or the caller cancels."""
        for walk in self.walks:
            if (walk.limit - walk.next) * walk.step < 0:
                self.stop(walk, walk.limit_reason, f"slice {walk.index} is the last of the range")
        self._report()
        turn = 0
        while any(w.active for w in self.walks):
            if self.cancel is not None and self.cancel():
                self.result.cancelled = True
                for walk in self.walks:
                    if walk.active:
                        self.stop(walk, "cancelled", f"cancelled before slice {walk.next}")
                break
            active = [w for w in self.walks if w.active]
            walk = active[turn % len(active)]
            self._advance(walk)
            turn += 1
            self._report()
        self.result.encoder_calls = self.predictor.encoder_calls - self.calls_before
        self.result.seconds = time.perf_counter() - self.start
        return self.result


def _check_mask(predictor: SlicePredictor, axis: int, index: int, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    shape = predictor.slice_shape(axis)
    if mask.shape != shape:
        raise InputError(f"mask for slice {index} has shape {mask.shape}; slices along axis {'KJI'[axis]} "
                         f"are {shape} (rows, columns)")
    return mask.astype(bool)


def _limits(first: int, last: int, count: int) -> tuple[str, str]:
    return ("volume_end" if first == 0 else "range_end"), ("volume_end" if last == count - 1 else "range_end")


def propagate(predictor: SlicePredictor, axis: int | str, seed_index: int, seed_mask: Optional[np.ndarray] = None,
              seed_prompt: Optional[Prompt] = None, direction: str = "both",
              slice_range: Optional[tuple[int, int]] = None, options: PropagationOptions = PropagationOptions(),
              progress: Optional[Progress] = None, cancel: Optional[CancelCheck] = None) -> PropagationResult:
    """Segment a structure through the volume from one seed slice.

    Args:
        predictor: the volume [k, j, i] with its model (a SlicePredictor, or a service's RemoteVolume).
        axis: 0/"K", 1/"J" or 2/"I": the slices walked (as in :meth:`SlicePredictor.predict`).
        seed_index: the seed slice along ``axis``.
        seed_mask: the seed slice's (rows, columns) bool mask, or
        seed_prompt: a :class:`Prompt` (slice pixels) segmented on the seed slice first, its mask chosen by
            ``options.selection`` (exactly one of the two seeds).
        direction: ``up`` (increasing index), ``down`` or ``both``.
        slice_range: (first, last) inclusive, containing ``seed_index`` (default: the whole axis).
        options: per-slice prompt, clean-up and stop criteria (:class:`PropagationOptions`).
        progress: progress(done, total), called after each slice.
        cancel: polled before each slice; when it returns True the walks stop.

    Returns:
        A :class:`PropagationResult`: ``mask`` (k, j, i) bool, ``slices``, per-slice ``scores``, per-walk
        ``stop_reasons``/``stop_details``, ``cancelled`` (then the slices finished so far).

    Raises:
        InputError: a bad axis, direction, range or mask shape. PromptError: no seed, an empty seed
        slice, or points for a box-only model.
    """
    axis = parse_axis(axis)
    first, last = check_seed_walk(predictor.num_slices(axis), axis, direction, slice_range, seed_index,
                                  seed_mask is not None, seed_prompt is not None)
    run = _Run(predictor, axis, options, (first, last), progress, cancel)
    logits = None
    if seed_prompt is not None:
        prediction = predictor.predict(axis, seed_index, seed_prompt, selection=options.selection)
        run.result.slices_visited += 1
        run.result.decodes += 1
        mask, score, logits = clean_slice(prediction.mask, None, options), prediction.score, prediction.low_res_logits
    else:
        mask, score = _check_mask(predictor, axis, seed_index, seed_mask), None
    if not mask.any():
        raise PromptError(f"the seed slice {seed_index} is empty: "
                          + ("the prompt gives no mask there" if seed_prompt is not None else "its mask has no pixel"))
    run.accept(seed_index, mask, score)
    run.start_masks[seed_index] = mask
    low_reason, high_reason = _limits(first, last, predictor.num_slices(axis))
    for name, step, limit, reason in (("up", 1, last, high_reason), ("down", -1, first, low_reason)):
        if direction in (name, "both"):
            run.walks.append(_Walk(name, step, seed_index, limit, reason, mask, logits, seed_index))
        else:
            run.result.stop_reasons[name] = "not_requested"
            run.result.stop_details[name] = f"direction {direction!r}"
    return run.run()


def propagate_between(predictor: SlicePredictor, axis: int | str, key_masks: Mapping[int, np.ndarray],
                      slice_range: Optional[tuple[int, int]] = None, extend: bool = True,
                      options: PropagationOptions = PropagationOptions(), progress: Optional[Progress] = None,
                      cancel: Optional[CancelCheck] = None) -> PropagationResult:
    """Segment a structure from several key slices (user-drawn or corrected masks).

    Key slices are kept as given (an empty key mask marks a slice where the structure is
    absent). Between two neighbouring keys, walks start from both ends and meet; next to an
    empty key only the non-empty side walks.

    Args:
        predictor, axis, options, progress, cancel: as for :func:`propagate`.
        key_masks: {slice index along ``axis``: (rows, columns) bool mask}.
        slice_range: (first, last) inclusive, holding every key (default: the whole axis).
        extend: also walk outwards from the outermost non-empty keys, until a stop criterion or the
            end of ``slice_range``.

    Returns:
        A :class:`PropagationResult` (walks named "<key> up" / "<key> down").
    """
    axis = parse_axis(axis)
    first, last = check_key_walk(predictor.num_slices(axis), axis, key_masks, slice_range)
    keys = sorted(int(k) for k in key_masks)
    masks = {k: _check_mask(predictor, axis, k, key_masks[k]) for k in keys}
    if not any(m.any() for m in masks.values()):
        raise PromptError("every key slice is empty: segment the structure on at least one")
    run = _Run(predictor, axis, options, (first, last), progress, cancel)
    for k in keys:
        run.accept(k, masks[k], None)
    low_reason, high_reason = _limits(first, last, predictor.num_slices(axis))
    for n, k in enumerate(keys):
        if not masks[k].any():
            continue
        below = keys[n - 1] if n > 0 else None
        above = keys[n + 1] if n + 1 < len(keys) else None
        run.start_masks[k] = masks[k]
        if above is not None:
            run.walks.append(_Walk(f"{k} up", 1, k, above - 1, "met", masks[k], None, k))
        elif extend:
            run.walks.append(_Walk(f"{k} up", 1, k, last, high_reason, masks[k], None, k))
        if below is not None:
            run.walks.append(_Walk(f"{k} down", -1, k, below + 1, "met", masks[k], None, k))
        elif extend:
            run.walks.append(_Walk(f"{k} down", -1, k, first, low_reason, masks[k], None, k))
    return run.run()


