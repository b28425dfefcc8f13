"""Verified checkpoint downloads: resumable, checksummed, atomically installed.

Only the standard library is used (``urllib.request``), so this works inside 3D
Slicer and from the command line alike. A download is written to ``<dest>.part``,
resumed with an HTTP ``Range`` request when a partial file is already there,
checked against its SHA-256 (and size), and only then renamed to ``dest``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import Cancelled, CheckpointError

CHUNK = 1 << 16  # bytes read per network call; cancel() is checked between chunks

ProgressCallback = Callable[[int, Optional[int]], None]
CancelCallback = Callable[[], bool]


def cache_root() -> Path:
    """Per-user folder of everything SAMSegmenter keeps between runs (checkpoints, backend choices).

    ``$SAMSEGMENTER_CACHE`` when set; otherwise the platform's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) followed by ``SAMSegmenter``.
    """
    override = os.environ.get("SAMSEGMENTER_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "SAMSegmenter"


def default_cache_dir() -> Path:
    """Per-user folder for downloaded checkpoints: ``<cache_root()>/checkpoints``."""
    return cache_root() / "checkpoints"


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def cached_sha256(path: Union[str, Path]) -> str:
    """:func:`sha256_file`, hashed once per file version (path, size, modification time) and process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _problem(path: Path, sha256: str, size: Optional[int]) -> Optional[str]:
    """Why ``path`` is not the expected file, or ``None`` when it is."""
    if not path.is_file():
        return "does not exist"
    actual = path.stat().st_size
    if size is not None and actual != size:
        kind = "truncated" if actual < size else "too large"
        return f"is {kind}: {actual} bytes instead of {size}"
    digest = cached_sha256(path)
    if digest != sha256.strip().lower():
        return f"has SHA-256 {digest}, expected {sha256.strip().lower()}"
    return None


def verify_file(path: Union[str, Path], sha256: str, size: Optional[int] = None) -> None:
    """Check that ``path`` exists and has the given SHA-256 (and size in bytes).

    Raises :class:`CheckpointError` naming the file and what to do about it.
    """
    path = Path(path)
    problem = _problem(path, sha256, size)
    if problem is None:
        return
    if problem == "does not exist":
        advice = "download it again, or pass the path of the right checkpoint (--checkpoint)"
    else:
        advice = ("it is damaged or not the expected checkpoint: delete it and download it again, "
                  "or pass the path of the right checkpoint (--checkpoint)")
    raise CheckpointError(f"checkpoint {path} {problem}; {advice}")


def _network_error(url: str, dest: Path, exc: BaseException) -> CheckpointError:
    """One-line error for a download that could not reach or finish reading ``url``."""
    manual = f"download the file manually and pass its path (--checkpoint) or place it at {dest}"
    if isinstance(exc, _Truncated):
        return CheckpointError(f"could not download {url}: {exc}; run the download again to "
                               f"resume it, or {manual}")
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"the server answered HTTP {exc.code} {exc.reason}"
    else:
        reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        reason += " (the machine may be offline or the server unreachable)"
    return CheckpointError(f"could not download {url}: {reason}; you can {manual}")


class _Truncated(ConnectionError):
    """The server closed the connection before sending the whole file."""


def _total_size(response: http.client.HTTPResponse, offset: int) -> Optional[int]:
    """Full file size announced by a 200 or 206 response, if any."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length is not None else None


def download(url: str, dest: Union[str, Path], sha256: str, size: Optional[int] = None,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCallback] = None,
             timeout: float = 30) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    A ``dest`` that already verifies is returned without touching the network. Data
    goes to ``dest`` + ``.part`` first; an existing part is resumed with a Range
    request (a server answering 200 makes it start over; 416 means the part is
    already complete). ``progress(bytes_done, total_or_None)`` is called as data
    arrives; ``cancel()`` is checked between chunks and, when true, raises
    :class:`Cancelled` and keeps the part for a later resume. A checksum or size
    mismatch deletes the part and raises :class:`CheckpointError`, as do network
    failures (the part is kept). The verified file is moved into place with
    :func:`os.replace`, so ``dest`` is never seen half-written.
    """
    dest = Path(dest)
    if _problem(dest, sha256, size) is None:
        return dest
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _WriterLock(dest.with_suffix(dest.suffix + ".lock"), dest):  # one writer of the part at a time
            _download_part(url, dest, part, size, progress, cancel, timeout)
            problem = _problem(part, sha256, size)
            if problem is not None:
                part.unlink(missing_ok=True)
                raise CheckpointError(
                    f"the file downloaded from {url} {problem}; it was deleted: try again, or download "
                    f"it manually, check its SHA-256 and pass its path (--checkpoint)")
            os.replace(part, dest)
    except OSError as exc:  # local file trouble; network errors were converted already
        raise CheckpointError(f"cannot write {part}: {exc.strerror or exc}") from exc
    return dest


class _WriterLock:
    """An exclusive lock on ``path`` held while one process writes ``dest``'s part file: a second download of
    the same file fails at once. The operating system releases it when the process ends, however it ends."""

    def __init__(self, path: Path, dest: Path):
        self.path, self.dest = path, dest
        self.file = None

    def __enter__(self) -> "_WriterLock":
        self.file = open(self.path, "a+b")
        try:
            if os.name == "nt":
                import msvcrt

                self.file.seek(0)
                msvcrt.locking(self.file.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise CheckpointError(f"another download of {self.dest.name} is running (it holds {self.path}); "
                                  "wait for it or stop it") from None
        return self

    def __exit__(self, *exc_info) -> None:
        self.file.close()  # releases the lock


def _download_part(url: str, dest: Path, part: Path, size: Optional[int], progress: Optional[ProgressCallback],
                   cancel: Optional[CancelCallback], timeout: float) -> None:
    """Fetch the missing rest of ``part`` (under the writer lock)."""
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:  # not a prefix of the right file
        part.unlink()
        offset = 0
    if size is None or offset < size:
        _fetch(url, dest, part, offset, size, progress, cancel, timeout)


def _fetch(url: str, dest: Path, part: Path, offset: int, size: Optional[int],
           progress: Optional[ProgressCallback], cancel: Optional[CancelCallback],
           timeout: float) -> None:
    """Append the rest of ``url`` (from byte ``offset``) to ``part``."""
    headers = {"User-Agent": "SAMSegmenter", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # nothing left to send: the part is complete
            return
        raise _network_error(url, dest, exc) from exc
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        raise _network_error(url, dest, exc) from exc

    with response:
        if offset and response.status != 206:  # server ignored the Range: start over
            offset = 0
        total = _total_size(response, offset) or size
        done = offset
        with open(part, "ab" if offset else "wb") as f:
            if progress:
                progress(done, total)
            while True:
                if cancel is not None and cancel():
                    raise Cancelled(f"download of {url} cancelled; {done} bytes kept in {part} "
                                    "to resume later")
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _network_error(url, dest, exc) from exc
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise _network_error(url, dest, _Truncated(f"connection closed after {done} of {total} bytes"))
