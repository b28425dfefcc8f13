"""Messages that native libraries (ITK, GDCM, NIfTI, MetaIO) print to stderr, captured instead of shown.

ITK's readers and writers print warnings and half of their error reports straight to the
process's file descriptor 2 ("MetaImage: M_ReadElementsData: data not read completely",
"** ERROR: NWAD: wrote only ..."), around the exception they raise. :func:`captured_stderr`
redirects descriptor 2 to a temporary file for the duration of one native call, so a front
end shows one line, and the captured text can explain a failure.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import Iterator

_LOCK = threading.Lock()


class Captured:
    """Text written to descriptor 2 inside :func:`captured_stderr`; ``text`` is filled when the block ends."""

    text: str = ""

    def lines(self) -> list[str]:
        """Non-empty lines, stripped."""
        return [line.strip() for line in self.text.splitlines() if line.strip()]


@contextlib.contextmanager
def captured_stderr() -> Iterator[Captured]:
    """Redirect file descriptor 2 to a temporary file inside the block (one capture at a time).

    Everything written to descriptor 2 meanwhile, by any thread, lands in the capture: keep the
    block to the native call.
    """
    captured = Captured()
    with _LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", "replace")
