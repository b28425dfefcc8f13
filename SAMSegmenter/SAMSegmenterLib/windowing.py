"""Intensity windows: map raw voxel values to [0, 1] before a model sees them.

A window is chosen once per volume, so every slice of a propagation sees the
same mapping. Named CT presets (Hounsfield units, level/width):

    soft_tissue 40/400, lung -600/1500, bone 400/1800, brain 40/80

``percentile`` (the default ``auto``) clips to the 0.5th and 99.5th percentiles
of the volume, as MedSAM does for MR and other non-CT images. ``"LOW,HIGH"``
is a user window in raw units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

CT_PRESETS: dict[str, tuple[float, float]] = {  # name: (level, width)
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Window:
    """Raw-intensity range [low, high] mapped to [0, 1]; ``name`` says where it came from."""

    low: float
    high: float
    name: str = "manual"

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Clip ``image`` to the window and scale to float32 in [0, 1] (any shape)."""
        scale = 1.0 / max(self.high - self.low, 1e-8)
        out = (np.asarray(image, dtype=np.float32) - np.float32(self.low)) * np.float32(scale)
        return np.clip(out, 0.0, 1.0, out=out)

    @property
    def key(self) -> tuple[float, float]:
        """Hashable identity for caches."""
        return (float(self.low), float(self.high))


def percentile_window(volume: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> Window:
    """Window from the volume's intensity percentiles (default 0.5 to 99.5).

    Large volumes are subsampled (every few voxels) for speed; the result differs
    from the exact percentiles by far less than one grey level.
    """
    data = np.asarray(volume)
    step = max(1, int(round((data.size / 2_000_000) ** (1 / 3))))
    sample = data[::step, ::step, ::step] if data.ndim == 3 else data
    low, high = np.percentile(sample, percentiles)
    if high <= low:
        high = low + 1.0
    return Window(float(low), float(high), "percentile")


def parse_window(spec: str | Window | None, volume: np.ndarray) -> Window:
    """Resolve a window spec for ``volume``.

    spec: a Window; ``None``/``"auto"``/``"percentile"``; a CT preset name; or ``"LOW,HIGH"``.
    """
    if isinstance(spec, Window):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text in ("auto", "percentile"):
        return percentile_window(volume)
    if text in CT_PRESETS:
        level, width = CT_PRESETS[text]
        return Window(level - width / 2, level + width / 2, text)
    parts = text.split(",")
    if len(parts) == 2:
        try:
            low, high = float(parts[0]), float(parts[1])
        except ValueError:
            low = high = float("nan")
        if np.isfinite(low) and np.isfinite(high) and high > low:
            return Window(low, high)
    raise InputError(f"unknown window {spec!r}: use auto, percentile, {', '.join(CT_PRESETS)}, "
                     "or LOW,HIGH with LOW < HIGH")
