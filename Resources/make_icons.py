"""Draw SAMSegmenter's icons (extension, module, Segment Editor effect) with numpy.

The picture: a grey image slice, an orange segmented structure, the yellow box prompt
around it and a green include point. Run from the repository root:
``python Resources/make_icons.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ICONS = {
    ROOT / "Resources" / "SAMSegmenter.png": 128,
    ROOT / "SAMSegmenter" / "Resources" / "Icons" / "SAMSegmenter.png": 64,
    ROOT / "SAMSegmenter" / "Resources" / "Icons" / "SegmentEditorSAM.png": 21,
}
SUPERSAMPLE = 8


def layer(canvas: np.ndarray, inside: np.ndarray, rgb: tuple[float, float, float], alpha: float = 1.0) -> None:
    """Paint ``rgb`` over ``canvas`` (H, W, 4 premultiplied-free RGBA) where ``inside`` is True."""
    a = inside.astype(float) * alpha
    canvas[..., :3] = canvas[..., :3] * (1 - a[..., None]) + np.array(rgb) * a[..., None]
    canvas[..., 3] = np.maximum(canvas[..., 3], a)


def draw(size: int) -> np.ndarray:
    n = size * SUPERSAMPLE
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n  # coordinates in [0, 1], y downwards
    canvas = np.zeros((n, n, 4))
    corner = 0.18
    cx, cy = np.clip(x, corner, 1 - corner), np.clip(y, corner, 1 - corner)
    layer(canvas, (x - cx) ** 2 + (y - cy) ** 2 <= corner**2, (0.12, 0.17, 0.27))
    layer(canvas, ((x - 0.5) / 0.38) ** 2 + ((y - 0.52) / 0.42) ** 2 <= 1, (0.55, 0.57, 0.6))
    blob = ((x - 0.56) / 0.17) ** 2 + ((y - 0.46) / 0.13) ** 2 <= 1
    layer(canvas, blob, (1.0, 0.55, 0.1))
    x0, x1, y0, y1 = 0.33, 0.79, 0.27, 0.66
    width = max(0.045, 1.3 / size)
    outer = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    inner = (x >= x0 + width) & (x <= x1 - width) & (y >= y0 + width) & (y <= y1 - width)
    layer(canvas, outer & ~inner, (1.0, 0.86, 0.15))
    layer(canvas, (x - 0.56) ** 2 + (y - 0.46) ** 2 <= max(0.07, 1.6 / size) ** 2, (0.2, 0.9, 0.3))
    small = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 4)
    alpha = small[..., 3].mean(axis=(1, 3))
    rgb = (small[..., :3] * small[..., 3:]).mean(axis=(1, 3)) / np.maximum(alpha[..., None], 1e-6)
    return np.dstack([rgb, alpha]).clip(0, 1)


def main() -> None:
    for path, size in ICONS.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(path, draw(size))
        print(f"{path.relative_to(ROOT)}: {size} x {size}")


if __name__ == "__main__":
    main()
