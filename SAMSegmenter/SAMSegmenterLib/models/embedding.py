"""What the image encoder and the mask decoder hand back (no torch import at run time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    import torch


def closer_to_inside(cells: np.ndarray, inside: np.ndarray, around: np.ndarray) -> np.ndarray:
    """(n,) bool: which of the (C, n) feature ``cells`` have a higher cosine with the (C,) vector ``inside`` than
    with ``around`` (both normalised here; a cell's own norm does not change which is higher, so it is not)."""
    toward = inside / max(float(np.linalg.norm(inside)), 1e-12)
    away = around / max(float(np.linalg.norm(around)), 1e-12)
    return toward @ cells > away @ cells


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
        """(g, g) float64 share of each feature cell that a (H, W) bool slice mask covers (g: the features' grid side).

        The mask is resized to the model input as the image was (nearest slice pixel per input pixel), padded
        bottom/right to the square input, and averaged over each cell's input pixels. Only the cells around the
        mask's bounding box are computed (the rest are 0).
        """
        grid = self.features.shape[-1]
        h, w = self.input_size
        rows, cols = self.original_size
        stride = max(h, w) // grid  # input pixels per cell side: the square input is the longer resized side
        coverage = np.zeros((grid, grid))
        occupied_rows, occupied_cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(occupied_rows):
            return coverage
        cells = []
        for size, source_size, occupied in ((h, rows, occupied_rows), (w, cols, occupied_cols)):
            source = np.minimum(((np.arange(size) + 0.5) * source_size / size).astype(np.intp), source_size - 1)
            first = int(np.searchsorted(source, occupied[0])) // stride  # cells whose input pixels reach the mask
            last = (int(np.searchsorted(source, occupied[-1], side="right")) - 1) // stride
            cells.append((first, last, source[first * stride:(last + 1) * stride]))  # cut short by the padding
        (r0, r1, source_rows), (c0, c1, source_cols) = cells
        block = np.zeros(((r1 - r0 + 1) * stride, (c1 - c0 + 1) * stride))
        block[:len(source_rows), :len(source_cols)] = mask[np.ix_(source_rows, source_cols)]
        coverage[r0:r1 + 1, c0:c1 + 1] = block.reshape(r1 - r0 + 1, stride, c1 - c0 + 1, stride).mean(axis=(1, 3))
        return coverage

    def alike_cells(self, inside: np.ndarray, around: np.ndarray) -> np.ndarray:
        """(g, g) bool: :func:`closer_to_inside` for every cell of the grid (float64, as
        :func:`propagation.slice_quality.prototype_iou` compares a mask's cells)."""
        grid = self.features[0].detach().cpu().numpy()  # (C, g, g), a view on the CPU
        return closer_to_inside(grid.reshape(len(grid), -1).astype(np.float64), inside, around).reshape(grid.shape[1:])

    def mask_features(self, mask: np.ndarray, region: np.ndarray) -> Optional["MaskFeatures"]:
        """What the features say about a (H, W) slice ``mask`` inside a (H, W) ``region`` (a box around it, say;
        the mask counts as part of it): see :class:`MaskFeatures`. None when the mask covers no cell (a line a
        pixel thin on a slice larger than the model input can fall between the pixels the input samples):
        nothing to judge.

        Raises:
            ValueError: a mask or region whose shape is not the slice's (H, W).
        """
        mask, region = np.asarray(mask, dtype=bool), np.asarray(region, dtype=bool)
        if mask.shape != tuple(self.original_size) or region.shape != mask.shape:
            raise ValueError(f"mask {mask.shape} and region {region.shape} must have the slice's shape "
                             f"{tuple(self.original_size)}")
        inside = self.cell_coverage(mask)
        if not inside.any():
            return None
        grid = self.features[0].detach().cpu().numpy()  # (C, g, g), a view on the CPU

        def mean(coverage: np.ndarray) -> np.ndarray:
            rows, cols = np.nonzero(coverage)
            if not len(rows):
                return np.zeros(len(grid))
            weights = coverage[rows, cols]
            return grid[:, rows, cols].astype(np.float64) @ weights / weights.sum()

        # every input pixel samples one slice pixel, so the shares add up: the surround's is the region's less the
        # mask's (exact: multiples of 1 / stride**2, a power of two)
        whole = self.cell_coverage(region | mask)
        rows, cols = np.nonzero(whole > 0.5)
        return MaskFeatures(mean(inside), mean(whole - inside), grid[:, rows, cols].astype(np.float64),
                            inside[rows, cols] > 0.5)


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
