"""``segment INPUT OUTPUT``: segment one slice of a volume file from prompts.

Prompt coordinates are pixels of the chosen slice: x = column, y = row (for the
default axis K, x is the volume's i index and y its j index).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import LABEL_SUFFIXES, _suffix, read_volume, write_labels
from .models import load_model
from .options import add_model_options, add_volume_options
from .overlay import overlay_rgb, write_png
from .predictor import SlicePredictor
from .prompts import Prompt
from .volume import AXES, check_slice, put_slice


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("segment", help="segment a slice of a NIfTI/NRRD volume from points and a box",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="input volume (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("output", type=Path, help="output labels: .nii.gz, .nii, .nrrd, or a Slicer .seg.nrrd")
    add_volume_options(p)
    p.add_argument("--slice", type=int, help="slice index along --axis (default: the middle slice)")
    p.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                   help="box corners in slice pixels (x = column, y = row), inclusive")
    p.add_argument("--point", type=float, nargs=3, action="append", default=[], metavar=("X", "Y", "LABEL"),
                   help="a point in slice pixels; LABEL 1 = include, 0 = exclude (repeatable)")
    p.add_argument("--multimask", action="store_true",
                   help="ask for three masks and keep the one with the best predicted IoU")
    p.add_argument("--overlay", type=Path, help="also write a PNG of the slice with mask and prompt")
    p.add_argument("--json", action="store_true", help="print one JSON object (voxels, score, timings) last")
    add_model_options(p)
    p.set_defaults(run=run)


def _prompt(args: argparse.Namespace) -> Prompt:
    for x, y, label in args.point:
        if label not in (0, 1):
            raise InputError(f"point label must be 1 (include) or 0 (exclude), got {label:g}")
    points = [(x, y) for x, y, _ in args.point]
    labels = [int(label) for _, _, label in args.point]
    return Prompt(points, labels, box=args.box)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if _suffix(args.output, LABEL_SUFFIXES) is None:
        raise InputError(f"output {args.output} must end with one of {', '.join(LABEL_SUFFIXES)}")
    if args.output.resolve() == args.input.resolve():
        raise InputError("output would overwrite the input volume")
    prompt = _prompt(args)
    if prompt.is_empty:
        raise InputError("no prompt: give --box X0 Y0 X1 Y1 and/or --point X Y 1")
    volume, geometry = read_volume(args.input)
    axis = AXES[args.axis]
    index = volume.shape[axis] // 2 if args.slice is None else args.slice
    check_slice(volume.shape, axis, index)
    t_read = time.perf_counter()
    model = load_model(args.model, device=args.device, precision=args.precision, checkpoint=args.checkpoint)
    t_load = time.perf_counter()
    predictor = SlicePredictor(model, volume, window=args.window)
    prompt.validate(predictor.slice_shape(axis))
    predictor.embedding(axis, index)
    t_encode = time.perf_counter()
    result = predictor.predict(axis, index, prompt, multimask=args.multimask)
    t_decode = time.perf_counter()
    labels = np.zeros(volume.shape, dtype=np.uint8)
    put_slice(labels, axis, index, result.mask)
    write_labels(args.output, labels, geometry)
    if args.overlay:
        write_png(args.overlay, overlay_rgb(predictor.slice_image(axis, index), result.mask, prompt))
    voxels = int(labels.sum())
    summary = {
        "output": str(args.output), "model": model.name, "device": str(model.device), "axis": args.axis,
        "slice": index, "voxels": voxels, "score": round(result.score, 4),
        "timings": {"read_s": round(t_read - start, 3), "load_s": round(t_load - t_read, 3),
                    "encode_s": round(t_encode - t_load, 3), "decode_s": round(t_decode - t_encode, 3),
                    "total_s": round(time.perf_counter() - start, 3)},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {args.output}: {voxels} voxels on slice {args.axis}={index}, score {result.score:.3f}")
    return 0
