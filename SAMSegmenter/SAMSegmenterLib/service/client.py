"""Client of the inference service: standard library + numpy only (it never imports torch).

:class:`ServiceClient` talks to one server (a URL, or a :class:`LocalService` it starts on this
machine); :meth:`ServiceClient.open_volume` uploads a volume and returns a :class:`RemoteVolume`, which
offers the engine's predictor interface (``predict``, ``prefetch``, ``propagate``,
``propagate_between``, ``num_slices``, ``slice_shape``) with the same arguments, results and
exceptions as :class:`SAMSegmenterLib.predictor.SlicePredictor` and :mod:`SAMSegmenterLib.propagation`.

GUIs use the non-blocking form: ``submit_*`` returns a :class:`Call` at once, and ``Call.poll()``
(from a GUI timer) advances it without waiting on the network (transport.py): a host name is looked up
in a helper process, connect, TLS handshake, upload and answer use non-blocking sockets, an expired
session is uploaded again step by step, closing a session goes out in the background, and a
propagation's progress is fetched at most every ``JOB_POLL_SECONDS``. No thread is started, so nothing
here competes for the GIL with Slicer's main thread.
"""

from __future__ import annotations

import atexit
import http.cookies
import json
import os
import select
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
import weakref
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from .. import child_env
from ..errors import AuthError, Cancelled, InputError, SAMSegmenterError, ServiceError
from ..models.registry import DEFAULT_MODEL, get_spec
from ..predictor import SlicePrediction
from ..prompts import Prompt
from ..propagation.plan import DIRECTIONS, PropagationOptions, PropagationResult
from ..volume import check_slice, parse_axis, slice_shape
from . import local_folders
from .protocol import (
    CLIENT_HEADER,
    PREFIX,
    READY_MARKER,
    VOLUME_DTYPES,
    error_from_json,
    options_to_json,
    pack_mask,
    prediction_from_json,
    prompt_to_json,
    result_from_json,
)
from .tokens import read_token
from .transport import NO_WINDOW, Body, Connection, ConnectTimeout, Request, Response, Target, parse_url

JOB_POLL_SECONDS = 0.1
CONNECT_TIMEOUT = 20.0  # seconds for name lookup, connect and TLS handshake
CLOSE_TIMEOUT = 10.0  # seconds a session's DELETE may take in the background before it is dropped
DEFLATE_PIECE = 1 << 20  # raw bytes compressed per piece of a remote upload (~5 ms at level 1)


class NotFound(ServiceError):
    """The server does not know the session or job (closed, expired, or a restarted server)."""


class Endpoint:
    """Where a server is: ``address()`` gives (url, token), or None while it is not ready yet."""

    generation = 0  # which instance of the server answers (a restarted local server is another one)

    def address(self, restart: bool = True) -> Optional[tuple[str, str]]:
        raise NotImplementedError

    def failed(self, error: BaseException, url: str, waited: float) -> Optional[ServiceError]:
        """The error to report when the server at ``url`` cannot be reached; None: not known yet (ask again
        at the next poll, ``waited`` seconds after the failure)."""
        return ServiceError(f"cannot reach the SAM service at {url}: {_reason(error)}")


    def gone(self) -> ServiceError:
        """The error of a request that belongs to a server instance that is no longer there."""
        return ServiceError("the SAM service restarted; the work it was doing is lost")


class RemoteEndpoint(Endpoint):
    """A server someone else runs, at ``url`` with ``token`` (or the token stored in ``token_file``).

    InputError at once for a malformed URL (e.g. a port that is not a number)."""

    def __init__(self, url: str, token: Optional[str] = None, token_file: Optional[str | Path] = None):
        parse_url(url)
        if token is None and token_file is None:
            raise AuthError("the service needs an access token: give a token file")
        self.url = str(url).strip().rstrip("/")
        self.token = token if token is not None else read_token(token_file)

    def address(self, restart: bool = True) -> tuple[str, str]:
        return self.url, self.token


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({error.verify_message})"
    if isinstance(error, ConnectTimeout):
        return str(error)
    if isinstance(error, (TimeoutError, OSError)) and "timed out" in str(error):
        return "no answer in time"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "the connection was closed by the server"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class _Exchange:
    """One HTTP request and its answer, advanced without blocking by :meth:`step` (see transport.py).

    restart: whether reaching a local server that died may start it again (False for a job's progress and for
    closing a session: they belong to the server that died); generation: the server instance this exchange
    belongs to (None: any); deadline: seconds after which it gives up in all states.
    """

    def __init__(self, client: ServiceClient, method: str, path: str, body: Body = b"",
                 headers: Optional[dict[str, str]] = None, query: Optional[Mapping[str, Any]] = None,
                 restart: bool = True, generation: Optional[int] = None, deadline: Optional[float] = None):
        self.client, self.method, self.path = client, method, path
        self.body, self.headers = body, dict(headers or {})
        if query:
            self.path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        self.restart, self.generation = restart, generation
        self.request: Optional[Request] = None
        self.url = ""  # the server's URL once known (for messages)
        self.answer: Any = None
        self.error: Optional[BaseException] = None
        self.finished = False
        self.started = time.monotonic()
        self.deadline = None if deadline is None else self.started + deadline
        self._failure: Optional[tuple[BaseException, float]] = None
        self._retried_stale = False

    @property
    def sent(self) -> int:
        """Bytes of the request sent so far."""
        return self.request.bytes_sent if self.request is not None else 0

    def step(self) -> bool:
        """Advance; True once the answer (or the error) is there."""
        if self.finished:
            return True
        try:
            if self._failure is not None:
                return self._diagnose()
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise ServiceError("the SAM service did not answer in time")
            if self.request is None and not self._start():
                return False
            if self.request.step():
                self._receive(self.request.response)
        except SAMSegmenterError as exc:
            self._finish(error=exc)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            if self._stale(exc):
                return False
            self._close_connection()
            self._failure = (exc, time.monotonic())
            return self._diagnose()
        return self.finished

    def _start(self) -> bool:
        endpoint = self.client.endpoint
        address = endpoint.address(restart=self.restart)
        if address is None:
            if time.monotonic() - self.started > self.client.startup_timeout:
                raise ServiceError(f"the SAM service did not start within {self.client.startup_timeout:.0f} s")
            return False
        if self.generation is not None and endpoint.generation != self.generation:
            raise endpoint.gone()
        self.generation = endpoint.generation
        self.url = address[0]
        target = parse_url(address[0])
        headers = self.client._headers(address[1])
        headers.update(self.headers)
        self.request = Request(self.client._connection(target), self.method, target.base + self.path, headers,
                               self.body, self.client.timeout)
        return True

    def _stale(self, error: BaseException) -> bool:
        """Retry once on a new connection when a kept-alive one turns out closed before any answer."""
        request = self.request
        if (request is None or not request.conn.reused or request.received_any or self._retried_stale
                or not isinstance(error, (ConnectionResetError, BrokenPipeError))):
            return False
        self._retried_stale = True
        request.conn.close()
        self.request = None
        return True

    def _diagnose(self) -> bool:
        error, since = self._failure
        reported = self.client.endpoint.failed(error, self.url, time.monotonic() - since)
        if reported is None:
            return False
        self._finish(error=reported)
        return True

    def _receive(self, response: Response) -> None:
        self.client._remember_cookies(response.cookies)
        conn, self.request = self.request.conn, None
        if response.will_close:
            conn.close()
        else:
            self.client._keep(conn)
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = None
        if response.status >= 400:
            raise self.client._error(response.status, data)
        self._finish(answer=data)

    def _close_connection(self) -> None:
        if self.request is not None:
            self.request.conn.close()
            self.request = None

    def _finish(self, answer: Any = None, error: Optional[BaseException] = None) -> None:
        if error is not None:
            self._close_connection()
        self.answer, self.error, self.finished = answer, error, True

    def waiting(self) -> Optional[tuple[Any, str]]:
        """(socket, "r" or "w") this exchange waits on (for select), or None."""
        if self.request is None or self.finished:
            return None
        sock, mode = self.request.waiting()
        return (sock, mode) if sock is not None else None

    def abandon(self) -> None:
        self._close_connection()
        self.finished = True


class Call:
    """A request in flight: ``poll()`` advances it without blocking, ``result()`` waits for it.

    ``progress`` is (done, total) for propagations, None otherwise; ``cancel()`` asks the server to
    stop a propagation (its result then comes back with ``cancelled`` True), or drops a plain request
    (its result is never read).
    """

    def __init__(self, exchange: _Exchange, decode: Callable[[Any], Any]):
        self._exchange = exchange
        self._decode = decode
        self._done = False
        self._value: Any = None
        self._error: Optional[BaseException] = None
        self.progress: Optional[tuple[int, int]] = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def uploading(self) -> bool:
        """Whether a request body is being sent and moving (a front end then polls as often as it can)."""
        request = getattr(self._exchange, "request", None)
        return not self._done and request is not None and request.sending

    def poll(self) -> bool:
        """Advance without blocking; True once finished (then ``result()`` returns or raises at once)."""
        if not self._done:
            self._exchange.client.poll()
            if self._exchange.step():
                self._settle()
        return self._done

    def _settle(self) -> None:
        exchange = self._exchange
        if exchange.error is not None:
            self._error, self._done = exchange.error, True
            return
        try:
            self._value = self._decode(exchange.answer)
        except SAMSegmenterError as exc:
            self._error = exc
        self._done = True

    def cancel(self) -> None:
        if not self._done:
            self._exchange.abandon()
            self._error, self._done = Cancelled("the request was cancelled"), True

    def sockets(self) -> list[tuple[Any, str]]:
        waiting = self._exchange.waiting()
        return [waiting] if waiting is not None else []

    def result(self, timeout: Optional[float] = None) -> Any:
        """The value (waiting for it, at most ``timeout`` seconds); raises the call's error."""
        wait([self], timeout)
        if not self._done:
            raise ServiceError(f"no answer from the SAM service within {timeout:.0f} s")
        if self._error is not None:
            raise self._error
        return self._value


class JobCall(Call):
    """A propagation running on the server: submitted, then polled for progress until it ends.

    Progress requests go to the server instance that accepted the job and never start a local server again:
    when it died, the call ends with "the SAM service stopped unexpectedly"."""

    def __init__(self, volume: RemoteVolume, submit: _Exchange):
        super().__init__(submit, lambda answer: answer)
        self.volume = volume
        self.job_id: Optional[str] = None
        self._generation: Optional[int] = None
        self._next_poll = 0.0
        self._cancel_sent = False
        self._cancel_wanted = False

    def poll(self) -> bool:
        if self._done:
            return True
        self.volume.client.poll()
        if not self._exchange.step():
            return False
        exchange = self._exchange
        if exchange.error is not None:
            self._error, self._done = exchange.error, True
            return True
        if self._generation is None:
            self._generation = exchange.generation
        state = exchange.answer or {}
        self.job_id = state.get("job", self.job_id)
        if state.get("progress"):
            self.progress = tuple(state["progress"])
        if state.get("state") in ("done", "cancelled") and state.get("result") is not None:
            self._value, self._done = result_from_json(state["result"]), True
        elif state.get("state") == "cancelled":
            self._error, self._done = Cancelled("the propagation was cancelled"), True
        elif state.get("state") == "failed":
            self._error, self._done = error_from_json(state, 422), True
        elif time.monotonic() >= self._next_poll or self._cancel_wanted and not self._cancel_sent:
            # the last state stays in the finished exchange until the next request is due
            self._next_poll = time.monotonic() + JOB_POLL_SECONDS
            method = "DELETE" if self._cancel_wanted and not self._cancel_sent else "GET"
            self._cancel_sent = self._cancel_sent or method == "DELETE"
            self._exchange = _Exchange(self.volume.client, method, f"{PREFIX}/jobs/{self.job_id}", restart=False,
                                       generation=self._generation)
        return self._done

    def cancel(self) -> None:
        """Ask the server to stop (sent once the job is known); the result, with ``cancelled`` True,
        still arrives through poll()."""
        self._cancel_wanted = True


def _select(sockets: list[tuple[Any, str]], timeout: float) -> None:
    readers = [sock for sock, mode in sockets if mode == "r"]
    writers = [sock for sock, mode in sockets if mode == "w"]
    if readers or writers:
        select.select(readers, writers, [], timeout)
    else:
        time.sleep(min(timeout, 0.02))


def wait(calls: Sequence[Call], timeout: Optional[float] = None) -> bool:
    """Block until every call is done (at most ``timeout`` seconds); True when all are."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pending = [call for call in calls if not call.poll()]
        if not pending:
            return True
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        sockets = [sock for call in pending for sock in call.sockets()]
        _select(sockets, JOB_POLL_SECONDS if remaining is None else min(JOB_POLL_SECONDS, remaining))


class ServiceClient:
    """A connection to one inference server.

    endpoint: a :class:`RemoteEndpoint` (URL and token) or a :class:`LocalService`; cafile: a PEM file of
    certificate authorities to trust for HTTPS (default: the system's); timeout: seconds a request waits for
    the server's next byte; startup_timeout: seconds to wait for a local server to become ready;
    connect_timeout: seconds for name lookup, connect and TLS handshake; python: the interpreter of the name
    lookup helper process (default this one); compress: deflate uploads (default: only to a server that is
    not on this machine).
    """

    def __init__(self, endpoint: Endpoint, cafile: Optional[str] = None, timeout: float = 600.0,
                 startup_timeout: float = 300.0, connect_timeout: float = CONNECT_TIMEOUT,
                 python: Optional[str] = None, compress: Optional[bool] = None):
        self.endpoint = endpoint
        self.cafile = cafile
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.connect_timeout = connect_timeout
        self.python = python
        self.compress = compress
        self.client_id = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._cookies: dict[str, str] = {}
        self._idle: list[Connection] = []
        self._target: Optional[str] = None
        self._context: Optional[ssl.SSLContext] = None
        self._background: list[_Exchange] = []  # fire-and-forget requests (closing sessions)

    @classmethod
    def remote(cls, url: str, token: Optional[str] = None, token_file: Optional[str | Path] = None,
               **kwargs: Any) -> ServiceClient:
        """A client of the server at ``url``."""
        return cls(RemoteEndpoint(url, token, token_file), **kwargs)

    def _connection(self, target: Target) -> Connection:
        """A connection to ``target``: an idle one kept alive, or a new one (opened by the request's steps)."""
        if target.key != self._target:  # a restarted local server listens elsewhere
            for conn in self._idle:
                conn.close()
            self._idle, self._target = [], target.key
        while self._idle:
            conn = self._idle.pop()
            if conn.quiet():
                conn.reused = True
                return conn
            conn.close()
        if target.scheme == "https" and self._context is None:
            self._context = ssl.create_default_context(cafile=self.cafile)
        return Connection(target, self._context if target.scheme == "https" else None, self.connect_timeout,
                          self.python)

    def _keep(self, conn: Connection) -> None:
        if conn.target.key == self._target and len(self._idle) < 4:
            conn.reused = False
            self._idle.append(conn)
        else:
            conn.close()

    def _headers(self, token: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", CLIENT_HEADER: self.client_id, "Accept": "application/json"}
        if self._cookies:  # sticky sessions behind a load balancer
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._cookies.items())
        return headers

    def _remember_cookies(self, headers: Sequence[str]) -> None:
        for header in headers:
            cookie = http.cookies.SimpleCookie()
            try:
                cookie.load(header)
            except http.cookies.CookieError:
                continue
            self._cookies.update({name: morsel.value for name, morsel in cookie.items()})

    def _error(self, status: int, data: Any) -> SAMSegmenterError:
        error = error_from_json(data, status)
        if status == 401:
            return AuthError(f"{error} (check the token file)")
        if status == 404 and isinstance(data, dict) and data.get("error", {}).get("code") == "not_found":
            return NotFound(str(error))
        return error

    def call(self, method: str, path: str, payload: Any = None, decode: Callable[[Any], Any] = lambda a: a,
             body: Body = b"", headers: Optional[dict[str, str]] = None,
             query: Optional[Mapping[str, Any]] = None) -> Call:
        """A request in flight (JSON ``payload`` or raw ``body``); see :class:`Call`."""
        if payload is not None:
            body = json.dumps(payload).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        return Call(_Exchange(self, method, path, body, headers, query), decode)

    def request(self, method: str, path: str, payload: Any = None, **kwargs: Any) -> Any:
        """The same request, blocking: the decoded JSON answer, or the engine exception it stands for."""
        return self.call(method, path, payload, **kwargs).result(self.timeout)

    def send_later(self, method: str, path: str) -> None:
        """Send a request whose answer nobody waits for (closing a session): it advances with every poll of
        this client's calls and :meth:`poll`, never starts a local server, and is dropped after CLOSE_TIMEOUT."""
        exchange = _Exchange(self, method, path, restart=False, deadline=CLOSE_TIMEOUT)
        if not exchange.step():
            self._background.append(exchange)

    @property
    def pending(self) -> bool:
        """Whether background requests (sessions being closed) remain: poll() them."""
        return bool(self._background)

    def poll(self) -> bool:
        """Advance the background requests without blocking; True while some remain."""
        if self._background:
            self._background = [exchange for exchange in self._background if not exchange.step()]
        return bool(self._background)

    def status(self) -> dict[str, Any]:
        """The server's model, device, precision, backend, memory, limits and counts."""
        return self.request("GET", f"{PREFIX}/status")

    def open_volume(self, volume: np.ndarray, window: str = "auto", model: str = DEFAULT_MODEL,
                    checkpoint: Optional[str] = None) -> RemoteVolume:
        """Upload ``volume`` ([k, j, i], numeric) and open a session on it; blocking. Sessions this client
        is closing are closed first (a script's ``close()`` then ``open_volume()`` finds their room free)."""
        self.finish_background()
        return self.submit_open_volume(volume, window, model, checkpoint).result(self.timeout)

    def finish_background(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Block until the background requests (sessions being closed) are done or ``timeout`` s passed."""
        deadline = time.monotonic() + timeout
        while self.poll() and time.monotonic() < deadline:
            time.sleep(0.002)

    def submit_open_volume(self, volume: np.ndarray, window: str = "auto", model: str = DEFAULT_MODEL,
                           checkpoint: Optional[str] = None, snapshot: bool = False) -> Call:
        """:meth:`open_volume` as a :class:`Call` (the upload advances with each poll).

        snapshot: ``volume`` is memory its owner may change later (a scene's voxels): the client copies it
        into its own array piece by piece as it sends it (no whole-volume copy in the caller's event handler);
        the session keeps that copy to upload again after the server forgot it."""
        array = _uploadable(volume)
        spec = get_spec(model)
        if snapshot and np.may_share_memory(array, volume):
            array = _Snapshot(array)

        def opened(answer: Any) -> RemoteVolume:
            if not isinstance(answer, dict) or not isinstance(answer.get("session"), str):
                raise ServiceError("the SAM service answered the upload with something that is not a session")
            kept = array.copy if isinstance(array, _Snapshot) else array
            return RemoteVolume(self, kept, window, spec.name, checkpoint, answer)

        return self._open_call(array, window, spec.name, checkpoint, opened)

    def _open_call(self, array: np.ndarray, window: str, model: str, checkpoint: Optional[str],
                   decode: Callable[[Any], Any]) -> Call:
        """The upload: the array's own memory to a server on this machine; deflated piece by piece (chunked)
        to a remote one, so that no poll compresses more than DEFLATE_PIECE bytes."""
        remote = self.compress if self.compress is not None else isinstance(self.endpoint, RemoteEndpoint) and \
            parse_url(self.endpoint.url).host not in ("127.0.0.1", "localhost", "::1")
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(array, _Snapshot):
            snapshot, array = array, array.copy
            body: Body = (lambda: _deflated(snapshot.pieces())) if remote else snapshot.pieces
        else:
            raw = memoryview(array).cast("B")
            body = (lambda: _deflated(_slices(raw))) if remote else raw  # a new iterator for each attempt
        if remote:  # spend CPU to save network time
            headers["Content-Encoding"] = "deflate"
        query = {"shape": ",".join(map(str, array.shape)), "dtype": array.dtype.name, "window": window,
                 "model": model, "checkpoint": checkpoint}
        return self.call("POST", f"{PREFIX}/sessions", body=body, headers=headers, query=query, decode=decode)

    def close(self) -> None:
        """Close idle connections and drop background requests (sessions are closed by their RemoteVolume)."""
        for exchange in self._background:
            exchange.abandon()
        self._background = []
        for conn in self._idle:
            conn.close()
        self._idle = []


def _slices(raw: memoryview) -> Iterator[memoryview]:
    for start in range(0, raw.nbytes, DEFLATE_PIECE):
        yield raw[start:start + DEFLATE_PIECE]


def _deflated(pieces: Iterator[Any]) -> Iterator[bytes]:
    """zlib-wrapped deflate of the concatenated ``pieces`` (each at most a few MiB), piece by piece."""
    compressor = zlib.compressobj(1)
    for raw in pieces:
        piece = compressor.compress(raw)
        if piece:
            yield piece
    yield compressor.flush()


class _Snapshot:
    """A copy of ``source`` ([k, j, i]) filled slab by slab while it is sent: :meth:`pieces` copies the next
    slab (about DEFLATE_PIECE bytes) and yields the copy's bytes, so no single poll copies the whole volume."""

    def __init__(self, source: np.ndarray):
        self.source = source
        self.copy = np.empty_like(source)
        self.filled = 0  # slabs along axis 0 copied so far

    def pieces(self) -> Iterator[memoryview]:
        step = max(1, DEFLATE_PIECE // max(1, self.copy[0].nbytes))
        for first in range(0, self.copy.shape[0], step):
            last = min(first + step, self.copy.shape[0])
            if last > self.filled:  # a retry sends the part already copied from the copy
                self.copy[first:last] = self.source[first:last]
                self.filled = last
            yield memoryview(self.copy[first:last]).cast("B")
        self.source = None  # the owner's memory is no longer needed


def _uploadable(volume: np.ndarray) -> np.ndarray:
    """``volume`` as a C-ordered little-endian array of an accepted voxel type (bool becomes uint8)."""
    array = np.asarray(volume)
    if array.ndim != 3 or min(array.shape) < 1:
        raise InputError(f"expected a non-empty 3D volume [k, j, i], got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.name not in VOLUME_DTYPES:
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"volume must be numeric, got dtype {array.dtype}")
        array = array.astype(np.float32)
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))


class RemoteVolume:
    """A volume opened on the service: the predictor interface of the engine, served remotely.

    The volume's own array is kept, so the session is opened again transparently when the server
    forgot it (expired, or a restarted local server).
    """

    def __init__(self, client: ServiceClient, volume: np.ndarray, window: str, model: str,
                 checkpoint: Optional[str], info: Mapping[str, Any]):
        self.client = client
        self.volume = volume
        self.window_spec = window
        self.model_name = model
        self.spec = get_spec(model)
        self.checkpoint = checkpoint
        self.info = dict(info)
        self._background: list[Call] = []
        self._reopening: Optional[Call] = None

    @property
    def session_id(self) -> str:
        return self.info["session"]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.volume.shape)

    @property
    def window(self) -> tuple[float, float]:
        """The intensity window the server chose (low, high), in raw voxel units."""
        return float(self.info["window"]["low"]), float(self.info["window"]["high"])

    def num_slices(self, axis: int | str) -> int:
        return self.volume.shape[parse_axis(axis)]

    def slice_shape(self, axis: int | str) -> tuple[int, int]:
        """(rows, columns) of a slice along ``axis``."""
        return slice_shape(self.volume.shape, parse_axis(axis))

    def _path(self, tail: str) -> str:
        return f"{PREFIX}/sessions/{self.session_id}{tail}"

    def reopen_call(self) -> Call:
        """The upload that opens the volume again (shared by every call that found the session gone)."""
        if self._reopening is None or self._reopening.done:
            self._reopening = self.client._open_call(self.volume, self.window_spec, self.model_name,
                                                     self.checkpoint, dict)
        return self._reopening

    def reopened(self, answer: Mapping[str, Any]) -> None:
        self.info = dict(answer)
        self._reopening = None

    def reopen(self) -> None:
        """Upload the volume again and take the new session (blocking)."""
        self.reopened(self.reopen_call().result(self.client.timeout))

    def _session_call(self, method: str, tail: str, payload: Any, decode: Callable[[Any], Any]) -> Call:
        return _ReopeningCall(self, method, tail, payload, decode)

    # predictions ------------------------------------------------------------------------------

    def submit_predict(self, axis: int | str, index: int, prompt: Prompt, selection: Optional[str] = None,
                       logits: bool = False) -> Call:
        """:meth:`predict` as a :class:`Call`."""
        axis = parse_axis(axis)
        check_slice(self.volume.shape, axis, index)
        prompt.validate(self.slice_shape(axis))
        if len(prompt.points):
            self.spec.require_points_support()
        payload = {"axis": axis, "index": int(index), "prompt": prompt_to_json(prompt), "selection": selection,
                   "logits": logits}
        return self._session_call("POST", "/predict", payload, prediction_from_json)

    def predict(self, axis: int | str, index: int, prompt: Prompt, selection: Optional[str] = None,
                logits: bool = False) -> SlicePrediction:
        """Segment slice ``index`` along ``axis`` from ``prompt`` (slice pixels, x = column, y = row).

        As :meth:`SlicePredictor.predict`; ``low_res_logits`` is None unless ``logits`` is True.
        """
        return self.submit_predict(axis, index, prompt, selection, logits).result(self.client.timeout)

    def prefetch(self, axis: int | str, index: int) -> None:
        """Ask the server to embed a slice in the background (no answer awaited; never delays a prompt)."""
        axis = parse_axis(axis)
        if not 0 <= index < self.volume.shape[axis]:
            return
        self._background = [call for call in self._background if not call.poll()]
        self._background.append(self._session_call("POST", "/prefetch", {"axis": axis, "index": int(index)},
                                                   lambda answer: None))
        self._background[-1].poll()

    # propagation -------------------------------------------------------------------------------

    def submit_propagate(self, axis: int | str, seed_index: int, seed_mask: Optional[np.ndarray] = None,
                         seed_prompt: Optional[Prompt] = None, direction: str = "both",
                         slice_range: Optional[tuple[int, int]] = None,
                         options: PropagationOptions = PropagationOptions()) -> JobCall:
        """:meth:`propagate` as a :class:`JobCall` (progress in ``call.progress``)."""
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if (seed_mask is None) == (seed_prompt is None):
            raise InputError("give exactly one seed: a mask or a prompt for the seed slice")
        options.check(self.spec)
        payload = {"kind": "propagate", "axis": parse_axis(axis), "seed_index": int(seed_index),
                   "seed_mask": None if seed_mask is None else pack_mask(seed_mask),
                   "seed_prompt": None if seed_prompt is None else prompt_to_json(seed_prompt),
                   "direction": direction, "slice_range": None if slice_range is None else list(slice_range),
                   "options": options_to_json(options)}
        return self._job(payload)

    def submit_propagate_between(self, axis: int | str, key_masks: Mapping[int, np.ndarray],
                                 slice_range: Optional[tuple[int, int]] = None, extend: bool = True,
                                 options: PropagationOptions = PropagationOptions()) -> JobCall:
        """:meth:`propagate_between` as a :class:`JobCall`."""
        options.check(self.spec)
        payload = {"kind": "propagate_between", "axis": parse_axis(axis),
                   "keys": {str(int(k)): pack_mask(m) for k, m in key_masks.items()}, "extend": extend,
                   "slice_range": None if slice_range is None else list(slice_range),
                   "options": options_to_json(options)}
        return self._job(payload)

    def _job(self, payload: dict) -> JobCall:
        submit = _ReopeningCall(self, "POST", "/jobs", payload, lambda answer: answer)
        return JobCall(self, _CallExchange(submit))

    def propagate(self, axis: int | str, seed_index: int, seed_mask: Optional[np.ndarray] = None,
                  seed_prompt: Optional[Prompt] = None, direction: str = "both",
                  slice_range: Optional[tuple[int, int]] = None, options: PropagationOptions = PropagationOptions(),
                  progress: Optional[Callable[[int, int], None]] = None,
                  cancel: Optional[Callable[[], bool]] = None) -> PropagationResult:
        """As :func:`SAMSegmenterLib.propagation.propagate`, on the server (blocking)."""
        call = self.submit_propagate(axis, seed_index, seed_mask, seed_prompt, direction, slice_range, options)
        return _follow(call, progress, cancel)

    def propagate_between(self, axis: int | str, key_masks: Mapping[int, np.ndarray],
                          slice_range: Optional[tuple[int, int]] = None, extend: bool = True,
                          options: PropagationOptions = PropagationOptions(),
                          progress: Optional[Callable[[int, int], None]] = None,
                          cancel: Optional[Callable[[], bool]] = None) -> PropagationResult:
        """As :func:`SAMSegmenterLib.propagation.propagate_between`, on the server (blocking)."""
        call = self.submit_propagate_between(axis, key_masks, slice_range, extend, options)
        return _follow(call, progress, cancel)

    def close(self) -> None:
        """Close the session on the server without waiting (see :meth:`ServiceClient.send_later`): a server
        that is gone has nothing to close, and a local one is never started just for this."""
        for call in self._background:
            call.cancel()
        self._background = []
        if self._reopening is not None:
            self._reopening.cancel()
            self._reopening = None
        self.client.send_later("DELETE", self._path(""))


def _follow(call: JobCall, progress: Optional[Callable[[int, int], None]],
            cancel: Optional[Callable[[], bool]]) -> PropagationResult:
    """Wait for a propagation, reporting progress and passing on a cancel request."""
    reported = None
    while not call.poll():
        if cancel is not None and cancel():
            call.cancel()
        if progress is not None and call.progress is not None and call.progress != reported:
            reported = call.progress
            progress(*reported)
        _select(call.sockets(), JOB_POLL_SECONDS)
    if progress is not None and call.progress is not None and call.progress != reported:
        progress(*call.progress)
    return call.result()


class _ReopeningCall(Call):
    """A call on a session that re-uploads the volume once if the server does not know the session.

    The re-upload advances with this call's polls like any other upload (it never blocks)."""

    def __init__(self, volume: RemoteVolume, method: str, tail: str, payload: Any, decode: Callable[[Any], Any]):
        self.volume, self.method, self.tail, self.payload = volume, method, tail, payload
        self.retried = False
        self._reopen: Optional[Call] = None
        super().__init__(self._exchange_now(), decode)

    def _exchange_now(self) -> _Exchange:
        body = json.dumps(self.payload).encode()
        self._session = self.volume.session_id
        return _Exchange(self.volume.client, self.method, self.volume._path(self.tail), body,
                         {"Content-Type": "application/json"})

    @property
    def uploading(self) -> bool:
        return self._reopen is not None and self._reopen.uploading or super().uploading

    def poll(self) -> bool:
        if self._done:
            return True
        if self._reopen is not None:
            if not self._reopen.poll():
                return False
            reopen, self._reopen = self._reopen, None
            try:
                answer = reopen.result(0)
            except SAMSegmenterError as exc:
                self._error, self._done = exc, True
                return True
            if self.volume._reopening is reopen:
                self.volume.reopened(answer)
            self._exchange = self._exchange_now()
            return False
        self.volume.client.poll()
        if self._exchange.step():
            if isinstance(self._exchange.error, NotFound) and not self.retried:
                self.retried = True
                if self.volume.session_id != self._session:  # another call has opened it again meanwhile
                    self._exchange = self._exchange_now()
                else:
                    self._reopen = self.volume.reopen_call()
                return self.poll()
            self._settle()
        return self._done

    def sockets(self) -> list[tuple[Any, str]]:
        return self._reopen.sockets() if self._reopen is not None else super().sockets()

    def cancel(self) -> None:
        if self._reopen is not None and not self._done:
            self._reopen = None  # the shared upload goes on for the volume's other calls
        super().cancel()


class _CallExchange(_Exchange):
    """Adapts a :class:`Call` to the exchange interface (a job's submission reopens sessions too)."""

    def __init__(self, call: Call):
        self.call = call
        self.client = getattr(call, "volume").client
        self.finished = False
        self.answer = self.error = None
        self.request = None

    @property
    def generation(self) -> Optional[int]:
        return getattr(self.call._exchange, "generation", None)

    def step(self) -> bool:
        if not self.finished and self.call.poll():
            self.finished = True
            try:
                self.answer = self.call.result(0)
            except BaseException as exc:
                self.error = exc
        return self.finished

    def waiting(self) -> Optional[tuple[Any, str]]:
        sockets = self.call.sockets()
        return sockets[0] if sockets else None

    def abandon(self) -> None:
        self.call.cancel()
        self.finished = True


class LocalService(Endpoint):
    """A server process on this machine, started by this client, watched, restarted once, stopped at exit.

    python: the interpreter to run it with (default: this one; in Slicer, ``sys.executable`` is
    PythonSlicer, so the server runs in Slicer's own Python); args: more ``serve`` options (model,
    device, precision, backend...). The server exits by itself when this process ends (its standard
    input closes). Its output goes to ``log_path``. On Windows it opens no console window.
    """

    _swept = False  # whether this process has removed stale service folders yet

    def __init__(self, python: Optional[str] = None, args: Sequence[str] = (), restarts: int = 1):
        self.python = python or sys.executable
        self.args = list(args)
        self.restarts_left = restarts
        if not LocalService._swept:  # folders of local services whose process was killed (local_folders.py)
            LocalService._swept = True
            local_folders.remove_stale()
        self.folder = local_folders.make_folder()
        self._owner = local_folders.claim(self.folder)  # held while the folder is in use
        weakref.finalize(self, shutil.rmtree, self.folder, True)  # collected unstarted, or at exit
        self.token_file = self.folder / "token"
        self.ready_file = self.folder / "ready"
        self.log_path = self.folder / "server.log"
        self.process: Optional[subprocess.Popen] = None
        self.generation = 0  # incremented by every start
        self.last_exit: Optional[int] = None  # exit code of the server that died last
        self._address: Optional[tuple[str, str]] = None
        self._stop_at_exit = False
        self._stopped = False  # by stop(): a late request must not start the server again
        self._exiting: list[subprocess.Popen] = []  # stopped servers not yet reaped

    def start(self) -> None:
        """Start the server process (returns at once; :meth:`address` says when it is ready)."""
        self._stopped = False
        if self._owner is None or not self.folder.is_dir():  # a stop() that waited removed it
            if self._owner is not None:
                self._owner.close()
            self._owner = local_folders.claim(self.folder)
        self.ready_file.unlink(missing_ok=True)
        env = child_env()
        # numpy's BLAS on one thread before numpy loads (models/blas_threads.py), also where threadpoolctl is absent
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        command = [self.python, "-m", "SAMSegmenterLib", "serve", "--port", "0", "--token-file", str(self.token_file),
                   "--ready-file", str(self.ready_file), "--watch-stdin", "--client-checkpoints", *self.args]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env,
                                            creationflags=NO_WINDOW)
        self.generation += 1
        self._address = None
        if not self._stop_at_exit:
            atexit.register(self.stop)
            self._stop_at_exit = True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ready(self) -> bool:
        """Whether the server has announced that it serves (its model is loaded)."""
        return self._address is not None and self.running

    def address(self, restart: bool = True) -> Optional[tuple[str, str]]:
        """(url, token) once the server is ready; None while it starts. Starts the server on first use and
        restarts one that died, once, when ``restart``; otherwise (a job's progress, closing a session) a dead
        server is :meth:`gone`. ServiceError after :meth:`stop` (a late request must not start it again)."""
        if self._stopped:
            raise ServiceError("the SAM service was stopped")
        if self._address is not None and self.running:
            return self._address
        if self.process is None or not self.running:
            if not restart:
                raise self.gone()
            if self.process is not None:
                self._restart()
            else:
                self.start()
            return None
        try:
            line = self.ready_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        info = json.loads(line.split(" ", 1)[1]) if line.startswith(READY_MARKER) else {}
        self._address = (info["url"], read_token(self.token_file))
        return self._address

    def _restart(self) -> None:
        self.last_exit = code = self.process.returncode
        if self.restarts_left <= 0:
            raise ServiceError(f"the SAM service stopped again (exit code {code}) and is not restarted "
                               "automatically twice: press 'Apply settings' in the SAM Segmenter module to start it "
                               f"(log: {self.log_path})")
        self.restarts_left -= 1
        self.start()

    def gone(self) -> ServiceError:
        code = self.process.returncode if self.process is not None and self.process.poll() is not None \
            else self.last_exit
        if code is None:
            return ServiceError("the SAM service is not running")
        return ServiceError(f"the SAM service stopped unexpectedly (exit code {code}); it is restarted with your "
                            f"next action (log: {self.log_path})")

    def failed(self, error: BaseException, url: str, waited: float) -> Optional[ServiceError]:
        if self.process is not None and self.process.poll() is not None:
            return self.gone()
        if waited < 1.0 and self.process is not None:
            return None  # a connection cut by the server's death arrives before its exit status: ask again
        return super().failed(error, url, waited)

    def wait_ready(self, timeout: float = 300.0) -> tuple[str, str]:
        """Block until the server is ready (starting it if needed); ServiceError if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            address = self.address()
            if address is not None:
                return address
            if self.process is not None and self.process.poll() is not None:
                tail = self.log_tail()
                raise ServiceError(f"the SAM service exited while starting (exit code {self.process.returncode})"
                                   + (f": {tail}" if tail else ""))
            if time.monotonic() > deadline:
                raise ServiceError(f"the SAM service did not start within {timeout:.0f} s (log: {self.log_path})")
            time.sleep(0.05)

    def log_tail(self) -> str:
        """The last line of the server's log (why it exited, usually)."""
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def stop(self, timeout: float = 10.0, wait: bool = True) -> None:
        """Stop the server: close its input (it exits by itself) and terminate it. wait: wait for its exit
        (killing it after ``timeout`` s); otherwise return at once (a GUI): it is reaped later, at the next
        start, or at exit."""
        self._stopped = True
        self._exiting = [process for process in self._exiting if process.poll() is None]
        if self.process is not None:
            if self.process.stdin is not None:
                try:
                    self.process.stdin.close()
                except OSError:
                    pass
            if self.process.poll() is None:
                self.process.terminate()
            self._exiting.append(self.process)
            self.process = None
            self._address = None
        if wait:
            for process in self._exiting:
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
            self._exiting = []
            shutil.rmtree(self.folder, ignore_errors=True)  # token, ready file, log: nothing left behind
            if self._owner is not None:
                self._owner.close()
                self._owner = None
