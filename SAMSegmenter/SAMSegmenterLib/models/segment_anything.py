"""Import segment-anything's modeling code with or without torchvision.

``segment_anything/__init__.py`` imports the predictor and the automatic mask
generator, which need torchvision; the modeling code itself needs only torch.
Where the normal import works (a Slicer with torchvision) it is used. Otherwise
the package is registered without running its ``__init__`` so that
``segment_anything.modeling`` and ``segment_anything.build_sam`` still import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from ..errors import ModelError


def _package_without_init() -> types.ModuleType:
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("segment-anything is not installed: pip install segment-anything==1.0")
    package = types.ModuleType("segment_anything")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["segment_anything"] = package
    return package


def _load_package() -> None:
    if "segment_anything" in sys.modules:
        return
    try:
        importlib.import_module("segment_anything")
    except Exception:  # torchvision missing or broken (RuntimeError: operator torchvision::nms ...)
        for name in [n for n in sys.modules if n == "segment_anything" or n.startswith("segment_anything.")]:
            del sys.modules[name]
        _package_without_init()


def modeling() -> types.ModuleType:
    """The ``segment_anything.modeling`` module (Sam, ImageEncoderViT, PromptEncoder, MaskDecoder, ...)."""
    _load_package()
    return importlib.import_module("segment_anything.modeling")


def build_sam() -> types.ModuleType:
    """The ``segment_anything.build_sam`` module (``sam_model_registry``)."""
    _load_package()
    return importlib.import_module("segment_anything.build_sam")
