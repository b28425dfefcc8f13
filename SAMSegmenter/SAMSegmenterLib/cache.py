"""Least-recently-used cache of slice embeddings with a memory bound."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

from .models.embedding import ImageEmbedding

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: ~256 LiteMedSAM/SAM embeddings of 4 MiB each


class EmbeddingCache:
    """Thread-safe LRU map from a key to an :class:`ImageEmbedding`, bounded in bytes.

    Keys are built by the predictor from (model, volume identity, axis, index, window).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, ImageEmbedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        """Bytes held by cached embeddings."""
        return self._bytes

    def get(self, key: Hashable) -> ImageEmbedding | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: Hashable, embedding: ImageEmbedding) -> None:
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key).nbytes
            if embedding.nbytes > self.max_bytes:
                return
            self._items[key] = embedding
            self._bytes += embedding.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def get_or_compute(self, key: Hashable, compute: Callable[[], ImageEmbedding]) -> tuple[ImageEmbedding, bool]:
        """The cached embedding for ``key``, computing and storing it if absent; (embedding, computed)."""
        item = self.get(key)
        if item is not None:
            return item, False
        item = compute()
        self.put(key, item)
        return item, True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
