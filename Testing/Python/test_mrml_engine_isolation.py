"""Import isolation: the engine is free of Slicer, Qt and VTK; its package and front-end-facing
modules load no PyTorch (it runs in plain Python and in Slicer alike)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
import textwrap
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
              "SAMSegmenterLib.cache", "SAMSegmenterLib.predictor", "SAMSegmenterLib.propagation",
              "SAMSegmenterLib.propagation.plan")


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


BLOCKED = "import sys\nsys.modules['torch'] = None\nsys.modules['SimpleITK'] = None\n"


def qt_layer_imports() -> list[str]:
    """The SAMSegmenterMRML / SAMSegmenterLib modules the Slicer Qt layer imports (anywhere in its files)."""
    names = set()
    for path in (MODULE_DIR / "SAMSegmenter.py", MODULE_DIR / "SegmentEditorSAMLib" / "SegmentEditorEffect.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names
                             if (MODULE_DIR / node.module.replace(".", "/") / f"{a.name}.py").is_file())
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
    return sorted(names)


PACKAGES = ("SAMSegmenterMRML", "SAMSegmenterLib")


def test_mrml_layer_and_client_import_without_torch_or_simpleitk():
    """Every module of the MRML layer, the service client, and whatever the Qt layer imports."""
    modules = ["SAMSegmenterLib.service.client", *qt_layer_imports()]
    loaded = _modules_after(BLOCKED + "import SAMSegmenterMRML\n"
                            "for m in pkgutil.iter_modules(SAMSegmenterMRML.__path__):\n"
                            "    importlib.import_module('SAMSegmenterMRML.' + m.name)\n"
                            f"for name in {modules!r}:\n    importlib.import_module(name)")
    assert {"SAMSegmenterMRML.controller", "SAMSegmenterMRML.logic", "SAMSegmenterLib.service.client"} <= set(loaded)
    assert [m for m in loaded if m.split(".")[0] in ("qt", "ctk", "PythonQt")] == []


def test_controller_says_packages_are_missing_without_torch():
    """With PyTorch blocked, the effect's controller explains what is missing and starts no server."""
    script = BLOCKED + textwrap.dedent(f"""
        sys.path[:0] = [{str(MODULE_DIR)!r}, {str(Path(__file__).parent)!r}]
        import numpy as np
        import slicer
        from mrml_scene import make_scene, volume_from_array
        from SAMSegmenterMRML.controller import InteractionController
        from SAMSegmenterMRML.editor import SegmentEditorSession
        from SAMSegmenterMRML.engines import ServiceEngine
        scene = make_scene()
        volume = volume_from_array(scene, np.zeros((3, 16, 16), np.int16), np.eye(4), "v")
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.GetSegmentation().AddEmptySegment("s", "s")
        engine = ServiceEngine()
        writer = SegmentEditorSession(segmentation, volume)
        controller = InteractionController(engine, volume, segmentation, "s", writer)
        controller.propagate("both")
        print(controller.state.status if controller.state.error else "no error")
        print(engine.local.process)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "None"  # no server was started
    assert lines[-2] == "Python packages are missing (torch): install them in the SAM Segmenter module."
def test_dependency_check_needs_no_torch():
    """The module panel imports this before PyTorch may exist."""
    loaded = _modules_after("from SAMSegmenterMRML import dependencies")
    assert "SAMSegmenterMRML.dependencies" in loaded
    assert [m for m in loaded if m.split(".")[0] in ("torch", "slicer", "SAMSegmenterLib")] == []
