"""Run model work off the GUI thread and hand results back to it (no Qt needed).

The Segment Editor effect submits jobs here and calls `BackgroundRunner.poll` from a
``qt.QTimer`` on the main thread, where results are applied to the scene: a worker thread
never touches MRML.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional


@dataclass
class Finished:
    """A job's outcome: ``value`` when it returned, ``error`` when it raised."""

    tag: Hashable
    value: Any = None
    error: Optional[BaseException] = None


class BackgroundRunner:
    """One daemon thread running one job at a time.

    A job submitted while another runs waits; a newer submission replaces a waiting one
    (only the latest prompt matters). ``progress`` holds the running job's last
    (done, total) report; ``cancel_requested`` is what its cancel callback returns.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: Optional[tuple[Hashable, Callable[[], Any]]] = None
        self._finished: list[Finished] = []
        self._thread: Optional[threading.Thread] = None
        self._cancel = threading.Event()
        self.progress: Optional[tuple[int, int]] = None

    def submit(self, tag: Hashable, job: Callable[[], Any]) -> None:
        """Queue ``job`` (replacing a job that has not started yet)."""
        with self._lock:
            self._waiting = (tag, job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="SAMSegmenter", daemon=True)
                self._thread.start()

    def report(self, done: int, total: int) -> None:
        """Progress callback for jobs."""
        self.progress = (int(done), int(total))

    def cancel_requested(self) -> bool:
        """Cancel callback for jobs."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Drop the waiting job and ask the running one to stop."""
        with self._lock:
            self._waiting = None
        self._cancel.set()

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None

    def poll(self) -> list[Finished]:
        """Outcomes of the jobs finished since the last call, oldest first (main thread)."""
        with self._lock:
            finished, self._finished = self._finished, []
        return finished

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until no job runs or waits (for scripts and tests); False on timeout."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._waiting is None:
                    self._thread = None
                    return
                tag, job = self._waiting
                self._waiting = None
                self.progress = None
                self._cancel.clear()
            try:
                outcome = Finished(tag, value=job())
            except Exception as error:  # handed to the main thread, which reports it
                outcome = Finished(tag, error=error)
            with self._lock:
                self._finished.append(outcome)
