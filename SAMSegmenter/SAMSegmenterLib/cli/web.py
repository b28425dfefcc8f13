"""``web``: start the web app (``python -m SAMSegmenterWeb``) with the options given after ``web``.

The engine does not import the web app (a front end, one layer up): this command hands the process
over to ``python -m SAMSegmenterWeb`` with the same interpreter (``exec`` on POSIX, so signals such as
a service manager's SIGTERM reach the app itself and no orphan is left; a waiting child on Windows).
``python -m SAMSegmenterWeb --help`` lists the options.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from typing import Sequence

from .. import child_env


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """List ``web`` in ``--help``; :func:`SAMSegmenterLib.cli.main` hands ``web ...`` to :func:`forward`."""
    subparsers.add_parser("web", add_help=False, help="open the SAM segmentation app in a browser (trame-slicer; "
                          "options: python -m SAMSegmenterWeb --help)")


def forward(argv: Sequence[str]) -> int:
    """Become ``python -m SAMSegmenterWeb ARGV`` (POSIX; never returns), or run it and return its exit status."""
    if importlib.util.find_spec("trame_slicer") is None:
        print("error: the web app needs trame-slicer: pip install 'samsegmenter[web]'", file=sys.stderr)
        return 2
    env = child_env()
    command = [sys.executable, "-m", "SAMSegmenterWeb", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(sys.executable, command, env)
    child = subprocess.Popen(command, env=env)
    try:
        return child.wait()
    except KeyboardInterrupt:  # the console's Ctrl-C reached the child too: let it finish its own way
        try:
            return child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            return 130
