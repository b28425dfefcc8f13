"""Intensity windows: map raw voxel values to [0, 1] before a model sees them.

A window is chosen once per volume, so every slice of a propagation sees the
same mapping. Named CT presets (Hounsfield units, level/width):

    soft_tissue 40/400, lung -600/1500, bone 400/1800, brain 40/80

``percentile`` (the default ``auto``) clips to the 0.5th and 99.5th percentiles
of the volume, as MedSAM does for MR and other non-CT images. ``"LOW,HIGH"``
is a user window in raw units.

Non-finite voxels (NaN, +-inf, as some float exports hold outside the field of
view) are left out of the percentiles and shown as the window's ends (NaN and
-inf as its low end, +inf as its high end), so they never reach a model. An
:class:`ImageWarning` says so once per window chosen, and also when every slice
would look blank (a uniform volume, or a window outside the volume's intensities).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import InputError

CT_PRESETS: dict[str, tuple[float, float]] = {  # name: (level, width)
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
PERCENTILES = (0.5, 99.5)


class ImageWarning(UserWarning):
    """The image will not show the model what the user expects (non-finite voxels, a blank volume)."""


@dataclass(frozen=True)
class Window:
    """Raw-intensity range [low, high] mapped to [0, 1]; ``name`` says where it came from."""

    low: float
    high: float
    name: str = "manual"

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Clip ``image`` to the window and scale to float32 in [0, 1] (any shape).

        NaN and -inf become 0 (the window's low end), +inf 1. A window beyond float32's range
        (a float64 volume of huge values) is applied in float64.
        """
        image = np.asarray(image)
        huge = max(abs(self.low), abs(self.high)) >= float(np.finfo(np.float32).max)
        dtype = np.float64 if huge else np.float32
        scale = 1.0 / max(self.high - self.low, 1e-8)
        out = (np.asarray(image, dtype=dtype) - dtype(self.low)) * dtype(scale)
        out = np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)
        if np.issubdtype(image.dtype, np.floating):
            np.nan_to_num(out, copy=False, nan=0.0)
        return out

    @property
    def key(self) -> tuple[float, float]:
        """Hashable identity for caches."""
        return (float(self.low), float(self.high))


def percentile_window(volume: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> Window:
    """Window from the volume's intensity percentiles (default 0.5 to 99.5).

    Large volumes are subsampled (every few voxels) for speed; the result differs
    from the exact percentiles by far less than one grey level.
    Non-finite voxels are left out; InputError when there is no finite voxel.
    """
    data = np.asarray(volume)
    step = max(1, int(round((data.size / 2_000_000) ** (1 / 3))))
    sample = data[::step, ::step, ::step] if data.ndim == 3 else data
    if np.issubdtype(sample.dtype, np.floating):
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            sample = data[np.isfinite(data)]
        if sample.size == 0:
            raise InputError("every voxel of the volume is NaN or infinite: there is no image to segment")
    low, high = np.percentile(sample, percentiles)
    if high <= low:
        high = low + 1.0
    return Window(float(low), float(high), "percentile")


def fixed_window(spec: str | Window | None) -> Optional[Window]:
    """The window a spec names without looking at a volume, None for ``auto``/``percentile``.

    Checks the spec (InputError for an unknown name or a bad ``LOW,HIGH``), so front ends can
    refuse a typo before reading a volume or loading a model.
    """
    if isinstance(spec, Window):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text in ("auto", "percentile"):
        return None
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


def _warn_about(volume: np.ndarray, window: Window) -> None:
    """ImageWarning for non-finite voxels, and for a volume every slice of which looks blank in ``window``."""
    data = np.asarray(volume)
    finite = data
    if np.issubdtype(data.dtype, np.floating):
        good = np.isfinite(data)
        bad = data.size - int(np.count_nonzero(good))
        if bad:
            warnings.warn(f"{bad} of {data.size} voxels are NaN or infinite: they are left out of the intensity "
                          "window and shown to the model as its low end (NaN, -inf) or high end (+inf)",
                          ImageWarning, stacklevel=3)
            finite = data[good]
    if finite.size == 0:
        return
    low, high = finite.min(), finite.max()
    if low == high:
        warnings.warn(f"the volume is uniform (every voxel is {low:g}): the model sees a blank image and its "
                      "masks mean nothing", ImageWarning, stacklevel=3)
    elif high <= window.low or low >= window.high:
        warnings.warn(f"the window {window.low:g}..{window.high:g} lies outside the volume's intensities "
                      f"{low:g}..{high:g}: every slice looks blank to the model", ImageWarning, stacklevel=3)


def parse_window(spec: str | Window | None, volume: np.ndarray) -> Window:
    """Resolve a window spec for ``volume``.

    spec: a Window (returned as is); ``None``/``"auto"``/``"percentile"``; a CT preset name;
    or ``"LOW,HIGH"``. Warns (:class:`ImageWarning`) about non-finite voxels and blank volumes.
    """
    if isinstance(spec, Window):
        return spec
    window = fixed_window(spec) or percentile_window(volume)
    _warn_about(volume, window)
    return window


def box_contrast(image: np.ndarray, box: np.ndarray) -> float:
    """Standard deviation of a windowed (rows, columns) slice in [0, 1] inside ``box`` (x0, y0, x1, y1), inclusive.

    0 for a uniform region (a box on an empty background): nothing there for a model to outline.
    """
    rows, cols = image.shape
    x0, y0 = (max(0, int(np.floor(v))) for v in box[:2])
    x1, y1 = (min(limit - 1, int(np.ceil(v))) for v, limit in zip(box[2:], (cols, rows)))
    region = image[y0:y1 + 1, x0:x1 + 1]
    return float(region.std()) if region.size else 0.0
