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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Hashable, Optional

import numpy as np

from .cache import EmbeddingCache
from .errors import InputError, PromptError
from .models.embedding import ImageEmbedding, MaskFeatures
from .models.encoder_gate import gate_for, on_model_thread
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
    selection: the rule that chose it (see :mod:`selection`); reason: why, in a few words;
    candidate_logits: (4, 256, 256) float32 logits of all four candidates where computed here (None in a
    prediction received from the inference service), for :meth:`choose`.
    """

    mask: np.ndarray
    score: float
    low_res_logits: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    index: int
    selection: str
    reason: str
    candidate_logits: Optional[np.ndarray] = field(default=None, repr=False)

    def choose(self, index: int, selection: str, reason: str) -> "SlicePrediction":
        """This prediction with candidate ``index`` chosen instead, by the rule ``selection`` for ``reason``.

        Raises:
            ValueError: the candidates' logits are not here, or no candidate has that index.
        """
        if self.candidate_logits is None:
            raise ValueError("choosing another candidate needs the candidates' logits")
        if not 0 <= index < len(self.masks):
            raise ValueError(f"candidate {index} does not exist (there are {len(self.masks)})")
        return replace(self, mask=self.masks[index], score=float(self.scores[index]),
                       low_res_logits=self.candidate_logits[index], index=index, selection=selection, reason=reason)


def fingerprint_digest(shape: tuple[int, ...], dtype: np.dtype) -> "hashlib.blake2b":
    """The hash of :func:`volume_fingerprint` before the voxels: update it with the C-order bytes of a volume of
    ``shape`` and ``dtype`` (in order, in any pieces), then take its ``hexdigest()``."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((tuple(int(n) for n in shape), np.dtype(dtype).str)).encode())
    return digest


def volume_fingerprint(volume: np.ndarray) -> str:
    """Content hash of a volume (shape, dtype and bytes) used to key cached embeddings."""
    digest = fingerprint_digest(volume.shape, volume.dtype)
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
        if not (np.issubdtype(volume.dtype, np.number) or volume.dtype == bool) or np.iscomplexobj(volume):
            raise InputError(f"volume must be real numbers, got dtype {volume.dtype}")
        if volume.dtype == bool:
            volume = volume.view(np.uint8)  # a mask as its 0/1 grey levels (no copy)
        self.model = model
        self.volume = volume
        self.window = parse_window(window, volume)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.volume_id = volume_id if volume_id is not None else volume_fingerprint(volume)
        self.encoder_calls = 0
        self.gate = gate_for(model)
        self._lock = threading.Lock()
        # the last embedding asked for, kept even where the cache keeps nothing (a cache of 0 MB, an embedding
        # evicted at once): a propagated slice reads it twice, to decode and then for its mask features
        self._latest: Optional[tuple[Hashable, ImageEmbedding]] = None

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
        """The embedding of a slice: from the cache, or computed now through the model's encoder gate
        (once, however many threads ask; at this thread's :func:`encoder_gate.priority`)."""
        axis = parse_axis(axis)
        check_slice(self.volume.shape, axis, index)
        key = self._key(axis, index)
        latest = self._latest
        if latest is not None and latest[0] == key:
            return latest[1]
        embedding = self.cache.get(key)
        if embedding is None:
            embedding = self.gate.run(key, lambda: self._compute(axis, index), lambda e: self.cache.put(key, e))
        self._latest = (key, embedding)
        return embedding

    def mask_features(self, axis: int | str, index: int, mask: np.ndarray,
                      region: np.ndarray) -> Optional[MaskFeatures]:
        """The image features in and around a (rows, columns) ``mask`` on slice ``index``, within ``region`` (same
        shape, holding the mask): :meth:`ImageEmbedding.mask_features` (None for a mask too thin to cover a
        feature cell). Embeds the slice if it is not cached."""
        return self.embedding(axis, index).mask_features(mask, region)

    def is_cached(self, axis: int | str, index: int) -> bool:
        return self._key(parse_axis(axis), index) in self.cache

    def prefetch(self, axis: int | str, index: int) -> None:
        """Embed a slice in the background at prefetch priority (no-op if cached or out of range):
        it never delays a prompt (see :mod:`encoder_gate`)."""
        axis = parse_axis(axis)
        if not 0 <= index < self.volume.shape[axis]:
            return
        key = self._key(axis, index)
        if key not in self.cache:
            self.gate.prefetch(key, lambda: self._compute(axis, index), lambda e: self.cache.put(key, e), owner=self)

    def predict(self, axis: int | str, index: int, prompt: Prompt, selection: str | None = None) -> SlicePrediction:
        """Segment one slice from a prompt.

        Args:
            axis: 0/"K" (``volume[index]``, rows = j, columns = i), 1/"J" (rows = k, columns = i) or
                2/"I" (rows = k, columns = j).
            index: the slice along ``axis``.
            prompt: points and/or a box in that slice's pixels (x = column, y = row, boxes inclusive).
            selection: the rule that picks one of the decoder's four candidates (the single output,
                then SAM's three multimask outputs): ``single``, ``best_score`` or ``box_fit``
                (:data:`selection.SELECTIONS`); None: the measured default for the prompt
                (:func:`selection.default_selection`: ``box_fit`` for a box).

        Returns:
            A :class:`SlicePrediction`: ``mask`` (rows, columns) bool, ``score``, the candidates.

        Raises:
            InputError: axis or slice outside the volume. PromptError: an empty prompt, a prompt
            outside the slice, or points for a box-only model.
        """
        axis = parse_axis(axis)
        check_slice(self.volume.shape, axis, index)
        if not isinstance(prompt, Prompt):
            raise PromptError(f"the prompt must be a Prompt (points and/or a box), got {type(prompt).__name__}")
        prompt.validate(self.slice_shape(axis))
        rule = resolve_selection(selection, prompt)
        embedding = self.embedding(axis, index)
        decoded = on_model_thread(lambda: self.model.decode_candidates(embedding, prompt))
        choice = select(decoded.masks, decoded.scores, rule, prompt.box)
        best = choice.index
        return SlicePrediction(mask=decoded.masks[best], score=float(decoded.scores[best]),
                               low_res_logits=decoded.low_res_logits[best], masks=decoded.masks,
                               scores=decoded.scores, index=best, selection=choice.selection, reason=choice.reason,
                               candidate_logits=decoded.low_res_logits)

    def close(self) -> None:
        """Drop this predictor's queued prefetches (one already running finishes into the cache)."""
        self.gate.drop_prefetches(self)
