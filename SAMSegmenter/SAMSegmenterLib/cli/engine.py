"""Where a command's model work runs: this process (default) or an inference service (``--server``).

Both give ``predict`` on the command's volume and :func:`propagate` walks either, so a command gives the
same output either way; only the model's weights, device and precision are the server's then.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from ..propagation.plan import PropagationResult


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
    from ..service.tokens import read_token

    read_token(args.token_file)


def open_volume(args: argparse.Namespace, volume: np.ndarray, window: str) -> tuple[Any, dict[str, str]]:
    """(predictor of ``volume`` [k, j, i] with ``window``, {model, device, backend}) in this process or the service."""
    if args.server is not None:
        from ..service.client import ServiceClient

        client = ServiceClient.remote(args.server, token_file=args.token_file, cafile=args.cafile)
        remote = client.open_volume(volume, window, args.model, args.checkpoint)
        return remote, {"model": args.model, "device": remote.info["device"], "backend": remote.info["backend"],
                        "server": args.server}
    from ..models import load_model
    from ..predictor import SlicePredictor

    model = load_model(args.model, device=args.device, precision=args.precision, checkpoint=args.checkpoint,
                       backend=args.backend)
    return SlicePredictor(model, volume, window=window), {"model": model.name, "device": str(model.device),
                                                          "backend": model.backend}


def propagate(predictor: Any, axis: int, seed_index: int, **kwargs: Any) -> PropagationResult:
    """:func:`propagation.walk.propagate` in this process, or the same walk as a job on the service, for a
    predictor from :func:`open_volume` (same keyword arguments)."""
    from ..predictor import SlicePredictor

    if isinstance(predictor, SlicePredictor):
        from ..propagation.walk import propagate as walk

        return walk(predictor, axis, seed_index, **kwargs)
    return predictor.propagate(axis, seed_index, **kwargs)
