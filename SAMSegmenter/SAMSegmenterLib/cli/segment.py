"""``segment INPUT OUTPUT``: segment one slice of a volume file from prompts.

Prompt coordinates are pixels of the chosen slice: x = column, y = row (for the
default axis K, x is the volume's i index and y its j index). With --propagate
the prompted slice seeds a 3D segmentation that walks up (increasing index),
down or both ways until a stop criterion or the --range limit; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..errors import InputError
from ..prompts import Prompt
from ..propagation.plan import (
    CLEANUPS,
    DIRECTIONS,
    MARGIN_UNITS,
    STRUCTURES,
    PropagationOptions,
    PropagationResult,
    check_range,
    structure_options,
)
from ..propagation.slice_quality import UNSURE
from ..selection import SELECTIONS
from ..volume import AXES, check_slice, slice_shape, take_slice
from ..windowing import ImageWarning, Window, box_contrast, fixed_window, parse_window
from . import checks, interrupts, strict_json
from .engine import add_server_options, check_server_args, opened_volume
from .options import add_model_options, add_series_option, add_volume_options

if TYPE_CHECKING:
    from ..io.volumes import Geometry
    from ..predictor import SlicePrediction


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("segment", help="segment a slice of a NIfTI/NRRD volume from points and a box",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path,
                   help="input volume (.nii.gz, .nii, .nrrd, .mha), a DICOM file, or a folder holding a DICOM series")
    p.add_argument("output", type=Path, help="output labels: .nii.gz, .nii, .nrrd, or a Slicer .seg.nrrd")
    add_series_option(p)
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
    add_server_options(p)
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
    compact = structure_options("compact")
    group.add_argument("--structure", choices=STRUCTURES, default="anatomy",
                       help="what is segmented: anatomy (organs, muscles, vessels, brain structures; default) or "
                            "compact (tumours, lesions, round organs with clear ends: tighter per-slice boxes); "
                            "sets the defaults of --box-margin, --shrink-fraction and --candidate-margin")
    group.add_argument("--box-margin", type=float,
                       help="pixels added on each side of the previous slice's box, in --margin-unit "
                            f"(default {defaults.box_margin:g}; {compact.box_margin:g} with --structure compact)")
    group.add_argument("--margin-unit", choices=MARGIN_UNITS, default=defaults.margin_unit,
                       help="model: pixels of the model's 256 px input (the slice's longer side scaled to 256); "
                            f"slice: slice pixels (default {defaults.margin_unit})")
    group.add_argument("--box-fraction", type=float, default=defaults.box_fraction,
                       help="plus this fraction of the box's width/height on each side "
                            f"(default {defaults.box_fraction:g})")
    group.add_argument("--shrink-fraction", type=float,
                       help="plus this fraction of the box's width/height on each side unless the previous slice's "
                            f"mask grew from the one before it (default {defaults.shrink_fraction:g}; "
                            f"{compact.shrink_fraction:g} with --structure compact)")
    group.add_argument("--cleanup", choices=CLEANUPS, default=defaults.cleanup,
                       help=f"per-slice clean-up (default {defaults.cleanup})")
    group.add_argument("--min-score", type=float, default=defaults.min_score,
                       help="stop where the model's score falls below this")
    group.add_argument("--min-iou", type=float, default=defaults.min_iou,
                       help="stop where the IoU with the previous slice falls below this "
                            f"(default {defaults.min_iou:g}; 0 disables)")
    group.add_argument("--max-area-ratio", type=float, default=defaults.max_area_ratio,
                       help="stop where the area changes by more than this factor from the previous slice")
    group.add_argument("--min-contrast", type=float, default=defaults.min_contrast,
                       help="stop where the next slice's box holds no image structure: the standard deviation of "
                            f"its windowed intensities (0..1) is below this (default {defaults.min_contrast:g}; "
                            "0 disables)")
    group.add_argument("--max-intensity-shift", type=float, default=defaults.max_intensity_shift,
                       help="stop where the mean intensity in the mask differs from the seed's by more than this "
                            f"many of the seed's standard deviations (default {defaults.max_intensity_shift}; "
                            "0 disables)")
    group.add_argument("--min-feature-similarity", type=float, default=defaults.min_feature_similarity,
                       help="stop where the cosine of the mask's mean image features (the model's embedding) with the "
                            f"seed's falls below this (default {defaults.min_feature_similarity}; 0 disables)")
    group.add_argument("--candidate-margin", type=_margin_or_off,
                       help="on each walked slice keep the decoder candidate whose image features look most like the "
                            "seed's when that beats the single output's by more than this (default "
                            f"{defaults.candidate_margin:g}; off with --structure compact); 'off' keeps the single "
                            "output")
    group.add_argument("--min-confidence", type=float, default=defaults.min_confidence,
                       help="stop where the walk's confidence (0..1) falls below this (default: not used to stop)")
    group.add_argument("--largest-3d", action="store_true", help="keep the largest 3D connected component")
    group.add_argument("--fill-holes", action="store_true", help="fill holes in every slice of the result")


def _propagation_options(args: argparse.Namespace) -> PropagationOptions:
    given = {name: value for name, value in (("box_margin", args.box_margin), ("shrink_fraction", args.shrink_fraction),
                                             ("candidate_margin", args.candidate_margin)) if value is not None}
    if given.get("candidate_margin") == OFF:
        given["candidate_margin"] = None
    return structure_options(args.structure, prompt=args.propagation_prompt, box_fraction=args.box_fraction,
                             cleanup=args.cleanup, min_score=args.min_score, min_iou=args.min_iou,
                             max_area_ratio=args.max_area_ratio, min_contrast=args.min_contrast or None,
                             margin_unit=args.margin_unit, max_intensity_shift=args.max_intensity_shift or None,
                             min_feature_similarity=args.min_feature_similarity or None,
                             min_confidence=args.min_confidence or None, **given)


OFF = "off"


def _margin_or_off(text: str) -> float | str:
    """``--candidate-margin``'s value: a number, or :data:`OFF`."""
    if text.strip().lower() == OFF:
        return OFF
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def _check_propagation_args(args: argparse.Namespace) -> None:
    if args.propagate:
        if args.selection:
            raise InputError("--selection applies to one slice; it cannot be combined with --propagate")
        return
    given = [flag for flag, value in (("--direction", args.direction), ("--range", args.range),
                                      ("--largest-3d", args.largest_3d), ("--fill-holes", args.fill_holes),
                                      ("--structure compact", args.structure == "compact"))
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
            "last": {walk: int(index) for walk, index in result.last.items()},
            "confidence": {str(k): round(float(v), 4) for k, v in sorted(result.confidence.items())},
            "unsure_slices": sorted(int(k) for k, v in result.confidence.items() if v < UNSURE),
            "mean_score": round(float(sum(result.scores.values()) / len(result.scores)), 4) if result.scores else None,
            "seconds": round(result.seconds, 3)}


def _prompt(args: argparse.Namespace) -> Prompt:
    for x, y, label in args.point:
        if label not in (0, 1):
            raise InputError(f"point label must be 1 (include) or 0 (exclude), got {label:g}")
    points = [(x, y) for x, y, _ in args.point]
    labels = [int(label) for _, _, label in args.point]
    prompt = Prompt(points, labels, box=args.box)
    if prompt.is_empty:
        raise InputError("no prompt: give --box X0 Y0 X1 Y1 and/or --point X Y 1")
    if args.selection == "box_fit" and prompt.box is None:
        raise InputError("--selection box_fit needs --box (use single or best_score with points only)")
    return prompt


@dataclass
class Plan:
    """Everything ``segment`` needs, checked before the model loads: volume [k, j, i], slice, prompt, window."""

    volume: np.ndarray
    geometry: Geometry
    axis: int
    index: int
    prompt: Prompt
    window: Window
    options: PropagationOptions
    read_s: float


def preflight(args: argparse.Namespace) -> Plan:
    """Every check that needs no model, cheapest first (see :mod:`checks`); reads the input volume."""
    from ..io.outputs import check_output_file
    from ..io.volumes import LABEL_SUFFIXES, label_suffix, read_volume

    start = time.perf_counter()
    check_server_args(args)
    _check_propagation_args(args)
    prompt = _prompt(args)
    options = _propagation_options(args)
    spec = checks.model_spec(args)
    if args.propagate:
        options.check(spec)
    if len(prompt.points):
        spec.require_points_support()
    fixed_window(args.window)
    checks.distinct_paths(args.input, args.output, args.overlay)
    check_output_file(args.output, LABEL_SUFFIXES)
    label_suffix(args.output)
    if args.overlay is not None:
        check_output_file(args.overlay, (".png",), "overlay")
    volume, geometry = read_volume(args.input, args.series)
    axis = AXES[args.axis]
    index = volume.shape[axis] // 2 if args.slice is None else args.slice
    check_slice(volume.shape, axis, index)
    if args.propagate:
        check_range(volume.shape[axis], axis, args.range, index)
    prompt.validate(slice_shape(volume.shape, axis))
    window = parse_window(args.window, volume)
    if prompt.box is not None and box_contrast(window.apply(take_slice(volume, axis, index)),
                                               prompt.box) < PropagationOptions().min_contrast:
        warnings.warn(f"the box on slice {args.axis}={index} holds no image structure (uniform intensity in the "
                      "window): the mask the model returns there means nothing", ImageWarning, stacklevel=2)
    read_s = time.perf_counter() - start
    if args.server is None:  # a service checks its own weights and device
        checks.weights_and_device(args)
    return Plan(volume, geometry, axis, index, prompt, window, options, read_s)


def _summary(args: argparse.Namespace, plan: Plan, where: dict[str, str], voxels: int, result: SlicePrediction,
             timings: dict[str, float], propagated: Optional[PropagationResult], direction: str) -> dict:
    summary = {"output": str(args.output), **where, "axis": args.axis, "slice": plan.index, "voxels": voxels,
               "score": round(result.score, 4), "selection": result.selection, "candidate": result.index,
               "timings": {k: round(v, 3) for k, v in timings.items()}}
    if propagated is not None:
        summary["propagation"] = {"structure": args.structure, **_propagation_summary(propagated, direction)}
    return summary


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    plan = preflight(args)
    from ..evaluation.overlay import overlay_rgb, write_png
    from ..io.outputs import StagedOutputs
    from ..io.volumes import verify_written, write_labels
    from ..propagation.postprocess import fill_holes_per_slice, largest_component
    from ..volume import put_slice

    t_read = time.perf_counter()
    axis, index, prompt = plan.axis, plan.index, plan.prompt
    with opened_volume(args, plan.volume, args.window) as (predictor, where):
        t_load = time.perf_counter()
        result = predictor.predict(axis, index, prompt, selection=args.selection)
        t_predict = time.perf_counter()
        labels = np.zeros(plan.volume.shape, dtype=np.uint8)
        propagated = None
        direction = args.direction or "both"
        if args.propagate:
            propagated = predictor.propagate(axis, index, seed_prompt=prompt, direction=direction,
                                             slice_range=tuple(args.range) if args.range else None,
                                             options=plan.options, progress=_stderr_progress)
            mask = propagated.mask
            if args.fill_holes:
                mask = fill_holes_per_slice(mask, axis)
            if args.largest_3d:
                mask = largest_component(mask)
            labels[mask] = 1
        else:
            put_slice(labels, axis, index, result.mask)
    t_propagate = time.perf_counter()
    with StagedOutputs() as staged:
        write_labels(args.output, labels, plan.geometry, staging=staged)
        if args.overlay:
            picture = overlay_rgb(plan.window.apply(take_slice(plan.volume, axis, index)),
                                  take_slice(labels, axis, index) > 0, prompt)
            staged.write(args.overlay, lambda path: verify_written(write_png(path, picture)))
        interrupts.finishing()
        staged.commit()
    voxels = int(labels.sum())
    timings = {"read_s": plan.read_s, "load_s": t_load - t_read, "predict_s": t_predict - t_load}
    if propagated is not None:
        timings["propagate_s"] = t_propagate - t_predict
    timings["total_s"] = time.perf_counter() - start
    summary = _summary(args, plan, where, voxels, result, timings, propagated, direction)
    if args.json:
        print(strict_json.dumps(summary))
    elif propagated is not None:
        reasons = ", ".join(f"{walk}: {detail} ({propagated.stop_reasons[walk]})"
                            for walk, detail in propagated.stop_details.items())
        print(f"wrote {args.output}: {voxels} voxels on {len(propagated.slices)} slices along {args.axis} "
              f"(seed {index}, score {result.score:.3f}); stopped {reasons}")
    else:
        print(f"wrote {args.output}: {voxels} voxels on slice {args.axis}={index}, score {result.score:.3f} "
              f"({result.selection})")
    return 0
