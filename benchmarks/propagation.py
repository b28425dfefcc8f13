"""3D propagation against ground truth: SAMSegmenter's walk, the published LiteMedSAM 3D procedure and
the ground-truth-box ceiling, on isotropic, thick-slice and real CT / MR volumes.

Sets (benchmarks/propagation_cases.py): ``iso`` (MNI152 template, 1 mm), ``thick`` (the template
averaged into 3, 5 and 7 mm slabs along the walking axis), ``ct`` and ``mr`` (TotalSegmentator's
example CT and MR, 3 mm, and 6 mm slabs of them), and three held-out sets: ``ct_other`` and
``mr_other`` (other structures of the same scans) and ``lesion`` (pyradiomics' hand-labelled brain and
breast lesions on MR). Rules and thresholds were chosen on ``thick``, ``ct`` and ``mr`` (``iso``
checks that the 1 mm template keeps its lead); the held-out sets were used for none of them.

Each case starts from the tight box of the target on one slice (along the axis): its middle slice
(``--seed middle``, the default: the CVPR 2024 challenge gives the middle slice of a 3D box) or the
slice where it is largest (``--seed largest``, as a reader often picks it). Methods, in the same
run and on the same embeddings:

  ceiling    context, not a method: the tight ground-truth box on every slice of the target
             (needs the answer on every slice; the best a box-driven walk could do with this model).
  published  the published LiteMedSAM 3D procedure (CVPR 2024 challenge inference): that box on
             the seed slice; each next slice prompted by the previous mask's bounding box grown by
             3 px at the 256 px model scale; an empty previous mask falls back to the seed's box;
             limited to the target's slices.
  ours       propagation.propagate with its default options, limited to the target's slices.
  ours_free  the same without a range: on the real volumes the whole axis; on the template up to the
             cut of the bounding region on the side where the target's end is not its own (see
             propagation_cases.py). The stop criteria decide where to end.

Metrics: 3D Dice, HD95 in mm, encoder calls (distinct slices embedded) and decoder passes per
segmented slice; per-slice confidence: ROC AUC of ``result.confidence`` for telling slices with
Dice >= 0.7 from worse ones (slices of ``ours`` and ``ours_free``, seeds excluded). With ``--json`` the
records hold every rated slice's confidence, cues, seed and Dice (``benchmarks/confidence.py`` reads them).

    python benchmarks/propagation.py [--sets iso thick ct mr ct_other mr_other lesion] [--seed middle|largest]
                                     [--iso-runs NAME:AXIS ...] [--thick-mm 3 5 7] [--store DIR]
                                     [--backend NAME] [--option FIELD=JSON ...] [--json]

``--store DIR`` keeps embeddings on disk between runs (benchmarks/embedding_store.py). ``--sets brats``
needs ``--brats DIR`` and ``--sets itksnap`` ``--itksnap DIR``: folders of public data that this repository
does not hold (propagation_cases.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from embedding_store import StoredPredictor  # noqa: E402
from propagation_cases import DEFAULT_SETS, HELD_OUT_SETS, ISO_RUNS, SETS, THICK_MM, TUNE_SETS, Case, cases  # noqa: E402

from SAMSegmenterLib.metrics import dice, hd95  # noqa: E402
from SAMSegmenterLib.models import load_model  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.propagation import PropagationOptions, propagate  # noqa: E402
from SAMSegmenterLib.volume import put_slice, take_slice  # noqa: E402

METHODS = ("ceiling", "published", "ours", "ours_free")
GOOD_SLICE = 0.7


def extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last slice index along ``axis`` where ``mask`` is non-empty."""
    other = tuple(a for a in range(3) if a != axis)
    indices = np.flatnonzero(mask.any(axis=other))
    return int(indices[0]), int(indices[-1])


SEEDS = ("middle", "largest")


def seed_slice(target: np.ndarray, axis: int, how: str) -> int:
    """The slice along ``axis`` that gets the user's box: the middle of the target's extent (as the
    CVPR 2024 challenge's 3D boxes give it) or the slice where the target is largest (as a reader
    often picks it; the earliest of equal ones)."""
    if how == "middle":
        first, last = extent(target, axis)
        return (first + last) // 2
    areas = target.sum(axis=tuple(a for a in range(3) if a != axis))
    return int(np.argmax(areas))


def published_procedure(predictor: StoredPredictor, axis: int, seed_index: int, box: np.ndarray,
                        first: int, last: int) -> np.ndarray:
    """The LiteMedSAM 3D inference procedure (see module docstring); returns a 3D bool mask."""
    rows, cols = predictor.slice_shape(axis)
    shift = 3 * max(rows, cols) / 256  # 3 px at the 256 px model scale, in slice pixels
    mask = np.zeros(predictor.volume.shape, dtype=bool)
    seed = predictor.predict(axis, seed_index, Prompt(box=box), selection="single").mask
    put_slice(mask, axis, seed_index, seed)
    for step, end in ((1, last), (-1, first)):
        previous = seed
        for index in range(seed_index + step, end + step, step):
            if previous.any():
                x0, y0, x1, y1 = box_from_mask(previous)
                prompt_box = np.array([max(0, x0 - shift), max(0, y0 - shift), min(cols - 1, x1 + shift),
                                       min(rows - 1, y1 + shift)])
            else:
                prompt_box = box
            previous = predictor.predict(axis, index, Prompt(box=prompt_box), selection="single").mask
            put_slice(mask, axis, index, previous)
    return mask


def ceiling(predictor: StoredPredictor, axis: int, target: np.ndarray, first: int, last: int) -> np.ndarray:
    """Each slice of ``target`` segmented from its own tight box (3D bool mask)."""
    mask = np.zeros(target.shape, dtype=bool)
    for index in range(first, last + 1):
        box = box_from_mask(take_slice(target, axis, index))
        put_slice(mask, axis, index, predictor.predict(axis, index, Prompt(box=box)).mask)
    return mask


def slice_dice(mask: np.ndarray, target: np.ndarray, axis: int, index: int) -> float:
    a, b = take_slice(mask, axis, index), take_slice(target, axis, index)
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def roc_auc(scores: list[float], good: list[bool]) -> float:
    """Probability that a good slice has a higher score than a bad one (ties count half); NaN without both."""
    s, g = np.asarray(scores, dtype=float), np.asarray(good, dtype=bool)
    pos, neg = s[g], s[~g]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def run_case(predictor: StoredPredictor, case: Case, options: PropagationOptions,
             seed: str = "middle") -> tuple[list[dict], list[dict]]:
    """Table rows (one per method) and per-slice confidence records for one case; ``seed``: see seed_slice."""
    axis, target = case.axis, case.target
    first, last = extent(target, axis)
    seed_index = seed_slice(target, axis, seed)
    box = box_from_mask(take_slice(target, axis, seed_index))
    rows, records = [], []
    for method in METHODS:
        predictor.needed, decodes_before = set(), predictor.decodes
        start = time.perf_counter()
        stops, result = "", None
        if method == "ceiling":
            mask = ceiling(predictor, axis, target, first, last)
        elif method == "published":
            mask = published_procedure(predictor, axis, seed_index, box, first, last)
        else:
            span = (first, last) if method == "ours" else case.free
            result = propagate(predictor, axis, seed_index, seed_prompt=Prompt(box=box), slice_range=span,
                               options=options)
            mask = result.mask
            stops = ", ".join(f"{walk} {result.stop_reasons[walk]}@{result.last[walk]}" for walk in ("down", "up"))
            for index, value in result.confidence.items():
                records.append({"set": case.set, "case": case.name, "method": method, "index": index,
                                "seed": seed_index, "confidence": value,
                                "dice": slice_dice(mask, target, axis, index), "cues": result.cues.get(index)})
        segmented = max(1, int(mask.any(axis=tuple(a for a in range(3) if a != axis)).sum()))
        rows.append({"set": case.set, "case": case.name, "axis": "KJI"[axis], "slices": last - first + 1,
                     "method": method, "dice": round(dice(mask, target), 4),
                     "hd95_mm": round(hd95(mask, target, case.spacing_kji), 2) if mask.any() else None,
                     "encoder_calls": len(predictor.needed), "decodes": predictor.decodes - decodes_before,
                     "segmented": segmented, "seconds": round(time.perf_counter() - start, 2), "stops": stops})
    return rows, records


def summarize(rows: list[dict], records: list[dict]) -> dict:
    """Per set: mean Dice per method, gap closed, worst per-case differences, confidence AUC, cost."""
    out = {}
    for name in sorted({r["set"] for r in rows}, key=SETS.index):
        mine = [r for r in rows if r["set"] == name]
        by = {(r["case"], r["method"]): r for r in mine}
        names = sorted({r["case"] for r in mine}, key=[r["case"] for r in mine].index)
        mean = {m: float(np.mean([by[(c, m)]["dice"] for c in names])) for m in METHODS}
        gap = mean["ceiling"] - mean["published"]
        recs = [r for r in records if r["set"] == name]
        calls = [by[(c, "ours")] for c in names]
        out[name] = {
            "mean_dice": {m: round(v, 4) for m, v in mean.items()},
            "gap_closed": round((mean["ours"] - mean["published"]) / gap, 3) if gap > 0 else None,
            "worst_ours_minus_published": round(min(by[(c, "ours")]["dice"] - by[(c, "published")]["dice"]
                                                    for c in names), 4),
            "worst_free_minus_ours": round(min(by[(c, "ours_free")]["dice"] - by[(c, "ours")]["dice"]
                                               for c in names), 4),
            "confidence_auc": round(roc_auc([r["confidence"] for r in recs],
                                            [r["dice"] >= GOOD_SLICE for r in recs]), 3),
            "slices_rated": len(recs), "bad_slices": sum(r["dice"] < GOOD_SLICE for r in recs),
            "encoder_calls_per_slice": round(sum(r["encoder_calls"] for r in calls)
                                             / sum(r["segmented"] for r in calls), 3),
            "decodes_per_slice": round(sum(r["decodes"] for r in calls) / sum(r["segmented"] for r in calls), 3),
            "role": "tuning" if name in TUNE_SETS else "held out" if name in HELD_OUT_SETS else "check",
        }
    return out


def print_tables(rows: list[dict], summary: dict) -> None:
    for name, s in summary.items():
        print(f"\n## {name} ({s['role']})")
        print("| case | ceiling | published | ours | ours_free | free stops |")
        print("|---|---|---|---|---|---|")
        mine = [r for r in rows if r["set"] == name]
        for case in sorted({r["case"] for r in mine}, key=[r["case"] for r in mine].index):
            d = {r["method"]: r for r in mine if r["case"] == case}
            print(f"| {case} | {d['ceiling']['dice']:.3f} | {d['published']['dice']:.3f} | {d['ours']['dice']:.3f} "
                  f"| {d['ours_free']['dice']:.3f} | {d['ours_free']['stops']} |")
        m = s["mean_dice"]
        print(f"| **mean** | {m['ceiling']:.3f} | {m['published']:.3f} | **{m['ours']:.3f}** "
              f"| {m['ours_free']:.3f} | |")
        print(f"gap closed {s['gap_closed']}; worst ours-published {s['worst_ours_minus_published']:+.3f}; "
              f"worst free-ours {s['worst_free_minus_ours']:+.3f}; confidence AUC {s['confidence_auc']} "
              f"({s['bad_slices']} of {s['slices_rated']} slices below Dice {GOOD_SLICE}); per segmented slice "
              f"{s['encoder_calls_per_slice']} encoder calls, {s['decodes_per_slice']} decodes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(DEFAULT_SETS),
                        help="case sets (default: all but brats and itksnap, whose data is not in the repository)")
    parser.add_argument("--brats", type=Path, help="DeepMedic's brats2015TrainingData folder, for the brats set")
    parser.add_argument("--itksnap", type=Path, help="ITK-SNAP's Testing/TestData folder, for the itksnap set")
    parser.add_argument("--iso-runs", nargs="+", choices=list(ISO_RUNS), default=list(ISO_RUNS),
                        help="template runs of the iso set (default: all)")
    parser.add_argument("--thick-mm", nargs="+", type=int, choices=THICK_MM, default=list(THICK_MM),
                        help="slab thicknesses of the thick set (default: all)")
    parser.add_argument("--seed", choices=SEEDS, default="middle",
                        help="slice of each target that gets the box: its middle slice (default) or its largest")
    parser.add_argument("--option", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="override PropagationOptions fields (JSON values, e.g. max_intensity_shift=null)")
    parser.add_argument("--store", type=Path, help="folder that keeps embeddings between runs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--backend", default="auto",
                        help="encoder backend (default auto; name one to reuse a store made with it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_model("litemedsam", device="cpu", backend=args.backend)
    options = PropagationOptions(**{k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)})
    predictors: dict[str, StoredPredictor] = {}
    rows, records = [], []
    for case in cases(tuple(args.sets), tuple(args.iso_runs), tuple(args.thick_mm), args.brats, args.itksnap):
        if case.volume_id not in predictors:
            predictors[case.volume_id] = StoredPredictor(model, case.volume, store=args.store)
        case_rows, case_records = run_case(predictors[case.volume_id], case, options, args.seed)
        rows += case_rows
        records += case_records
        print(f"done {case.set} {case.name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    summary = summarize(rows, records)
    print_tables(rows, summary)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s on {platform.machine()} ({platform.processor() or 'cpu'}) with {args.threads} "
          f"torch threads, encoder backend {model.backend}", file=sys.stderr)
    if args.json:
        print(json.dumps({"date": date.today().isoformat(), "machine": platform.machine(), "threads": args.threads,
                          "encoder_backend": model.backend, "cpu_count": os.cpu_count(),
                          "seed": args.seed, "options": asdict(options), "rows": rows, "summary": summary,
                          "records": records, "seconds": round(total, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
