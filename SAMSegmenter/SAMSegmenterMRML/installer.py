"""Install the service's Python packages in helper processes: Slicer's process never imports PyTorch and never
waits for pip.

SlicerPyTorch's ``PyTorchUtilsLogic().installTorch`` runs light-the-torch (which picks the PyTorch build that
matches the GPU driver) and then ``import torch`` in the calling process, which would load PyTorch into Slicer
(and, on Windows, lock its files until Slicer restarts). The same choice of build is made here by running
light-the-torch itself as a command (``python -m light_the_torch install torch>=...``) in a helper process.
Each step is ``python -m pip ...`` or ``python -m light_the_torch ...``, run one after the other by
:class:`InstallProcess`, which a GUI timer polls; Cancel kills the running step's whole process tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .dependencies import MINIMUM_TORCH, TORCH, InstallPlan
from .processes import HelperProcess

PIP = ("-m", "pip", "install", "--disable-pip-version-check", "--no-input")
LIGHT_THE_TORCH = "light-the-torch>=0.5"  # what SlicerPyTorch installs to choose the PyTorch build


@dataclass(frozen=True)
class Step:
    """One install command: what it installs (for the user) and the interpreter's arguments."""

    title: str
    args: tuple[str, ...]


def install_steps(plan: InstallPlan, pip_options: Sequence[str] = ()) -> list[Step]:
    """The commands that carry out ``plan`` (see dependencies.install_plan), in order.

    pip_options: extra pip options for every pip step (e.g. an index or a target folder)."""
    options = tuple(pip_options)
    steps = []
    if plan.torch == "pytorch_utils":
        steps.append(Step("light-the-torch (chooses the PyTorch build for this computer)",
                          (*PIP, *options, LIGHT_THE_TORCH)))
        steps.append(Step("PyTorch", ("-m", "light_the_torch", "install", f"torch>={MINIMUM_TORCH}")))
    elif plan.torch == "pip":
        steps.append(Step("PyTorch", (*PIP, *options, TORCH.pip)))
    if plan.pip_no_deps:  # never lets pip touch PyTorch
        steps.append(Step(", ".join(plan.pip_no_deps), (*PIP, *options, "--no-deps", *plan.pip_no_deps)))
    if plan.pip_with_deps:  # the service (FastAPI, uvicorn): their dependencies do not include PyTorch
        steps.append(Step(", ".join(plan.pip_with_deps), (*PIP, *options, *plan.pip_with_deps)))
    return steps


class InstallProcess:
    """Runs ``steps`` one after the other, each in a helper process; :meth:`poll` advances without waiting.

    python: the interpreter whose packages are installed (default this one: PythonSlicer inside Slicer)."""

    def __init__(self, steps: Sequence[Step], python: Optional[str] = None):
        self.steps, self.python = list(steps), python
        self.index = 0
        self.helper: Optional[HelperProcess] = None
        self.log: Optional[Path] = None
        self.failed: Optional[str] = None
        self.cancelled = False
        self.started = time.monotonic()
        self._start_step()

    def _start_step(self) -> None:
        self.helper = HelperProcess(self.steps[self.index].args, self.python, "samsegmenter-install-") \
            if self.index < len(self.steps) else None
        if self.helper is not None:
            self.log = self.helper.log

    def log_tail(self, characters: int = 4000) -> str:
        """The end of the last step's output (pip's own explanation of a failure)."""
        try:
            return self.log.read_bytes()[-characters:].decode(errors="replace") if self.log is not None else ""
        except OSError:
            return ""

    @property
    def done(self) -> bool:
        return self.helper is None

    @property
    def succeeded(self) -> bool:
        return self.done and self.failed is None and not self.cancelled

    def poll(self) -> bool:
        """Advance; True once every step has ended (or one failed, or the install was cancelled)."""
        if self.helper is None:
            return True
        code = self.helper.poll()
        if code is None:
            return False
        if self.cancelled:
            self.helper = None
        elif code != 0:
            self.failed = f"{self.steps[self.index].title}: {self.helper.last_line() or f'exit code {code}'}"
            self.helper = None
        else:
            self.index += 1
            self._start_step()
        return self.helper is None

    def status(self) -> str:
        """One line for the user: which step runs, for how long, and the last thing it printed."""
        if self.helper is None:
            return "cancelled" if self.cancelled else (self.failed or "installed")
        step = self.steps[self.index]
        return (f"{self.index + 1}/{len(self.steps)} {step.title} ({time.monotonic() - self.started:.0f} s): "
                f"{self.helper.last_line()[:120]}")

    def cancel(self) -> None:
        """Stop the running step's whole process tree (pip may leave a package half-installed: run again)."""
        if self.helper is not None:
            self.cancelled = True
            self.helper.cancel()
