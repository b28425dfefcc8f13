"""What a client of the inference service may send: the token, request sizes, and never a server path.

:class:`Guard` is the ASGI middleware every request passes first (token, then size limits);
:func:`choose_checkpoint` turns a client's ``checkpoint`` into weights the operator allows;
:func:`scrub_paths` takes server paths out of messages sent to remote clients.
"""

from __future__ import annotations

import hmac
import json
import re
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import AuthError, InputError
from .protocol import PREFIX, error_to_json
from .sessions import TooLarge


class Guard:
    """ASGI middleware: the bearer token (constant-time) and the request size, checked before any work.

    A volume upload (``POST /v1/sessions``) goes on to its route, which reads and counts its body itself;
    every other request is JSON: its body is read here, refused (413) above ``max_json_bytes`` or
    ``max_json_values`` (commas, brackets and braces: a bound on the Python objects it becomes), and
    handed on whole. Exceptions of the application were answered (500) and logged by its handler: they
    stop here instead of being logged again, with a traceback, by uvicorn.
    """

    def __init__(self, app: Any, token: str, max_upload_bytes: int, max_json_bytes: int, max_json_values: int):
        self.app = app
        self.token = token.encode()
        self.max_upload_bytes = max_upload_bytes
        self.max_json_bytes = max_json_bytes
        self.max_json_values = max_json_values

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"")
        if not (given.startswith(b"Bearer ") and hmac.compare_digest(given[7:], self.token)):
            why = "a wrong access token" if given else "no access token"
            return await _send_json(send, 401, error_to_json(AuthError(f"the service refused {why}")))
        upload = scope["method"] == "POST" and scope["path"] == f"{PREFIX}/sessions"
        limit = self.max_upload_bytes if upload else self.max_json_bytes
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            return await _send_json(send, 413, _too_large(limit, "an upload" if upload else "a JSON request"))
        if not upload:
            body = await _read_body(receive, limit)
            if body is None:
                return  # the client went away
            if isinstance(body, int):
                return await _send_json(send, 413, _too_large(limit, "a JSON request"))
            values = body.count(b",") + body.count(b"[") + body.count(b"{")
            if values > self.max_json_values:
                return await _send_json(send, 413, error_to_json(TooLarge(
                    f"the request holds more than this server's limit of {self.max_json_values} JSON values")))
            receive = _replay(body, receive)
        started = False

        async def sending(message: dict) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:  # answered and logged by the application's handler
            if not started:
                await _send_json(send, 500, error_to_json(RuntimeError("internal error")))


async def _read_body(receive: Any, limit: int) -> bytes | int | None:
    """A request's whole body; its size so far once it passes ``limit``; None if the client disconnected."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            return size
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI receive that gives ``body`` first, then waits as ``receive`` does (for a disconnect)."""
    given = False

    async def replay() -> dict:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(limit: int, what: str) -> dict:
    return error_to_json(TooLarge(f"the request is larger than this server's limit of {limit / 2**20:.0f} MiB "
                                  f"for {what}"))


async def _send_json(send: Any, status: int, body: dict, headers: Optional[list] = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


_PATH = re.compile(r"(?:(?<=\s)|^)[~/][^\s'\"]*?(?=[:,;)]?(?:\s|$))")


def scrub_paths(message: str) -> str:
    """``message`` with every file path (a word starting with / or ~) replaced: a remote client learns no
    server path, nor whether a file exists."""
    return _PATH.sub("<a path on the server>", message)


def choose_checkpoint(checkpoint: Optional[str], named: Mapping[str, str], client_paths: bool) -> Optional[str]:
    """The weights file a client's ``checkpoint`` stands for, decided before any file is opened.

    None or "": the server's own choice for the model. A name the operator configured
    (``--named-checkpoint NAME=PATH``): its path. A path: only on a server started with
    ``--client-checkpoints`` (loopback only), and only a regular file (a pipe, a device such as
    /dev/stdin or a folder is refused before it is opened). Anything else: InputError naming no path.
    """
    if not checkpoint:
        return None
    if checkpoint in named:
        return named[checkpoint]
    if client_paths:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise InputError(f"checkpoint {path} is not a weights file on this machine")
        return str(path)
    names = ", ".join(sorted(named)) or "none configured"
    raise InputError("this server opens no file named by a client: ask for a model by name (model=...) or for a "
                     f"checkpoint its operator named (checkpoint names: {names})")
