"""``evaluate``: score a model on labelled volumes with simulated prompts.

One case (--image and --label) or many (--cases: a folder or a CSV of image/label pairs).
Writes to --out: cases.csv (one row per case, label, slice, protocol and mask selection),
summary.csv (mean, median, quartiles per protocol, selection and label), boxplots.png,
overlays.png (the worst and best slices) and run.json (the settings). Prompt coordinates are
slice pixels (x = column, y = row); HD95 and NSD are in mm from the voxel spacing.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import signal
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..errors import InputError
from ..evaluation.protocols import PROTOCOL_HELP, PROTOCOLS
from ..propagation.plan import STRUCTURES, structure_options
from ..volume import AXES
from ..windowing import fixed_window
from . import checks, interrupts, strict_json
from .options import add_model_options, add_series_option, add_volume_options

if TYPE_CHECKING:
    from ..evaluation.evaluate import Case, EvalConfig, Row


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    protocols = "\n".join(f"  {name:<12} {text}" for name, text in PROTOCOL_HELP.items())
    p = subparsers.add_parser("evaluate", help="score a model on labelled volumes with simulated prompts",
                              description=__doc__ + "\nprotocols:\n" + protocols,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("input")
    src.add_argument("--image", type=Path,
                     help="image volume of a single case (a file, or a folder holding a DICOM series)")
    src.add_argument("--label", type=Path, help="label volume of that case (same voxel grid)")
    src.add_argument("--cases", type=Path,
                     help="many cases: a CSV with image,label[,case][,series] columns, or a folder with images/ and "
                          "labels/ (or imagesTr/labelsTr) or NAME_image.* + NAME_label.* files")
    add_series_option(src)
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
    p.add_argument("--structure", choices=STRUCTURES, default="anatomy",
                   help="what the labels are, for propagate3d: anatomy (default) or compact (tumours, lesions, round "
                        "organs: tighter per-slice boxes; docs/propagation.md)")
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

    def __init__(self, stream: TextIO | None = None, width: int = 28, enabled: bool | None = None):
        stream = sys.stderr if stream is None else stream  # the current one (tests replace it)
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
    from ..evaluation.evaluate import Case, find_cases, volume_stem

    if args.cases is not None:
        if args.image is not None or args.label is not None:
            raise InputError("give either --cases or --image with --label, not both")
        if args.series is not None:
            raise InputError(f"--series applies to --image; give each case's series in a 'series' column of "
                             f"{args.cases}")
        return find_cases(args.cases)
    if args.image is None or args.label is None:
        raise InputError("give --image and --label (one case) or --cases (a folder or CSV of pairs)")
    return [Case(volume_stem(args.image), args.image, args.label, args.series)]


def _config(args: argparse.Namespace) -> EvalConfig:
    from ..evaluation.evaluate import EvalConfig

    threads = args.threads
    if threads is None and args.workers > 1:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
    return EvalConfig(protocols=tuple(dict.fromkeys(args.protocols)) if args.protocols else None,
                      labels=tuple(dict.fromkeys(args.label_values)) if args.label_values else None,
                      axis=AXES[args.axis], slices="largest" if args.largest else "all", every=args.every,
                      seed=args.seed, jitter_px=args.jitter, tolerance_mm=args.tolerance, window=args.window,
                      model=args.model, checkpoint=args.checkpoint, device=args.device, precision=args.precision,
                      backend=args.backend, propagation=structure_options(args.structure),
                      torch_threads=threads)


def preflight(args: argparse.Namespace) -> tuple[list[Case], EvalConfig]:
    """Every check that needs no model (see :mod:`checks`): arguments, the --out folder, each case's files."""
    from ..io.dicom import SeriesChoiceError
    from ..io.outputs import check_output_folder
    from ..io.volumes import check_volume

    checks.positive(args.workers, "--workers")
    if args.threads is not None:
        checks.positive(args.threads, "--threads")
    if args.overlays < 0:
        raise InputError(f"--overlays must be 0 or more, got {args.overlays}")
    fixed_window(args.window)
    if args.structure != "anatomy" and "propagate3d" not in (args.protocols or ()):
        raise InputError(f"--structure {args.structure} applies to the propagate3d protocol: "
                         "add --protocol propagate3d")
    cases = _cases(args)
    config = _config(args)
    check_output_folder(args.out, "--out folder")
    for case in cases:
        try:
            check_volume(case.image, case.series)
        except SeriesChoiceError as exc:
            if args.cases is None:
                raise
            raise InputError(f"{exc} (give it in a 'series' column of {args.cases})") from None
        check_volume(case.label)
    checks.weights_and_device(args)
    return cases, config


def _print_table(summary: list[dict]) -> None:
    pooled = [s for s in summary if s["label"] == "all"] or summary
    print(f"{'protocol':<12} {'selection':<11} {'label':>5} {'n':>5} {'Dice median [IQR]':>24} "
          f"{'NSD median':>10} {'HD95 median':>11}")
    for s in pooled:
        print(f"{s['protocol']:<12} {s['selection']:<11} {str(s['label']):>5} {s['n']:>5} "
              f"{s['dice_median']:>8.3f} [{s['dice_q1']:.3f}-{s['dice_q3']:.3f}] {s['nsd_median']:>10.3f} "
              f"{s['hd95_median']:>8.2f} mm")


def _worker_start() -> None:
    """In each pool worker: Ctrl-C in the terminal reaches the whole process group; the parent stops the
    workers itself, so they ignore it instead of printing a traceback each. Warnings print as one line."""
    from . import show_warning

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.showwarning = show_warning


def _evaluate(cases: list[Case], config: EvalConfig, workers: int, bar: ProgressBar) -> list[Row]:
    """Rows of every case, here or in a process pool whose workers are stopped at once on an error or interrupt."""
    from ..evaluation.evaluate import run_evaluation

    if workers == 1:
        return run_evaluation(cases, config, progress=bar)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_start)
    try:
        rows = run_evaluation(cases, config, executor, progress=bar)
    except BaseException:
        for child in multiprocessing.active_children():
            child.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()
    return rows


def _rounded(value: object) -> object:
    return round(value, 4) if isinstance(value, float) and math.isfinite(value) else value


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    cases, config = preflight(args)
    from ..evaluation.evaluate import COLUMNS, overlay_examples
    from ..evaluation.report import SUMMARY_COLUMNS, plot_boxplots, plot_overlays, summarize, write_csv
    from ..evaluation.run_folder import RunFolder

    bar = ProgressBar()
    try:
        rows = _evaluate(cases, config, args.workers, bar)
    finally:
        bar.close()
    summary = summarize(rows)
    with RunFolder(args.out) as folder:
        folder.write("cases.csv", lambda path: write_csv(rows, path, COLUMNS))
        folder.write("summary.csv", lambda path: write_csv(summary, path, SUMMARY_COLUMNS))
        if not args.no_figures:
            title = f"{config.model} on {len(cases)} case(s), axis {args.axis}"
            folder.write("boxplots.png", lambda path: plot_boxplots(rows, path, title=title))
            overlays = overlay_examples(rows, cases, config, args.overlays) if args.overlays > 0 else []
            if overlays:
                folder.write("overlays.png", lambda path: plot_overlays(overlays, path, columns=args.overlays))
        elapsed = time.perf_counter() - start
        run_info = {"cases": [{"case": c.name, "image": str(c.image), "label": str(c.label),
                               **({"series": c.series} if c.series else {})} for c in cases],
                    "config": asdict(config), "workers": args.workers, "elapsed_s": round(elapsed, 2),
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}"}
        folder.write("run.json", lambda path: path.write_text(strict_json.dumps(run_info, indent=2)))
        interrupts.finishing()
        outputs = folder.commit()
    _print_table(summary)
    print(f"{len(rows)} rows from {len(cases)} case(s) in {elapsed:.1f} s; wrote "
          + ", ".join(p.name for p in outputs) + f" to {args.out}")
    if args.json:
        keep = ("protocol", "selection", "label", "scope", "n", "dice_mean", "dice_median", "dice_q1", "dice_q3",
                "nsd_median", "hd95_median", "hd95_inf")
        print(strict_json.dumps({"out": str(args.out), "cases": len(cases), "rows": len(rows),
                                 "elapsed_s": round(elapsed, 2),
                                 "summary": [{k: _rounded(s[k]) for k in keep} for s in summary]}))
    return 0
