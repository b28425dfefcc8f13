"""The service client under real faults: every network step advances from poll() and none waits on the network.

Peers are real: server processes (``serve``), and loopback sockets that fail like networks do (faulty_servers).
"Does not block" is checked with a bound far above a poll's work (~10 ms) and far below what blocking would
cost (the connect timeout, the server's delay): the figures themselves are benchmarks/responsiveness.py's.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from faulty_servers import MALFORMED_URL, UNRESOLVABLE_URL, FullBacklog, Silent, Slow
from service_fixtures import start_server  # noqa: F401  (fixture)

from SAMSegmenterLib.errors import InputError, ServiceError
from SAMSegmenterLib.prompts import Prompt
from SAMSegmenterLib.service.client import LocalService, ServiceClient
from SAMSegmenterLib.service.protocol import PREFIX

NOT_BLOCKING = 1.0  # seconds: a poll that took this long waited on the network
BOX = (50, 70, 140, 170)


def drive(call, limit: float = 60.0) -> tuple[float, int]:
    """Poll ``call`` every 5 ms until it is done: (longest poll in seconds, number of polls)."""
    longest, count, deadline = 0.0, 0, time.monotonic() + limit
    while time.monotonic() < deadline:
        started = time.perf_counter()
        done = call.poll()
        longest, count = max(longest, time.perf_counter() - started), count + 1
        if done:
            return longest, count
        time.sleep(0.005)
    raise AssertionError("the call never finished")


def test_a_malformed_url_is_one_clear_error_before_any_request():
    from SAMSegmenterMRML.engines import ServiceEngine

    for url in (MALFORMED_URL, "gpu:8443", "https://", "ftp://gpu"):
        with pytest.raises(InputError, match="service address"):
            ServiceClient.remote(url, token="t")
        with pytest.raises(InputError, match="service address"):
            ServiceEngine(url=url, token_file="/nonexistent/token")


def test_an_unresolvable_host_name_fails_cleanly_and_polls_never_wait():
    call = ServiceClient.remote(UNRESOLVABLE_URL, token="t", connect_timeout=30).call("GET", f"{PREFIX}/status")
    longest, count = drive(call)
    with pytest.raises(ServiceError, match="cannot be resolved"):
        call.result(0)
    assert count > 1 and longest < NOT_BLOCKING  # the lookup ran in a helper process


def test_an_unreachable_host_gives_up_after_the_connect_timeout_and_polls_never_wait():
    peer = FullBacklog()
    try:
        client = ServiceClient.remote(peer.url, token="t", connect_timeout=2)
        call = client.call("GET", f"{PREFIX}/status")
        started = time.monotonic()
        longest, count = drive(call)
        with pytest.raises(ServiceError, match="did not complete within 2 s"):
            call.result(0)
        assert time.monotonic() - started >= 2 and longest < NOT_BLOCKING and count > 10
    finally:
        peer.close()


def test_an_upload_to_a_server_that_never_answers_times_out_without_blocking():
    peer = Silent()
    try:
        client = ServiceClient.remote(peer.url, token="t", timeout=2)
        call = client.submit_open_volume(np.zeros((64, 256, 256), np.int16))  # 8 MiB: more than the buffers hold
        moving = []
        for _ in range(100):  # 0.5 s: the kernel's buffers fill, then the upload stalls
            call.poll()
            moving.append(call.uploading)
            time.sleep(0.005)
        assert any(moving) and not moving[-1]  # a stalled upload does not ask the GUI for 0 ms polls
        longest, _ = drive(call)
        with pytest.raises(ServiceError, match="no answer in time"):
            call.result(0)
        assert longest < NOT_BLOCKING
    finally:
        peer.close()


def test_a_slow_server_dripping_its_answer_is_read_in_pieces():
    peer = Slow(delay=1.0, drip=0.5)
    try:
        call = ServiceClient.remote(peer.url, token="t").call("GET", f"{PREFIX}/status")
        longest, count = drive(call)
        assert call.result(0) == {"api": 1, "slow": True}
        assert longest < NOT_BLOCKING and count > 20
    finally:
        peer.close()


def test_an_expired_session_is_opened_again_by_the_polls(start_server, mni152):  # noqa: F811
    server = start_server("--session-idle", "1")
    client = server.client()
    remote = client.open_volume(mni152[0][50:70])
    first = remote.session_id
    expected = remote.predict(0, 10, Prompt(box=BOX)).mask
    deadline = time.monotonic() + 30
    while client.status()["sessions"] and time.monotonic() < deadline:  # the server's sweep closes it
        time.sleep(0.5)
    assert client.status()["sessions"] == 0
    call = remote.submit_predict(0, 10, Prompt(box=BOX))
    longest, _ = drive(call)
    np.testing.assert_array_equal(call.result(0).mask, expected)
    assert remote.session_id != first and longest < NOT_BLOCKING


def test_a_compressed_upload_is_sent_in_deflated_pieces(start_server, mni152):  # noqa: F811
    server = start_server()
    plain = server.client().open_volume(mni152[0][50:70])
    packed = server.client(compress=True).open_volume(mni152[0][50:70])
    assert packed.window == plain.window
    np.testing.assert_array_equal(packed.predict(0, 10, Prompt(box=BOX)).mask,
                                  plain.predict(0, 10, Prompt(box=BOX)).mask)


def test_closing_a_session_of_a_dead_local_server_neither_waits_nor_starts_it(mni152):
    service = LocalService(args=["--device", "cpu"])
    try:
        remote = ServiceClient(service).open_volume(mni152[0][:4])
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(30)
        started = time.perf_counter()
        remote.close()
        assert time.perf_counter() - started < NOT_BLOCKING
        deadline = time.monotonic() + 5
        while remote.client.poll() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not remote.client.pending and not service.running and service.restarts_left == 1
    finally:
        service.stop()


def test_stopping_a_local_service_without_waiting(mni152):
    service = LocalService(args=["--device", "cpu"])
    service.wait_ready()
    process = service.process
    started = time.perf_counter()
    service.stop(wait=False)
    assert time.perf_counter() - started < NOT_BLOCKING and service.process is None
    assert process.wait(30) is not None  # it exits by itself (standard input closed, SIGTERM)
    assert service.folder.is_dir()  # its token and log stay until a stop that waits
    service.stop()  # what atexit does
    assert not service.folder.exists()


def test_a_stopped_local_service_leaves_no_folder_and_can_start_again():
    """stop() removes the service's private folder (token, ready file, log); a later start makes it again."""
    service = LocalService(args=["--device", "cpu"])
    try:
        service.wait_ready()
        assert sorted(p.name for p in service.folder.iterdir()) == ["owner", "ready", "server.log", "token"]
        service.stop()
        assert not service.folder.exists()
        service.start()
        service.wait_ready()
        assert service.token_file.is_file()
    finally:
        service.stop()
    assert not service.folder.exists()


def test_a_scene_volume_is_copied_piece_by_piece_while_it_is_sent(start_server, mni152):  # noqa: F811
    """snapshot=True (the controller's upload of a scene's voxels): the client's own copy is filled as the
    volume is sent, plain or deflated, and is what the session keeps after the owner changes its voxels."""
    server = start_server()
    crop = mni152[0][50:70]
    expected = server.client().open_volume(crop).predict(0, 10, Prompt(box=BOX)).mask
    for compress in (False, True):
        live = np.array(crop)
        remote = server.client(compress=compress).submit_open_volume(live, snapshot=True).result(120)
        assert not np.shares_memory(remote.volume, live)
        live[:] = 0  # the scene's voxels change; the session's copy does not
        np.testing.assert_array_equal(remote.volume, crop)
        np.testing.assert_array_equal(remote.predict(0, 10, Prompt(box=BOX)).mask, expected)
