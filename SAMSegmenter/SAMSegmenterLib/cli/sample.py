"""``sample NAME OUTPUT`` writes a real sample volume that ships inside an installed package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io.outputs import new_folders
from ..io.sample_data import SAMPLES, write_sample


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="write a real sample volume (MNI152 from nilearn, CT from pydicom)",
                              description=__doc__)
    p.add_argument("name", choices=SAMPLES)
    p.add_argument("output", type=Path, help="volume file to write (.nii.gz, .nrrd, ...)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with new_folders(args.output.parent):
        write_sample(args.name, args.output)
    print(f"wrote {args.output}")
    return 0
