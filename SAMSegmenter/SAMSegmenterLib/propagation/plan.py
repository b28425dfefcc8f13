"""What a propagation is asked to do and what it gives back (numpy only: no torch, no SimpleITK).

Shared by the engine (:mod:`propagation`), the inference service and its client. A volume
is indexed ``[k, j, i]``; "up" means increasing slice index along ``axis``, "down" decreasing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Iterable, Optional

import numpy as np

from ..errors import InputError, PromptError
from ..models.registry import ModelSpec
from ..selection import SELECTIONS
from ..volume import occupied_slices, slice_number

PROMPT_PARTS = ("box", "points", "mask")
MARGIN_UNITS = ("model", "slice")
# The side of LiteMedSAM's square input: a box margin in the ``model`` unit is in pixels of this scale (the unit
# of the published LiteMedSAM 3D procedure's 3 px).
MODEL_SIDE = 256
CLEANUPS = ("none", "largest", "connected")
DIRECTIONS = ("up", "down", "both")

# Below this standard deviation of windowed intensities (0..1), a box shows a display less than about
# one grey level of 256 of variation: nothing a model can outline (see PropagationOptions).
MIN_CONTRAST = 1 / 256
Progress = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class PropagationOptions:
    """How each next slice is prompted, cleaned and accepted.

    prompt: ``+``-joined parts of the per-slice prompt: ``box`` (the neighbour's box
    grown on each side by ``box_margin`` pixels, in ``margin_unit``: ``model`` = pixels of the
    model's 256 px input onto which the slice's longer side is scaled, ``slice`` = slice pixels,
    plus ``box_fraction`` of its width or height, plus ``shrink_fraction`` of them unless the
    neighbour's mask grew from the one before it: a structure that keeps its size or shrinks gets
    room against the model's under-segmentation, which otherwise compounds slice by slice, and a
    mask that grew, possibly into a neighbour, gets no more room than the margin), ``points`` (``include_points``
    interior points at distance-transform maxima of the neighbour's mask and
    ``exclude_points`` background points inside the box, farthest from it; point-capable
    models only) and ``mask`` (the neighbour's low-resolution logits as mask input).
    cleanup: per-slice clean-up before the mask is accepted and used for the next
    prompt: ``none``, ``largest`` (largest component) or ``connected`` (the components
    overlapping the neighbour's mask). fill_holes: fill holes in each slice.
    Stop criteria (``None`` disables one): the box the next slice would be prompted with
    holds no image structure, the standard deviation of its windowed intensities (in [0, 1])
    being below ``min_contrast`` ("no_structure", checked before the slice is encoded: a
    uniform region such as the empty background around a body gives the model nothing to
    outline, yet it returns a confident blob there, slice after slice); the mask has fewer
    than ``min_area`` pixels ("empty"); the model's score is below ``min_score``
    ("low_score"); its IoU with the neighbour's mask is below ``min_iou`` ("low_iou"); its
    area differs from the neighbour's by more than a factor ``max_area_ratio`` either way
    ("area_jump"); the mean windowed intensity inside the mask differs from the seed's (or the
    key slice's the walk started from) by more than ``max_intensity_shift`` standard deviations
    of the seed mask's intensities ("appearance": the walk has reached other tissue); the cosine of
    the mask's mean image features (the model's embedding of the slice averaged over the mask) with the
    seed's is below ``min_feature_similarity`` ("features": the encoder sees other tissue, which may have
    the seed's intensity); the walk's
    confidence (:mod:`slice_quality`) is below ``min_confidence`` ("low_confidence").
    Defaults measured on the 1 mm and thick-slice template and real CT and MR volumes
    (docs/propagation.md): a 6 px margin at the model's scale, 3 % of the box more while the mask
    does not grow (a fixed 15 % compounded leaks on CT; no fraction let walks shrink on thin slices),
    the appearance stop at 4 standard deviations, the features stop at a cosine of 0.55.
    selection: which of the decoder's candidates every slice the propagation predicts keeps
    (``single``, ``best_score`` or ``box_fit``, see :mod:`selection`): the walked slices and a
    seed given as a prompt. The single output by default: ``box_fit`` lost 3D Dice on the walks,
    whose boxes are deliberately loose, and gained nothing on the seed (measured:
    docs/accuracy.md, "Propagation"). Front ends seed with the mask the user saw instead.
    candidate_margin: on a walked slice, the decoder candidate whose image features look most like the seed's
    (:func:`slice_quality.prototype_iou`) replaces the one ``selection`` chose when its prototype IoU is higher
    by more than this; None keeps ``selection``'s. No extra model call: the four candidates are decoded anyway.
    Measured (docs/propagation.md, "Sixth round"): within the looser boxes of ``anatomy``, where the single output
    takes in a neighbour or only part of the structure, another candidate often outlines what the seed showed;
    ``compact``'s tight boxes gained nothing from it, so it keeps the single output there.
    """

    prompt: str = "box"
    box_margin: float = 6.0
    margin_unit: str = "model"
    box_fraction: float = 0.0
    shrink_fraction: float = 0.03
    include_points: int = 1
    exclude_points: int = 1
    cleanup: str = "connected"
    fill_holes: bool = False
    min_area: int = 1
    min_score: Optional[float] = None
    min_iou: Optional[float] = 0.25
    max_area_ratio: Optional[float] = None
    min_contrast: Optional[float] = MIN_CONTRAST
    selection: str = "single"
    max_intensity_shift: Optional[float] = 4.0
    min_feature_similarity: Optional[float] = 0.55
    min_confidence: Optional[float] = None
    candidate_margin: Optional[float] = 0.1

    def check_types(self) -> None:
        """InputError naming the first field whose value is not of its kind (a number, text or True/False)."""
        for item in fields(self):
            value, kind = getattr(self, item.name), str(item.type)
            if value is None and kind.startswith("Optional"):
                continue
            if kind.endswith(("float]", "float", "int")):
                fine = (isinstance(value, (int, float, np.integer, np.floating))
                        and not isinstance(value, (bool, np.bool_)))
                if fine and kind == "int":
                    fine = float(value).is_integer()
                what = "a whole number" if kind == "int" else "a number"
            elif kind == "bool":
                fine, what = isinstance(value, (bool, np.bool_)), "True or False"
            else:
                fine, what = isinstance(value, str), "text"
            if not fine:
                none = " or None" if kind.startswith("Optional") else ""
                raise InputError(f"propagation option {item.name} must be {what}{none}, got {value!r}")

    def parts(self) -> frozenset[str]:
        """The prompt parts, checked (InputError on an unknown or box/point-less combination)."""
        parts = frozenset(p.strip() for p in self.prompt.split("+"))
        unknown = parts - set(PROMPT_PARTS)
        if unknown:
            raise InputError(f"unknown prompt part(s) {', '.join(sorted(unknown))}; use {'+'.join(PROMPT_PARTS)}")
        if not parts & {"box", "points"}:
            raise InputError(f"prompt {self.prompt!r} needs a box or points")
        return parts

    def check(self, spec: ModelSpec) -> frozenset[str]:
        """Validate every option for the model ``spec``; returns the prompt parts."""
        self.check_types()
        parts = self.parts()
        if "points" in parts:
            spec.require_points_support(f"propagate with the 'box' or 'box+mask' prompt, not {self.prompt!r}")
        if "points" in parts and self.include_points < 1:
            raise InputError("include_points must be >= 1 with a points prompt")
        if self.exclude_points < 0:
            raise InputError("exclude_points must be >= 0")
        if self.cleanup not in CLEANUPS:
            raise InputError(f"cleanup must be one of {', '.join(CLEANUPS)}, got {self.cleanup!r}")
        if self.margin_unit not in MARGIN_UNITS:
            raise InputError(f"margin_unit must be one of {', '.join(MARGIN_UNITS)}, got {self.margin_unit!r}")
        if not self.box_margin >= 0:
            raise InputError(f"box_margin must be >= 0 pixels, got {self.box_margin}")
        if not self.box_fraction >= 0:
            raise InputError(f"box_fraction must be >= 0, got {self.box_fraction}")
        if not self.shrink_fraction >= 0:
            raise InputError(f"shrink_fraction must be >= 0, got {self.shrink_fraction}")
        for name in ("min_iou", "min_score"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise InputError(f"{name} must be in [0, 1] (an IoU), got {value}")
        if self.min_area < 1:
            raise InputError(f"min_area must be >= 1 pixel, got {self.min_area}")
        if self.max_area_ratio is not None and not self.max_area_ratio > 1:
            raise InputError(f"max_area_ratio must be > 1, got {self.max_area_ratio}")
        if self.min_contrast is not None and not 0 <= self.min_contrast < 1:
            raise InputError(f"min_contrast must be in [0, 1) (a standard deviation of intensities windowed to 0..1), "
                             f"got {self.min_contrast}")
        if self.max_intensity_shift is not None and not self.max_intensity_shift > 0:
            raise InputError(f"max_intensity_shift must be > 0 (standard deviations), got {self.max_intensity_shift}")
        if self.min_feature_similarity is not None and not -1 <= self.min_feature_similarity <= 1:
            raise InputError(f"min_feature_similarity must be in [-1, 1] (a cosine), got {self.min_feature_similarity}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise InputError(f"min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.candidate_margin is not None and not 0 <= self.candidate_margin < 1:
            raise InputError(f"candidate_margin must be in [0, 1) (a difference of IoUs), got {self.candidate_margin}")
        if self.selection not in SELECTIONS:
            raise InputError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.selection == "box_fit" and "box" not in parts:
            raise InputError(f"selection box_fit chooses by the box and the prompt {self.prompt!r} has none")
        return parts


# The kinds of structure a user can say they segment, each with the per-slice prompt measured best for it
# (docs/propagation.md, "Two kinds of structure"): no cue in the images told the two apart reliably.
STRUCTURES = ("anatomy", "compact")
_STRUCTURE_FIELDS = {
    # organs, muscles, brain structures: the defaults (a 6 px margin plus room while the mask does not grow)
    "anatomy": {},
    # tumours, lesions and round organs with clear ends (kidneys, gallbladder): the published LiteMedSAM 3D
    # procedure's 3 px margin and no room, with this walk's stops; the single output on every slice (choosing
    # among the candidates by the seed's features gained nothing on these targets: docs/propagation.md)
    "compact": {"box_margin": 3.0, "shrink_fraction": 0.0, "candidate_margin": None},
}


def structure_options(structure: str = "anatomy", **overrides) -> PropagationOptions:
    """The :class:`PropagationOptions` for a kind of structure (:data:`STRUCTURES`), ``overrides`` (its fields)
    replacing their values.

    ``anatomy`` (the defaults): organs, muscles, vessels and brain structures, which the model under-segments
    inside a near-tight box; ``compact``: tumours, lesions and round organs with clear ends, segmented best from
    tight boxes (a loose one lets the mask spread into what surrounds them, and free walks run on past their end).

    Raises:
        InputError: an unknown structure or option field.
    """
    if structure not in _STRUCTURE_FIELDS:
        raise InputError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
    return replace_options(PropagationOptions(**_STRUCTURE_FIELDS[structure]), **overrides)


def replace_options(options: PropagationOptions, **changes) -> PropagationOptions:
    """``options`` with the fields named in ``changes`` replaced; InputError for a name that is no field."""
    unknown = sorted(set(changes) - {f.name for f in fields(PropagationOptions)})
    if unknown:
        raise InputError(f"unknown propagation option(s): {', '.join(unknown)}")
    return replace(options, **changes)


@dataclass
class PropagationResult:
    """Outcome of a propagation.

    mask: (k, j, i) bool, the accepted slices (everything else False); axis: 0, 1 or 2;
    scores: model score (predicted IoU) per accepted slice index (slices given as masks have none);
    confidence: per propagated slice (not seeds or keys), 0..1, how likely its mask is right
    (:func:`slice_quality.walk_confidence`); cues: per propagated slice, the cues it came from
    (:class:`slice_quality.SliceCues` as a dict);
    stop_reasons / stop_details: per walk ("up"/"down" for :func:`propagate`,
    "<index> up"/"<index> down" for :func:`propagate_between`), a reason code (``no_structure``, ``empty``,
    ``low_score``, ``low_iou``, ``area_jump``, ``appearance``, ``features``, ``low_confidence``, ``range_end``,
    ``volume_end``, ``met``: reached a slice already segmented, ``cancelled``, ``not_requested``) and a sentence;
    last: per walk, the last slice it accepted; cancelled: the caller cancelled (the mask
    holds every slice finished before); encoder_calls: embeddings computed during the
    call (cached ones are free); slices_visited: slices decoded (accepted or rejected); decodes: decoder
    passes;
    range: (first, last) inclusive slice range the result covers; seconds: wall time.
    """

    mask: np.ndarray
    axis: int
    scores: dict[int, float] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)
    cues: dict[int, dict[str, float]] = field(default_factory=dict)
    stop_reasons: dict[str, str] = field(default_factory=dict)
    stop_details: dict[str, str] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    encoder_calls: int = 0
    slices_visited: int = 0
    decodes: int = 0
    range: tuple[int, int] = (0, 0)
    seconds: float = 0.0

    @property
    def slices(self) -> list[int]:
        """Indices along ``axis`` of the non-empty slices of ``mask``."""
        return [int(i) for i in occupied_slices(self.mask, self.axis)]


def check_range(count: int, axis: int, slice_range: Optional[tuple[int, int]],
                seed_index: Optional[int] = None) -> tuple[int, int]:
    """(first, last) of an inclusive ``slice_range`` (None: all ``count`` slices), checked to lie in the volume
    and to contain ``seed_index`` when given; InputError otherwise."""
    if slice_range is None:
        first, last = 0, count - 1
    else:
        try:
            first, last = slice_range
        except (TypeError, ValueError):
            raise InputError(f"a slice range is (FIRST, LAST), got {slice_range!r}") from None
        first, last = slice_number(first, "the range's first slice"), slice_number(last, "the range's last slice")
        if first > last:
            raise InputError(f"slice range {first}..{last} is inverted: give FIRST <= LAST")
        if first < 0 or last >= count:
            raise InputError(f"slice range {first}..{last} lies outside the volume: axis {'KJI'[axis]} "
                             f"has slices 0..{count - 1}")
    if seed_index is not None and not first <= seed_index <= last:
        raise InputError(f"seed slice {seed_index} lies outside the slice range {first}..{last} "
                         f"(axis {'KJI'[axis]} has slices 0..{count - 1})")
    return first, last


def check_seed_walk(count: int, axis: int, direction: str, slice_range: Optional[tuple[int, int]], seed_index: int,
                    has_seed_mask: bool, has_seed_prompt: bool) -> tuple[int, int]:
    """The checks of a propagation from one seed that need no image or model (the engine makes them, and the
    service before it accepts a job): the direction, the range holding the seed, exactly one seed.
    Returns (first, last) as :func:`check_range`; InputError or PromptError otherwise."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction[:20]!r}")
    first_last = check_range(count, axis, slice_range, seed_index)
    if has_seed_mask == has_seed_prompt:
        raise PromptError("give exactly one seed: a mask or a prompt for the seed slice")
    return first_last


def check_key_walk(count: int, axis: int, keys: Iterable[int],
                   slice_range: Optional[tuple[int, int]]) -> tuple[int, int]:
    """The same for a propagation between key slices: some keys, a valid range holding every key.
    Returns (first, last); InputError or PromptError otherwise."""
    keys = sorted(slice_number(k, "a key slice") for k in keys)
    if not keys:
        raise PromptError("no key slices given")
    first, last = check_range(count, axis, slice_range)
    outside = [k for k in keys if not first <= k <= last]
    if outside:
        raise InputError(f"key slice(s) {', '.join(map(str, outside[:5]))} lie outside the slice range "
                         f"{first}..{last} (axis {'KJI'[axis]} has slices 0..{count - 1})")
    return first, last


def affected_range(key_indices: Iterable[int], edited_index: int,
                   slice_range: tuple[int, int]) -> tuple[int, int]:
    """The inclusive slice range to propagate again after the key slice ``edited_index`` changed.

    It reaches from the nearest other key slice below to the nearest above (those keys
    included, as anchors for :func:`propagate_between`), or to the ends of
    ``slice_range`` (inclusive) where there is none. Slices outside it keep their result.
    """
    first, last = (int(v) for v in slice_range)
    if not first <= edited_index <= last:
        raise InputError(f"edited slice {edited_index} lies outside the slice range {first}..{last}")
    others = [int(k) for k in key_indices if int(k) != edited_index]
    below = [k for k in others if first <= k < edited_index]
    above = [k for k in others if edited_index < k <= last]
    return (max(below) if below else first), (min(above) if above else last)

