"""Compute devices and numeric precisions.

``"auto"`` picks CUDA, then Apple MPS, then the CPU. Reduced precision is opt-in:
``"fp16"`` needs CUDA or MPS, ``"bf16"`` needs CUDA with bf16 support or a CPU.
"""

from __future__ import annotations

import torch

from ..errors import DeviceError
from .registry import PRECISIONS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Device names usable on this machine, best first (e.g. ``["cuda:0", "cpu"]``)."""
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        devices.append("mps")
    return devices + ["cpu"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into an available torch device.

    Raises DeviceError naming what is available when the device cannot be used.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device(available_devices()[0])
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"CUDA is not available in this PyTorch build or machine; "
                              f"available: {', '.join(available_devices())}")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"{text} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"Apple MPS is not available; available: {', '.join(available_devices())}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for ``precision`` on ``device``; DeviceError where that device cannot run it."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{device} does not support bf16; use fp16 or fp32")
    if precision == "bf16" and device.type == "mps":
        raise DeviceError("bf16 is not supported on MPS; use fp16 or fp32")
    return DTYPES[precision]
