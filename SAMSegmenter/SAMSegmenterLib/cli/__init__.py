"""Command line: ``python -m SAMSegmenterLib COMMAND ...`` (see ``--help``).

Each command lives in a module of this package exposing ``add_parser(subparsers)`` and
``run(args) -> int``; command modules import PyTorch, SimpleITK and the engine's heavy modules
inside ``run`` only, so ``--help`` and argument errors are quick and an interrupt during those
imports is handled like any other.

The error contract: a user error (bad argument, file, prompt, checkpoint, device, unwritable
output) prints one ``error: ...`` line to stderr and exits with 2; Ctrl-C exits with 130 and
SIGTERM with 143 (see :mod:`interrupts`); in every failed or interrupted run the outputs it
staged are deleted. Warnings print as ``warning: ...`` lines.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import Callable, Iterator, NoReturn, Sequence, TextIO

from ..errors import SAMSegmenterError
from . import interrupts

COMMAND_MODULES = ("segment", "evaluate", "models", "sample", "demo", "serve", "web")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and exit status 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m SAMSegmenterLib",
                    description="Segment Anything (LiteMedSAM, SAM, MedSAM) on 3D medical volumes.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(subparsers)
    return parser


def _hint(exc: SAMSegmenterError) -> str:
    """What the command line adds to an engine message (the engine does not know the flags)."""
    from ..io.dicom import SeriesChoiceError

    return " (give --series UID)" if isinstance(exc, SeriesChoiceError) else ""


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the command line: one ``warning: ...`` line on stderr."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=sys.stderr)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show warnings as one ``warning: ...`` line each, each distinct text once per command (a check made
    before the model loads and the engine may both warn about the same volume)."""
    shown: set[str] = set()

    def show_once(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
        if str(message) not in shown:
            shown.add(str(message))
            show_warning(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show_once
        yield


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["web"]:  # the web app parses its own options, in its own process (see cli/web.py)
        from .web import forward

        return forward(argv[1:])

    def command() -> int:
        args = build_parser().parse_args(argv)
        return int(args.run(args) or 0)

    return run_command(command)


def run_command(command: Callable[[], int]) -> int:
    """Run ``command`` under the error contract above (also used by the web app's own entry point)."""
    with interrupts.handled():
        try:
            with _warnings_as_lines():
                return command()
        except SAMSegmenterError as exc:
            print(f"error: {' '.join(str(exc).split())}{_hint(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            print("interrupted", file=sys.stderr)
            return interrupts.exit_code(exc)
        except BrokenPipeError:  # stdout piped into a program that stopped reading (``| head``)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        except OSError as exc:  # the file system refused something no check could foresee
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}{(exc.strerror or str(exc)).lower()}", file=sys.stderr)
            return 2
        except MemoryError:
            print("error: not enough memory for this input (try a smaller volume or fewer workers)", file=sys.stderr)
            return 2
