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

    def cell_coverage(self, mask: np.ndarray) -> np.ndarray:
        """(g, g) float64 share of each feature cell that a (H, W) slice mask covers (g: the features' grid side).

        The mask is resized to the model input as the image was (nearest slice pixel per input pixel), padded
        bottom/right to the square input, and averaged over each cell's input pixels.
        """
        grid = self.features.shape[-1]
        h, w = self.input_size
        rows, cols = self.original_size
        side = max(h, w)
        stride = side // grid
        source_rows = np.minimum(((np.arange(h) + 0.5) * rows / h).astype(np.intp), rows - 1)
        source_cols = np.minimum(((np.arange(w) + 0.5) * cols / w).astype(np.intp), cols - 1)
        square = np.zeros((grid * stride, grid * stride))
        square[:h, :w] = np.asarray(mask, dtype=bool)[np.ix_(source_rows, source_cols)]
        return square.reshape(grid, stride, grid, stride).mean(axis=(1, 3))

    def mask_features(self, mask: np.ndarray, region: np.ndarray) -> "MaskFeatures":
        """What the features say about a (H, W) slice ``mask`` inside a (H, W) ``region`` holding it (a box
        around it, say): see :class:`MaskFeatures`."""
        grid = self.features[0].detach().cpu().numpy()  # (C, g, g), a view on the CPU

        def mean(coverage: np.ndarray) -> np.ndarray:
            rows, cols = np.nonzero(coverage)
            if not len(rows):
                return np.zeros(len(grid))
            weights = coverage[rows, cols]
            return grid[:, rows, cols].astype(np.float64) @ weights / weights.sum()

        inside = self.cell_coverage(mask)
        rows, cols = np.nonzero(self.cell_coverage(region) > 0.5)
        return MaskFeatures(mean(inside), mean(self.cell_coverage(region & ~mask)),
                            grid[:, rows, cols].astype(np.float64), inside[rows, cols] > 0.5)


@dataclass(frozen=True, eq=False)
class MaskFeatures:
    """The image features in and around a mask on one slice (float64; C channels, n cells of the feature grid).

    inside: (C,) mean over the mask, each cell weighed by the share it covers; around: (C,) the same over the
    region less the mask (zeros where that is empty); cells: (C, n) the features of the cells that the region
    covers more than half; covered: (n,) bool, those of them that the mask covers more than half.
    """

    inside: np.ndarray
    around: np.ndarray
    cells: np.ndarray
    covered: np.ndarray


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
