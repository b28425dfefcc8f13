"""The per-slice confidence against ground truth, and what refitting it would give, set by set.

Reads the JSON that ``benchmarks/propagation.py --json`` prints (one or more runs, e.g. one per
structure): its records hold every rated slice's cues (``slice_quality.SliceCues``), its walk's seed and
its Dice with the target. For each set it prints the ROC AUC (slices with Dice >= 0.7 against worse
ones) of

  shipped    the confidence the walk gave (``slice_quality.walk_confidence`` with the shipped weights);
  refit      the same model (same cues, the same mix of the slice's own estimate and the walk's lowest)
             with its weights fitted on every *other* set (leave one set out: the set is judged on
             weights that never saw it; each training set weighs the same).

    python benchmarks/confidence.py RUN.json [RUN.json ...] [--json] [--fit SET [SET ...]]

``--fit`` also prints the weights fitted on the named sets' slices (each set weighing the same): how the shipped
``slice_quality.WEIGHTS`` and ``BIAS`` are made.

The shipped weights were fitted on the thick-slice template and the CT (docs/propagation.md), so their
AUC on those two sets is not a held-out figure; the refit's is on every set.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))

from propagation import GOOD_SLICE, roc_auc  # noqa: E402

from SAMSegmenterLib.propagation import slice_quality  # noqa: E402


def features(cues: dict) -> np.ndarray:
    """The shipped model's inputs (``slice_quality.features``) with a leading 1 for the bias."""
    return np.array([1.0, *slice_quality.features(slice_quality.SliceCues(**cues))])


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, fixed_zero: tuple[int, ...],
                 l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """Weighted L2-regularised logistic regression by Newton's method: (N, F) features -> (F,) weights;
    the columns in ``fixed_zero`` keep weight 0 (the shipped model leaves out the IoU with the neighbour)."""
    keep = [j for j in range(x.shape[1]) if j not in fixed_zero]
    xs, w = x[:, keep], np.zeros(len(keep))
    penalty = l2 * np.eye(len(keep))
    penalty[0, 0] = 0.0  # no penalty on the bias
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-xs @ w))
        gradient = xs.T @ (weight * (p - y)) + penalty @ w
        hessian = (xs * (weight * p * (1 - p))[:, None]).T @ xs + penalty
        w = w - np.linalg.solve(hessian, gradient)
    full = np.zeros(x.shape[1])
    full[keep] = w
    return full


def walk_confidences(records: list[dict], own: dict[int, float]) -> dict[int, float]:
    """``slice_quality.walk_confidence`` along every walk (records of one run, case, method and direction,
    outward from the seed) from each slice's own estimate ``own[id(record)]``."""
    walks = defaultdict(list)
    for r in records:
        walks[(r["run"], r["set"], r["case"], r["method"], np.sign(r["index"] - r["seed"]))].append(r)
    out = {}
    for walk in walks.values():
        lowest = 1.0
        for r in sorted(walk, key=lambda r: abs(r["index"] - r["seed"])):
            out[id(r)], lowest = slice_quality.mix(lowest, own[id(r)])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="outputs of benchmarks/propagation.py --json")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--fit", nargs="+", metavar="SET", help="print the weights fitted on these sets")
    args = parser.parse_args(argv)
    records = []
    for run, path in enumerate(args.runs):
        records += [dict(r, run=run) for r in json.loads(path.read_text().strip().splitlines()[-1])["records"]]
    x = np.array([features(r["cues"]) for r in records])
    y = np.array([r["dice"] >= GOOD_SLICE for r in records], dtype=float)
    sets = list(dict.fromkeys(r["set"] for r in records))
    unknown = sorted(set(args.fit or ()) - set(sets))
    if unknown:
        parser.error(f"--fit: no slices of {', '.join(unknown)} in these runs (sets: {', '.join(sets)})")
    # the inputs the shipped model leaves out (slice_quality.LEFT_OUT) stay out (+1: the bias column)
    fixed_zero = tuple(1 + slice_quality.FEATURES.index(name) for name in slice_quality.LEFT_OUT)
    counts = defaultdict(int)
    for r in records:
        counts[r["set"]] += 1
    per_set = np.array([1.0 / counts[r["set"]] for r in records])  # each set weighs the same

    def fit(train: np.ndarray) -> np.ndarray:
        """Weights (bias first) fitted on the records where ``train`` is True."""
        weight = per_set[train]
        return fit_logistic(x[train], y[train], weight * train.sum() / weight.sum(), fixed_zero)

    own: dict[int, float] = {}
    for held in sets:
        train = np.array([r["set"] != held for r in records])
        for r, z in zip((r for r in records if r["set"] == held), x[~train] @ fit(train)):
            own[id(r)] = float(1.0 / (1.0 + np.exp(-z)))
    refit = walk_confidences(records, own)
    if args.fit:
        train = np.array([r["set"] in args.fit for r in records])
        w = fit(train)
        print(f"fitted on {', '.join(args.fit)} ({train.sum()} slices): WEIGHTS = "
              f"({', '.join(f'{v:.5g}' for v in w[1:])}), BIAS = {w[0]:.5g}")
    table = {}
    print("| set | slices | bad (Dice < 0.7) | shipped AUC | refit AUC (leave one set out) |")
    print("|---|---|---|---|---|")
    for name in sets:
        mine = [r for r in records if r["set"] == name]
        good = [r["dice"] >= GOOD_SLICE for r in mine]
        table[name] = {"slices": len(mine), "bad": good.count(False),
                       "shipped": round(roc_auc([r["confidence"] for r in mine], good), 3),
                       "refit": round(roc_auc([refit[id(r)] for r in mine], good), 3)}
        t = table[name]
        print(f"| {name} | {t['slices']} | {t['bad']} | {t['shipped']:.3f} | {t['refit']:.3f} |")
    if args.json:
        print(json.dumps({"runs": [str(p) for p in args.runs], "sets": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
