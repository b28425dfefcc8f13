"""Where a command's model work runs: this process (default) or an inference service (``--server``).

Both give the same interface on the command's volume (``predict``, ``propagate``: a ``RemoteVolume`` or a
``LocalVolume``), so a command gives the same output either way; only the model's weights, device and
precision are the server's then.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from . import checks

# Seconds a finished command waits for the service to confirm that its session is closed.
SESSION_CLOSE_SECONDS = 3.0
# The model options of this process and their defaults: with --server the model runs as the server was started.
_MODEL_DEFAULTS = (("--device", "device", "auto"), ("--precision", "precision", "fp32"),
                   ("--backend", "backend", "auto"))


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """--server, --token-file, --cafile."""
    group = parser.add_argument_group("inference service")
    group.add_argument("--server", metavar="URL", help="run the model on this SAMSegmenter service "
                       "(python -m SAMSegmenterLib serve) instead of in this process")
    group.add_argument("--token-file", metavar="FILE", help="file holding the service's access token")
    group.add_argument("--cafile", metavar="PEM", help="certificate authority to trust for an https:// service "
                       "with its own certificate")


def check_server_args(args: argparse.Namespace) -> None:
    """One-line errors for the service options, before anything is read or loaded."""
    if args.server is None:
        for flag, value in (("--token-file", args.token_file), ("--cafile", args.cafile)):
            if value is not None:
                raise InputError(f"{flag} only applies with --server URL")
        return
    if not args.server.startswith(("http://", "https://")):
        raise InputError(f"--server must be an http:// or https:// URL, got {args.server!r}")
    if args.token_file is None:
        raise InputError("--server needs --token-file FILE (the file holding the service's access token)")
    for flag, name, default in _MODEL_DEFAULTS:
        if getattr(args, name, default) != default:
            raise InputError(f"{flag} does not apply with --server: the service runs the model on the device, "
                             f"precision and backend it was started with (serve {flag} ...)")
    if args.cafile is not None:
        checks.check_pem(args.cafile, "--cafile")
    from ..service.tokens import read_token

    read_token(args.token_file)


@contextlib.contextmanager
def opened_volume(args: argparse.Namespace, volume: np.ndarray, window: str) -> Iterator[tuple[Any, dict[str, str]]]:
    """:func:`open_volume` for the block. A session on the service is closed when the block ends, however it
    ends: the server's room for volumes is not held until the session expires, and closing it also stops a job
    the block left running (Ctrl-C during a propagation)."""
    predictor, where = open_volume(args, volume, window)
    try:
        yield predictor, where
    finally:
        if args.server is not None:
            predictor.close()
            predictor.client.finish_background(SESSION_CLOSE_SECONDS)
            predictor.client.close()


def open_volume(args: argparse.Namespace, volume: np.ndarray, window: str) -> tuple[Any, dict[str, str]]:
    """(predictor of ``volume`` [k, j, i] with ``window``, {model, device, backend}) in this process or the service."""
    if args.server is not None:
        from ..service.client import ServiceClient

        client = ServiceClient.remote(args.server, token_file=args.token_file, cafile=args.cafile)
        remote = client.open_volume(volume, window, args.model, args.checkpoint)
        return remote, {"model": args.model, "device": remote.info["device"], "backend": remote.info["backend"],
                        "server": args.server}
    from ..models import load_model
    from ..propagation.local_volume import LocalVolume

    model = load_model(args.model, device=args.device, precision=args.precision, checkpoint=args.checkpoint,
                       backend=args.backend)
    return LocalVolume(model, volume, window=window), {"model": model.name, "device": str(model.device),
                                                          "backend": model.backend}

