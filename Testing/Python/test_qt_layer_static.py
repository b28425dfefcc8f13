"""The Slicer Qt layer (the effect, the module panel, the self-test), checked without Slicer: it cannot run here.

Size and imports of the effect, no threads and no PyTorch in Slicer's process, translated user-visible strings,
and the self-test's skip when packages are missing (run as unittest with PyTorch blocked).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from test_mrml_engine_isolation import TORCH_FREE

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "SAMSegmenter"
EFFECT = MODULE / "SegmentEditorSAMLib" / "SegmentEditorEffect.py"
PANEL = MODULE / "SAMSegmenter.py"
SELF_TEST = ROOT / "Testing" / "Slicer" / "SAMSegmenterSelfTest.py"
QT_FILES = (EFFECT, PANEL, SELF_TEST)
ENGINE_MODULES_FOR_FRONT_ENDS = set(TORCH_FREE) | {"SAMSegmenterLib.service.client", "SAMSegmenterLib.service.protocol"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, in file order; ``from a import b`` gives a.b when b is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            folder = MODULE.joinpath(*node.module.split("."))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                      if (folder / f"{alias.name}.py").is_file()]
    return sorted(found)


def test_the_effect_stays_small():
    # widgets and event translation only (250 until the Structure choice, 2026-12-07): decisions live in the controller
    assert len(EFFECT.read_text().splitlines()) < 260


def test_the_qt_layer_imports_no_torch_no_threads_and_only_torch_free_engine_modules():
    for path in QT_FILES:
        modules = {name for _, name in imported_modules(path)}
        assert not {m for m in modules if m.split(".")[0] in ("torch", "threading", "concurrent", "multiprocessing")}
        engine = {m for m in modules if m.startswith("SAMSegmenterLib")}
        assert engine <= ENGINE_MODULES_FOR_FRONT_ENDS, (path.name, engine - ENGINE_MODULES_FOR_FRONT_ENDS)
        assert "Thread(" not in path.read_text()
    effect = {name for _, name in imported_modules(EFFECT)}
    assert {"SAMSegmenterMRML.controller", "SAMSegmenterLib.errors"} <= effect
    assert "SAMSegmenterMRML.logic" not in effect  # the effect reaches the logic through the module (its settings)


USER_TEXT_CALLS = {"QPushButton", "QCheckBox", "QLabel", "addLabeledOptionsWidget", "addItem", "setToolTip",
                   "confirmOkCancelDisplay", "errorDisplay", "infoDisplay", "showStatusMessage", "tryWithErrorDisplay"}
USER_TEXT_PROPERTIES = {"text", "toolTip", "title", "helpText", "acknowledgementText"}


def untranslated(path: Path) -> list[str]:
    """User-visible string literals not wrapped in ``_()`` (first argument of widget and dialog calls, text
    properties); the effect's ``name`` and data values are not user-visible text."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in USER_TEXT_CALLS:
            first = node.args[0] if node.args else None
            if isinstance(first, (ast.Constant, ast.JoinedStr)) and (not isinstance(first, ast.Constant)
                                                                    or isinstance(first.value, str) and first.value):
                found.append(f"{path.name}:{node.lineno}")
        elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.JoinedStr)):
            if any(getattr(t, "attr", None) in USER_TEXT_PROPERTIES for t in node.targets) and not (
                    isinstance(node.value, ast.Constant) and node.value.value in ("", None)):
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_user_visible_strings_are_translatable():
    assert untranslated(EFFECT) + untranslated(PANEL) == []
    effect = EFFECT.read_text()
    assert 'scriptedEffect.name = "SAM"' in effect and 'scriptedEffect.title = _("SAM")' in effect
    for path in (EFFECT, PANEL):
        assert "from slicer.i18n import tr as _" in path.read_text()


def test_the_self_test_reports_missing_packages_first_and_skips():
    """Its first import of ours is the dependency check, and with PyTorch missing unittest skips it with that
    reason, before any other SAMSegmenter module is loaded."""
    ours = [name for _, name in imported_modules(SELF_TEST) if name.startswith("SAMSegmenter")]
    assert ours[:2] == ["SAMSegmenterMRML", "SAMSegmenterMRML.dependencies"]
    script = textwrap.dedent(f"""
        import sys, unittest
        sys.modules["torch"] = None
        sys.path[:0] = [{str(MODULE)!r}, {str(SELF_TEST.parent)!r}]
        suite = unittest.TestLoader().loadTestsFromName("SAMSegmenterSelfTest")
        result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
        print([reason for _, reason in result.skipped], result.testsRun, result.wasSuccessful())
        print(sorted(m for m in sys.modules if m.startswith("SAMSegmenter") and m != "SAMSegmenterSelfTest"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    skipped, loaded = done.stdout.strip().splitlines()[-2:]
    assert skipped == ("['Python packages missing for the SAM service: torch (install them in the SAM Segmenter "
                       "module)'] 1 True")
    assert loaded == "['SAMSegmenterMRML', 'SAMSegmenterMRML.dependencies']"
    assert "... skipped 'Python packages missing" in done.stdout  # what ctest's SKIP_REGULAR_EXPRESSION matches
