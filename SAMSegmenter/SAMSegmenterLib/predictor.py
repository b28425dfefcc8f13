"""Slice predictor: prompts on any slice of a 3D volume -> a 2D mask.

The volume is a numpy array indexed ``[k, j, i]``. A slice is addressed by
``axis`` (0 = K, 1 = J, 2 = I) and ``index`` (see :mod:`volume` for which array
axes become rows and columns). Prompt coordinates are slice pixels, ``x`` =
column, ``y`` = row. Embeddings are cached per (model, volume, axis, index,
window), so prompting the same slice again costs one decoder pass.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable

import numpy as np

from .cache import EmbeddingCache
from .errors import InputError
from .models.embedding import ImageEmbedding
from .prompts import Prompt
from .selection import resolve_selection, select
from .volume import check_slice, parse_axis, slice_shape, take_slice
from .windowing import Window, parse_window

if TYPE_CHECKING:
    from .models.loader import SamModel


@dataclass
class SlicePrediction:
    """Result on one slice.

    mask: (rows, columns) bool, the chosen candidate; score: its predicted IoU;
    low_res_logits: (256, 256) float32 logits of the chosen candidate, usable as
    ``Prompt(mask_input=...)`` on a neighbouring slice; masks/scores: the four candidates
    of the decoder, (4, rows, columns) bool and (4,) predicted IoUs, the single output first,
    then SAM's three multimask outputs; index: the chosen candidate's index in them;
    selection: the rule that chose it (see :mod:`selection`); reason: why, in a few words.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    index: int
    selection: str
    reason: str


def volume_fingerprint(volume: np.ndarray) -> str:
    """Content hash of a volume (shape, dtype and bytes) used to key cached embeddings."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((volume.shape, volume.dtype.str)).encode())
    digest.update(memoryview(np.ascontiguousarray(volume)).cast("B"))
    return digest.hexdigest()


class SlicePredictor:
    """Segment slices of one volume with one model.

    model: from :func:`models.load_model`; volume: 3D array [k, j, i] of raw
    intensities; window: a :class:`Window` or spec (``auto``, CT preset, ``LOW,HIGH``)
    applied to every slice; cache: shared :class:`EmbeddingCache` (a private one
    by default); volume_id: a caller's identity for the volume contents (for example
    a Slicer node ID plus its modification time) to skip hashing the voxels.
    """

    def __init__(self, model: SamModel, volume: np.ndarray, window: str | Window | None = "auto",
                 cache: EmbeddingCache | None = None, volume_id: Hashable | None = None):
        volume = np.asarray(volume)
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise InputError(f"expected a non-empty 3D volume [k, j, i], got shape {volume.shape}")
        if not (np.issubdtype(volume.dtype, np.number) or volume.dtype == bool):
            raise InputError(f"volume must be numeric, got dtype {volume.dtype}")
        self.model = model
        self.volume = volume
        self.window = parse_window(window, volume)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.volume_id = volume_id if volume_id is not None else volume_fingerprint(volume)
        self.encoder_calls = 0
        self._pending: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def num_slices(self, axis: int | str) -> int:
        return self.volume.shape[parse_axis(axis)]

    def slice_shape(self, axis: int | str) -> tuple[int, int]:
        """(rows, columns) of a slice along ``axis``."""
        return slice_shape(self.volume.shape, parse_axis(axis))

    def slice_image(self, axis: int | str, index: int) -> np.ndarray:
        """Slice ``index`` along ``axis``, windowed to float32 [0, 1], shape (rows, columns)."""
        return self.window.apply(take_slice(self.volume, parse_axis(axis), index))

    def _key(self, axis: int, index: int) -> Hashable:
        return (self.model.key, self.volume_id, axis, index, self.window.key)

    def _compute(self, axis: int, index: int) -> ImageEmbedding:
        with self._lock:
            self.encoder_calls += 1
        return self.model.encode(self.slice_image(axis, index))

    def embedding(self, axis: int | str, index: int) -> ImageEmbedding:
        """The embedding of a slice: from the cache, a running prefetch, or computed now."""
        axis = parse_axis(axis)
        check_slice(self.volume.shape, axis, index)
        key = self._key(axis, index)
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None:
            return pending.result()
        return self.cache.get_or_compute(key, lambda: self._compute(axis, index))[0]

    def is_cached(self, axis: int | str, index: int) -> bool:
        return self._key(parse_axis(axis), index) in self.cache

    def prefetch(self, axis: int | str, index: int) -> None:
        """Start computing a slice's embedding in a background thread (no-op if cached or out of range)."""
        axis = parse_axis(axis)
        if not 0 <= index < self.volume.shape[axis]:
            return
        key = self._key(axis, index)
        with self._lock:
            if key in self._pending or key in self.cache:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-prefetch")
            future = self._executor.submit(self._prefetch_job, key, axis, index)
            self._pending[key] = future

    def _prefetch_job(self, key: Hashable, axis: int, index: int) -> ImageEmbedding:
        try:
            embedding = self._compute(axis, index)
            self.cache.put(key, embedding)
            return embedding
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def predict(self, axis: int | str, index: int, prompt: Prompt, selection: str | None = None) -> SlicePrediction:
        """Segment slice ``index`` along ``axis`` from ``prompt`` (slice pixels, x = column, y = row).

        One decoder pass gives four candidates (the single output, then SAM's three multimask
        outputs); ``selection`` names the rule that picks one (:data:`selection.SELECTIONS`:
        ``single``, ``best_score``, ``box_fit``), None the default for the prompt
        (:func:`selection.default_selection`: ``box_fit`` for a box).
        """
        axis = parse_axis(axis)
        check_slice(self.volume.shape, axis, index)
        prompt.validate(self.slice_shape(axis))
        rule = resolve_selection(selection, prompt)
        decoded = self.model.decode_candidates(self.embedding(axis, index), prompt)
        choice = select(decoded.masks, decoded.scores, rule, prompt.box)
        best = choice.index
        return SlicePrediction(mask=decoded.masks[best], score=float(decoded.scores[best]),
                               low_res_logits=decoded.low_res_logits[best], masks=decoded.masks,
                               scores=decoded.scores, index=best, selection=choice.selection, reason=choice.reason)

    def close(self) -> None:
        """Stop the prefetch thread (waits for a running job)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
