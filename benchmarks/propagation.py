"""3D propagation against ground truth: SAMSegmenter's method vs the published LiteMedSAM 3D procedure.

Volume: nilearn's MNI152 2009 T1 template (197 x 233 x 189, 1 mm). Targets are cut
from nilearn's brain / white-matter masks (thresholded probability maps, so the
ground truth is imperfect) by connected components inside a bounding region:

  cerebellum     brain, k <= 32 (below the temporal lobes), j <= 115; largest component  (axis K)
  temporal_pole  brain, k <= 40, j > 105, i < 98; largest component: one temporal pole    (axes K, J)
  vertex         brain, k >= 125: the top 30 mm of both hemispheres                        (axis K)
  wm_upper       white matter, i < 98, k >= 100: one hemisphere's upper white matter       (axis K)
  hemisphere     brain, i < 98; largest component: one half of the brain                   (axis I)

Each run starts from the tight box of the target on its middle slice (along the
axis). Methods, in the same run and on the same embeddings:

  reference  the published LiteMedSAM 3D procedure (CVPR 2024 challenge inference):
             that box on the middle slice; each next slice prompted by the previous
             mask's bounding box grown by 3 px at the 256 px model scale; an empty
             previous mask falls back to the middle box; limited to the target's slices.
  ours       propagation.propagate with its default options, limited to the target's
             slices (the same information the reference gets).
  ours_box_fit  ours with every slice's mask (the seed's too) chosen by box_fit (selection.py)
             instead of the single output (propagate's default).
  ours_free  ours, unlimited beyond the end of the target that is its own boundary
             (not a cut of the bounding region): the stop criteria decide where to end.
  gt_boxes   context, not a method: the tight ground-truth box on every slice (needs the
             answer on every slice; shows what the model can do per slice).

Metrics: 3D Dice, HD95 in mm (SAMSegmenterLib.metrics), slices per second, encoder
calls and slices touched. Embeddings are computed once per slice and shared by the
methods; each method is charged the measured encoder time of every slice it needed
(so its slices/s is what it would get on a cold cache without overlap), and encoder
calls count the distinct slices it needed.

    python benchmarks/propagation.py [--quick] [--json] [--targets NAME:AXIS ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path
from typing import Callable, Hashable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))

import torch  # noqa: E402

from SAMSegmenterLib.io.sample_data import load_sample  # noqa: E402
from SAMSegmenterLib.metrics import dice, hd95  # noqa: E402
from SAMSegmenterLib.models import ImageEmbedding, load_model  # noqa: E402
from SAMSegmenterLib.predictor import SlicePredictor  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.propagation import PropagationOptions, propagate  # noqa: E402
from SAMSegmenterLib.propagation.postprocess import largest_component  # noqa: E402
from SAMSegmenterLib.volume import AXES, parse_axis, put_slice, take_slice  # noqa: E402

Masks = dict[str, np.ndarray]

TARGETS: dict[str, Callable[[Masks, tuple[np.ndarray, ...]], np.ndarray]] = {
    "cerebellum": lambda m, kji: largest_component(m["brain"] & (kji[0] <= 32) & (kji[1] <= 115)),
    "temporal_pole": lambda m, kji: largest_component(m["brain"] & (kji[0] <= 40) & (kji[1] > 105) & (kji[2] < 98)),
    "vertex": lambda m, kji: m["brain"] & (kji[0] >= 125),
    "wm_upper": lambda m, kji: largest_component(m["wm"] & (kji[2] < 98) & (kji[0] >= 100)),
    "hemisphere": lambda m, kji: largest_component(m["brain"] & (kji[2] < 98)),
}
# Each run and the end of the target along its axis that is the structure's own (the other end is a cut
# of the bounding region, or the volume's edge): ``ours_free`` is left without a limit on that side only.
RUNS = {"cerebellum:K": "down", "temporal_pole:K": "down", "vertex:K": "up", "wm_upper:K": "up",
        "temporal_pole:J": "up", "hemisphere:I": "down"}
QUICK = ("cerebellum:K", "temporal_pole:K")
METHODS = ("gt_boxes", "reference", "ours", "ours_box_fit", "ours_free")


class MeteredPredictor(SlicePredictor):
    """A SlicePredictor that remembers how long each embedding took and which ones a run needed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encode_seconds: dict[Hashable, float] = {}
        self.needed: set[Hashable] = set()

    def _compute(self, axis: int, index: int) -> ImageEmbedding:
        start = time.perf_counter()
        embedding = super()._compute(axis, index)
        self.encode_seconds[(axis, index)] = time.perf_counter() - start
        self.needed.add((axis, index))
        return embedding

    def embedding(self, axis, index) -> ImageEmbedding:
        self.needed.add((parse_axis(axis), index))
        return super().embedding(axis, index)


def extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last slice index along ``axis`` where ``mask`` is non-empty."""
    other = tuple(a for a in range(3) if a != axis)
    indices = np.flatnonzero(mask.any(axis=other))
    return int(indices[0]), int(indices[-1])


def reference_procedure(predictor: SlicePredictor, axis: int, middle: int, box: np.ndarray,
                        first: int, last: int) -> np.ndarray:
    """The LiteMedSAM 3D inference procedure (see module docstring); returns a 3D bool mask."""
    rows, cols = predictor.slice_shape(axis)
    shift = 3 * max(rows, cols) / 256  # 3 px at the 256 px model scale, in slice pixels
    mask = np.zeros(predictor.volume.shape, dtype=bool)
    seed = predictor.predict(axis, middle, Prompt(box=box), selection="single").mask
    put_slice(mask, axis, middle, seed)
    for step, end in ((1, last), (-1, first)):
        previous = seed
        for index in range(middle + step, end + step, step):
            if previous.any():
                x0, y0, x1, y1 = box_from_mask(previous)
                prompt_box = (max(0, x0 - shift), max(0, y0 - shift), min(cols - 1, x1 + shift),
                              min(rows - 1, y1 + shift))
            else:
                prompt_box = box
            previous = predictor.predict(axis, index, Prompt(box=prompt_box), selection="single").mask
            put_slice(mask, axis, index, previous)
    return mask


def metered(predictor: MeteredPredictor, work: Callable[[], tuple[np.ndarray, int, str]]) -> dict:
    """Run ``work`` -> (mask, slices touched, stop note) and charge it the encoder time of every slice it needed."""
    predictor.needed = set()
    computed_before = set(predictor.encode_seconds)
    start = time.perf_counter()
    mask, touched, note = work()
    wall = time.perf_counter() - start
    encoded_now = sum(s for k, s in predictor.encode_seconds.items() if k not in computed_before)
    charged = wall - encoded_now + sum(predictor.encode_seconds.get(k, 0.0) for k in predictor.needed)
    return {"mask": mask, "touched": touched, "encoder_calls": len(predictor.needed), "seconds": charged,
            "stops": note}


def gt_boxes(predictor: SlicePredictor, axis: int, target: np.ndarray, first: int, last: int) -> np.ndarray:
    """Each slice of ``target`` segmented from its own tight box (3D bool mask)."""
    mask = np.zeros(target.shape, dtype=bool)
    for index in range(first, last + 1):
        box = box_from_mask(take_slice(target, axis, index))
        put_slice(mask, axis, index, predictor.predict(axis, index, Prompt(box=box)).mask)
    return mask


def run_target(predictor: MeteredPredictor, name: str, axis: int, own_end: str, target: np.ndarray,
               spacing_kji: tuple[float, float, float], options: PropagationOptions) -> list[dict]:
    """One table row per method for ``target`` propagated along ``axis``; ``own_end``: "up" or "down"."""
    first, last = extent(target, axis)
    middle = (first + last) // 2
    box = box_from_mask(take_slice(target, axis, middle))
    free = (0 if own_end == "down" else first, predictor.num_slices(axis) - 1 if own_end == "up" else last)

    def oracle() -> tuple[np.ndarray, int, str]:
        return gt_boxes(predictor, axis, target, first, last), last - first + 1, "range"

    def reference() -> tuple[np.ndarray, int, str]:
        return reference_procedure(predictor, axis, middle, box, first, last), last - first + 1, "range"

    def ours(slice_range: tuple[int, int] | None, walk_options: PropagationOptions = options
             ) -> Callable[[], tuple[np.ndarray, int, str]]:
        def work() -> tuple[np.ndarray, int, str]:
            result = propagate(predictor, axis, middle, seed_prompt=Prompt(box=box), slice_range=slice_range,
                               options=walk_options)
            stops = f"down {result.stop_reasons['down']}@{result.last['down']}, " \
                    f"up {result.stop_reasons['up']}@{result.last['up']}"
            return result.mask, result.slices_visited, stops
        return work

    rows = []
    for method, work in (("gt_boxes", oracle), ("reference", reference), ("ours", ours((first, last))),
                         ("ours_box_fit", ours((first, last), replace(options, selection="box_fit"))),
                         ("ours_free", ours(free))):
        outcome = metered(predictor, work)
        mask = outcome.pop("mask")
        rows.append({"target": name, "axis": "KJI"[axis], "slices": last - first + 1, "method": method,
                     "dice": round(dice(mask, target), 4), "hd95_mm": round(hd95(mask, target, spacing_kji), 2),
                     "slices_per_s": round(outcome["touched"] / outcome["seconds"], 3),
                     "encoder_calls": outcome["encoder_calls"], "slices_touched": outcome["touched"],
                     "stops": outcome["stops"]})
    return rows


def print_table(rows: list[dict]) -> None:
    header = f"{'target':14s} {'ax':2s} {'slices':>6s}  {'method':12s} {'Dice':>6s} {'HD95 mm':>8s} " \
             f"{'slices/s':>8s} {'enc':>4s} {'touched':>7s}  stops"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['target']:14s} {r['axis']:2s} {r['slices']:6d}  {r['method']:12s} {r['dice']:6.3f} "
              f"{r['hd95_mm']:8.2f} {r['slices_per_s']:8.2f} {r['encoder_calls']:4d} {r['slices_touched']:7d}  "
              f"{r['stops']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--targets", nargs="+", metavar="NAME:AXIS", choices=list(RUNS),
                        help=f"runs to do (default: all of {' '.join(RUNS)})")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = args.targets or list(QUICK if args.quick else RUNS)
    start = time.perf_counter()
    volume, geometry = load_sample("mni152")
    masks = {name: load_sample(f"mni152_{name}")[0] > 0 for name in ("brain", "wm")}
    kji = np.indices(volume.shape, sparse=True)
    model = load_model("litemedsam", device="cpu")
    predictor = MeteredPredictor(model, volume)
    options = PropagationOptions()
    rows = []
    for spec in chosen:
        name, _, axis = spec.partition(":")
        target = TARGETS[name](masks, kji)
        rows.extend(run_target(predictor, name, AXES[axis], RUNS[spec], target, geometry.spacing_kji, options))
        print(f"done {spec} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    print_table(rows)
    summary = {}
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {"mean_dice": round(float(np.mean([r["dice"] for r in mine])), 4),
                           "mean_hd95_mm": round(float(np.mean([r["hd95_mm"] for r in mine])), 2)}
    by_run = {(r["target"], r["axis"], r["method"]): r["dice"] for r in rows}
    wins = all(by_run[(t, a, "ours")] >= d for (t, a, m), d in by_run.items() if m == "reference")
    print("\nmean Dice: " + ", ".join(f"{m} {s['mean_dice']:.3f}" for m, s in summary.items())
          + f"; ours >= reference on every target: {wins}")
    total = time.perf_counter() - start
    print(f"total {total:.0f} s on {platform.machine()} with {args.threads} torch threads, "
          f"encoder backend {model.backend}", file=sys.stderr)
    if args.json:
        print(json.dumps({"date": date.today().isoformat(), "machine": platform.machine(), "threads": args.threads,
                          "encoder_backend": model.backend, "cpu_count": os.cpu_count(),
                          "options": asdict(options), "rows": rows, "summary": summary,
                          "ours_at_least_reference_everywhere": wins,
                          "seconds": round(total, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
