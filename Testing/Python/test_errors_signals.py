"""Real SIGINT and SIGTERM sent to real command-line processes: exit 130/143, one line, nothing left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from errors_support import cli_env, partials, signal_when, start_cli, write_volume

BOX = ["40", "30", "120", "110"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory, mni152):
    """The whole MNI152 template as NIfTI: its label file takes a while to write."""
    return write_volume(tmp_path_factory.mktemp("signals") / "t1.nii.gz", mni152[0])


def test_help_and_argument_errors_import_neither_torch_nor_simpleitk():
    """Command modules import their heavy packages inside ``run``: ``--help`` and argument errors are quick, and
    the signal handlers are in place before any long import starts."""
    code = ("import sys\nfrom SAMSegmenterLib.cli import main\n"
            "try:\n    main(['segment', 'a.nii', 'b.nii', '--axis', 'X'])\nexcept SystemExit as exc:\n"
            "    assert exc.code == 2\nprint(sorted(m for m in ('torch', 'SimpleITK') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert done.stderr.strip().startswith("error: argument --axis: invalid choice: 'X'")


def _loaded(process: subprocess.Popen, library: str) -> bool:
    """True once ``process`` has mapped a shared library whose path contains ``library`` (Linux /proc)."""
    try:
        return library in Path(f"/proc/{process.pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see what a process loaded")
@pytest.mark.parametrize("library", ["numpy", "libtorch"])
def test_ctrl_c_while_importing_exits_130_without_traceback(volume, tmp_path, library):
    """Ctrl-C as soon as the command has started importing numpy (its first heavy package), or PyTorch (the
    heaviest, imported last before the model loads): it used to give a traceback and exit status -2."""
    process = start_cli("segment", str(volume), str(tmp_path / "labels.nii.gz"), "--box", *BOX)
    assert signal_when(process, lambda: _loaded(process, library), signal.SIGINT, timeout=120)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip() == "interrupted" and out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_during_the_final_write_leaves_nothing(volume, tmp_path):
    """SIGTERM as soon as the output's temporary file appears: the run stops with 143 and deletes it (it used
    to die there and leave a hidden .partial-* file). A signal that comes once the outputs are being moved
    into place is ignored and the run completes: either way no partial file and no half output."""
    out = tmp_path / "labels.nii.gz"
    process = start_cli("segment", str(volume), str(out), "--box", *BOX, "--device", "cpu", "--overlay",
                        str(tmp_path / "slice.png"))
    assert signal_when(process, lambda: bool(partials(tmp_path)), signal.SIGTERM)
    out_text, err = process.communicate(timeout=120)
    assert not partials(tmp_path), err
    if process.returncode == 143:
        assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
        assert list(tmp_path.iterdir()) == []
    else:  # the signal came after the commit had begun
        assert process.returncode == 0, err
        assert out.exists() and (tmp_path / "slice.png").exists()


@pytest.fixture(scope="module")
def case(tmp_path_factory, mni152, mni152_masks):
    """A small evaluation case: 8 axial slices of the template and of nilearn's brain mask."""
    folder = tmp_path_factory.mktemp("case")
    image = write_volume(folder / "image.nii.gz", np.ascontiguousarray(mni152[0][80:88]))
    label = write_volume(folder / "label.nii.gz", mni152_masks["brain"][80:88].astype(np.uint8))
    return image, label


@pytest.mark.slow
def test_interrupted_evaluate_keeps_the_earlier_run_whole(case, tmp_path):
    """An earlier run is in --out. A new run is stopped while it writes its files (as soon as it touches the
    folder): the earlier run's files are all still there, unchanged, and nothing of the new run is."""
    image, label = case
    out = tmp_path / "run"
    out.mkdir()
    earlier = {"cases.csv": "case,label\nold,1\n", "summary.csv": "protocol\nold\n",
               "run.json": json.dumps({"cases": [{"case": "old"}]}), "boxplots.png": "old figure"}
    for name, text in earlier.items():
        (out / name).write_text(text)

    def touched() -> bool:
        return bool(partials(out)) or any((out / name).read_text() != text for name, text in earlier.items()
                                          if (out / name).exists()) or not all((out / n).exists() for n in earlier)

    process = start_cli("evaluate", "--image", str(image), "--label", str(label), "--out", str(out), "--every", "4",
                        "--protocol", "box", "--device", "cpu")
    assert signal_when(process, touched, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier


def test_an_interrupt_after_a_finished_command_changes_nothing():
    """A command that has put its outputs in place returns its status: a Ctrl-C arriving after it returned (in the
    moment before the process exits) neither raises nor turns the exit status into 130."""
    code = ("import os, signal, sys, time\n"
            "from SAMSegmenterLib.cli import interrupts, run_command\n"
            "interrupts.install()\n"
            "def command():\n    interrupts.finishing()\n    return 0\n"
            "status = run_command(command)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(0.2)\n"
            "print('still here')\n"
            "sys.exit(status)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "still here", (done.returncode, done.stderr)
