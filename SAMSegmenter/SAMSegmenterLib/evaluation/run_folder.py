"""The folder an evaluation run writes: never a half-new run presented as complete.

A run's files (``cases.csv``, ``summary.csv``, figures, ``run.json``) are staged under hidden
temporary names in the folder while they are written, then :meth:`RunFolder.commit` replaces
the previous run's files in one go: it deletes the previous ``run.json`` first, moves the new
files in, ``run.json`` last, and deletes the previous run's files this run did not write (a
figure left out with ``--no-figures``). ``run.json`` is thus the mark of a complete run: a
folder whose commit was cut short (power loss, SIGKILL: the command line ignores SIGINT and
SIGTERM while committing) has none. A run that fails or is interrupted before its commit
leaves the folder as it was, and removes the folders it created.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Optional

from ..io.outputs import StagedOutputs, new_folders

RUN_FILES = ("cases.csv", "summary.csv", "boxplots.png", "overlays.png", "run.json")
MARKER = "run.json"


class RunFolder:
    """Write one run into ``folder`` (created with its parents when missing); use as a context manager."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._stack = contextlib.ExitStack()
        self._staged = StagedOutputs()
        self._names: list[str] = []

    def __enter__(self) -> RunFolder:
        self._stack.enter_context(new_folders(self.folder))
        self._stack.enter_context(self._staged)
        return self

    def write(self, name: str, writer: Callable[[Path], object]) -> None:
        """Stage file ``name`` (one of :data:`RUN_FILES`) written by ``writer(temporary path)``."""
        if name not in RUN_FILES:
            raise ValueError(f"{name} is not a run file ({', '.join(RUN_FILES)})")
        self._staged.write(self.folder / name, writer)
        self._names.append(name)

    def commit(self) -> list[Path]:
        """Replace the previous run's files by the staged ones, the marker last; returns the files written."""
        if not self._names or self._names[-1] != MARKER:
            raise ValueError(f"a run is complete with its {MARKER}: stage it last")
        (self.folder / MARKER).unlink(missing_ok=True)
        for name in RUN_FILES:
            if name not in self._names:
                (self.folder / name).unlink(missing_ok=True)
        return self._staged.commit()

    def __exit__(self, *exc_info: object) -> Optional[bool]:
        return self._stack.__exit__(*exc_info)
