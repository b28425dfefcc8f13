"""``models`` lists the registered models; ``download NAME`` fetches verified weights."""

from __future__ import annotations

import argparse
import sys

from ..errors import CheckpointError
from ..models import MODEL_SPECS, cached_checkpoint, fetch_checkpoint, litemedsam_checkpoint
from ..models.download import verify_file
from ..models.registry import ModelSpec


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list models, their weights and where they are")
    p.set_defaults(run=run_list)
    p = subparsers.add_parser("download", help="download a model's official weights (resumable, SHA-256 checked)")
    p.add_argument("name", choices=[n for n, s in MODEL_SPECS.items() if s.url])
    p.set_defaults(run=run_download)


def _weights(name: str, spec: ModelSpec) -> str:
    """Where the weights of ``name`` are, checked as loading would check them (size and SHA-256)."""
    try:
        path = litemedsam_checkpoint() if spec.embedded else cached_checkpoint(name)
    except CheckpointError as exc:
        return f"missing: {exc}"
    if not path.is_file():
        return "not downloaded" + (f" (download {name})" if spec.url else "")
    try:
        verify_file(path, spec.sha256, spec.size)
    except CheckpointError as exc:
        problem = str(exc).split(";")[0].replace(f"checkpoint {path} ", "")
        return f"DAMAGED, not usable: {path} {problem}" + (f" (download {name} again)" if spec.url else "")
    return str(path)


def run_list(args: argparse.Namespace) -> int:
    print(f"{'name':<14}{'model':<30}{'size':>9}  {'licence':<11}weights")
    for name, spec in MODEL_SPECS.items():
        size = f"{spec.size / 1e6:.0f} MB" if spec.size else "?"
        print(f"{name:<14}{spec.title:<30}{size:>9}  {spec.licence:<11}{_weights(name, spec)}")
    return 0


def _progress_bar(done: int, total: int | None) -> None:
    if total:
        filled = int(30 * done / total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:8.1f} / {total / 1e6:.1f} MB")
    else:
        sys.stderr.write(f"\r{done / 1e6:8.1f} MB")
    sys.stderr.flush()


def run_download(args: argparse.Namespace) -> int:
    path = fetch_checkpoint(args.name, progress=_progress_bar)
    sys.stderr.write("\n")
    print(f"{args.name}: verified weights at {path}")
    return 0
