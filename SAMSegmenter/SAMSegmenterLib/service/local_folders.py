"""The private temporary folders of local services (token, ready file, server log): made, claimed by the
process that owns them, and removed once that process has ended.

A :class:`~SAMSegmenterLib.service.client.LocalService` removes its folder when it stops, when it is
collected and at interpreter exit. A process that is killed (a crashed Slicer, a web app stopped with
SIGKILL) runs none of that: its server exits by itself (its standard input closes) but the folder, with
its access token, stays. Each folder therefore names its owner's process id, and the next local service
started by this user removes the folders whose owner is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

PREFIX = "samsegmenter-service-"
OWNER = "owner"  # file in the folder: the process id of the process that owns it


def make_folder() -> Path:
    """A new private (0700) service folder in the temporary folder, claimed by this process."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    claim(folder)
    return folder


def claim(folder: Path) -> None:
    """(Re)create ``folder`` (private) and mark this process as its owner."""
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / OWNER).write_text(str(os.getpid()), encoding="ascii")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (POSIX; a zombie counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def remove_stale(root: Optional[Path] = None) -> list[Path]:
    """Remove this user's service folders in ``root`` (default: the temporary folder) whose owner process has
    ended, and return them. Folders without an owner (being made now, or made by an older version) and other
    users' folders are left alone. POSIX only: on Windows nothing is removed (a process id cannot be probed
    there without side effects from the standard library)."""
    if os.name != "posix":
        return []
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for folder in root.glob(PREFIX + "*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            pid = int((folder / OWNER).read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
