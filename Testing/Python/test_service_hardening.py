"""The inference service against a client that holds the token but sends what no SAMSegmenter client sends:
decompression bombs, absurd sizes, server-side paths, idle and stalled connections, a low open-file limit.

Real server processes (`python -m SAMSegmenterLib serve`) and raw HTTP over sockets; memory is the server's
own peak (VmHWM in /proc, reset through /proc/PID/clear_refs before each measurement).
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import MODULE_DIR
from service_fixtures import Server, start_server  # noqa: F401  (fixture)

from SAMSegmenterLib.models.checkpoints import litemedsam_checkpoint

MiB = 1 << 20
VOLUME_MB = 16
JSON_MB = 2
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with small limits: 16 MiB volumes, 20 MiB of volumes in all, 2 MiB JSON, one named checkpoint."""
    started = Server(tmp_path_factory.mktemp("hardened"), "--max-volume-mb", str(VOLUME_MB), "--max-total-volume-mb",
                     "20", "--max-json-mb", str(JSON_MB), "--named-checkpoint", f"lite={litemedsam_checkpoint()}")
    yield started
    started.stop()


def send(server: Server, method: str, path: str, body: bytes = b"", headers: dict | None = None,
         chunked: bool = False, timeout: float = 120) -> tuple[int, dict | None, http.client.HTTPResponse]:
    """(status, JSON answer, response) of one request sent as raw HTTP (chunked: Transfer-Encoding chunked)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {server.token}", **(headers or {})}
    try:
        if chunked:
            conn.putrequest(method, path)
            for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(name, value)
            conn.endheaders()
            try:
                for start in range(0, len(body), MiB):
                    part = body[start:start + MiB]
                    conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
                conn.send(b"0\r\n\r\n")
            except OSError:  # the server answered and closed before the whole body was sent
                pass
        else:
            conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None, response


def open_small(server: Server, encoding: str = "") -> dict:
    """Open a 4 x 64 x 64 int16 volume (a bright square) and return the server's answer."""
    volume = np.zeros((4, 64, 64), np.int16)
    volume[:, 20:40, 24:44] = 500
    volume[:, 5, :] = np.arange(64)
    body = volume.tobytes()
    headers = {}
    if encoding:
        body = zlib.compress(body) if encoding == "deflate" else gzip_bytes(body)
        headers["Content-Encoding"] = encoding
    status, answer, _ = send(server, "POST", "/v1/sessions?shape=4,64,64&dtype=int16", body, headers)
    assert status == 200, answer
    return answer


def gzip_bytes(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def zeros_deflated(nbytes: int) -> bytes:
    """``nbytes`` zero bytes, deflated (a few hundred KiB for hundreds of MiB)."""
    packer = zlib.compressobj(9)
    chunk = bytes(MiB)
    parts = [packer.compress(chunk) for _ in range(nbytes // MiB)]
    return b"".join(parts) + packer.compress(bytes(nbytes % MiB)) + packer.flush()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> int:
    """Reset the peak of ``pid`` to its current resident memory (returned)."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")
    return memory(pid)["VmHWM"]


def predict_body(prompt: dict) -> bytes:
    return json.dumps({"axis": 0, "index": 1, "prompt": {"box": [20, 16, 47, 43], **prompt}}).encode()


def test_decompression_bombs_are_refused_within_their_declared_size(server):
    session = open_small(server)["session"]
    assert send(server, "POST", f"/v1/sessions/{session}/predict", predict_body({}), JSON)[0] == 200  # warm
    volume_bomb = zeros_deflated(512 * MiB)  # declared 16 MiB, inflates to 512 MiB
    mask_bomb = base64.b64encode(zeros_deflated(64 * MiB)).decode()
    logits_bomb = base64.b64encode(zeros_deflated(256 * MiB)).decode()
    pid = server.process.pid
    base = reset_peak(pid)
    answers = [send(server, "POST", "/v1/sessions?shape=16,1024,1024&dtype=uint8", volume_bomb,
                    {"Content-Encoding": "deflate"})[:2]]
    for shape in ([400_000_000], [64, 64]):  # a huge declared key slice, then the right shape with a bomb in it
        body = {"kind": "propagate_between", "axis": 0, "keys": {"1": {"shape": shape, "bits": mask_bomb}}}
        answers.append(send(server, "POST", f"/v1/sessions/{session}/jobs", json.dumps(body).encode(), JSON)[:2])
    answers.append(send(server, "POST", f"/v1/sessions/{session}/predict", predict_body({"mask_input": logits_bomb}),
                        JSON)[:2])
    many_values = b"[" + b"0," * 199_000 + b"0]"  # just under the JSON value limit
    long_string = json.dumps({"axis": 0, "index": 1, "prompt": {"points": "x" * (JSON_MB * MiB - 100)}}).encode()
    json_answers = [send(server, "POST", f"/v1/sessions/{session}/predict", body, JSON)[0]
                    for body in (many_values, long_string)]
    peak = memory(pid)["VmHWM"] - base
    assert peak <= (VOLUME_MB + 64) * MiB, f"peak memory rose by {peak / MiB:.0f} MiB"
    assert [status for status, _ in answers] == [422] * 4, answers
    messages = [answer["error"]["message"] for _, answer in answers]
    assert "inflate to more than" in messages[0]
    assert messages[1].startswith("malformed mask") and messages[2].startswith("malformed mask")
    assert messages[3].startswith("malformed mask input")
    assert json_answers == [422, 422]


def test_uploads_inflate_to_the_same_volume(server):
    raw, deflated, gzipped = (open_small(server, encoding) for encoding in ("", "deflate", "gzip"))
    assert raw["window"] == deflated["window"] == gzipped["window"]  # percentiles of the very same voxels
    for answer in (raw, deflated, gzipped):
        assert send(server, "DELETE", f"/v1/sessions/{answer['session']}")[0] == 200


def test_refused_requests_are_4xx_with_one_log_line_at_most(server):
    session = open_small(server)["session"]
    lines_before = server.log.read_text().count("\n")
    job = {"kind": "propagate", "axis": 0, "seed_index": 1, "seed_prompt": {"box": [20, 16, 47, 43]}}
    nan_logits = base64.b64encode(zlib.compress(np.full((256, 256), np.nan, "<f4").tobytes())).decode()
    cases = [
        (("POST", "/v1/sessions?shape=4294967296,4294967296,1&dtype=uint8", b"x"), 413),  # product wraps in int64
        (("POST", f"/v1/sessions?shape={10 ** 30},1,1&dtype=uint8", b"x"), 413),  # OverflowError in numpy
        (("POST", "/v1/sessions?shape=1,2&dtype=uint8", b"xx"), 422),
        (("POST", "/v1/sessions?shape=4,64,64&dtype=int16", b"\1" * 100, {"Content-Encoding": "deflate"}), 422),
        (("POST", f"/v1/sessions/{session}/jobs", json.dumps({**job, "options": {"box_margin": [1, 2]}}).encode(),
          JSON), 422),
        (("POST", f"/v1/sessions/{session}/jobs", json.dumps({**job, "options": {"min_iou": "abc"}}).encode(),
          JSON), 422),
        (("POST", f"/v1/sessions/{session}/predict", predict_body({"mask_input": nan_logits}), JSON), 422),
        (("POST", f"/v1/sessions/{session}/jobs", json.dumps({**job, "direction": "sideways"}).encode(), JSON), 422),
        (("POST", f"/v1/sessions/{session}/jobs", json.dumps({**job, "seed_index": 10 ** 20}).encode(), JSON), 422),
        (("POST", f"/v1/sessions/{session}/jobs", json.dumps({"kind": "propagate_between", "axis": 0,
                                                              "keys": {}}).encode(), JSON), 422),
        (("POST", f"/v1/sessions/{session}/prefetch", json.dumps({"axis": 0, "index": 10 ** 20}).encode(), JSON), 422),
        (("POST", f"/v1/sessions/{session}/predict", predict_body({"points": [[1, 1]] * 1000,
                                                                  "labels": [1] * 1000}), JSON), 422),
        (("POST", f"/v1/sessions/{session}/predict", b"[" * 300_000, JSON), 413),  # 300,000 nested lists
        (("POST", f"/v1/sessions/{session}/predict", b"[" * 150_000 + b"]" * 150_000, JSON), 400),  # too deep
        (("POST", f"/v1/sessions/{session}/predict", b'{"axis": 0, "index": 1e999, "prompt": {}}', JSON), 422),
    ]
    for request, expected in cases:
        status, answer, _ = send(server, *request)
        assert status == expected, (request[:2], status, answer)
    chunked = [  # no Content-Length: the limits apply to what arrives
        (("POST", f"/v1/sessions/{session}/predict", b" " * (20 * MiB), JSON), 413),
        (("POST", "/v1/sessions?shape=1,1024,1024&dtype=uint8", b"\0" * (2 * MiB)), 413),  # more than declared
    ]
    for request, expected in chunked:
        status, answer, _ = send(server, *request, chunked=True)
        assert status == expected, (request[:2], status, answer)
    assert send(server, "POST", f"/v1/sessions/{session}/predict", predict_body({}), JSON)[0] == 200
    log = server.log.read_text()
    assert "Traceback" not in log
    assert log.count("\n") - lines_before <= len(cases) + len(chunked)


def test_uploads_in_flight_count_against_the_memory_limit(server):
    """Two 12 MiB uploads at once on a server that holds 20 MiB: the second gets 503 with Retry-After before
    a byte of it is read; once the first is in, the memory is the session's."""
    volume = np.zeros((12, 1024, 1024), np.uint8)
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (f"POST /v1/sessions?shape=12,1024,1024&dtype=uint8 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Length: {volume.nbytes}\r\n\r\n").encode()
    sock.sendall(head + volume.tobytes()[:MiB])
    deadline = time.monotonic() + 10
    while send(server, "GET", "/v1/status")[1]["uploads"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, answer, response = send(server, "POST", "/v1/sessions?shape=12,1024,1024&dtype=uint8", volume.tobytes())
    assert status == 503 and "uploads included" in answer["error"]["message"]
    assert response.getheader("Retry-After") == "2"
    sock.sendall(volume.tobytes()[MiB:])
    sock.settimeout(60)
    response = http.client.HTTPResponse(sock)  # reads the answer from the raw socket
    response.begin()
    assert response.status == 200
    reply = json.loads(response.read())
    sock.close()
    stats = send(server, "GET", "/v1/status")[1]
    assert stats["uploads"] == 0 and stats["volume_mib"] >= 12
    assert send(server, "DELETE", f"/v1/sessions/{reply['session']}")[0] == 200


def test_clients_choose_no_server_path(server):
    """Paths are refused before anything is opened (a pipe such as /dev/stdin would block a worker), all with
    the same message (whether a file exists is not told), and no error names a server path."""
    messages = set()
    for path in ("/dev/stdin", "/etc/shadow", "/root", "~/.ssh/id_rsa", "/no/such/file", str(litemedsam_checkpoint())):
        started = time.monotonic()
        status, answer, _ = send(server, "POST", f"/v1/sessions?shape=4,64,64&dtype=int16&checkpoint={path}",
                                 bytes(4 * 64 * 64 * 2), timeout=10)
        assert status == 422 and time.monotonic() - started < 5
        messages.add(answer["error"]["message"])
    assert len(messages) == 1 and "/" not in messages.pop()
    status, answer, _ = send(server, "POST", "/v1/sessions?shape=4,64,64&dtype=int16&model=sam_vit_h",
                             bytes(4 * 64 * 64 * 2))
    assert status == 422 and "no weights for sam_vit_h" in answer["error"]["message"]
    assert str(Path.home()) not in answer["error"]["message"] and ".cache" not in answer["error"]["message"]
    status, answer, _ = send(server, "POST", "/v1/sessions?shape=4,64,64&dtype=int16&checkpoint=lite",
                             bytes(4 * 64 * 64 * 2))
    assert status == 200 and answer["model"] == "litemedsam"  # a name the operator configured


def serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "SAMSegmenterLib", "serve", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(MODULE_DIR)})


def test_client_paths_only_on_loopback_and_token_files_only_private(tmp_path):
    done = serve_cli("--host", "0.0.0.0", "--insecure", "--client-checkpoints", "--token-file", str(tmp_path / "t"))
    assert done.returncode == 2 and "--client-checkpoints" in done.stderr and "non-loopback" in done.stderr
    token = tmp_path / "shared-token"
    token.write_text("a-token-others-can-read\n")
    token.chmod(0o644)
    done = serve_cli("--token-file", str(token))
    assert done.returncode == 2 and "chmod 600" in done.stderr, done.stderr


@pytest.mark.parametrize("args, message", [
    (("--port", "70000"), "--port must be 0 (a free port) to 65535, got 70000"),
    (("--max-jobs", "0"), "--max-jobs must be at least 1, got 0"),
    (("--cache-mb", "-5"), "--cache-mb must be at least 0, got -5"),
    (("--max-sessions", "0"), "--max-sessions must be at least 1"),
    (("--max-volume-mb", "2048", "--max-total-volume-mb", "1024"),
     "--max-total-volume-mb (1024) must be at least --max-volume-mb (2048)"),
    (("--request-timeout", "0"), "--request-timeout must be a positive number of seconds, got 0"),
    (("--session-idle", "nan"), "--session-idle must be a positive number of seconds, got nan"),
])
def test_limits_a_server_could_not_work_with_are_refused_before_it_starts(tmp_path, args, message):
    done = serve_cli("--token-file", str(tmp_path / "t"), *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        done.stderr
    assert not (tmp_path / "t").exists()  # refused before anything, the token included


def test_tls_files_that_are_not_pem_are_named(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("not a certificate\n")
    done = serve_cli("--token-file", str(tmp_path / "t"), "--tls-cert", str(cert), "--tls-key", str(cert))
    assert done.returncode == 2 and f"--tls-cert/--tls-key: {cert} does not hold a PEM certificate and its key" \
        in done.stderr, done.stderr


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.slow
def test_connections_without_a_request_are_closed_and_capped(start_server):  # noqa: F811
    server = start_server("--max-connections", "16")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(40)]
    dribbling = socket.create_connection(("127.0.0.1", server.port))
    dribbling.sendall(b"GET /v1/status HTTP/1.1\r\n")
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall((f"POST /v1/sessions?shape=1,256,256&dtype=uint8 HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     f"Bearer {server.token}\r\nContent-Length: 65536\r\n\r\n").encode() + bytes(1000))
    slow = socket.create_connection(("127.0.0.1", server.port))  # an upload that keeps coming, slowly
    slow.sendall((f"POST /v1/sessions?shape=1,256,256&dtype=uint8 HTTP/1.1\r\nHost: x\r\nAuthorization: "
                  f"Bearer {server.token}\r\nContent-Length: 65536\r\n\r\n").encode())
    started = time.monotonic()
    status, answer, _ = send(server, "GET", "/v1/status", timeout=5)  # over the cap: an idle connection gives way
    assert status == 200 and time.monotonic() - started < 2
    assert sum(map(closed_by_server, idle)) >= 40 - 16
    for _ in range(13):  # 13 s: past the 10 s request timeout
        try:
            dribbling.sendall(b"X-Slow: 1\r\n")
        except OSError:  # closed already
            pass
        slow.sendall(bytes(65536 // 13))
        time.sleep(1)
    slow.sendall(bytes(65536 - 13 * (65536 // 13)))
    slow.settimeout(30)
    assert slow.recv(65536).startswith(b"HTTP/1.1 200")
    assert all(map(closed_by_server, idle)) and closed_by_server(dribbling) and closed_by_server(stalled)
    status = send(server, "GET", "/v1/status")[1]
    assert status["uploads"] == 0 and status["sessions"] == 1  # the stalled upload's room was given back
    assert "Traceback" not in server.log.read_text()


@pytest.mark.slow
def test_a_low_open_file_limit_neither_stops_the_server_nor_floods_its_log(start_server):  # noqa: F811
    server = start_server(open_files=256)
    size_before = server.log.stat().st_size
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    for _ in range(5):
        started = time.monotonic()
        assert send(server, "GET", "/v1/status", timeout=10)[0] == 200
        assert time.monotonic() - started < 2
    log = server.log.read_text()
    assert "Traceback" not in log and server.log.stat().st_size - size_before < 1000, log[-2000:]
    for sock in sockets:
        sock.close()


@pytest.mark.slow
def test_sigterm_does_not_wait_for_an_unfinished_request(start_server):  # noqa: F811
    server = start_server()
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall((f"POST /v1/sessions?shape=1,256,256&dtype=uint8 HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     f"Bearer {server.token}\r\nContent-Length: 65536\r\n\r\n").encode() + bytes(1000))
    keep_sending = threading.Event()

    def trickle() -> None:  # the body keeps coming (slowly), so the request timeout never ends it
        while not keep_sending.wait(0.5):
            try:
                stalled.sendall(b"\0")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    time.sleep(1)
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(60)  # the trickle never ends: only the shutdown timeout lets it exit
    finally:
        keep_sending.set()


def test_shapes_are_checked_without_overflow():
    """The mask decoder refuses a declared size before it decodes anything (no server needed)."""
    from SAMSegmenterLib.errors import InputError
    from SAMSegmenterLib.service.protocol import pack_mask, unpack_mask

    packed = pack_mask(np.ones((3, 5), bool))
    np.testing.assert_array_equal(unpack_mask(packed, shape=(3, 5)), np.ones((3, 5), bool))
    for shape in ([2 ** 32, 2 ** 32], [10 ** 30], [-1, 4], [1.5], [True, 3]):
        with pytest.raises(InputError, match="malformed mask"):
            unpack_mask({"shape": shape, "bits": packed["bits"]}, max_count=1 << 20)
    assert math.prod([2 ** 32, 2 ** 32]) > 1 << 20


def test_a_server_stopped_while_it_prefetches_exits_cleanly(start_server, mni152):  # noqa: F811
    """SIGTERM while the server encodes prefetched slices: it exits with 143 like any stopped command. Before the
    exit stopped the encoder gates, the prefetch thread, killed inside PyTorch at exit, aborted the server
    (SIGABRT: "terminate called without an active exception")."""
    server = start_server("--backend", "torch")
    volume = server.client().open_volume(mni152[0][60:70])
    for index in range(6):
        volume.prefetch(0, index)
    time.sleep(1.0)  # inside the first of six reference encodes (about a second each on a 2-core CPU)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 143, server.log.read_text()[-2000:]
    assert "terminate called" not in server.log.read_text()


@pytest.mark.parametrize("encoding", ["", "deflate", "gzip"])
def test_an_upload_is_fingerprinted_as_it_arrives(encoding, monkeypatch):
    """The volume's fingerprint (the key of its cached embeddings) is hashed while the body arrives, in pieces, and
    equals the one computed from the whole array; a failed upload has none."""
    import asyncio

    from SAMSegmenterLib.errors import InputError
    from SAMSegmenterLib.predictor import volume_fingerprint
    from SAMSegmenterLib.service import uploads

    monkeypatch.setattr(uploads, "HASH_STEP", 1000)  # many hand-overs for a small volume
    volume = np.random.default_rng(3).integers(-1000, 3000, (7, 33, 41)).astype(np.int16)
    raw = volume.tobytes()
    body = {"": raw, "deflate": zlib.compress(raw), "gzip": None}[encoding]
    if encoding == "gzip":
        packer = zlib.compressobj(wbits=31)
        body = packer.compress(raw) + packer.flush()

    async def pieces(data: bytes, size: int = 777):
        for start in range(0, len(data), size):
            yield data[start:start + size]

    reader = uploads.VolumeReader(volume.shape, np.dtype("int16"), encoding, 1 << 30)
    np.testing.assert_array_equal(asyncio.run(reader.read(pieces(body))), volume)
    assert reader.fingerprint == volume_fingerprint(volume)
    truncated = uploads.VolumeReader(volume.shape, np.dtype("int16"), encoding, 1 << 30)
    with pytest.raises(InputError):
        asyncio.run(truncated.read(pieces(body[: len(body) // 2])))
    assert truncated.fingerprint is None
