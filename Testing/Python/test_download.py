"""Checkpoint download against a real HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from SAMSegmenterLib.errors import Cancelled, CheckpointError
from SAMSegmenterLib.models import download as dl

PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(300_000))
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path; honours Range unless the server's mode says otherwise.

    Modes: "normal"; "drop" (send half of the body, then close the connection);
    "no_range" (ignore Range and always answer 200 with the whole file).
    """

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        server = self.server
        server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        start = 0
        rng = self.headers.get("Range")
        if rng and server.mode != "no_range":
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.mode == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            server.mode = "normal"  # only the first attempt is cut short
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1:<free port>; yields it (set .mode, read .requests)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.mode = "normal"
    httpd.requests = []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/ckpt.pth"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path / "cache"))
    return dl.default_cache_dir()


def _part(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def test_full_download_verifies(server, cache):
    dest = cache / "model.pth"
    assert dl.download(server.url, dest, SHA, len(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    assert [r["range"] for r in server.requests] == [None]


def test_truncated_download_resumes_with_range(server, cache):
    dest = cache / "model.pth"
    server.mode = "drop"
    with pytest.raises(CheckpointError, match="127.0.0.1"):
        dl.download(server.url, dest, SHA, len(PAYLOAD))
    assert not dest.exists()
    kept = _part(dest).stat().st_size
    assert 0 < kept < len(PAYLOAD)

    dl.download(server.url, dest, SHA, len(PAYLOAD))
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert dl.sha256_file(dest) == SHA
    assert not _part(dest).exists()


def test_server_ignoring_range_restarts(server, cache):
    dest = cache / "model.pth"
    _part(dest).parent.mkdir(parents=True)
    _part(dest).write_bytes(b"\0" * 1000)  # wrong bytes: only a restart can fix them
    server.mode = "no_range"
    dl.download(server.url, dest, SHA, len(PAYLOAD))
    assert server.requests[-1]["range"] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_installed(server, cache):
    dest = cache / "model.pth"
    _part(dest).parent.mkdir(parents=True)
    _part(dest).write_bytes(PAYLOAD)
    dl.download(server.url, dest, SHA)  # no size given: the server is asked and answers 416
    assert server.requests[-1]["range"] == f"bytes={len(PAYLOAD)}-"
    assert dest.read_bytes() == PAYLOAD and not _part(dest).exists()


def test_wrong_checksum_leaves_nothing(server, cache):
    dest = cache / "model.pth"
    with pytest.raises(CheckpointError, match="SHA-256"):
        dl.download(server.url, dest, "0" * 64, len(PAYLOAD))
    assert not dest.exists()
    assert not _part(dest).exists()


def test_cancel_keeps_part_then_resume(server, cache):
    dest = cache / "model.pth"
    seen = []
    with pytest.raises(Cancelled):
        dl.download(server.url, dest, SHA, len(PAYLOAD),
                    progress=lambda done, total: seen.append(done), cancel=lambda: len(seen) > 2)
    kept = _part(dest).stat().st_size
    assert 0 < kept < len(PAYLOAD)
    assert not dest.exists()

    dl.download(server.url, dest, SHA, len(PAYLOAD))
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert dest.read_bytes() == PAYLOAD


def test_unreachable_server_gives_clear_error(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ckpt.pth"
    dest = cache / "model.pth"
    with pytest.raises(CheckpointError) as info:
        dl.download(url, dest, SHA, len(PAYLOAD), timeout=5)
    message = str(info.value)
    assert "\n" not in message
    for needle in (url, "offline", "--checkpoint", str(dest)):
        assert needle in message
    assert not dest.exists()


def test_http_error_status_is_reported(cache, monkeypatch):
    def not_found(*args, **kwargs):
        raise dl.urllib.error.HTTPError("http://127.0.0.1/x", 404, "Not Found", None, None)

    monkeypatch.setattr(dl.urllib.request, "urlopen", not_found)
    with pytest.raises(CheckpointError, match="HTTP 404"):
        dl.download("http://127.0.0.1/x", cache / "model.pth", SHA)


def test_existing_verified_file_makes_no_request(server, cache):
    dest = cache / "model.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD)
    assert dl.download(server.url, dest, SHA, len(PAYLOAD)) == dest
    assert server.requests == []


def test_existing_damaged_file_is_replaced(server, cache):
    dest = cache / "model.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(PAYLOAD[:1000])
    dl.download(server.url, dest, SHA, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_progress_is_monotonic_and_ends_at_total(server, cache):
    calls = []
    dl.download(server.url, cache / "model.pth", SHA, progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert {t for _, t in calls} == {len(PAYLOAD)}


def test_verify_file_messages(tmp_path):
    path = tmp_path / "w.pth"
    with pytest.raises(CheckpointError, match="does not exist"):
        dl.verify_file(path, SHA)
    path.write_bytes(PAYLOAD[:100])
    with pytest.raises(CheckpointError, match="truncated.*delete it"):
        dl.verify_file(path, SHA, len(PAYLOAD))
    with pytest.raises(CheckpointError, match=f"{path}.*SHA-256.*--checkpoint"):
        dl.verify_file(path, SHA)
    path.write_bytes(PAYLOAD)
    dl.verify_file(path, SHA.upper(), len(PAYLOAD))


def test_default_cache_dir(monkeypatch, tmp_path):
    """$SAMSEGMENTER_CACHE is the root of everything kept between runs: checkpoints and backend choices
    go inside it, never beside it."""
    from SAMSegmenterLib.models.backends import backend_cache_dir

    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path / "mycache"))
    assert dl.default_cache_dir() == tmp_path / "mycache" / "checkpoints"
    assert backend_cache_dir() == tmp_path / "mycache" / "backends"
    monkeypatch.delenv("SAMSEGMENTER_CACHE")
    monkeypatch.setattr(dl.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.default_cache_dir() == tmp_path / "xdg" / "SAMSegmenter" / "checkpoints"
    monkeypatch.setattr(dl.sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert dl.default_cache_dir() == tmp_path / "local" / "SAMSegmenter" / "checkpoints"
