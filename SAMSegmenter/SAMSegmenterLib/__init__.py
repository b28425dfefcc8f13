"""SAMSegmenter engine: Segment Anything models on 3D medical volumes (numpy + torch, no Slicer).

Typical use::

    from SAMSegmenterLib import load_model, SlicePredictor, Prompt
    model = load_model("litemedsam")                 # embedded weights, auto device
    predictor = SlicePredictor(model, volume)       # volume: array [k, j, i]
    result = predictor.predict(0, 40, Prompt(box=(30, 20, 90, 75)))   # x = column, y = row
    result.mask, result.score

``import SAMSegmenterLib`` loads no PyTorch: the names below are imported on first use
(PEP 562), and ``errors``, ``prompts``, ``volume``, ``windowing`` and ``models.registry``
never import it.
"""

import importlib
import os
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1]
"""The folder holding SAMSegmenterLib (and the MRML layer and front ends beside it)."""


def child_env() -> dict:
    """This process's environment with :data:`MODULE_DIR` first on PYTHONPATH, for a child interpreter that
    must import this copy of the code (the SAM service, backend trials, the web app, Slicer's helpers)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(MODULE_DIR), env.get("PYTHONPATH")]))
    return env


_EXPORTS = {
    "Cancelled": "errors", "CheckpointError": "errors", "DeviceError": "errors", "InputError": "errors",
    "ModelError": "errors", "OutputError": "errors", "PromptError": "errors", "SAMSegmenterError": "errors",
    "Prompt": "prompts", "box_from_mask": "prompts",
    "Window": "windowing",
    "EmbeddingCache": "cache",
    "SlicePrediction": "predictor", "SlicePredictor": "predictor",
    "PropagationOptions": "propagation.plan", "PropagationResult": "propagation.plan",
    "MODEL_NAMES": "models.registry", "MODEL_SPECS": "models.registry", "PRECISIONS": "models.registry",
    "SamModel": "models.loader", "load_model": "models.loader", "unload_model": "models.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
