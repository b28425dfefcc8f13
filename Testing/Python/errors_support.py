"""Shared pieces of the error-contract tests: the command line in a real subprocess, real file systems
that refuse writes (a read-only or a full tmpfs), and one-line-error checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import MODULE_DIR


def cli_env(extra_path: Optional[Path] = None, extra_env: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment of a command-line run: this checkout's package (after ``extra_path``), the user's cache."""
    path = f"{extra_path}{os.pathsep}{MODULE_DIR}" if extra_path else str(MODULE_DIR)
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "SAMSEGMENTER_CACHE": os.environ.get("SAMSEGMENTER_CACHE", ""), "OMP_NUM_THREADS": "2"}
    return {**env, **(extra_env or {})}


def run_cli(*args: str, extra_path: Optional[Path] = None, extra_env: Optional[dict[str, str]] = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m SAMSegmenterLib ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "SAMSegmenterLib", *args], capture_output=True, text=True,
                          env=cli_env(extra_path, extra_env), timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "SAMSegmenterLib", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())


def signal_when(process: subprocess.Popen, ready: Callable[[], bool], signum: int, timeout: float = 240) -> bool:
    """Poll ``ready()`` as fast as possible; when true, send ``signum`` to ``process``. Returns False when the
    process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            process.send_signal(signum)
            return True
        if process.poll() is not None:
            return False
    raise AssertionError("the condition never came")


def assert_one_line_error(done: subprocess.CompletedProcess, message: str) -> None:
    err = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, err)
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], err


def partials(folder: Path) -> list[Path]:
    """Temporary files a write may have left in ``folder`` (or its subfolders)."""
    return [p for p in folder.rglob("*") if p.name.startswith(".partial-")]


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "64k", read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs mounted on ``folder`` (as root; CI runs as root), or the test is skipped with the reason."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (file modes do not stop root's writes)")
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system of ``folder`` with a file ``filler`` until ``leave`` bytes (rounded down to 4 KiB
    blocks) are free, or none."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while shutil.disk_usage(folder).free > leave:
                handle.write(b"\0" * 4096)
        except OSError:  # ENOSPC: full
            pass


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))
    return path
