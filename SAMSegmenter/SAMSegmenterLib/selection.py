"""Which of the mask decoder's candidates to keep for a prompt (numpy only, no torch).

A SAM-family mask decoder gives four candidates for one prompt in one pass: the *single*
output (index 0, what LiteMedSAM and MedSAM were trained to give) and SAM's three
*multimask* outputs (indices 1-3), each with a predicted IoU (``scores``). Candidates are
(4, rows, columns) bool masks in slice pixels (x = column, y = row); a box is
``(x0, y0, x1, y1)`` with (x1, y1) the last column and row it covers.

Rules (:data:`SELECTIONS`):

* ``single``: candidate 0.
* ``best_score``: of the three multimask outputs, the one with the highest predicted IoU
  (SAM's choice for an ambiguous prompt).
* ``box_fit``: keep the single output when the prompt is unambiguous, else the candidate whose
  extent fits the prompt box: a user who draws a box means "this object, edge to edge".

  1. Unambiguous: one of the multimask outputs reproduces the single output (mask IoU at least
     :data:`AGREEMENT`). The model then sees one object in the box and its single output is
     kept: on clean, compact objects it is right even when the box is loose, where the
     candidate filling the box would spill into the background.
  2. Otherwise the single output is one reading of an ambiguous box (LiteMedSAM's often is an
     under-segmented part of the object): the candidate whose bounding box best matches the
     prompt box (IoU of the two boxes) wins. A candidate that reaches the box on all four sides
     and stays inside fits perfectly; equal fits go to the lower index (the single output
     first). Candidates covering less than :data:`MIN_FILL` of the box (specks, which a few
     stray pixels can spread over the box) win only when no other candidate does; when every
     candidate is such, the single output is kept.

  The predicted IoU plays no part: LiteMedSAM's single output always scores highest, and its
  multimask outputs score about 0.2-0.3 even when they are right (not calibrated).

:func:`default_selection` gives the default for a prompt: ``box_fit`` for a box alone (measured on
LiteMedSAM, docs/accuracy.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import PromptError
from .prompts import Prompt

SELECTIONS: tuple[str, ...] = ("single", "best_score", "box_fit")
SINGLE = 0  # index of the single output among the candidates
CANDIDATES = 4  # the single output, then SAM's three multimask outputs
MIN_FILL = 0.01  # fraction of the box area; real objects filled >= 3% of their tight box in every measured case
AGREEMENT = 0.9  # mask IoU at which a multimask output "reproduces" the single output


@dataclass(frozen=True)
class Choice:
    """The chosen candidate: ``index`` into the candidates, the ``selection`` rule that chose it, and why."""

    index: int
    selection: str
    reason: str


def default_selection(prompt: Prompt) -> str:
    """The default rule for ``prompt``: ``box_fit`` for a box alone (measured). Otherwise the advice
    of SAM's authors: ``best_score`` for one point alone (ambiguous), ``single`` for several prompts
    or a mask input (which already say which object is meant)."""
    if len(prompt.points) == 0:
        return "box_fit" if prompt.box is not None and prompt.mask_input is None else "single"
    if prompt.box is None and len(prompt.points) == 1 and prompt.mask_input is None:
        return "best_score"
    return "single"


def _check_name(selection: str) -> None:
    if selection not in SELECTIONS:
        raise PromptError(f"unknown mask selection {selection!r}; choose from {', '.join(SELECTIONS)}")


def _no_box() -> PromptError:
    return PromptError("box_fit chooses by the prompt box and this prompt has none (use single or best_score)")


def resolve_selection(selection: Optional[str], prompt: Prompt) -> str:
    """The rule to use for ``prompt``: ``selection``, or :func:`default_selection` when it is None.

    Raises PromptError for an unknown name, or for ``box_fit`` on a prompt without a box.
    """
    if selection is None:
        return default_selection(prompt)
    _check_name(selection)
    if selection == "box_fit" and prompt.box is None:
        raise _no_box()
    return selection


def bounding_box(mask: np.ndarray) -> Optional[np.ndarray]:
    """Tight box (x0, y0, x1, y1), inclusive, of a (rows, columns) mask; None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def _area(box: np.ndarray) -> float:
    """Pixels covered by an inclusive box (0 when it is inverted)."""
    return float(max(0.0, box[2] - box[0] + 1) * max(0.0, box[3] - box[1] + 1))


def box_fit(mask: np.ndarray, box: np.ndarray) -> float:
    """IoU of the bounding box of a (rows, columns) ``mask`` with ``box`` (x0, y0, x1, y1), both
    inclusive, in [0, 1]; 0 for an empty mask."""
    own = bounding_box(mask)
    if own is None:
        return 0.0
    box = np.asarray(box, dtype=np.float64)
    inter = _area(np.concatenate([np.maximum(own[:2], box[:2]), np.minimum(own[2:], box[2:])]))
    return inter / (_area(own) + _area(box) - inter)


def agreement(masks: np.ndarray) -> float:
    """The highest mask IoU between the single output ``masks[0]`` and a multimask output ``masks[1:]``."""
    single = masks[0]
    best = 0.0
    for other in masks[1:]:
        union = np.count_nonzero(single | other)
        best = max(best, np.count_nonzero(single & other) / union if union else 1.0)
    return best


def select(masks: np.ndarray, scores: np.ndarray, selection: str, box: Optional[np.ndarray] = None) -> Choice:
    """Choose among the four candidates ``masks`` (4, rows, columns) bool with predicted IoUs
    ``scores`` (4,) by rule ``selection``; ``box`` (x0, y0, x1, y1) in slice pixels is the
    prompt's box, needed by ``box_fit``."""
    masks, scores = np.asarray(masks, dtype=bool), np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != CANDIDATES or scores.shape != (CANDIDATES,):
        raise ValueError(f"expected {CANDIDATES} candidates, masks (4, rows, columns) and scores (4,); got "
                         f"masks {masks.shape}, scores {scores.shape}")
    _check_name(selection)
    if selection == "single":
        return Choice(SINGLE, selection, "the model's single output")
    if selection == "best_score":
        index = 1 + int(np.argmax(scores[1:]))
        return Choice(index, selection, f"highest predicted IoU of the multimask outputs ({scores[index]:.3f})")
    if box is None:
        raise _no_box()
    box = np.asarray(box, dtype=np.float64)
    large = masks.reshape(CANDIDATES, -1).sum(axis=1) / max(1.0, _area(box)) >= MIN_FILL
    if not large.any():
        return Choice(SINGLE, selection, f"every candidate covers less than {MIN_FILL:.0%} of the box: "
                                         "the single output")
    agreed = agreement(masks)
    if large[SINGLE] and agreed >= AGREEMENT:
        return Choice(SINGLE, selection, f"a multimask output reproduces the single output (IoU {agreed:.3f}): "
                                         "unambiguous")
    fits = np.array([box_fit(mask, box) if ok else -1.0 for mask, ok in zip(masks, large)])
    index = int(np.argmax(fits))  # the first of equal fits
    return Choice(index, selection, f"ambiguous (outputs agree at IoU {agreed:.3f} at most); its bounding box "
                                    f"fits the prompt box best (IoU {fits[index]:.3f})")
