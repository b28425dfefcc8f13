"""Prompts for one 2D slice.

Coordinates are slice pixels: ``x`` is the column and ``y`` the row of the 2D
slice array (see :func:`volume.take_slice` for which volume axes those are).
A box is ``(x0, y0, x1, y1)`` with (x1, y1) the last column and row it covers,
as the tight box of a mask is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .errors import PromptError

INCLUDE = 1
EXCLUDE = 0


def _numbers(values: object, what: str, dtype: type = np.float64) -> np.ndarray:
    """``values`` as an array of ``dtype``; PromptError naming ``what`` when they are not numbers."""
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        raise PromptError(f"{what} must be numbers, got {values!r}"[:200]) from None


@dataclass(frozen=True, eq=False)
class Prompt:
    """Include/exclude points, at most one box, and optionally a previous low-res mask.

    points: (N, 2) float array of (x, y); labels: (N,) int array, 1 include, 0 exclude;
    box: (4,) float array (x0, y0, x1, y1) or None; mask_input: (256, 256) float32
    low-resolution logits from an earlier prediction of the same model, or None.
    Prompts compare equal when all four parts are equal, and can be dict keys.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    box: Optional[np.ndarray] = None
    mask_input: Optional[np.ndarray] = None

    def __init__(self, points: Sequence[Sequence[float]] | np.ndarray = (),
                 labels: Sequence[int] | np.ndarray | None = None,
                 box: Sequence[float] | np.ndarray | None = None,
                 mask_input: np.ndarray | None = None):
        pts = _numbers(points, "points")
        if pts.size % 2:
            raise PromptError(f"points are (x, y) pairs, got {pts.size} numbers")
        pts = pts.reshape(-1, 2)
        raw = np.ones(len(pts)) if labels is None else _numbers(labels, "point labels").reshape(-1)
        if len(raw) != len(pts):
            raise PromptError(f"{len(pts)} points but {len(raw)} labels")
        if np.any((raw != INCLUDE) & (raw != EXCLUDE)):
            raise PromptError("point labels must be 1 (include) or 0 (exclude)")
        lab = raw.astype(np.int64)
        bx = None if box is None else _numbers(box, "a box").reshape(-1)
        if bx is not None and bx.shape != (4,):
            raise PromptError(f"a box needs 4 numbers (x0 y0 x1 y1), got {bx.size}")
        if mask_input is not None:
            mask_input = _numbers(mask_input, "mask_input", np.float32)
            if mask_input.shape != (256, 256):
                raise PromptError(f"mask_input must be (256, 256) low-resolution logits, got {mask_input.shape}")
            if not np.all(np.isfinite(mask_input)):
                raise PromptError("mask_input holds NaN or infinite logits")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "labels", lab)
        object.__setattr__(self, "box", bx)
        object.__setattr__(self, "mask_input", mask_input)

    def _identity(self) -> tuple:
        return (self.points.tobytes(), self.labels.tobytes(), None if self.box is None else self.box.tobytes(),
                None if self.mask_input is None else self.mask_input.tobytes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Prompt):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to segment from (no point, no box, no mask)."""
        return len(self.points) == 0 and self.box is None and self.mask_input is None

    def validate(self, shape: tuple[int, int]) -> None:
        """Raise PromptError unless the prompt is usable on a slice of ``shape`` = (rows, columns)."""
        rows, cols = shape
        if self.is_empty:
            raise PromptError("empty prompt: give at least one include point or a box")
        if len(self.points) and not np.any(self.labels == INCLUDE) and self.box is None and self.mask_input is None:
            raise PromptError("only exclude points: add an include point or a box")
        for (x, y) in self.points:
            if not (0 <= x <= cols - 1 and 0 <= y <= rows - 1):
                raise PromptError(f"point ({x:g}, {y:g}) lies outside the {cols} x {rows} slice (x=column, y=row)")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not np.all(np.isfinite(self.box)):
                raise PromptError("box coordinates must be finite numbers")
            if x1 < x0 or y1 < y0:
                raise PromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is inverted: need x0 <= x1 and y0 <= y1")
            if x0 < 0 or y0 < 0 or x1 > cols - 1 or y1 > rows - 1:
                raise PromptError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) extends outside the {cols} x {rows} slice "
                                  f"(x in 0..{cols - 1}, y in 0..{rows - 1})")


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of a non-empty 2D boolean mask (rows, columns)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise PromptError("cannot take the box of an empty mask")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def grown_box(mask: np.ndarray, margin: float, fraction: float = 0.0) -> np.ndarray:
    """Tight box (x0, y0, x1, y1) of a non-empty (rows, columns) mask, grown and clipped to the slice.

    Each side moves out by ``margin`` pixels plus ``fraction`` of the box's width (left,
    right) or height (top, bottom).
    """
    rows, cols = mask.shape
    x0, y0, x1, y1 = box_from_mask(mask)
    mx = margin + fraction * (x1 - x0 + 1)
    my = margin + fraction * (y1 - y0 + 1)
    return np.array([max(0.0, x0 - mx), max(0.0, y0 - my), min(cols - 1.0, x1 + mx), min(rows - 1.0, y1 + my)])
