"""Non-blocking HTTP/1.1 for the service client (standard library only): no step ever waits on the network.

A :class:`Request` goes through resolve -> connect -> TLS handshake -> send -> receive, each advanced by
:meth:`Request.step` for at most ``STEP_BUDGET`` seconds per call:

- name resolution of a host name runs in a short-lived helper process (``getaddrinfo`` can neither be made
  non-blocking nor interrupted); IP literals and ``localhost`` need none, and answers are cached;
- connecting, the TLS handshake, sending and receiving use a non-blocking socket;
- sending writes large slices while the socket accepts them (a step may wait for writability within its
  budget, so that an upload runs at the speed of the link when the caller polls often).

A front end polls from its timer; a blocking caller loops over ``step`` with ``select`` on :meth:`waiting`.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

from ..errors import InputError

STEP_BUDGET = 0.006  # seconds one step may spend sending or receiving
SEND_SLICE = 2 << 20  # bytes offered to the socket per send()
RECV_SIZE = 1 << 20
MAX_HEAD = 64 << 10  # longest status line + headers accepted
DNS_CACHE_SECONDS = 300.0
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows: helper processes open no console window
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EAGAIN, 10035}  # 10035: WSAEWOULDBLOCK
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

Body = Union[bytes, bytearray, memoryview, Callable[[], Iterator[bytes]]]  # a callable: a chunked body's pieces


class ConnectTimeout(OSError):
    """No connection within the connect timeout (an unreachable host, or a server that never accepts)."""


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 this client understands."""


@dataclass(frozen=True)
class Target:
    """Where a server listens: scheme ("http" or "https"), host, port and the URL's base path."""

    scheme: str
    host: str
    port: int
    base: str

    @property
    def key(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_url(url: str) -> Target:
    """The :class:`Target` of a service URL; InputError (one clear sentence) for a malformed one."""
    text = str(url).strip()
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"the service address {text!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InputError(f"the service address must start with http:// or https://, got {text!r}")
    if not parts.hostname:
        raise InputError(f"the service address {text!r} names no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InputError(f"the service address {text!r} must have no user, query or fragment")
    if port == 0:
        raise InputError(f"the service address {text!r} has port 0")
    default = 443 if parts.scheme == "https" else 80
    return Target(parts.scheme, parts.hostname, port or default, parts.path.rstrip("/"))


# name resolution ---------------------------------------------------------------------------------------

_RESOLVE_SCRIPT = (
    "import json, socket, sys\n"
    "try:\n"
    "    found = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), type=socket.SOCK_STREAM)\n"
    "    print(json.dumps([[f, list(a)] for f, _, _, _, a in found]))\n"
    "except OSError as e:\n"
    "    print(json.dumps(str(e.strerror or e)))\n"
)
_cache: dict[tuple[str, int], tuple[float, list[tuple[int, tuple]]]] = {}
_exiting: list[subprocess.Popen] = []  # helper processes killed, reaped later without waiting


def reap() -> None:
    """Collect helper processes that were told to stop (never waits)."""
    _exiting[:] = [process for process in _exiting if process.poll() is None]


def _literal(host: str, port: int) -> Optional[list[tuple[int, tuple]]]:
    """Addresses of an IP literal or localhost, found without any lookup; None for other names."""
    if host.lower() == "localhost":
        return [(socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::1", port, 0, 0))]
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None
    return [(family, address) for family, _, _, _, address in found]


class Resolution:
    """The addresses of ``host``:``port``; a helper process (``python``) looks up a host name."""

    def __init__(self, host: str, port: int, python: Optional[str] = None):
        self.host, self.port = host, port
        self.process: Optional[subprocess.Popen] = None
        self.addresses = _literal(host, port)
        cached = _cache.get((host, port))
        if self.addresses is None and cached is not None and time.monotonic() - cached[0] < DNS_CACHE_SECONDS:
            self.addresses = cached[1]
        if self.addresses is None:
            reap()
            self.process = subprocess.Popen(
                [python or sys.executable, "-I", "-S", "-c", _RESOLVE_SCRIPT, host, str(port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                creationflags=NO_WINDOW)

    def poll(self) -> Optional[list[tuple[int, tuple]]]:
        """The addresses, or None while the lookup runs; OSError when the name cannot be resolved."""
        if self.addresses is not None:
            return self.addresses
        if self.process.poll() is None:
            return None
        output = self.process.stdout.read()
        self.process.stdout.close()
        try:
            found = json.loads(output)
        except ValueError:
            found = f"the name lookup helper failed (exit code {self.process.returncode})"
        if isinstance(found, str) or not found:
            raise OSError(f"the host name {self.host!r} cannot be resolved ({found or 'no address'})")
        self.addresses = [(int(family), tuple(address)) for family, address in found]
        _cache[(self.host, self.port)] = (time.monotonic(), self.addresses)
        return self.addresses

    def cancel(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            _exiting.append(self.process)


# connections -------------------------------------------------------------------------------------------

class Connection:
    """A non-blocking TCP (and TLS) connection to ``target``, opened step by step by :meth:`advance`.

    context: the TLS context for https; connect_timeout: seconds for resolution, connect and handshake;
    python: the interpreter of the name lookup helper.
    """

    def __init__(self, target: Target, context: Optional[ssl.SSLContext], connect_timeout: float,
                 python: Optional[str] = None):
        self.target, self.context = target, context
        self.connect_timeout = connect_timeout
        self.deadline = time.monotonic() + connect_timeout
        self.state = "resolve"
        self.sock: Optional[socket.socket] = None
        self.want = "w"  # what the socket waits for: "r" or "w"
        self.reused = False
        self._resolution: Optional[Resolution] = Resolution(target.host, target.port, python)
        self._addresses: list[tuple[int, tuple]] = []
        self._error: Optional[OSError] = None

    @property
    def open(self) -> bool:
        return self.state == "open"

    def advance(self) -> bool:
        """Advance the opening without blocking; True once open; OSError when it cannot be opened."""
        while self.state != "open":
            if self.state == "resolve":
                addresses = self._resolution.poll()
                if addresses is None:
                    self._check_deadline()
                    return False
                self._addresses = list(addresses)
                self._resolution = None
                self._next_address()
            elif self.state == "connect":
                _, writable, failed = select.select([], [self.sock], [self.sock], 0)
                if not writable and not failed:
                    self._check_deadline()
                    return False
                code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    self._error = OSError(code, os.strerror(code))
                    self.sock.close()
                    self._next_address()
                elif self.context is not None:
                    self.sock = self.context.wrap_socket(self.sock, server_hostname=self.target.host,
                                                         do_handshake_on_connect=False)
                    self.state = "handshake"
                else:
                    self.state = "open"
            elif self.state == "handshake":
                try:
                    self.sock.do_handshake()
                except ssl.SSLWantReadError:
                    self.want = "r"
                    self._check_deadline()
                    return False
                except ssl.SSLWantWriteError:
                    self.want = "w"
                    self._check_deadline()
                    return False
                self.state = "open"
            else:
                raise OSError("the connection was closed")
        return True

    def _next_address(self) -> None:
        while self._addresses:
            family, address = self._addresses.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code == 0 or code in _IN_PROGRESS:
                self.sock, self.state, self.want = sock, "connect", "w"
                return
            sock.close()
            self._error = OSError(code, os.strerror(code))
        self.state = "failed"
        raise self._error or OSError(f"no address for {self.target.host}")

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            what = {"resolve": "the name lookup", "handshake": "the TLS handshake"}.get(self.state, "the connection")
            self.close()
            raise ConnectTimeout(f"{what} did not complete within {self.connect_timeout:.0f} s "
                                 "(is the address right, and is the server reachable?)")

    def quiet(self) -> bool:
        """Whether an idle open connection can be reused (a readable one was closed by the server)."""
        return self.open and self.sock is not None and not select.select([self.sock], [], [], 0)[0]

    def close(self) -> None:
        if self._resolution is not None:
            self._resolution.cancel()
            self._resolution = None
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.state = "closed"


# one request and its answer ----------------------------------------------------------------------------

@dataclass
class Response:
    """A complete HTTP answer: status, headers (lower-case names; repeated ones joined by ", " except
    Set-Cookie, kept apart in ``cookies``), body, and whether the server closes the connection."""

    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes
    will_close: bool


class Request:
    """One HTTP/1.1 request on ``conn``, advanced by :meth:`step` without blocking.

    body: bytes-like (sent with Content-Length), or a callable giving an iterator of pieces (sent chunked);
    timeout: seconds without progress (a byte sent or received) once connected, before giving up.
    """

    def __init__(self, conn: Connection, method: str, path: str, headers: dict[str, str], body: Body,
                 timeout: float):
        self.conn, self.method, self.timeout = conn, method, timeout
        chunked = callable(body)
        view = None if chunked else memoryview(body).cast("B")
        host = f"[{conn.target.host}]" if ":" in conn.target.host else conn.target.host  # an IPv6 literal
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{conn.target.port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {view.nbytes}")
        self._pending: list[memoryview] = [memoryview(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))]
        self._pieces: Optional[Iterator[bytes]] = body() if chunked else None
        if view is not None and view.nbytes:
            self._pending.append(view)
        self.sent_body = False
        self.bytes_sent = 0
        self.received_any = False
        self.response: Optional[Response] = None
        self._buffer = bytearray()
        self._head: Optional[tuple[int, dict[str, str], list[str], bool]] = None
        self._length: Optional[int] = None  # body length; -1 chunked; None until the head is read; -2 to EOF
        self._chunks = bytearray()
        self._last_byte = time.monotonic()

    def step(self) -> bool:
        """Advance; True once the response is complete. OSError (or ssl.SSLError) when the exchange fails."""
        if self.response is not None:
            return True
        started = time.monotonic()
        if not self.conn.open:
            if not self.conn.advance():
                return False
            self._last_byte = time.monotonic()
        if not self.sent_body:
            try:
                if not self._send(started):
                    return False
            except (BrokenPipeError, ConnectionResetError):
                # the server answered early (a refusal) and closed: read that answer if there is one
                self.sent_body = True
                self._pending, self._pieces = [], None
            self._last_byte = time.monotonic()
        return self._receive(started)

    @property
    def sending(self) -> bool:
        """Whether the body is being sent and the link moved in the last 50 ms (a stalled upload is not
        "sending": a GUI need not poll it as fast as it can)."""
        return self.conn.open and not self.sent_body and time.monotonic() - self._last_byte < 0.05

    def waiting(self) -> tuple[Optional[socket.socket], str]:
        """(socket, "r" or "w") this request waits for; (None, "") while a name is looked up."""
        if self.conn.state in ("resolve",) or self.conn.sock is None:
            return None, ""
        if not self.conn.open:
            return self.conn.sock, self.conn.want
        return self.conn.sock, "r" if self.sent_body else "w"

    def _send(self, started: float) -> bool:
        """Send while the socket takes data. When it is full, wait for room within the step's budget only if the
        link is moving (something was sent in this step): a stalled peer costs a poll nothing."""
        sock = self.conn.sock
        moved = False
        while True:
            if not self._pending and not self._refill():
                self.sent_body = True
                return True
            view = self._pending[0]
            try:
                count = sock.send(view[:SEND_SLICE])
            except _WOULD_BLOCK:
                remaining = STEP_BUDGET - (time.monotonic() - started)
                if not moved or remaining <= 0 or not select.select([], [sock], [], remaining)[1]:
                    if time.monotonic() - self._last_byte > self.timeout:
                        raise TimeoutError("timed out") from None
                    return False
                continue
            self.bytes_sent += count
            self._last_byte = time.monotonic()
            moved = True
            if count >= len(view):
                self._pending.pop(0)
            else:
                self._pending[0] = view[count:]
            if time.monotonic() - started > STEP_BUDGET:
                return False

    def _refill(self) -> bool:
        """Queue the next piece of a chunked body; False when everything is queued."""
        if self._pieces is None:
            return False
        try:
            piece = next(self._pieces)
        except StopIteration:
            self._pieces = None
            self._pending.append(memoryview(b"0\r\n\r\n"))
            return True
        if piece:
            self._pending += [memoryview(f"{len(piece):x}\r\n".encode()), memoryview(piece), memoryview(b"\r\n")]
        return True

    def _receive(self, started: float) -> bool:
        sock = self.conn.sock
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except _WOULD_BLOCK:
                if time.monotonic() - self._last_byte > self.timeout:
                    raise TimeoutError("timed out") from None
                return False
            if not data:
                if self._length == -2 and self._head is not None:
                    self._complete(bytes(self._buffer), True)
                    return True
                raise ConnectionResetError(errno.ECONNRESET, "the connection was closed by the server")
            self.received_any = True
            self._last_byte = time.monotonic()
            self._buffer += data
            if self._parse():
                return True
            if time.monotonic() - started > STEP_BUDGET:
                return False

    def _parse(self) -> bool:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise ProtocolError("the server's answer has no end of headers")
                return False
            self._read_head(bytes(self._buffer[:end]).decode("latin-1"))
            del self._buffer[:end + 4]
            if self._head is None:  # an interim 1xx answer: the real one follows
                return self._parse()
        if self._length is not None and self._length >= 0:
            if len(self._buffer) < self._length:
                return False
            self._complete(bytes(self._buffer[:self._length]), self._head[3])
            return True
        if self._length == -1:
            return self._parse_chunks()
        return False  # until the server closes the connection

    def _read_head(self, text: str) -> None:
        lines = text.split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
            raise ProtocolError(f"the server's answer is not HTTP: {lines[0][:80]!r}")
        status = int(status_line[1])
        if 100 <= status < 200:
            return
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                cookies.append(value)
            else:
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = headers.get("connection", "").lower()
        will_close = "close" in connection or (status_line[0] == "HTTP/1.0" and "keep-alive" not in connection)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._length = -1
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise ProtocolError("the server's answer has an invalid Content-Length") from None
        elif status in (204, 304) or self.method == "HEAD":
            self._length = 0
        else:
            self._length, will_close = -2, True
        self._head = (status, headers, cookies, will_close)

    def _parse_chunks(self) -> bool:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return False
            try:
                size = int(bytes(self._buffer[:line_end]).split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError("the server's chunked answer is malformed") from None
            if size == 0:
                rest = self._buffer[line_end + 2:]
                if rest.startswith(b"\r\n") or rest.find(b"\r\n\r\n") >= 0:
                    self._complete(bytes(self._chunks), self._head[3])
                    return True
                return False
            if len(self._buffer) < line_end + 2 + size + 2:
                return False
            self._chunks += self._buffer[line_end + 2:line_end + 2 + size]
            del self._buffer[:line_end + 2 + size + 2]

    def _complete(self, body: bytes, will_close: bool) -> None:
        status, headers, cookies, _ = self._head
        self.response = Response(status, headers, cookies, body, will_close)
