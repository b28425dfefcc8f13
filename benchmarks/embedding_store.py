"""A SlicePredictor whose embeddings also persist on disk, so that benchmark runs can compare many
propagation rules on the same embeddings (the encoder dominates the cost; the decoder is ~50 ms).

Files are ``DIR/<model key hash>/<volume fingerprint>_<window>_<axis>_<index>.pt`` holding the
(1, 256, 64, 64) feature tensor and the slice sizes. Encoder time of each slice is remembered
(from the run that computed it) so that runs on a warm store can still charge it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Hashable, Optional

import torch

from SAMSegmenterLib.models import ImageEmbedding
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.volume import parse_axis


class StoredPredictor(SlicePredictor):
    """SlicePredictor that reads/writes embeddings under ``store`` (None: memory only) and meters them:
    ``encode_seconds[(axis, index)]``, ``needed`` (slices a run asked for), ``decodes`` (decoder passes)."""

    def __init__(self, *args, store: Optional[Path] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.store = None
        if store is not None:
            tag = hashlib.blake2b(repr(self.model.key).encode(), digest_size=6).hexdigest()
            self.store = Path(store) / tag
            self.store.mkdir(parents=True, exist_ok=True)
        self.encode_seconds: dict[Hashable, float] = {}
        self.needed: set[Hashable] = set()
        self.decodes = 0

    def _path(self, axis: int, index: int) -> Path:
        window = hashlib.blake2b(repr(self.window.key).encode(), digest_size=4).hexdigest()
        volume = str(self.volume_id)
        if not volume.isalnum():  # a caller's id (a file path, say) must not lead out of the store
            volume = hashlib.blake2b(repr(self.volume_id).encode(), digest_size=16).hexdigest()
        return self.store / f"{volume}_{window}_{axis}_{index}.pt"  # type: ignore[operator]

    def _compute(self, axis: int, index: int) -> ImageEmbedding:
        path = self._path(axis, index) if self.store is not None else None
        if path is not None and path.exists():
            saved = torch.load(path, weights_only=True)
            self.encode_seconds[(axis, index)] = float(saved["seconds"])
            features = saved["features"].to(self.model.device).contiguous(memory_format=torch.channels_last)
            return ImageEmbedding(features, tuple(saved["original_size"]), tuple(saved["input_size"]))
        start = time.perf_counter()
        embedding = super()._compute(axis, index)
        seconds = time.perf_counter() - start
        self.encode_seconds[(axis, index)] = seconds
        if path is not None:
            torch.save({"features": embedding.features.cpu().contiguous(), "seconds": seconds,
                        "original_size": list(embedding.original_size),
                        "input_size": list(embedding.input_size)}, path)
        return embedding

    def embedding(self, axis, index) -> ImageEmbedding:
        self.needed.add((parse_axis(axis), index))
        return super().embedding(axis, index)

    def predict(self, *args, **kwargs):
        self.decodes += 1
        return super().predict(*args, **kwargs)


def describe(store: Optional[Path]) -> str:
    return json.dumps({"store": str(store) if store else None})
