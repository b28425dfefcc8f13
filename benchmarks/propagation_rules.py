"""Stop rules compared on recorded walks: one walk per case, every rule applied to it afterwards.

A walk that a stop rule ends is the same walk cut at the slice where the rule first fires (each slice
is prompted from the one before it, so nothing before that slice changes), and a range-limited walk
is the free walk cut at the range's ends. So for one per-slice prompt rule (``--option``), one walk per
case with the cue stops off (``max_intensity_shift`` None; the structural stops ``no_structure``,
``empty`` and ``low_iou`` stay on) gives the 3D Dice of every appearance threshold, range-limited and
free, exactly as ``benchmarks/propagation.py`` would measure it, for the cost of one run.

    python benchmarks/propagation_rules.py record OUT.pkl [--sets ...] [--thick-mm ...] [--store DIR]
                                           [--backend NAME] [--option FIELD=JSON ...]
    python benchmarks/propagation_rules.py evaluate OUT.pkl [--shifts 2.5 4 off]

``record`` keeps, per case and per slice of the free walk, the overlap with the target, the mask's area
and the slice's cues (no masks), and the published procedure's and the ceiling's 3D Dice.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))

from embedding_store import StoredPredictor  # noqa: E402
from propagation import SEEDS, ceiling, extent, published_procedure, seed_slice  # noqa: E402
from propagation_cases import DEFAULT_SETS, SETS, THICK_MM, cases  # noqa: E402

from SAMSegmenterLib.metrics import dice  # noqa: E402
from SAMSegmenterLib.models import load_model  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.propagation import PropagationOptions, propagate  # noqa: E402
from SAMSegmenterLib.volume import take_slice  # noqa: E402

Rule = Callable[[dict, int], bool]  # (case record, slice index) -> stop before this slice


def record(args: argparse.Namespace) -> None:
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    options.setdefault("max_intensity_shift", None)
    model = load_model("litemedsam", device="cpu", backend=args.backend)
    predictors: dict[str, StoredPredictor] = {}
    records = []
    for case in cases(tuple(args.sets), thick_mm=tuple(args.thick_mm), brats_dir=args.brats,
                      itksnap_dir=args.itksnap):
        if case.volume_id not in predictors:  # one per volume: it fingerprints the whole volume
            predictors[case.volume_id] = StoredPredictor(model, case.volume, store=args.store)
        predictor = predictors[case.volume_id]
        axis, target = case.axis, case.target
        first, last = extent(target, axis)
        seed = seed_slice(target, axis, args.seed)
        box = box_from_mask(take_slice(target, axis, seed))
        result = propagate(predictor, axis, seed, seed_prompt=Prompt(box=box), slice_range=case.free,
                           options=PropagationOptions(**options))
        slices = {}
        for index in range(case.free[0], case.free[1] + 1):
            mask, truth = take_slice(result.mask, axis, index), take_slice(target, axis, index)
            slices[index] = {"overlap": int((mask & truth).sum()), "area": int(mask.sum()),
                             "cues": result.cues.get(index)}
        records.append({"set": case.set, "name": case.name, "first": first, "last": last, "seed": seed,
                        "free": case.free, "target_voxels": int(target.sum()), "slices": slices,
                        "published": dice(published_procedure(predictor, axis, seed, box, first, last), target),
                        "ceiling": dice(ceiling(predictor, axis, target, first, last), target)})
        print(f"{case.set} {case.name}: {result.stop_reasons}", file=sys.stderr, flush=True)
    with open(args.out, "wb") as fh:
        pickle.dump({"options": options, "cases": records}, fh)


def kept(case: dict, first: int, last: int, rule: Optional[Rule]) -> list[int]:
    """Slices the walk keeps within first..last when ``rule`` may stop it (the seed always)."""
    out = [case["seed"]]
    for step in (1, -1):
        index = case["seed"] + step
        while first <= index <= last and case["slices"][index]["area"] and not (rule and rule(case, index)):
            out.append(index)
            index += step
    return out


def walk_dice(case: dict, slices: list[int]) -> float:
    overlap = sum(case["slices"][i]["overlap"] for i in slices)
    return 2 * overlap / (sum(case["slices"][i]["area"] for i in slices) + case["target_voxels"])


def appearance(limit: Optional[float]) -> Optional[Rule]:
    if limit is None:
        return None
    return lambda case, index: (case["slices"][index]["cues"] or {}).get("intensity_shift", 0.0) > limit


def evaluate(args: argparse.Namespace) -> None:
    with open(args.out, "rb") as fh:
        recorded = pickle.load(fh)
    print(f"per-slice prompt: {recorded['options']}")
    print("| appearance stop | set | ceiling | published | range | free | gap closed | worst range - published "
          "| worst free - range |")
    print("|---|---|---|---|---|---|---|---|---|")
    for shift in args.shifts:
        rule = appearance(None if shift == "off" else float(shift))
        for name in SETS:
            group = [c for c in recorded["cases"] if c["set"] == name]
            if not group:
                continue
            rng = np.array([walk_dice(c, kept(c, c["first"], c["last"], rule)) for c in group])
            free = np.array([walk_dice(c, kept(c, *c["free"], rule)) for c in group])
            pub, top = np.array([c["published"] for c in group]), np.array([c["ceiling"] for c in group])
            closed = (rng.mean() - pub.mean()) / (top.mean() - pub.mean())
            print(f"| {shift} | {name} | {top.mean():.3f} | {pub.mean():.3f} | {rng.mean():.3f} | {free.mean():.3f} "
                  f"| {closed:.2f} | {(rng - pub).min():+.3f} | {(free - rng).min():+.3f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="walk every case once with the cue stops off")
    rec.add_argument("out", type=Path)
    rec.add_argument("--sets", nargs="+", choices=SETS, default=list(DEFAULT_SETS))
    rec.add_argument("--brats", type=Path, help="DeepMedic's brats2015TrainingData folder (propagation_cases.py)")
    rec.add_argument("--itksnap", type=Path, help="ITK-SNAP's Testing/TestData folder (propagation_cases.py)")
    rec.add_argument("--thick-mm", nargs="+", type=int, default=list(THICK_MM))
    rec.add_argument("--store", type=Path, help="folder that keeps embeddings between runs")
    rec.add_argument("--backend", default="auto")
    rec.add_argument("--seed", choices=SEEDS, default="middle", help="the box's slice (see propagation.py)")
    rec.add_argument("--option", nargs="+", default=[], metavar="FIELD=JSON", help="PropagationOptions fields")
    ev = commands.add_parser("evaluate", help="apply appearance thresholds to a record")
    ev.add_argument("out", type=Path)
    ev.add_argument("--shifts", nargs="+", default=["2.5", "4", "off"])
    args = parser.parse_args(argv)
    record(args) if args.command == "record" else evaluate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
