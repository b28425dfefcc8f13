"""``segment --server``: the same output as a local run, and one-line errors for the service's failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import MODULE_DIR
from service_fixtures import local_service  # noqa: F401  (fixture)

BOX = ["50", "60", "150", "170"]


@pytest.fixture(scope="module")
def volume_file(tmp_path_factory, mni152):
    from SAMSegmenterLib.io.sample_data import write_sample

    return write_sample("mni152", tmp_path_factory.mktemp("cli_server") / "mni152.nii.gz")


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    return subprocess.run([sys.executable, "-m", "SAMSegmenterLib", *args], capture_output=True, text=True,
                          timeout=900, env=env)


def service_args(service) -> list[str]:
    url, _ = service.address()
    return ["--server", url, "--token-file", str(service.token_file)]


def labels(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("extra", [[], ["--propagate", "--range", "88", "92"]])
def test_segment_on_the_service_writes_what_a_local_run_writes(local_service, volume_file, tmp_path, extra):  # noqa: F811
    local, remote = tmp_path / "local.nii.gz", tmp_path / "remote.nii.gz"
    common = ["--slice", "90", "--box", *BOX, "--json", *extra]
    done_local = cli("segment", str(volume_file), str(local), *common, "--device", "cpu")
    done_remote = cli("segment", str(volume_file), str(remote), *common, *service_args(local_service))
    assert done_local.returncode == 0, done_local.stderr
    assert done_remote.returncode == 0, done_remote.stderr
    np.testing.assert_array_equal(labels(remote), labels(local))
    assert labels(local).sum() > 100
    ours, theirs = (json.loads(d.stdout.strip().splitlines()[-1]) for d in (done_remote, done_local))
    assert ours["server"] == local_service.address()[0] and "server" not in theirs
    for key in ("backend", "voxels", "score", "selection", "candidate", "slice"):  # one backend per machine
        assert ours[key] == theirs[key], key
    if extra:
        assert ours["propagation"]["slices"] == theirs["propagation"]["slices"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_service_failures_are_one_line_errors_with_no_output(local_service, volume_file, tmp_path):  # noqa: F811
    out = tmp_path / "out.nii.gz"
    url, _ = local_service.address()
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    cases = [
        (["--server", f"http://127.0.0.1:{free_port()}", "--token-file", str(local_service.token_file)],
         "cannot reach the SAM service at http://127.0.0.1:"),
        (["--server", url, "--token-file", str(wrong)], "refused a wrong access token"),
        (["--server", url, "--token-file", str(tmp_path / "missing")], "token file"),
        (["--server", url], "--server needs --token-file"),
        ([*service_args(local_service), "--device", "cuda"], "--device does not apply with --server"),
        ([*service_args(local_service), "--backend", "torch"], "--backend does not apply with --server"),
        ([*service_args(local_service), "--cafile", str(tmp_path / "missing.pem")],
         f"--cafile: {tmp_path / 'missing.pem'} does not exist"),
        ([*service_args(local_service), "--cafile", str(wrong)], f"--cafile: {wrong} does not hold PEM certificates"),
        ([*service_args(local_service), "--model", "sam_vit_h"], "no weights for sam_vit_h"),
    ]
    for args, message in cases:
        done = cli("segment", str(volume_file), str(out), "--slice", "90", "--box", *BOX, *args)
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("warning:")]
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, done.stderr)
        assert not out.exists() and not list(tmp_path.glob(".partial*"))


def _status(service) -> dict:
    from SAMSegmenterLib.service.client import ServiceClient

    return ServiceClient(service).status()


def _until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_each_run_closes_its_session_and_ctrl_c_stops_its_job(local_service, volume_file, tmp_path):  # noqa: F811
    """A command's session is closed when it ends (a server holds 16 by default: runs must not use them up until
    they expire), and Ctrl-C during a propagation on the service stops the job at once, not after its lease."""
    before = _status(local_service)["sessions"]
    for n in range(3):
        done = cli("segment", str(volume_file), str(tmp_path / f"{n}.nii.gz"), "--slice", "90", "--box", *BOX,
                   *service_args(local_service))
        assert done.returncode == 0, done.stderr
        assert _status(local_service)["sessions"] == before
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    process = subprocess.Popen([sys.executable, "-m", "SAMSegmenterLib", "segment", str(volume_file),
                                str(tmp_path / "walk.nii.gz"), "--slice", "90", "--box", *BOX, "--propagate",
                                *service_args(local_service)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert _until(lambda: _status(local_service)["jobs_running"] == 1, 120), "the propagation never started"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert _until(lambda: _status(local_service)["jobs_running"] == 0, 10), "the job ran on after Ctrl-C"
    assert _status(local_service)["sessions"] == before
    assert not (tmp_path / "walk.nii.gz").exists()
