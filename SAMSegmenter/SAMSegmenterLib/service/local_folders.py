"""The private temporary folders of local services (token, ready file, server log): made, held by the
process that owns them, and removed once that process has ended.

A :class:`~SAMSegmenterLib.service.client.LocalService` removes its folder when it stops, when it is
collected and at interpreter exit. A process that is killed (a crashed Slicer, a web app stopped with
SIGKILL) runs none of that: its server exits by itself (its standard input closes) but the folder, with
its access token, stays. So the owner holds a lock (``flock``) on the folder's owner file for as long as
it lives, and the next local service started by this user removes the folders whose lock is free. The
kernel frees the lock when the owner ends, however it ends; unlike a process id, the lock is seen alike
from every PID namespace (containers) that shares the temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Optional

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

PREFIX = "samsegmenter-service-"
OWNER = "owner"  # file in the folder, locked by the owning process; it holds that process's id, for people


def make_folder() -> Path:
    """A new private (0700) service folder in the temporary folder (claim it with :func:`claim`)."""
    return Path(tempfile.mkdtemp(prefix=PREFIX))


def claim(folder: Path) -> Optional[BinaryIO]:
    """(Re)create ``folder`` (private) and lock its owner file for this process: keep the returned file open
    as long as the folder is in use (closing it, or the process ending, frees the folder). None on Windows,
    where the owner file is written but not locked."""
    folder.mkdir(mode=0o700, exist_ok=True)
    pid = str(os.getpid()).encode("ascii")
    if fcntl is None:
        (folder / OWNER).write_bytes(pid)
        return None
    new = folder / (OWNER + ".new")
    handle = open(new, "wb")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # locked before it has its name: never seen unlocked
        handle.write(pid)
        handle.flush()
        os.replace(new, folder / OWNER)
    except BaseException:
        handle.close()
        raise
    return handle


def remove_stale(root: Optional[Path] = None) -> list[Path]:
    """Remove this user's service folders in ``root`` (default: the temporary folder) whose owner file nobody
    holds locked, and return them. Folders without an owner file (being made now) and other users' folders
    are left alone. On Windows nothing is removed."""
    if fcntl is None:
        return []
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for folder in root.glob(PREFIX + "*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            handle = open(folder / OWNER, "rb")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: its owner lives
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
