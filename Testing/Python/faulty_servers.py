"""Loopback peers that fail like real networks do, for the client's fault tests and benchmarks/responsiveness.py.

Only loopback addresses are used. "Unreachable": a listener whose accept queue is full, so the kernel drops
new connection attempts (as a firewall or a powered-off host does); "silent": a listener that never accepts,
so a connection completes in the kernel but no answer ever comes; "slow": a thread that answers after a
delay, dripping its answer a few bytes at a time. DNS failure uses the reserved name ``nonexistent.invalid``.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time

UNRESOLVABLE_URL = "http://nonexistent.invalid:8080"
MALFORMED_URL = "https://gpu:84a3"


class FullBacklog:
    """A loopback listener with a full accept queue: connecting to :attr:`url` never completes."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        address = self.listener.getsockname()
        self.url = f"http://127.0.0.1:{address[1]}"
        self.fillers = []
        for _ in range(4):  # the first completes and fills the queue; later ones stay pending
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            self.fillers.append(filler)
            time.sleep(0.05)
        probe = socket.socket()
        probe.setblocking(False)
        probe.connect_ex(address)
        full = not select.select([], [probe], [], 0.3)[1]
        probe.close()
        if not full:
            self.close()
            raise RuntimeError("this kernel completes connections to a full accept queue")

    def close(self) -> None:
        for sock in self.fillers + [self.listener]:
            sock.close()


class Silent:
    """A loopback listener that never accepts: connections complete in the kernel, no answer ever comes."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def close(self) -> None:
        self.listener.close()


class Slow:
    """A loopback HTTP peer that reads a request, waits ``delay`` seconds, then sends a JSON answer a few bytes
    at a time over about ``drip`` seconds (a slow or congested server)."""

    def __init__(self, delay: float = 1.0, drip: float = 0.5, answer: dict | None = None, status: str = "200 OK"):
        self.delay, self.drip = delay, drip
        body = json.dumps(answer or {"api": 1, "slow": True}).encode()
        self.response = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n").encode() + body
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece
                time.sleep(self.delay)
                step = max(1, len(self.response) // 20)
                for start in range(0, len(self.response), step):
                    conn.sendall(self.response[start:start + step])
                    time.sleep(self.drip / 20)

    def close(self) -> None:
        self.listener.close()
