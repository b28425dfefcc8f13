"""Prompt protocols used to evaluate SAM-style models, after the COSMOS 1050K study and MedSAM.

A protocol turns a reference mask on one 2D slice into the prompt a simulated user would
give. Masks are boolean arrays ``(rows, cols)``; prompts are in slice pixel coordinates,
``x`` = column and ``y`` = row, boxes ``(x0, y0, x1, y1)`` with ``x1``/``y1`` the last column/row
covered (inclusive). Random protocols draw from the ``numpy.random.Generator`` they are given;
:func:`protocol_rng` derives one from a seed and the slice's identity, so a run gives the same
prompts whatever the order or the machine the slices are processed on.

Protocols (``PROTOCOL_HELP`` holds the one-line versions; those in ``POINT_PROTOCOLS`` need a
model that takes point prompts, which box-only LiteMedSAM and MedSAM do not):

* ``box``: the tight bounding box of the mask.
* ``box_jitter``: the tight box with each side moved outwards by its own random whole number
  of pixels from 0 to ``jitter_px`` (20 by default, as in MedSAM's training), clipped to the image.
* ``center``: one positive point at the mask's centroid (rounded to the nearest pixel); when
  that pixel is outside the mask (a crescent, a ring) the nearest mask pixel is used instead.
* ``pointsN`` (N = 1, 3, 5, 10): N points in total, ``ceil(N/2)`` positives drawn uniformly
  without replacement from the mask's pixels and ``floor(N/2)`` negatives drawn from the
  pixels outside the mask inside the tight box enlarged to twice its width and height about
  its centre (clipped to the image), as in COSMOS: points1 = 1+0, points3 = 2+1,
  points5 = 3+2, points10 = 5+5. A mask with fewer pixels than asked for gives all of them.
* ``box_points``: the tight box plus the ``center`` point as a positive point.
* ``propagate3d``: not a slice prompt; the evaluator seeds 3D propagation with the tight box
  on the object's middle slice and scores the propagated object in 3D.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..prompts import Prompt, box_from_mask

Box = tuple[int, int, int, int]
Point = tuple[int, int]

PROTOCOL_HELP: dict[str, str] = {
    "box": "tight bounding box of the reference mask",
    "box_jitter": "tight box, each side moved outwards by a random 0 to 20 px (--jitter; fixed --seed)",
    "center": "one positive point at the centroid (nearest mask pixel if the centroid is outside)",
    "points1": "1 positive point sampled inside the mask",
    "points3": "2 positive points inside the mask + 1 negative in the box enlarged twice",
    "points5": "3 positive + 2 negative points",
    "points10": "5 positive + 5 negative points",
    "box_points": "tight box + the center point",
    "propagate3d": "3D propagation from a tight box on the object's middle slice, scored in 3D",
}
SLICE_PROTOCOLS: tuple[str, ...] = ("box", "box_jitter", "center", "points1", "points3", "points5",
                                    "points10", "box_points")
VOLUME_PROTOCOLS: tuple[str, ...] = ("propagate3d",)
PROTOCOLS: tuple[str, ...] = SLICE_PROTOCOLS + VOLUME_PROTOCOLS
POINT_COUNTS: dict[str, int] = {"points1": 1, "points3": 3, "points5": 5, "points10": 10}
POINT_PROTOCOLS: tuple[str, ...] = ("center", *POINT_COUNTS, "box_points")  # need a model taking points


def protocol_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator determined by ``seed`` and ``keys`` (e.g. case name, label, axis, slice, protocol).

    Keys are hashed through their ``str`` with CRC-32, which is stable across processes and
    machines (unlike Python's ``hash``).
    """
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(key).encode("utf-8")) for key in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a protocol needs a 2D mask (rows, cols), got shape {mask.shape}")
    if not mask.any():
        raise ValueError("a protocol needs a non-empty reference mask")
    return mask


def tight_box(mask: np.ndarray) -> Box:
    """The smallest box ``(x0, y0, x1, y1)`` (inclusive) holding every True pixel of a 2D mask."""
    x0, y0, x1, y1 = (int(v) for v in box_from_mask(_check_mask(mask)))
    return x0, y0, x1, y1


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter_px: int = 20) -> Box:
    """The tight box with each side moved outwards by an independent random 0..``jitter_px`` pixels."""
    x0, y0, x1, y1 = tight_box(mask)
    rows, cols = mask.shape
    d = rng.integers(0, jitter_px, size=4, endpoint=True)
    return (max(0, x0 - int(d[0])), max(0, y0 - int(d[1])),
            min(cols - 1, x1 + int(d[2])), min(rows - 1, y1 + int(d[3])))


def enlarged_box(box: Box, shape: tuple[int, int], factor: float = 2.0) -> Box:
    """``box`` scaled by ``factor`` in width and height about its centre, clipped to an image of ``shape``."""
    x0, y0, x1, y1 = box
    grow_x = (x1 - x0 + 1) * (factor - 1.0) / 2.0
    grow_y = (y1 - y0 + 1) * (factor - 1.0) / 2.0
    rows, cols = shape
    return (max(0, int(np.floor(x0 - grow_x))), max(0, int(np.floor(y0 - grow_y))),
            min(cols - 1, int(np.ceil(x1 + grow_x))), min(rows - 1, int(np.ceil(y1 + grow_y))))


def center_point(mask: np.ndarray) -> Point:
    """``(x, y)`` of the mask centroid, or of the mask pixel nearest to it when the centroid is outside."""
    mask = _check_mask(mask)
    rows, cols = np.nonzero(mask)
    cy, cx = rows.mean(), cols.mean()
    y, x = int(np.rint(cy)), int(np.rint(cx))
    if mask[y, x]:
        return x, y
    nearest = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
    return int(cols[nearest]), int(rows[nearest])


def _sample(candidates: np.ndarray, count: int, rng: np.random.Generator) -> list[Point]:
    """``count`` distinct ``(x, y)`` points from a boolean candidate map (fewer if it has fewer pixels)."""
    rows, cols = np.nonzero(candidates)
    picked = rng.choice(rows.size, size=min(count, rows.size), replace=False)
    return [(int(cols[p]), int(rows[p])) for p in picked]


def positive_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> list[Point]:
    """``count`` distinct points drawn uniformly from the mask's pixels."""
    return _sample(_check_mask(mask), count, rng)


def negative_points(mask: np.ndarray, count: int, rng: np.random.Generator) -> list[Point]:
    """``count`` distinct points outside the mask, inside its tight box enlarged twice."""
    mask = _check_mask(mask)
    x0, y0, x1, y1 = enlarged_box(tight_box(mask), mask.shape)
    candidates = np.zeros_like(mask)
    candidates[y0:y1 + 1, x0:x1 + 1] = True
    return _sample(candidates & ~mask, count, rng)


def make_prompt(protocol: str, mask: np.ndarray, rng: np.random.Generator, jitter_px: int = 20) -> Prompt:
    """The prompt ``protocol`` derives from the 2D reference ``mask`` (rows, cols), drawing from ``rng``."""
    if protocol == "box":
        return Prompt(box=tight_box(mask))
    if protocol == "box_jitter":
        return Prompt(box=jittered_box(mask, rng, jitter_px))
    if protocol == "center":
        return Prompt(points=[center_point(mask)], labels=[1])
    if protocol == "box_points":
        return Prompt(points=[center_point(mask)], labels=[1], box=tight_box(mask))
    if protocol in POINT_COUNTS:
        total = POINT_COUNTS[protocol]
        positives = positive_points(mask, (total + 1) // 2, rng)
        negatives = negative_points(mask, total // 2, rng)
        return Prompt(points=positives + negatives, labels=[1] * len(positives) + [0] * len(negatives))
    if protocol in VOLUME_PROTOCOLS:
        raise ValueError(f"{protocol} is a 3D protocol and has no single-slice prompt")
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
