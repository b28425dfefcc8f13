"""Models: registry (no torch), weights, devices, preprocessing, loading and encoder backends.

``from SAMSegmenterLib.models import MODEL_SPECS`` loads no torch; ``load_model`` and
``SamModel`` import PyTorch on first use.
"""

from .registry import (
    BACKENDS,
    DEFAULT_MODEL,
    DEVICES,
    MODEL_NAMES,
    MODEL_SPECS,
    PRECISIONS,
    ModelSpec,
    Preprocessing,
    get_spec,
)

_LAZY = {
    "SamModel": "loader", "load_model": "loader", "loaded_models": "loader", "unload_model": "loader",
    "ImageEmbedding": "embedding", "Decoded": "embedding",
    "cached_checkpoint": "checkpoints", "fetch_checkpoint": "checkpoints", "litemedsam_checkpoint": "checkpoints",
    "resolve_checkpoint": "checkpoints",
}

__all__ = ["BACKENDS", "DEFAULT_MODEL", "DEVICES", "MODEL_NAMES", "MODEL_SPECS", "PRECISIONS", "ModelSpec",
           "Preprocessing", "get_spec", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
