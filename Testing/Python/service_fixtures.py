"""Real inference servers for the tests: started as subprocesses with ``python -m SAMSegmenterLib serve``.

`local_service` (session scope) is one LocalService the tests share; `start_server` starts another one with
its own options (and stops it at the end of the test) for tests that kill, starve or reconfigure it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from SAMSegmenterLib import MODULE_DIR
from SAMSegmenterLib.service.client import LocalService, ServiceClient
from SAMSegmenterLib.service.protocol import READY_MARKER

SERVER_ARGS = ("--device", "cpu")


class Server:
    """A ``serve`` subprocess: its process, URL, token file and log."""

    def __init__(self, folder: Path, *args: str, env: dict | None = None, open_files: int | None = None):
        self.folder = folder
        self.token_file = folder / "token"
        self.ready_file = folder / "ready"
        self.log = folder / "server.log"
        environment = dict(os.environ if env is None else env)
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(MODULE_DIR), environment.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "SAMSegmenterLib", "serve", "--port", "0", "--token-file",
                   str(self.token_file), "--ready-file", str(self.ready_file), *SERVER_ARGS, *args]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=log, env=environment,
                                            preexec_fn=None if open_files is None else lambda: resource.setrlimit(
                                                resource.RLIMIT_NOFILE, (open_files, open_files)))
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 300.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_file.is_file():
                line = self.ready_file.read_text().strip()
                assert line.startswith(READY_MARKER)
                return json.loads(line.split(" ", 1)[1])["url"]
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError("server did not start")

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, **kwargs) -> ServiceClient:
        return ServiceClient.remote(self.url, token_file=self.token_file, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(20)


@pytest.fixture(scope="session")
def local_service():
    """One LocalService (started by its client, as Slicer and the web app do) shared by the tests."""
    service = LocalService(args=list(SERVER_ARGS))
    service.wait_ready()
    yield service
    service.stop()


@pytest.fixture
def start_server(tmp_path):
    """start_server(*serve options) -> a running Server of its own, stopped after the test."""
    servers = []

    def start(*args: str, env: dict | None = None, open_files: int | None = None) -> Server:
        folder = tmp_path / f"server{len(servers)}"
        folder.mkdir()
        servers.append(Server(folder, *args, env=env, open_files=open_files))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
