"""Ctrl-C (SIGINT) and SIGTERM on the command line: clean up, exit 130 or 143, no traceback.

Both signals raise an exception in the main thread (:class:`KeyboardInterrupt`, or its subclass
:class:`Terminated` for SIGTERM), so the ``finally`` blocks and context managers of the running
command delete what it staged. Once a command calls :func:`finishing`, its outputs are being put
in place and it completes: further signals are ignored rather than leave a partial set.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_FINISHING = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


def _raise(signum: int, frame: object) -> None:
    if _FINISHING.is_set():
        return
    if signum == signal.SIGTERM:
        raise Terminated("terminated")
    raise KeyboardInterrupt


def install() -> dict[int, object]:
    """Handle SIGINT and SIGTERM from now on (main thread only); returns the handlers replaced."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, _raise)
    return previous


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Handle SIGINT and SIGTERM inside the block; the previous handlers come back after it."""
    previous = install()
    _FINISHING.clear()
    try:
        yield
    finally:  # a command that has put its outputs in place stays finishing (see finishing()) until the next one
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def finishing() -> None:
    """The command is putting its outputs in place: ignore interrupts until it returns, and after it (the
    process exits with the command's status)."""
    _FINISHING.set()


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM (the shells' convention)."""
    return 128 + int(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
