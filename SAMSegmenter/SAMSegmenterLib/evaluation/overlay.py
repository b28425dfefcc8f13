"""PNG pictures of a slice with a mask outline and its prompt (numpy + SimpleITK only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..metrics import surface
from ..prompts import Prompt


def overlay_rgb(image: np.ndarray, mask: np.ndarray, prompt: Prompt | None = None,
                reference: np.ndarray | None = None, scale: int = 2) -> np.ndarray:
    """RGB uint8 picture (rows*scale, cols*scale, 3) of a [0, 1] slice.

    The mask is tinted red with a red outline, a reference mask outlined green,
    the box drawn yellow, include points green and exclude points red.
    """
    grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    mask = np.asarray(mask, dtype=bool)
    rgb[mask] = 0.6 * rgb[mask] + 0.4 * np.array([255, 40, 40])
    rgb[surface(mask)] = (255, 40, 40)
    if reference is not None:
        rgb[surface(reference)] = (40, 255, 40)
    rgb = np.kron(rgb, np.ones((scale, scale, 1))).astype(np.uint8)
    if prompt is not None:
        rows, cols = rgb.shape[:2]
        if prompt.box is not None:
            x0, y0, x1, y1 = (np.round(prompt.box * scale).astype(int) + [0, 0, scale - 1, scale - 1])
            x0, x1 = np.clip([x0, x1], 0, cols - 1)
            y0, y1 = np.clip([y0, y1], 0, rows - 1)
            rgb[y0, x0:x1 + 1] = rgb[y1, x0:x1 + 1] = (255, 230, 0)
            rgb[y0:y1 + 1, x0] = rgb[y0:y1 + 1, x1] = (255, 230, 0)
        for (x, y), label in zip(prompt.points, prompt.labels):
            cx, cy = int(round(x * scale)), int(round(y * scale))
            color = (40, 255, 40) if label == 1 else (255, 40, 40)
            rgb[max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3] = color
    return rgb


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array (rows, cols, 3) as a PNG file."""
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(rgb), isVector=True), str(path))
    return Path(path)
