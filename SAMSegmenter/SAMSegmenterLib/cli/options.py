"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse

from ..models.registry import BACKENDS, MODEL_SPECS, PRECISIONS
from ..volume import AXES


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --checkpoint, --device, --precision, --backend."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="litemedsam", choices=sorted(MODEL_SPECS),
                       help="model to use (default: litemedsam, embedded)")
    group.add_argument("--checkpoint", help="weights file to use instead of the embedded or cached one")
    group.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    group.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                       help="numeric precision (fp16: CUDA/MPS; bf16: CUDA/CPU)")
    group.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="image encoder backend (default auto: measured once per machine; see docs/speed.md)")


def add_series_option(parser: argparse.ArgumentParser) -> None:
    """--series: which DICOM series of an input folder to read."""
    parser.add_argument("--series", metavar="UID",
                        help="SeriesInstanceUID of the DICOM series to read when the input folder holds several")


def add_volume_options(parser: argparse.ArgumentParser) -> None:
    """--axis and --window."""
    parser.add_argument("--axis", default="K", type=str.upper, choices=sorted(AXES, key=AXES.get),
                        help="slice axis: K (array[k], default), J (array[:, j]) or I (array[:, :, i])")
    parser.add_argument("--window", default="auto",
                        help="intensity window: auto (0.5-99.5 percentiles), soft_tissue, lung, bone, brain, "
                             "or LOW,HIGH in raw units")
