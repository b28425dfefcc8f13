"""Image preparation exactly as each model was trained, and the inverse for masks.

Every function takes a single-channel slice already windowed to [0, 1]
(see :mod:`windowing`), shape (H, W) = (rows, columns), and the model's
:class:`registry.Preprocessing`:

- LiteMedSAM: resize the longest side to 256 keeping the aspect ratio, min-max
  normalise to [0, 1], pad bottom/right to 256 x 256.
- SAM ViT-B/L/H: resize the longest side to 1024, scale to 0-255, subtract SAM's
  pixel mean and divide by its std, pad bottom/right to 1024 x 1024.
- MedSAM ViT-B: stretch to 1024 x 1024 (no aspect ratio), min-max normalise to [0, 1].

Prompt coordinates follow the image: ``x`` (column) is scaled by w'/W and ``y``
(row) by h'/H, where (h', w') is the resized, unpadded size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .registry import Preprocessing

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def image_tensor(pre: Preprocessing, image: np.ndarray, device: torch.device) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W) float image in [0, 1] -> ((1, 3, size, size) float32 tensor on ``device``, (h', w'))."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {image.shape}")
    h_in, w_in = pre.input_size(image.shape)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)[None, None]
    if (h_in, w_in) != tuple(image.shape):
        x = F.interpolate(x, size=(h_in, w_in), mode="bilinear", align_corners=False,
                          antialias=bool(h_in < image.shape[0] or w_in < image.shape[1]))
    if pre.normalize == "minmax":
        lo, hi = x.min(), x.max()
        x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
        x = x.expand(1, 3, h_in, w_in)
    else:
        mean = torch.tensor(SAM_PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD, device=device).view(1, 3, 1, 1)
        x = (x.clamp(0, 1) * 255.0 - mean) / std
    x = F.pad(x, (0, pre.size - w_in, 0, pre.size - h_in))
    return x.contiguous(), (h_in, w_in)


def masks_to_original(pre: Preprocessing, low_res: torch.Tensor, original_size: tuple[int, int],
                      input_size: tuple[int, int]) -> torch.Tensor:
    """Low-resolution logits (B, M, 256, 256) -> logits (B, M, H, W) in slice pixels."""
    x = low_res
    if tuple(x.shape[-2:]) != (pre.size, pre.size):  # at its own size the interpolation is the identity
        x = F.interpolate(x, size=(pre.size, pre.size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, size=original_size, mode="bilinear", align_corners=False)
