"""Command line: ``python -m SAMSegmenterLib COMMAND ...`` (see ``--help``).

Each command lives in a module of this package exposing ``add_parser(subparsers)`` and
``run(args) -> int``. User errors print one line to stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ..errors import SAMSegmenterError

COMMAND_MODULES = ("segment", "evaluate", "models", "sample", "demo", "web")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m SAMSegmenterLib",
        description="Segment Anything (LiteMedSAM, SAM, MedSAM) on 3D medical volumes.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except SAMSegmenterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
