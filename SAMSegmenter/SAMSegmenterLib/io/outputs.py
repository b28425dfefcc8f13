"""Output files: checked before any work, written under temporary names, renamed into place together.

A run's outputs are staged as hidden ``.partial-*`` files beside their destinations and moved
into place by :meth:`StagedOutputs.commit`, so a run that fails or is interrupted leaves no
half-written file and no partial set (a label file without its overlay). Files are created with
the user's umask (mode 0644 under the usual umask 022), as any program's output is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from ..errors import OutputError

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
def _reason(exc: BaseException, folder: Path) -> str:
    """A short reason for a failed write into ``folder`` (a full disk is recognised even when a library hid it)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    try:
        if shutil.disk_usage(folder).free <= 1 << 16:
            return os.strerror(errno.ENOSPC).lower()
    except OSError:
        pass
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line.split("Reason:", 1)[1].strip() for line in lines if "Reason:" in line), None)
    return reason or (lines[-1] if lines else type(exc).__name__)


def _temporary_name(folder: Path, suffix: str) -> Path:
    return folder / f".partial-{secrets.token_hex(6)}{suffix}"


def _create(path: Path) -> bool:
    """Create the empty file ``path`` (umask mode); False when the name is taken. Whatever interrupts it
    (Ctrl-C and SIGTERM are exceptions on the command line) deletes the file. Callers choose and record the
    name first, so that no interrupt can fall between a file's creation and its name being known: masking
    the signals in one thread is not enough, the kernel hands a signal to any thread of the process."""
    try:
        os.close(os.open(path, _FLAGS, 0o666))
        return True
    except FileExistsError:
        return False
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _probe(folder: Path) -> None:
    """Create and delete a file in ``folder``: the one sure test that it takes files (modes, mounts, root).

    On Linux the file has no name (O_TMPFILE), so an interrupt can leave nothing behind; elsewhere, or on
    a file system without unnamed files, a named one is created and deleted at once.
    """
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            os.close(os.open(folder, tmpfile | os.O_WRONLY, 0o600))
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    for _ in range(100):
        path, taken = _temporary_name(folder, ""), False
        try:
            taken = not _create(path)
        finally:
            if not taken:  # created, or interrupted around its creation: the name is ours
                path.unlink(missing_ok=True)
        if not taken:
            return
    raise OutputError(f"cannot create a temporary file in {folder}")


def check_writable_folder(folder: Path, what: str = "output folder") -> None:
    """OutputError unless ``folder`` is an existing folder a file can be created in (tried, not guessed)."""
    if not folder.exists():
        raise OutputError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} is not a folder")
    try:
        _probe(folder)
    except OSError as exc:
        raise OutputError(f"cannot write to {what} {folder}: {_reason(exc, folder)}") from None


def check_output_file(path: str | Path, suffixes: Optional[Sequence[str]] = None, what: str = "output") -> Path:
    """Check that a file can be written at ``path`` (before any work): not a folder, an allowed suffix,
    an existing writable folder. Returns the path; raises OutputError."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name inside it")
    if suffixes is not None and not path.name.lower().endswith(tuple(suffixes)):
        raise OutputError(f"{what} {path} must end with one of {', '.join(suffixes)}")
    check_writable_folder(path.parent, f"{what} folder")
    return path


def check_output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Check that ``path`` is a writable folder, or can be created: its nearest existing ancestor must be a
    writable folder. Creates nothing; returns the path; raises OutputError."""
    path = Path(path)
    if path.exists():
        check_writable_folder(path, what)
        return path
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path} cannot be created: {ancestor} is a file")
    try:
        _probe(ancestor)
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be created in {ancestor}: {_reason(exc, ancestor)}") from None
    return path


@contextlib.contextmanager
def new_folders(folder: str | Path) -> Iterator[Path]:
    """Create ``folder`` and its missing parents for the block; when the block raises, remove the folders it
    created (those still empty), so a failed run leaves no empty output folder behind."""
    target = check_output_folder(folder)
    missing = []
    folder = target
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
            except OSError as exc:
                raise OutputError(f"cannot create folder {path}: {_reason(exc, path.parent)}") from None
            created.append(path)
        yield target
    except BaseException:
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                break
        raise


class StagedOutputs:
    """Files written under temporary names beside their destinations, renamed into place by :meth:`commit`.

    As a context manager, whatever is staged but not committed when the block ends (an error, an
    interrupt) is deleted. Destinations must be in existing folders (see :func:`check_output_file`).
    """

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}  # destination -> temporary file, in staging order

    def stage(self, dest: str | Path) -> Path:
        """A new empty temporary file beside ``dest`` that ends like it, in lower case (writers choose formats by
        extension, and ITK's only know them in lower case: ``.NII.GZ`` or ``.MHA`` would fail or split the file)."""
        dest = Path(dest)
        suffix = "".join(dest.suffixes[-2:]) if dest.name.lower().endswith((".nii.gz", ".seg.nrrd")) else dest.suffix
        suffix = suffix.lower()
        previous = self._staged.pop(dest, None)
        for _ in range(100):
            # recorded before it exists, so that discard() deletes it whenever an interrupt lands
            temporary = self._staged[dest] = _temporary_name(dest.parent, suffix)
            try:
                created = _create(temporary)
            except OSError as exc:
                del self._staged[dest]
                raise OutputError(f"cannot write {dest}: {_reason(exc, dest.parent)}") from None
            if created:
                break
        else:
            del self._staged[dest]
            raise OutputError(f"cannot create a temporary file in {dest.parent}")
        if previous is not None:
            previous.unlink(missing_ok=True)
        return temporary

    def write(self, dest: str | Path, writer: Callable[[Path], object]) -> Path:
        """Stage ``dest`` and call ``writer(temporary path)``; a failed write becomes OutputError (one line)."""
        dest = Path(dest)
        temporary = self.stage(dest)
        try:
            writer(temporary)
            if temporary.stat().st_size == 0:  # some writers give up silently on a full disk
                raise RuntimeError("the file came out empty")
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"cannot write {dest}: {_reason(exc, dest.parent)}") from None
        return temporary

    def commit(self) -> list[Path]:
        """Rename every staged file onto its destination (in staging order); returns the destinations."""
        done = []
        for dest, temporary in list(self._staged.items()):
            try:
                os.replace(temporary, dest)
            except OSError as exc:
                raise OutputError(f"cannot write {dest}: {_reason(exc, dest.parent)}") from None
            del self._staged[dest]
            done.append(dest)
        return done

    def discard(self) -> None:
        """Delete every staged file not yet committed."""
        for temporary in self._staged.values():
            temporary.unlink(missing_ok=True)
        self._staged.clear()

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()
