"""Measuring the candidate encoder backends in a child process, so that none can crash the caller.

A runtime's native code can crash the whole process on one CPU and not on another
(a segfault in a compiled kernel, an abort in a graph compiler: OpenVINO 2026.4 did on
Intel Xeons with AMX, see docs/speed.md). :func:`measure_in_child` runs
:func:`backends.measure` in a fresh interpreter with the caller's model, precision and
thread budget. The child announces each stage on stdout (building, warming up or timing
one backend) as a JSON line before entering it; when it dies from a signal or exits
non-zero, the candidate of the last announced stage is marked failed with that cause, and
the remaining candidates are measured again in a new child. The reference (``torch``) is
measured in every child, so each run's timings stay interleaved and comparable.

Run as a module, this file is that child: ``python -m SAMSegmenterLib.models.backend_trials
REQUEST_JSON``. ``SAMSEGMENTER_CRASH_BACKEND=NAME`` makes the child crash in native code
(a real SIGSEGV) when it reaches backend NAME: the fault injection behind the regression
test of this isolation; nothing else reads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Optional

from .. import child_env

if TYPE_CHECKING:
    from .backends import Trial
    from .loader import SamModel

CRASH_ENV = "SAMSEGMENTER_CRASH_BACKEND"
CHILD_TIMEOUT_S = 900.0  # a child that hangs this long is ended and its current candidate marked failed


def _cause(returncode: int) -> str:
    """A sentence for how the child ended: the signal's name when a signal killed it."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"crashed in native code ({name})"
    return f"the measuring process exited with status {returncode}"


def _run_child(request: dict) -> tuple[Optional[list[dict]], Optional[str], str]:
    """One child run: (trials as dicts or None, the stage's backend when it died, why it died)."""
    child = subprocess.Popen([sys.executable, "-m", "SAMSegmenterLib.models.backend_trials", json.dumps(request)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                             text=True)
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        child.returncode = -signal.SIGKILL
        err = f"no answer within {CHILD_TIMEOUT_S:.0f} s\n{err}"
    finally:
        if child.poll() is None:  # interrupted (Ctrl-C, cancel): never leave the child running
            child.kill()
            child.wait()
    stage, trials = None, None
    for line in out.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue  # a runtime's own print
        if not isinstance(message, dict):
            continue
        stage = message.get("stage", stage)
        trials = message.get("trials", trials)
    if child.returncode == 0 and trials is not None:
        return trials, None, ""
    tail = " | ".join(err.strip().splitlines()[-2:])[:200]
    return None, stage, _cause(child.returncode) + (f": {tail}" if tail and child.returncode > 0 else "")


def measure_in_child(model: SamModel, names: list[str], rounds: Optional[int] = None) -> list[Trial]:
    """:func:`backends.measure` of ``names`` for CPU ``model``, run where a native crash only fails a candidate.

    Returns the trials in the order of :func:`backends.measure` (``torch`` first, then ``names``);
    a candidate that crashed its child has ``error`` set to the cause. A crash outside any
    candidate's stage (loading the model, the reference) raises BackendError.
    """
    import torch

    from .backends import _TIMING_ROUNDS, BackendError, Trial

    failed: dict[str, Trial] = {}
    remaining = list(names)
    while True:
        request = {"model": model.name, "checkpoint": str(model.checkpoint), "precision": model.precision,
                   "threads": torch.get_num_threads(), "names": remaining,
                   "rounds": _TIMING_ROUNDS if rounds is None else rounds}
        trials, stage, why = _run_child(request)
        if trials is not None:
            break
        if stage not in remaining:
            raise BackendError(f"measuring the encoder backends failed before any candidate: {why}")
        failed[stage] = Trial(stage, error=why)
        remaining.remove(stage)
    measured = {t["backend"]: Trial(**t) for t in trials}
    return [measured["torch"], *(failed.get(name) or measured[name] for name in names)]


def _announce(stage: str) -> None:
    """Tell the parent which backend the child works on now, then crash there if asked to."""
    print(json.dumps({"stage": stage}), flush=True)
    if os.environ.get(CRASH_ENV) == stage:
        import ctypes

        ctypes.string_at(0)  # a genuine SIGSEGV in native code, as a broken runtime kernel gives


def _child(request: dict) -> None:
    import torch

    from . import backends
    from .loader import load_model

    torch.set_num_threads(int(request["threads"]))
    model = load_model(request["model"], device="cpu", precision=request["precision"],
                       checkpoint=request["checkpoint"], backend="torch")
    trials = backends.measure(model, list(request["names"]), int(request["rounds"]), on_stage=_announce)
    print(json.dumps({"stage": None, "trials": [vars(t) for t in trials]}), flush=True)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
