"""Connection hygiene of the inference service: timeouts, a connection cap and quiet refusals (asyncio, uvicorn).

uvicorn times out only idle keep-alive connections; a connection that never sends a request, or sends it
a byte at a time, stays open for ever. :func:`guarded_protocol` makes uvicorn's h11 protocol class that

- closes a connection whose request head (request line and headers) is not complete ``request_timeout``
  seconds after the connection opened or its first byte arrived after a previous answer;
- closes a connection whose request body stops flowing for ``request_timeout`` seconds (a slow upload
  that keeps sending is never cut);
- keeps at most ``max_connections`` connections: the one over the cap replaces the oldest connection
  that has no request in progress, or is closed at once when every connection has one.

None of these writes more than one log line per ``REPORT_EVERY`` seconds (a count of what happened);
:func:`quiet_accept_errors` does the same for asyncio's "accept() out of system resource" (EMFILE), which
it otherwise logs with a traceback for every retry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import resource
except ImportError:  # Windows: no open-file limit to fit under
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
REPORT_EVERY = 10.0
FD_RESERVE = 48
"""File descriptors kept free beside the connections (model files, logs, /proc reads, worker pipes)."""


class Tally:
    """Counts of refused or closed connections, logged as one line at most every ``REPORT_EVERY`` seconds."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.last = 0.0

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY:
            self.last = now
            summary = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
            self.counts = {}
            log.warning("connections: %s (in the last %.0f s at most)", summary, REPORT_EVERY)


TALLY = Tally()


def connection_cap(wanted: int) -> int:
    """``wanted`` connections, fewer if this process's open-file limit leaves no room for them."""
    if resource is None:
        return wanted
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - used - FD_RESERVE))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request timeout and a connection cap (set by :func:`guarded_protocol`)."""

    request_timeout = 10.0
    max_connections = 64

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: Optional[asyncio.TimerHandle] = None
        self._opened = time.monotonic()
        self._arm()
        live = [c for c in self.connections if not c.transport.is_closing()]  # closed ones leave a moment later
        if len(live) > self.max_connections:
            idle = [c for c in live if c is not self and isinstance(c, GuardedH11Protocol) and c._idle()]
            if idle:
                min(idle, key=lambda c: c._opened)._drop("idle connections closed for a new one")
            else:
                self._drop("connections refused (all busy)")

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._idle():
            if self._timer is None:  # the first byte of a request head: it has request_timeout to complete
                self._arm()
        elif self.cycle.more_body:
            self._arm()  # the body flows: the clock restarts with each piece
        else:
            self._disarm()  # the request is complete: the server works on it

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timeout runs until the next request starts
        super().on_response_complete()

    def _idle(self) -> bool:
        """No request in progress: waiting for (the rest of) a request head."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        waiting_for_body = not self._idle() and self.cycle.more_body
        self._drop("uploads stalled" if waiting_for_body else "connections without a request closed")

    def _drop(self, why: str) -> None:
        TALLY.add(why)
        self._disarm()
        if self.transport.is_closing():
            return
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self.transport.close()


def guarded_protocol(request_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` class with these settings (uvicorn's ``http=`` option takes a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"request_timeout": float(request_timeout), "max_connections": int(max_connections)})


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` report running out of file descriptors in accept() as a counted line, not a traceback."""
    default = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "out of system resource" in str(context.get("message", "")):
            TALLY.add("accept() failures: out of file descriptors")
            return
        if default is not None:
            default(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
