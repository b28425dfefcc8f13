"""The engine package must stay free of Slicer, Qt and VTK (it runs in plain Python and in Slicer alike)."""

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


def test_engine_imports_no_slicer_qt_or_vtk():
    modules = sorted(m.name for m in pkgutil.iter_modules([str(MODULE_DIR / "SAMSegmenterLib")]) if m.name != "__main__")
    assert {"models", "predictor", "prompts", "volume"} <= set(modules)
    loaded = _modules_after(f"for name in {modules!r}:\n    importlib.import_module('SAMSegmenterLib.' + name)")
    offending = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert offending == []


def test_mrml_layer_imports_no_qt():
    loaded = _modules_after("import SAMSegmenterMRML\nfor m in pkgutil.iter_modules(SAMSegmenterMRML.__path__):\n"
                            "    importlib.import_module('SAMSegmenterMRML.' + m.name)")
    assert "SAMSegmenterMRML.logic" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("qt", "ctk", "PythonQt")] == []


def test_dependency_check_needs_no_torch():
    """The module panel imports this before PyTorch may exist."""
    loaded = _modules_after("from SAMSegmenterMRML import dependencies")
    assert "SAMSegmenterMRML.dependencies" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("torch", "slicer", "SAMSegmenterLib")] == []
