"""What a propagated slice's mask looks like next to where it came from: cues and a confidence (numpy only).

Every propagated slice is decoded from a prompt built on its neighbour's mask. Whether the
result is still the structure cannot be read from the model's predicted IoU (LiteMedSAM scores
0.6-0.8 on blobs in blank regions and on neighbouring organs, and 0.2 on good masks; measured
in docs/propagation.md). The cues below compare the new mask with its neighbour and with the
slice the walk started from (its *anchor*: the seed, or a key slice), using the decoder's output,
the slice intensities and the slice's image embedding, computed for the decoder anyway
(:class:`models.embedding.MaskFeatures`: its mean in and around the mask, and its cells near the mask):
no extra model call, except to embed an anchor given as a mask on a slice that is not cached.

Masks are (rows, columns) bool; images are slices windowed to [0, 1]; boxes (x0, y0, x1, y1)
in slice pixels, inclusive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..models.embedding import closer_to_inside
from ..prompts import grown_box

if TYPE_CHECKING:
    from ..models.embedding import ImageEmbedding, MaskFeatures

# Intensity spread below this (in window units) is treated as this, so that a uniform anchor does not make
# every small intensity change look huge.
MIN_SPREAD = 0.02
# The surround that mask features are read in: the mask's box grown by this many slice pixels plus this fraction
# of its width and height on each side.
SURROUND_PIXELS = 3
SURROUND_FRACTION = 0.25


@dataclass(frozen=True, eq=False)
class Anchor:
    """The slice a walk started from: mean and standard deviation of its windowed intensities inside its mask,
    the mask's area in pixels and, when known, the image features in and around it (:func:`surround`)."""

    mean: float
    spread: float
    area: int
    features: Optional[MaskFeatures] = None

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray, features: Optional[MaskFeatures] = None) -> "Anchor":
        values = image[mask]
        return cls(float(values.mean()), float(values.std()), int(mask.sum()), features)


@dataclass(frozen=True)
class SliceCues:
    """Cues of one propagated slice.

    iou_previous: IoU of the mask with its neighbour's; area_previous / area_anchor: area ratios
    to the neighbour's and the anchor's masks; intensity_shift: |mean intensity in the mask - the
    anchor's| in units of the anchor's spread; stability: IoU of the decoder's logits thresholded
    at +1 and -1 (how crisp the boundary is, SAM's stability score); score: the model's predicted
    IoU; box_border: fraction of the prompt box's outline that the mask covers (a mask that fills
    its box out to the edges has probably spilled into its surroundings); agreement: mean IoU of the
    mask with the decoder's other candidates for the same prompt (where the candidates disagree, the
    model is unsure what the box holds); feature_similarity: cosine of the mean image features in the mask with
    the anchor's (below about 0.5 the encoder sees other tissue in the mask); prototype_iou: IoU of the mask
    with the cells of its surround whose features are closer to the anchor's inside than to the anchor's
    surround (where it is low, the image no longer shows what the seed showed where the mask is). Both are 1.0
    when the features are unknown. candidate_gain: how much higher the kept candidate's prototype IoU is than
    that of the candidate the selection rule chose (0 when the rule's was kept; see
    :func:`walk.seedlike_candidate`).
    """

    iou_previous: float
    area_previous: float
    area_anchor: float
    intensity_shift: float
    stability: float
    score: float
    box_border: float
    agreement: float
    feature_similarity: float = 1.0
    prototype_iou: float = 1.0
    candidate_gain: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def stability(logits: Optional[np.ndarray], offset: float = 1.0) -> float:
    """IoU of ``logits > offset`` and ``logits > -offset`` (1.0 without logits or mask)."""
    if logits is None:
        return 1.0
    high, low = np.count_nonzero(logits > offset), np.count_nonzero(logits > -offset)
    return 1.0 if low == 0 else high / low


def box_border(mask: np.ndarray, box: Optional[np.ndarray]) -> float:
    """Fraction of the pixels on the outline of ``box`` (clipped to the slice) that ``mask`` covers."""
    if box is None:
        return 0.0
    rows, cols = mask.shape
    x0, y0 = (max(0, int(round(v))) for v in box[:2])
    x1, y1 = min(cols - 1, int(round(box[2]))), min(rows - 1, int(round(box[3])))
    if x1 < x0 or y1 < y0:
        return 0.0
    outline = np.concatenate([mask[y0, x0:x1 + 1], mask[y1, x0:x1 + 1], mask[y0:y1 + 1, x0], mask[y0:y1 + 1, x1]])
    return float(outline.mean())


def agreement(mask: np.ndarray, candidates: Optional[np.ndarray], chosen: int) -> float:
    """Mean IoU of ``mask`` with the (M, rows, columns) ``candidates`` other than index ``chosen`` (1.0 without)."""
    if candidates is None or len(candidates) < 2:
        return 1.0
    return float(np.mean([_iou(mask, c) for n, c in enumerate(candidates) if n != chosen]))


def surround(mask: np.ndarray) -> np.ndarray:
    """(rows, columns) bool: the box of a non-empty mask grown by :data:`SURROUND_PIXELS` plus
    :data:`SURROUND_FRACTION` of its size on each side, clipped to the slice."""
    x0, y0, x1, y1 = (int(v) for v in grown_box(mask, SURROUND_PIXELS, SURROUND_FRACTION))
    region = np.zeros(mask.shape, dtype=bool)
    region[y0:y1 + 1, x0:x1 + 1] = True
    return region


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b)) / norms if norms > 0 else 0.0


def feature_similarity(features: Optional[MaskFeatures], anchor: Optional[MaskFeatures]) -> float:
    """Cosine of the mean features inside two masks; 1.0 when either is unknown, 0.0 when either is zero."""
    if features is None or anchor is None:
        return 1.0
    return _cosine(features.inside, anchor.inside)


def prototype_iou(features: Optional[MaskFeatures], anchor: Optional[MaskFeatures]) -> float:
    """IoU, over the feature cells of a mask's surround, of the cells it covers with those whose features are
    closer (cosine) to ``anchor``'s inside mean than to its surround's; 1.0 when either is unknown or the anchor
    has no surround."""
    if features is None or anchor is None or not anchor.around.any() or not features.cells.size:
        return 1.0
    return _iou(closer_to_inside(features.cells, anchor.inside, anchor.around), features.covered)


def prototype_iou_on(embedding: ImageEmbedding, alike: Optional[np.ndarray], mask: np.ndarray,
                     region: np.ndarray) -> Optional[float]:
    """:func:`prototype_iou` of a (rows, columns) ``mask`` within ``region`` on a slice's ``embedding``, from the
    (g, g) ``alike`` cells of its whole grid (:meth:`ImageEmbedding.alike_cells` for the anchor's inside and
    surround; None where the anchor has no surround): the same value, without reading the features again, for
    the candidates of one slice. None for a mask that covers no feature cell (no features to judge)."""
    inside = embedding.cell_coverage(mask)
    if not inside.any():
        return None
    if alike is None:
        return 1.0
    cells = embedding.cell_coverage(region | mask) > 0.5
    return _iou(alike & cells, (inside > 0.5) & cells)


def slice_cues(image: np.ndarray, mask: np.ndarray, previous: np.ndarray, anchor: Anchor, score: float,
               logits: Optional[np.ndarray], box: Optional[np.ndarray], candidates: Optional[np.ndarray] = None,
               chosen: int = 0, features: Optional[MaskFeatures] = None, candidate_gain: float = 0.0) -> SliceCues:
    """The :class:`SliceCues` of a non-empty ``mask`` decoded on ``image`` from a prompt ``box`` built on
    ``previous`` (the neighbour's mask); ``logits``: the decoder's (256, 256) low-resolution logits;
    ``candidates``: the decoder's (M, rows, columns) masks, ``chosen`` the index the mask came from;
    ``features``: the image features in and around the mask (within :func:`surround`)."""
    area, prev_area = int(mask.sum()), int(previous.sum())
    mean = float(image[mask].mean()) if area else anchor.mean
    return SliceCues(iou_previous=_iou(mask, previous), area_previous=area / max(1, prev_area),
                     area_anchor=area / max(1, anchor.area),
                     intensity_shift=abs(mean - anchor.mean) / max(anchor.spread, MIN_SPREAD),
                     stability=stability(logits), score=float(score), box_border=box_border(mask, box),
                     agreement=agreement(mask, candidates, chosen),
                     feature_similarity=feature_similarity(features, anchor.features),
                     prototype_iou=prototype_iou(features, anchor.features), candidate_gain=candidate_gain)


# Logistic model of P(slice Dice >= 0.7) from one slice's cues, fitted on the tuning sets of
# benchmarks/propagation.py (the 3, 5 and 7 mm thick-slice template and the CT; 1390 walked slices of range-
# limited and free walks of both structures, anatomy and compact, with the defaults of 2026-12-07 evening, the
# choice among the decoder's candidates included; not on the MR, the 1 mm template or any held-out set;
# `benchmarks/confidence.py --fit thick ct`). The candidate_gain cue is not an input: as one it helped some sets
# and cost others (docs/propagation.md, "Sixth round"):
# weights of :data:`FEATURES` (:func:`features`); then the bias. The model's score has a negative weight: on
# walked slices LiteMedSAM is most sure of itself on blobs beyond a structure's end. Fitted freely, the IoU
# with the neighbour took a negative weight (it moves with the area ratio), which would rate a mask that
# jumped away as better, and so did the features' cosine with the seed (it moves with the prototype IoU; the
# features stop uses it instead): both are left out (weight 0, :data:`LEFT_OUT`).
FEATURES = ("score", "stability", "min(log area_anchor, 0)", "max(log area_anchor, 0)", "min(intensity_shift, cap)",
            "iou_previous", "|log area_previous|", "agreement", "feature_similarity", "prototype_iou")
LEFT_OUT = ("iou_previous", "feature_similarity")
WEIGHTS = (-7.2413, 5.5597, 0.80047, 5.4032, -0.16383, 0.0, 3.015, 7.7714, 0.0, 5.7747)
BIAS = -6.8191
# No fitted slice had an intensity shift above 4 (the appearance stop ends a walk there); up to this cap the
# shift's (small) weight is extended to walks with that stop switched off.
SHIFT_CAP = 6.0
# Share of the slice's own estimate in its confidence; the rest is the lowest estimate of the walk so far.
OWN_SHARE = 0.3
# A propagated slice whose confidence is below this is shown as unsure (red), whatever the model's score.
# On the tuning slices of 2026-12-07 (evening) it marks 81 % of the slices with Dice < 0.7 and 25 % of the others
# (82 % and 30 % on the held-out sets).
UNSURE = 0.6


def features(cues: SliceCues) -> tuple[float, ...]:
    """The logistic model's inputs from a slice's cues, in the order of :data:`WEIGHTS`."""
    area = max(cues.area_anchor, 1e-6)
    return (cues.score, cues.stability, min(np.log(area), 0.0), max(np.log(area), 0.0),
            min(cues.intensity_shift, SHIFT_CAP),
            cues.iou_previous, abs(np.log(max(cues.area_previous, 1e-6))), cues.agreement,
            cues.feature_similarity, cues.prototype_iou)


def local_confidence(cues: SliceCues) -> float:
    """P(Dice >= 0.7) of one slice from its own cues alone (logistic model, see :data:`WEIGHTS`)."""
    z = BIAS + float(np.dot(WEIGHTS, features(cues)))
    return float(1.0 / (1.0 + np.exp(-z)))


def mix(lowest: float, own: float) -> tuple[float, float]:
    """(confidence, new lowest) of a slice whose own estimate is ``own``, on a walk whose lowest own estimate
    so far is ``lowest``: :data:`OWN_SHARE` of its own estimate plus the rest of the new lowest."""
    lowest = min(lowest, own)
    return OWN_SHARE * own + (1.0 - OWN_SHARE) * lowest, lowest


def walk_confidence(lowest: float, cues: SliceCues) -> tuple[float, float]:
    """(confidence, new lowest) of a slice propagated from a walk whose lowest own estimate so far is
    ``lowest`` (1.0 at a seed or key slice).

    A walk that has drifted off its structure stays off it (each slice is prompted from the last), so
    a slice's confidence is mostly the lowest estimate on the way to it: :data:`OWN_SHARE` of its own
    estimate plus the rest of that lowest one. On the default's walks of the tuning sets this separates
    slices with Dice >= 0.7 from worse ones about as well as either alone (ROC AUC 0.65 on the CT and 0.92
    on the thick-slice template, against 0.64 / 0.93 for the slice's own estimate, 0.65 / 0.90 for the
    lowest alone and 0.53 / 0.59 for the model's score; 2026-12-07 evening, docs/propagation.md).
    """
    return mix(lowest, local_confidence(cues))
