"""What a propagated slice's mask looks like next to where it came from: cues and a confidence (numpy only).

Every propagated slice is decoded from a prompt built on its neighbour's mask. Whether the
result is still the structure cannot be read from the model's predicted IoU (LiteMedSAM scores
0.6-0.8 on blobs in blank regions and on neighbouring organs, and 0.2 on good masks; measured
in docs/propagation.md). The cues below compare the new mask with its neighbour and with the
slice the walk started from (its *anchor*: the seed, or a key slice), using nothing but the
decoder's output and the slice intensities: no extra model call.

Masks are (rows, columns) bool; images are slices windowed to [0, 1]; boxes (x0, y0, x1, y1)
in slice pixels, inclusive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

# Intensity spread below this (in window units) is treated as this, so that a uniform anchor does not make
# every small intensity change look huge.
MIN_SPREAD = 0.02


@dataclass(frozen=True)
class Anchor:
    """The slice a walk started from: mean and standard deviation of its windowed intensities inside its mask,
    and the mask's area in pixels."""

    mean: float
    spread: float
    area: int

    @classmethod
    def of(cls, image: np.ndarray, mask: np.ndarray) -> "Anchor":
        values = image[mask]
        return cls(float(values.mean()), float(values.std()), int(mask.sum()))


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
    model is unsure what the box holds).
    """

    iou_previous: float
    area_previous: float
    area_anchor: float
    intensity_shift: float
    stability: float
    score: float
    box_border: float
    agreement: float

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


def slice_cues(image: np.ndarray, mask: np.ndarray, previous: np.ndarray, anchor: Anchor, score: float,
               logits: Optional[np.ndarray], box: Optional[np.ndarray], candidates: Optional[np.ndarray] = None,
               chosen: int = 0) -> SliceCues:
    """The :class:`SliceCues` of a non-empty ``mask`` decoded on ``image`` from a prompt ``box`` built on
    ``previous`` (the neighbour's mask); ``logits``: the decoder's (256, 256) low-resolution logits;
    ``candidates``: the decoder's (M, rows, columns) masks, ``chosen`` the index the mask came from."""
    area, prev_area = int(mask.sum()), int(previous.sum())
    mean = float(image[mask].mean()) if area else anchor.mean
    return SliceCues(iou_previous=_iou(mask, previous), area_previous=area / max(1, prev_area),
                     area_anchor=area / max(1, anchor.area),
                     intensity_shift=abs(mean - anchor.mean) / max(anchor.spread, MIN_SPREAD),
                     stability=stability(logits), score=float(score), box_border=box_border(mask, box),
                     agreement=agreement(mask, candidates, chosen))


# Logistic model of P(slice Dice >= 0.7) from one slice's cues, fitted on the tuning sets of
# benchmarks/propagation.py (the 3, 5 and 7 mm thick-slice template and the CT, 740 walked slices of range-
# limited and free walks with the defaults of 2026-12-07: 6 px margin at the 256 px scale, 3 % of the box
# while the mask does not grow, the appearance stop at 4; not on the MR or the 1 mm template): weights of
# score, stability, min(log area_anchor, 0), max(log area_anchor, 0), min(intensity_shift, SHIFT_CAP),
# iou_previous, |log area_previous|, agreement; then the bias. The model's score has a negative weight: on
# walked slices LiteMedSAM is most sure of itself on blobs beyond a structure's end. Fitted freely, the IoU
# with the neighbour took a negative weight (it moves with the area ratio), which would rate a mask that
# jumped away as better: it is left out (weight 0).
WEIGHTS = (-9.24, 9.9931, 0.687, 2.3671, -0.6376, 0.0, 4.2244, 7.6258)
BIAS = -5.4658
# No fitted slice had an intensity shift above 4 (the appearance stop ends a walk there); up to this cap the
# shift's weight is extended, so that a walk with that stop switched off still reads other tissue as unsure.
SHIFT_CAP = 6.0
# Share of the slice's own estimate in its confidence; the rest is the lowest estimate of the walk so far.
OWN_SHARE = 0.3
# A propagated slice whose confidence is below this is shown as unsure (red), whatever the model's score.
# On the tuning slices of 2026-12-07 it marks 78 % of the slices with Dice < 0.7 and 25 % of the others.
UNSURE = 0.6


def features(cues: SliceCues) -> tuple[float, ...]:
    """The logistic model's inputs from a slice's cues, in the order of :data:`WEIGHTS`."""
    area = max(cues.area_anchor, 1e-6)
    return (cues.score, cues.stability, min(np.log(area), 0.0), max(np.log(area), 0.0),
            min(cues.intensity_shift, SHIFT_CAP),
            cues.iou_previous, abs(np.log(max(cues.area_previous, 1e-6))), cues.agreement)


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
    estimate plus the rest of that lowest one. On the tuning slices this separates slices with Dice
    >= 0.7 from worse ones about as well as or better than either alone (ROC AUC 0.80 on CT and 0.96 on
    the thick-slice template, against 0.74 / 0.93 for the slice's own estimate, 0.82 / 0.91 for the lowest
    alone and 0.64 / 0.81 for the model's score; 2026-12-07).
    """
    return mix(lowest, local_confidence(cues))
