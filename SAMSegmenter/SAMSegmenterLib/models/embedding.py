"""What the image encoder and the mask decoder hand back (no torch import at run time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class ImageEmbedding:
    """Encoder output for one slice.

    features: (1, 256, 64, 64) float32 tensor on the model's device, channels-last in
    memory (the decoder reads it as 4096 tokens of 256 channels); original_size: (H, W)
    = (rows, columns) of the slice; input_size: (h', w') after resizing, before padding.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement()


@dataclass
class Decoded:
    """Decoder output for one prompt.

    masks: (M, H, W) bool in slice pixels; scores: (M,) predicted IoU; low_res_logits:
    (M, 256, 256) float32. M is 1 (single output), 3 (SAM's multimask outputs) or 4 (all of them,
    the single output first).
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
