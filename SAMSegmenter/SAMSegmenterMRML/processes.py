"""Helper processes of the Slicer panel (downloads, checksums, installs): started without a console window,
polled without waiting, and cancelled as a whole process tree.

Inside Slicer ``sys.executable`` is PythonSlicer, a launcher that starts the real interpreter as its child and
passes no signal on: terminating the launcher alone leaves the child running. Each helper therefore starts in
a process group of its own (a new session on POSIX, a new process group on Windows), and cancelling kills the
group (``killpg``) or the tree (``taskkill /T``). A cancelled helper counts as finished only once no process
of its group is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from SAMSegmenterLib import child_env

WINDOWS = os.name == "nt"
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
NEW_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)


class HelperProcess:
    """``python args...`` in its own process group, its output (stdout and stderr) in a log file.

    The log (in the temporary folder) is kept only if the process fails, to say why; once :meth:`poll` sees
    it end with exit code 0, or at a cancel (on Windows: once :meth:`poll` sees the cancelled tree end), its
    last lines are kept in memory and the file is deleted.
    python: the interpreter (default this one: PythonSlicer inside Slicer)."""

    TAIL_BYTES = 4096

    def __init__(self, args: Sequence[str], python: Optional[str] = None, prefix: str = "samsegmenter-"):
        self.command = [python or sys.executable, *args]
        descriptor, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
        self.log = Path(name)
        options: dict = {"creationflags": NO_WINDOW | NEW_GROUP} if WINDOWS else {"start_new_session": True}
        with os.fdopen(descriptor, "wb") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=child_env(), **options)
        self.cancelled = False
        self._killed = False  # cancelled while it ran: its log says nothing worth keeping
        self._tail: Optional[str] = None  # the log's end, read when the process has ended

    def poll(self) -> Optional[int]:
        """The exit code once the process (after a cancel: its whole group) has ended, else None. Never waits."""
        code = self.process.poll()
        if code is None or (self.cancelled and self.group_alive()):
            return None
        if self._tail is None:
            self._keep_tail(delete=code == 0 or self._killed)
        return code

    def _keep_tail(self, delete: bool) -> None:
        """Keep the log's end in memory (the process writes no more), and delete the file if ``delete``."""
        self._tail = self._read_tail()
        if delete:
            try:
                self.log.unlink(missing_ok=True)
            except OSError:  # Windows: still open (a killed tree's last process, a virus scanner): it stays
                pass

    def _read_tail(self) -> str:
        try:
            return self.log.read_bytes()[-self.TAIL_BYTES:].decode(errors="replace")
        except OSError:
            return ""

    def group_alive(self) -> bool:
        """Whether any process of the helper's group is still running (the launcher's child included)."""
        if WINDOWS:
            return self.process.poll() is None  # taskkill /T has ended the tree with its root
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _group_has_live_member(self.process.pid)

    def cancel(self) -> None:
        """Kill the whole process tree; returns at once (poll() says when it is gone)."""
        self.cancelled = True
        if WINDOWS:
            if self.process.poll() is None:
                self._killed = True
                subprocess.Popen(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, creationflags=NO_WINDOW)
            return
        self.process.poll()  # reap a launcher that has ended (without /proc its zombie would count as alive)
        self._killed = self._killed or self.group_alive()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.poll()  # reap the launcher if it is gone already
        if self._killed and self._tail is None:  # delete the log now: a closing panel polls no more
            self._keep_tail(delete=True)

    def last_line(self) -> str:
        """The last non-empty line the process printed (progress, or why it failed)."""
        text = self._tail if self._tail is not None else self._read_tail()
        lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
        return lines[-1] if lines else ""


def _group_has_live_member(pgid: int) -> bool:
    """Whether process group ``pgid`` has a member that is not a zombie (Linux /proc; elsewhere: any member)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
