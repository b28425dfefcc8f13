"""``segment INPUT OUTPUT``: segment one slice of a volume file from prompts.

Prompt coordinates are pixels of the chosen slice: x = column, y = row (for the
default axis K, x is the volume's i index and y its j index). With --propagate
the prompted slice seeds a 3D segmentation that walks up (increasing index),
down or both ways until a stop criterion or the --range limit; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.overlay import overlay_rgb, write_png
from ..io import LABEL_SUFFIXES, _suffix, read_volume, write_labels
from ..models import load_model
from ..postprocess import fill_holes_per_slice, largest_component
from ..predictor import SlicePredictor
from ..prompts import Prompt
from ..propagation import CLEANUPS, DIRECTIONS, PropagationOptions, PropagationResult, check_range, propagate
from ..selection import SELECTIONS
from ..volume import AXES, check_slice, put_slice, take_slice
from .options import add_model_options, add_volume_options


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
    p.add_argument("--selection", choices=SELECTIONS,
                   help="which of the decoder's four masks to keep: single output, best predicted IoU of the "
                        "three multimask outputs, or the one whose extent fits the box (default: box_fit for a "
                        "box, single or best_score for points)")
    p.add_argument("--overlay", type=Path, help="also write a PNG of the slice with mask and prompt")
    p.add_argument("--json", action="store_true", help="print one JSON object (voxels, score, timings) last")
    _add_propagation_options(p)
    add_model_options(p)
    p.set_defaults(run=run)


def _add_propagation_options(parser: argparse.ArgumentParser) -> None:
    defaults = PropagationOptions()
    group = parser.add_argument_group("propagation (3D)")
    group.add_argument("--propagate", action="store_true",
                       help="segment neighbouring slices from the prompted one and write the 3D result")
    group.add_argument("--direction", choices=DIRECTIONS, help="up (increasing index), down or both (default)")
    group.add_argument("--range", type=int, nargs=2, metavar=("A", "B"),
                       help="only slices A..B (inclusive indices along --axis)")
    group.add_argument("--propagation-prompt", default=defaults.prompt,
                       help=f"per-slice prompt: box, box+mask, box+points, points... (default {defaults.prompt}; "
                            "points need a SAM ViT model)")
    group.add_argument("--box-margin", type=float, default=defaults.box_margin,
                       help=f"pixels added on each side of the previous slice's box (default {defaults.box_margin:g})")
    group.add_argument("--box-fraction", type=float, default=defaults.box_fraction,
                       help="plus this fraction of the box's width/height on each side "
                            f"(default {defaults.box_fraction:g})")
    group.add_argument("--cleanup", choices=CLEANUPS, default=defaults.cleanup,
                       help=f"per-slice clean-up (default {defaults.cleanup})")
    group.add_argument("--min-score", type=float, default=defaults.min_score,
                       help="stop where the model's score falls below this")
    group.add_argument("--min-iou", type=float, default=defaults.min_iou,
                       help="stop where the IoU with the previous slice falls below this "
                            f"(default {defaults.min_iou:g}; 0 disables)")
    group.add_argument("--max-area-ratio", type=float, default=defaults.max_area_ratio,
                       help="stop where the area changes by more than this factor from the previous slice")
    group.add_argument("--largest-3d", action="store_true", help="keep the largest 3D connected component")
    group.add_argument("--fill-holes", action="store_true", help="fill holes in every slice of the result")


def _propagation_options(args: argparse.Namespace) -> PropagationOptions:
    return PropagationOptions(prompt=args.propagation_prompt, box_margin=args.box_margin,
                              box_fraction=args.box_fraction, cleanup=args.cleanup, min_score=args.min_score,
                              min_iou=args.min_iou, max_area_ratio=args.max_area_ratio)


def _check_propagation_args(args: argparse.Namespace) -> None:
    if args.propagate:
        if args.selection:
            raise InputError("--selection applies to one slice; it cannot be combined with --propagate")
        return
    given = [flag for flag, value in (("--direction", args.direction), ("--range", args.range),
                                      ("--largest-3d", args.largest_3d), ("--fill-holes", args.fill_holes))
             if value]
    if given:
        raise InputError(f"{', '.join(given)} only apply with --propagate")


def _stderr_progress(done: int, total: int) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    sys.stderr.write(f"propagation: {done}/{total} slices{end}")
    sys.stderr.flush()


def _propagation_summary(result: PropagationResult, direction: str) -> dict:
    slices = result.slices
    return {"direction": direction, "range": list(result.range),
            "slices": [slices[0], slices[-1]] if slices else None, "slices_segmented": len(slices),
            "slices_visited": result.slices_visited, "encoder_calls": result.encoder_calls,
            "stop_reasons": result.stop_reasons, "stop_details": result.stop_details,
            "mean_score": round(float(sum(result.scores.values()) / len(result.scores)), 4) if result.scores else None,
            "seconds": round(result.seconds, 3)}


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
    _check_propagation_args(args)
    prompt = _prompt(args)
    if prompt.is_empty:
        raise InputError("no prompt: give --box X0 Y0 X1 Y1 and/or --point X Y 1")
    if args.selection == "box_fit" and prompt.box is None:
        raise InputError("--selection box_fit needs --box (use single or best_score with points only)")
    volume, geometry = read_volume(args.input)
    axis = AXES[args.axis]
    index = volume.shape[axis] // 2 if args.slice is None else args.slice
    check_slice(volume.shape, axis, index)
    if args.propagate:
        check_range(volume.shape[axis], axis, args.range, index)
    t_read = time.perf_counter()
    model = load_model(args.model, device=args.device, precision=args.precision, checkpoint=args.checkpoint,
                       backend=args.backend)
    t_load = time.perf_counter()
    options = _propagation_options(args)
    if args.propagate:
        options.check(model.spec)
    predictor = SlicePredictor(model, volume, window=args.window)
    prompt.validate(predictor.slice_shape(axis))
    predictor.embedding(axis, index)
    t_encode = time.perf_counter()
    result = predictor.predict(axis, index, prompt, selection=args.selection)
    t_decode = time.perf_counter()
    labels = np.zeros(volume.shape, dtype=np.uint8)
    propagated = None
    if args.propagate:
        direction = args.direction or "both"
        propagated = propagate(predictor, axis, index, seed_prompt=prompt, direction=direction,
                               slice_range=tuple(args.range) if args.range else None,
                               options=options, progress=_stderr_progress)
        mask = propagated.mask
        if args.fill_holes:
            mask = fill_holes_per_slice(mask, axis)
        if args.largest_3d:
            mask = largest_component(mask)
        labels[mask] = 1
    else:
        put_slice(labels, axis, index, result.mask)
    t_propagate = time.perf_counter()
    write_labels(args.output, labels, geometry)
    if args.overlay:
        write_png(args.overlay, overlay_rgb(predictor.slice_image(axis, index), take_slice(labels, axis, index) > 0,
                                            prompt))
    voxels = int(labels.sum())
    summary = {
        "output": str(args.output), "model": model.name, "device": str(model.device), "backend": model.backend,
        "axis": args.axis, "slice": index, "voxels": voxels, "score": round(result.score, 4),
        "selection": result.selection, "candidate": result.index,
        "timings": {"read_s": round(t_read - start, 3), "load_s": round(t_load - t_read, 3),
                    "encode_s": round(t_encode - t_load, 3), "decode_s": round(t_decode - t_encode, 3),
                    "total_s": round(time.perf_counter() - start, 3)},
    }
    if propagated is not None:
        summary["timings"]["propagate_s"] = round(t_propagate - t_decode, 3)
        summary["propagation"] = _propagation_summary(propagated, direction)
    if args.json:
        print(json.dumps(summary))
    elif propagated is not None:
        reasons = ", ".join(f"{walk}: {detail} ({propagated.stop_reasons[walk]})"
                            for walk, detail in propagated.stop_details.items())
        print(f"wrote {args.output}: {voxels} voxels on {len(propagated.slices)} slices along {args.axis} "
              f"(seed {index}, score {result.score:.3f}); stopped {reasons}")
    else:
        print(f"wrote {args.output}: {voxels} voxels on slice {args.axis}={index}, score {result.score:.3f} "
              f"({result.selection})")
    return 0
