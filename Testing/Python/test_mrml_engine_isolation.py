"""Import isolation: the engine is free of Slicer, Qt and VTK; its package and front-end-facing
modules load no PyTorch (it runs in plain Python and in Slicer alike)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "SAMSegmenter"
FORBIDDEN = ("slicer", "qt", "ctk", "vtk", "vtkmodules", "PythonQt", "MRMLCore", "slicer_core")


def _modules_after(imports: str) -> list[str]:
    """Names in ``sys.modules`` after running ``imports`` in a fresh interpreter with SAMSegmenter/ on the path."""
    script = (
        "import importlib, json, pkgutil, sys\n"
        f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        f"{imports}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def engine_modules() -> list[str]:
    """Every module of the engine package, subpackages included (``__main__`` excluded)."""
    return sorted(m.name for m in pkgutil.walk_packages([str(MODULE_DIR / "SAMSegmenterLib")], "SAMSegmenterLib.")
                  if not m.name.endswith("__main__"))


def test_engine_imports_no_slicer_qt_or_vtk():
    modules = engine_modules()
    assert {"SAMSegmenterLib.models.loader", "SAMSegmenterLib.predictor", "SAMSegmenterLib.evaluation.evaluate",
            "SAMSegmenterLib.cli.segment"} <= set(modules)
    loaded = _modules_after(f"for name in {modules!r}:\n    importlib.import_module(name)")
    offending = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert offending == []


TORCH_FREE = ("SAMSegmenterLib", "SAMSegmenterLib.errors", "SAMSegmenterLib.prompts", "SAMSegmenterLib.volume",
              "SAMSegmenterLib.windowing", "SAMSegmenterLib.models", "SAMSegmenterLib.models.registry",
              "SAMSegmenterLib.cache", "SAMSegmenterLib.predictor", "SAMSegmenterLib.propagation_plan")


def test_package_and_front_end_modules_load_no_torch():
    """``import SAMSegmenterLib`` and the modules front ends use load neither PyTorch nor SimpleITK."""
    loaded = _modules_after(f"for name in {TORCH_FREE!r}:\n    importlib.import_module(name)")
    assert set(TORCH_FREE) <= set(loaded)
    assert [m for m in loaded if m.split(".")[0] in ("torch", "SimpleITK")] == []


def test_lazy_names_resolve():
    """The package's lazy names (PEP 562) are the real objects, loaded on first use."""
    loaded = _modules_after("import SAMSegmenterLib as s\nassert s.load_model.__module__ == "
                            "'SAMSegmenterLib.models.loader'\nassert s.Prompt.__name__ == 'Prompt'")
    assert "torch" in loaded


def test_mrml_layer_imports_no_qt():
    loaded = _modules_after(
        "import SAMSegmenterMRML\nfor m in pkgutil.iter_modules(SAMSegmenterMRML.__path__):\n"
        "    importlib.import_module('SAMSegmenterMRML.' + m.name)"
    )
    assert "SAMSegmenterMRML.logic" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("qt", "ctk", "PythonQt")] == []


def test_dependency_check_needs_no_torch():
    """The module panel imports this before PyTorch may exist."""
    loaded = _modules_after("from SAMSegmenterMRML import dependencies")
    assert "SAMSegmenterMRML.dependencies" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("torch", "slicer", "SAMSegmenterLib")] == []
