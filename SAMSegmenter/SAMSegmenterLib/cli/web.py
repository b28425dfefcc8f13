"""``web``: start the web app (``python -m SAMSegmenterWeb``) with the options given after ``web``.

The engine does not import the web app (a front end, one layer up): this command runs it as a
child process with the same interpreter and waits for it, passing Ctrl-C and its exit status on.
``python -m SAMSegmenterWeb --help`` lists the options.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

_MODULE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding SAMSegmenterLib and SAMSegmenterWeb


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """List ``web`` in ``--help``; :func:`SAMSegmenterLib.cli.main` hands ``web ...`` to :func:`forward`."""
    subparsers.add_parser("web", add_help=False, help="open the SAM segmentation app in a browser (trame-slicer; "
                          "options: python -m SAMSegmenterWeb --help)")


def forward(argv: Sequence[str]) -> int:
    """Run ``python -m SAMSegmenterWeb ARGV`` and return its exit status (130 after Ctrl-C)."""
    if importlib.util.find_spec("trame_slicer") is None:
        print("error: the web app needs trame-slicer: pip install 'samsegmenter[web]'", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_MODULE_ROOT), env.get("PYTHONPATH", "")) if p)
    child = subprocess.Popen([sys.executable, "-m", "SAMSegmenterWeb", *argv], env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached the child too: let it finish its own way
        try:
            return child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            return 130

