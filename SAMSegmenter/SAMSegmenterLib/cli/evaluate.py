"""``evaluate``: score a model on labelled volumes with simulated prompts.

One case (--image and --label) or many (--cases: a folder or a CSV of image/label pairs).
Writes to --out: cases.csv (one row per case, label, slice, protocol and mask selection),
summary.csv (mean, median, quartiles per protocol, selection and label), boxplots.png,
overlays.png (the worst and best slices) and run.json (the settings). Prompt coordinates are
slice pixels (x = column, y = row); HD95 and NSD are in mm from the voxel spacing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from ..errors import InputError
from ..evaluation.evaluate import (
    COLUMNS,
    Case,
    EvalConfig,
    find_cases,
    local_executor,
    overlay_examples,
    run_evaluation,
    volume_stem,
)
from ..evaluation.protocols import PROTOCOL_HELP, PROTOCOLS
from ..evaluation.report import SUMMARY_COLUMNS, plot_boxplots, plot_overlays, summarize, write_csv
from ..volume import AXES
from .options import add_model_options, add_volume_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    protocols = "\n".join(f"  {name:<12} {text}" for name, text in PROTOCOL_HELP.items())
    p = subparsers.add_parser("evaluate", help="score a model on labelled volumes with simulated prompts",
                              description=__doc__ + "\nprotocols:\n" + protocols,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("input")
    src.add_argument("--image", type=Path, help="image volume of a single case")
    src.add_argument("--label", type=Path, help="label volume of that case (same voxel grid)")
    src.add_argument("--cases", type=Path,
                     help="many cases: a CSV with image,label[,case] columns, or a folder with images/ and "
                          "labels/ (or imagesTr/labelsTr) or NAME_image.* + NAME_label.* files")
    src.add_argument("--label-value", type=int, action="append", dest="label_values", metavar="N",
                     help="label value to evaluate (repeatable; default: every non-zero value)")
    add_volume_options(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--every", type=int, default=1, metavar="N",
                       help="every Nth of the slices containing the label (default 1: all of them)")
    which.add_argument("--largest", action="store_true", help="only the slice where the label is largest")
    p.add_argument("--protocol", action="append", choices=PROTOCOLS, dest="protocols",
                   help="prompt protocol (repeatable; default: every 2D protocol the model accepts: box and "
                        "box_jitter for box-only LiteMedSAM/MedSAM, all but propagate3d for SAM)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random protocols (default 0)")
    p.add_argument("--jitter", type=int, default=20, metavar="PX", help="box_jitter range in pixels (default 20)")
    p.add_argument("--tolerance", type=float, default=2.0, metavar="MM",
                   help="NSD tolerance in mm (default 2.0)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    p.add_argument("--workers", type=int, default=1,
                   help="cases evaluated in parallel by a process pool (default 1: in this process)")
    p.add_argument("--threads", type=int, help="CPU threads per worker (default: CPU cores / workers)")
    p.add_argument("--overlays", type=int, default=3, metavar="N",
                   help="draw the N worst and N best slices in overlays.png (default 3; 0: none)")
    p.add_argument("--no-figures", action="store_true", help="write the CSV files only (no matplotlib needed)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    add_model_options(p)
    p.set_defaults(run=run)


class ProgressBar:
    """``[#####-----] done/total name  elapsed`` redrawn in place on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 28, enabled: bool | None = None):
        self.stream = stream
        self.width = width
        self.enabled = stream.isatty() if enabled is None else enabled
        self.start = time.perf_counter()
        self.drawn = False

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        filled = int(self.width * done / total) if total else self.width
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {done}/{total} {name}  {elapsed:.0f} s ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _cases(args: argparse.Namespace) -> list[Case]:
    if args.cases is not None:
        if args.image is not None or args.label is not None:
            raise InputError("give either --cases or --image with --label, not both")
        return find_cases(args.cases)
    if args.image is None or args.label is None:
        raise InputError("give --image and --label (one case) or --cases (a folder or CSV of pairs)")
    return [Case(volume_stem(args.image), args.image, args.label)]


def _config(args: argparse.Namespace) -> EvalConfig:
    threads = args.threads
    if threads is None and args.workers > 1:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
    return EvalConfig(protocols=tuple(dict.fromkeys(args.protocols)) if args.protocols else None,
                      labels=tuple(dict.fromkeys(args.label_values)) if args.label_values else None,
                      axis=AXES[args.axis], slices="largest" if args.largest else "all", every=args.every,
                      seed=args.seed, jitter_px=args.jitter, tolerance_mm=args.tolerance, window=args.window,
                      model=args.model, checkpoint=args.checkpoint, device=args.device, precision=args.precision,
                      backend=args.backend,
                      torch_threads=threads)


def _print_table(summary: list[dict]) -> None:
    pooled = [s for s in summary if s["label"] == "all"] or summary
    print(f"{'protocol':<12} {'selection':<11} {'label':>5} {'n':>5} {'Dice median [IQR]':>24} "
          f"{'NSD median':>10} {'HD95 median':>11}")
    for s in pooled:
        print(f"{s['protocol']:<12} {s['selection']:<11} {str(s['label']):>5} {s['n']:>5} "
              f"{s['dice_median']:>8.3f} [{s['dice_q1']:.3f}-{s['dice_q3']:.3f}] {s['nsd_median']:>10.3f} "
              f"{s['hd95_median']:>8.2f} mm")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    cases = _cases(args)
    config = _config(args)
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar()
    try:
        if args.workers > 1:
            with local_executor(args.workers) as executor:
                rows = run_evaluation(cases, config, executor, progress=bar)
        else:
            rows = run_evaluation(cases, config, progress=bar)
    finally:
        bar.close()
    summary = summarize(rows)
    outputs = [write_csv(rows, args.out / "cases.csv", COLUMNS),
               write_csv(summary, args.out / "summary.csv", SUMMARY_COLUMNS)]
    if not args.no_figures:
        outputs.append(plot_boxplots(rows, args.out / "boxplots.png",
                                     title=f"{config.model} on {len(cases)} case(s), axis {args.axis}"))
        overlays = overlay_examples(rows, cases, config, args.overlays) if args.overlays > 0 else []
        if overlays:
            outputs.append(plot_overlays(overlays, args.out / "overlays.png", columns=args.overlays))
    elapsed = time.perf_counter() - start
    run_info = {"cases": [{"case": c.name, "image": str(c.image), "label": str(c.label)} for c in cases],
                "config": asdict(config), "workers": args.workers, "elapsed_s": round(elapsed, 2),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"}
    (args.out / "run.json").write_text(json.dumps(run_info, indent=2))
    _print_table(summary)
    print(f"{len(rows)} rows from {len(cases)} case(s) in {elapsed:.1f} s; wrote "
          + ", ".join(p.name for p in outputs) + f" to {args.out}")
    if args.json:
        keep = ("protocol", "selection", "label", "scope", "n", "dice_mean", "dice_median", "dice_q1", "dice_q3",
                "nsd_median", "hd95_median", "hd95_inf")
        print(json.dumps({"out": str(args.out), "cases": len(cases), "rows": len(rows), "elapsed_s": round(elapsed, 2),
                          "summary": [{k: _json_value(s[k]) for k in keep} for s in summary]}))
    return 0


def _json_value(value: object) -> object:
    """Floats rounded to 4 decimals; NaN (no finite value) as null so the line is strict JSON."""
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    return value
