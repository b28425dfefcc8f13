"""The ``web`` command's checks, its choice of headless OpenGL, and the SAM panel's state mapping.

The app itself is started as a subprocess by test_web_browser.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from web_stand_in import ControllerState

from SAMSegmenterWeb.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines; add --allow-remote"),
        (["--host", "192.168.1.20"], "add --allow-remote"),
        (["--volume", "missing.nii.gz"], "--volume missing.nii.gz does not exist"),
        (["--sample", "mni152", "--volume", "."], "give --volume or --sample, not both"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--token-file", "token"], "--token-file only applies with --server URL"),
        (["--server", "https://gpu.example:8443"], "--server needs --token-file FILE"),
        (["--server", "https://gpu.example:8443", "--token-file", "missing-token"],
         "token file missing-token does not exist"),
    ],
)
def test_bad_command_lines_fail_before_starting(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_port_in_use_fails_before_starting(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} (") and "--port" in err and "\n" not in err


def test_the_engine_web_command_becomes_the_app(tmp_path):
    """``python -m SAMSegmenterLib web ...`` becomes ``python -m SAMSegmenterWeb ...`` (the same process on
    POSIX, so a SIGTERM reaches the app and nothing is orphaned): the app's checks, one-line error and status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "SAMSegmenter")}
    done = subprocess.run([sys.executable, "-m", "SAMSegmenterLib", "web", "--port", "70000"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "error: --port must be between 0 and 65535, got 70000"


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("example.org", False)],
)
def test_loopback_hosts(host, loopback):
    from SAMSegmenterWeb.cli import is_loopback

    assert is_loopback(host) is loopback


def test_printed_url_host():
    import socket

    from SAMSegmenterWeb.cli import url_host

    assert url_host("127.0.0.1") == "127.0.0.1"
    assert url_host("::1") == "[::1]"
    assert url_host("0.0.0.0") == socket.gethostname()


def test_headless_window_choice_keeps_a_display_or_a_users_choice():
    from SAMSegmenterWeb.rendering import WINDOW_VARIABLE, choose_window, configure_headless

    assert choose_window({"DISPLAY": ":0"}) is None
    assert choose_window({"WAYLAND_DISPLAY": "wayland-0"}) is None
    environ = {WINDOW_VARIABLE: "vtkXOpenGLRenderWindow"}
    assert configure_headless(environ) == "vtkXOpenGLRenderWindow" and environ == {
        WINDOW_VARIABLE: "vtkXOpenGLRenderWindow"
    }


def test_headless_window_falls_back_to_osmesa_when_egl_fails():
    """With no EGL vendor library (libglvnd finds none), EGL cannot make a context: OSMesa is chosen."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "VTK_DEFAULT_OPENGL_WINDOW")}
    code = "from SAMSegmenterWeb.rendering import configure_headless; import os; print(configure_headless())"
    broken = dict(
        env, __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent/egl_vendor.json", PYTHONPATH=str(ROOT / "SAMSegmenter")
    )
    done = subprocess.run([sys.executable, "-c", code], env=broken, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "vtkOSOpenGLRenderWindow"


def test_panel_state_is_what_the_browser_needs():
    from SAMSegmenterWeb.panel import IDLE_PANEL, panel_state

    assert panel_state(None) == IDLE_PANEL
    shown = panel_state(ControllerState())
    assert set(shown) == set(IDLE_PANEL)
    assert shown["attached"] and shown["busy"] and shown["can_stop"] and not shown["can_apply"]
    assert shown["progress"] == {"done": 3, "total": 12, "percent": 25.0}
    assert shown["axis"] == "J" and shown["preview_range"] == [40, 51]
    assert shown["confidence"] == [
        {"index": 40, "score": 0.912, "iou": None, "key": True, "confidence": None, "unsure": False},
        {"index": 41, "score": None, "iou": 0.5, "key": False, "confidence": 0.312, "unsure": True},
    ]
    assert shown["stops"] == [{"walk": "up", "sentence": "stopped at slice 52: the mask vanished"}]
    idle = panel_state(ControllerState(progress=None, axis=None, preview_range=None, confidence=(), stops={}))
    assert idle["progress"] is None and idle["axis"] == "" and idle["preview_range"] is None
