"""Access tokens of the inference service: made, stored only readable by the user, read back (standard library)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ..errors import AuthError

TOKEN_BYTES = 32


def read_token(path: str | Path) -> str:
    """The token stored in ``path`` (surrounding whitespace ignored); AuthError when it cannot be used."""
    path = Path(path).expanduser()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise AuthError(f"token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"cannot read the token file {path}: {exc.strerror if isinstance(exc, OSError) else exc}") \
            from None
    if not token or any(c.isspace() for c in token):
        raise AuthError(f"token file {path} holds no token (one line without spaces is needed)")
    return token


def write_new_token(path: str | Path) -> str:
    """Make a random token and store it in ``path``, readable and writable by the user only (mode 0600)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return token


def check_private(path: str | Path) -> None:
    """AuthError unless ``path`` belongs to this user and no one else may read or write it (as ssh requires of
    private keys). Not checked on Windows, whose permissions the mode bits do not describe."""
    if os.name == "nt":
        return
    path = Path(path).expanduser()
    info = path.stat()
    if info.st_uid != os.getuid():
        raise AuthError(f"token file {path} belongs to another user; a server uses only a token file of its own")
    if info.st_mode & 0o077:
        raise AuthError(f"token file {path} can be read or written by other users (mode "
                        f"{stat.S_IMODE(info.st_mode):04o}); make it private with: chmod 600 {path}")


def token_for_server(path: str | Path) -> str:
    """The token a server uses: the one in ``path`` if the file exists (it must be private: see
    :func:`check_private`), else a new one written there (mode 0600)."""
    if not Path(path).expanduser().exists():
        return write_new_token(path)
    check_private(path)
    return read_token(path)
