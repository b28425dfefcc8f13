"""Checks the commands run before loading a model (seconds) or computing anything (minutes).

Each command's ``run`` calls its preflight first, made of these checks in this order: the
arguments alone, then the outputs (a missing, read-only or occupied destination is otherwise
found only when the results are written), then the inputs, then the model's weights file and
the device. Only the last step imports PyTorch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..errors import InputError
from ..models.registry import ModelSpec, get_spec


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The registry entry of ``--model`` (no weights, no torch)."""
    return get_spec(args.model)


def weights_and_device(args: argparse.Namespace) -> None:
    """``--checkpoint`` (or the embedded/cached weights) readable and verified, ``--device`` and
    ``--precision`` available: what load_model would otherwise find out after building the network."""
    from ..models.checkpoints import resolve_checkpoint

    resolve_checkpoint(args.model, args.checkpoint)
    from ..models.devices import check_precision, resolve_device  # imports PyTorch

    check_precision(args.precision, resolve_device(args.device))


def positive(value: int, flag: str) -> None:
    if value < 1:
        raise InputError(f"{flag} must be at least 1, got {value}")


def distinct_paths(*paths: Path | None) -> None:
    """InputError when two of the given input/output paths name the same file."""
    seen: dict[Path, Path] = {}
    for path in paths:
        if path is None:
            continue
        resolved = path.resolve()
        if resolved in seen:
            raise InputError(f"{path} is given twice (as an input or output): one file would overwrite the other")
        seen[resolved] = path


def check_pem(path: str, flag: str, keyfile: Optional[str] = None) -> None:
    """InputError naming ``path`` unless it holds PEM certificates (with ``keyfile``: a certificate and its key)."""
    import ssl

    try:
        if keyfile is None:
            ssl.create_default_context(cafile=path)
        else:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path, keyfile)
    except FileNotFoundError as exc:
        raise InputError(f"{flag}: {exc.filename or path} does not exist") from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        what = "a PEM certificate and its key" if keyfile is not None else "PEM certificates"
        raise InputError(f"{flag}: {path} does not hold {what} ({getattr(exc, 'reason', None) or exc})") from None
