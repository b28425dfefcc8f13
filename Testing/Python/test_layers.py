"""The layout checks of the product code: no import up the layers, no runtime import circle, a short
engine top folder. The checker is shown to catch both faults on a small tree made here."""

from __future__ import annotations

import textwrap
from pathlib import Path

from import_graph import cycles, edges, upward

ROOT = Path(__file__).resolve().parents[2] / "SAMSegmenter"
MAX_TOP_MODULES = 10


def test_no_import_runs_up_the_layers():
    assert [f"{e.source}:{e.line} imports {e.target}" for e in upward(ROOT)] == []


def test_no_runtime_import_circle():
    assert cycles(ROOT) == []


def test_the_engine_top_folder_is_short():
    """At most ten modules beside the engine's subpackages (io, propagation, models, evaluation, service, cli)."""
    top = sorted(p.name for p in (ROOT / "SAMSegmenterLib").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_the_graph_is_read_from_the_real_code():
    found = {(e.source, e.target) for e in edges(ROOT)}
    assert ("SAMSegmenterMRML.controller", "SAMSegmenterLib.propagation.plan") in found
    assert ("SAMSegmenterLib.propagation.walk", "SAMSegmenterLib.propagation.plan") in found


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_checker_finds_an_upward_import_and_a_circle(tmp_path):
    _write(tmp_path, {
        "SAMSegmenterLib/__init__.py": "",
        "SAMSegmenterLib/a.py": "from .b import x\n",
        "SAMSegmenterLib/b.py": "from . import a\nx = 1\n",
        "SAMSegmenterLib/lazy.py": "def f():\n    from SAMSegmenterWeb.app import App\n",
        "SAMSegmenterLib/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n",
        "SAMSegmenterLib/c.py": "from .typed import T\n",
        "SAMSegmenterWeb/__init__.py": "",
        "SAMSegmenterWeb/app.py": "from SAMSegmenterLib.a import x\n",
    })
    assert sorted((e.source, e.target) for e in upward(tmp_path)) == [
        ("SAMSegmenterLib.lazy", "SAMSegmenterWeb"), ("SAMSegmenterLib.lazy", "SAMSegmenterWeb.app")]
    assert cycles(tmp_path) == [["SAMSegmenterLib.a", "SAMSegmenterLib.b"]]  # typed <-> c is not a runtime circle
