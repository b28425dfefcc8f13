"""Mask selection for box prompts: accuracy of each rule through ``evaluate``, and its cost per prompt.

Accuracy: ``evaluate_case`` (the ``evaluate`` command's unit of work) with the ``box`` protocol
(tight box) and ``box_jitter`` (each side moved outwards by 0-10 px, and by MedSAM's 0-20 px),
every selection of the same four decoder candidates: ``single``, ``best_score``, ``box_fit`` and
the ``oracle`` (best Dice of the four: an upper bound, not a method). Real images, thresholded
ground truth (imperfect):

  MNI152 2009 T1 template (nilearn, 1 mm), structures cut from nilearn's brain / white-matter
  masks by connected components inside a bounding region [k, j, i]:
    cerebellum      brain, k <= 32, j <= 115                        (benchmarks/propagation.py)
    temporal_pole   brain, k <= 40, j > 105, i < 98                 (benchmarks/propagation.py)
    vertex          brain, k >= 125                                 (benchmarks/propagation.py)
    wm_upper        white matter, i < 98, k >= 100                  (benchmarks/propagation.py)
    brain           nilearn's brain mask
    hemisphere      brain, i < 98                                   (benchmarks/propagation.py)
    frontal_pole    brain, j >= 170
    occipital_pole  brain, j <= 50, k >= 45
    posterior_fossa brain, 6 <= k < 22, 40 <= j < 125, 40 <= i < 160 (examples/evaluate_dask.py --demo)
    outline         template > 0.1, holes filled: the brain's own outline on black
  each along K, J and I, on up to 8 evenly spread slices that hold it (3 with --quick);
  pydicom's CT_small (vertebral body, posterior arch, aorta) and examples_overlay MR slice of the
  abdomen (right and left kidney, aorta), one slice each, jittered boxes drawn with 5 seeds.

Groups: ``tuning`` = cerebellum, temporal pole, vertex, WM upper and brain on axes K and J (where
the rule was chosen); ``held-out`` = the other structures, and every structure on axis I;
``CT/MR organs`` = the six objects on CT and MR (where the agreement step of ``box_fit`` was
chosen: a multimask output reproducing the single output keeps it).

Latency: prompt -> mask on a cached embedding (9 boxes on MNI152 and CT slices), interleaved:
the single output alone (``SamModel.decode``, the path before this selection existed), the four
candidates (``decode_candidates``), and ``SlicePredictor.predict`` with each selection.

    python benchmarks/selection.py [--quick] [--json] [--out DIR] [--threads N] [--stages accuracy,latency]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))

import torch  # noqa: E402

from SAMSegmenterLib.evaluation.evaluate import COLUMNS, SELECTIONS, Case, EvalConfig, evaluate_case  # noqa: E402
from SAMSegmenterLib.evaluation.report import write_csv  # noqa: E402
from SAMSegmenterLib.io import Geometry, write_labels  # noqa: E402
from SAMSegmenterLib.io.sample_data import load_sample  # noqa: E402
from SAMSegmenterLib.models import load_model  # noqa: E402
from SAMSegmenterLib.predictor import SlicePredictor  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.propagation.postprocess import fill_holes, largest_component  # noqa: E402
from SAMSegmenterLib.selection import SELECTIONS as RULES  # noqa: E402
from SAMSegmenterLib.volume import occupied_slices, take_slice  # noqa: E402

TUNING = {"cerebellum", "temporal_pole", "vertex", "wm_upper", "brain"}
PROTOCOLS = (("box", "box", 0), ("box_jitter", "jitter 0-10 px", 10), ("box_jitter", "jitter 0-20 px", 20))
GROUPS = ("tuning", "held-out", "CT/MR organs")
SEEDS_2D = 5  # jitter draws on the one-slice CT and MR cases


def mni_structures() -> tuple[np.ndarray, Geometry, dict[str, np.ndarray]]:
    """(template [k, j, i], geometry, {name: bool mask [k, j, i]}), see the module docstring."""
    volume, geometry = load_sample("mni152")
    brain = load_sample("mni152_brain")[0] > 0
    wm = load_sample("mni152_wm")[0] > 0
    k, j, i = np.indices(volume.shape, sparse=True)
    return volume, geometry, {
        "cerebellum": largest_component(brain & (k <= 32) & (j <= 115)),
        "temporal_pole": largest_component(brain & (k <= 40) & (j > 105) & (i < 98)),
        "vertex": brain & (k >= 125),
        "wm_upper": largest_component(wm & (i < 98) & (k >= 100)),
        "brain": brain,
        "hemisphere": largest_component(brain & (i < 98)),
        "frontal_pole": largest_component(brain & (j >= 170)),
        "occipital_pole": largest_component(brain & (j <= 50) & (k >= 45)),
        "posterior_fossa": largest_component(brain & (k >= 6) & (k < 22) & (j >= 40) & (j < 125) & (i >= 40)
                                             & (i < 160)),
        "outline": largest_component(fill_holes(volume > 0.1)),
    }


def _dicom(name: str) -> np.ndarray:
    """A pydicom test file's pixels in rescaled units, (rows, columns) float32."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(name))
    return (ds.pixel_array * float(ds.get("RescaleSlope", 1) or 1)
            + float(ds.get("RescaleIntercept", 0) or 0)).astype(np.float32)


def _closed(mask: np.ndarray, radius: int) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryMorphologicalClosing(image, [radius] * 2)) > 0


def _opened(mask: np.ndarray, radius: int) -> np.ndarray:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryMorphologicalOpening(image, [radius] * 2)) > 0


def organ_slices() -> dict[str, tuple[np.ndarray, float, list[tuple[str, np.ndarray]]]]:
    """{case: (image (rows, cols), pixel spacing mm, [(object, bool mask)])} on pydicom's CT and MR slices."""
    ct = _dicom("CT_small.dcm")
    rows = np.arange(ct.shape[0])[:, None]
    cols = np.arange(ct.shape[1])[None]
    bone = ct > 200
    ct_objects = [("vertebral body", largest_component(fill_holes(bone & (rows < 52)))),
                  ("posterior arch", largest_component(bone & (rows >= 55))),
                  ("aorta", largest_component(_opened((ct > 120) & (ct < 400) & (cols >= 62) & (rows < 40), 1)))]
    mr = _dicom("examples_overlay.dcm")
    rows = np.arange(mr.shape[0])[:, None]
    cols = np.arange(mr.shape[1])[None]
    bright = mr > 500
    mr_objects = []
    for name, (r0, r1, c0, c1) in (("right kidney", (185, 265, 100, 195)), ("left kidney", (185, 265, 280, 360)),
                                   ("aorta", (150, 185, 235, 270))):
        piece = largest_component(bright & (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1))
        mr_objects.append((name, fill_holes(_closed(piece, 4))))
    return {"CT_small": (ct, 0.66, ct_objects), "MR_abdomen": (mr, 0.72, mr_objects)}


def write_cases(folder: Path, quick: bool) -> list[tuple[Case, int, int, dict[int, str], str]]:
    """Case files in ``folder``; returns (case, axis, every, {label value: structure}, group) runs."""
    folder.mkdir(parents=True, exist_ok=True)
    volume, geometry, structures = mni_structures()
    image = folder / "mni152.nii.gz"
    sitk.WriteImage(geometry.apply(sitk.GetImageFromArray(volume)), str(image))
    per_structure = 3 if quick else 8
    names = ("cerebellum", "vertex", "hemisphere", "outline") if quick else tuple(structures)
    runs = []
    for name in names:
        label = folder / f"{name}_label.nii.gz"
        write_labels(label, structures[name].astype(np.uint8), geometry)
        for axis in (0, 1, 2):
            count = len(occupied_slices(structures[name], axis))
            group = "tuning" if name in TUNING and axis in (0, 1) else "held-out"
            runs.append((Case(name, image, label), axis, math.ceil(count / per_structure), {1: name}, group))
    for name, (pixels, spacing, objects) in organ_slices().items():
        flat = Geometry((spacing, spacing, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        image = folder / f"{name}.nii.gz"
        sitk.WriteImage(flat.apply(sitk.GetImageFromArray(pixels[None])), str(image))
        labels = np.zeros((1, *pixels.shape), np.uint8)
        for value, (_, mask) in enumerate(objects, 1):
            labels[0][mask & (labels[0] == 0)] = value
        write_labels(folder / f"{name}_label.nii.gz", labels, flat)
        names = {value: f"{name} {obj}" for value, (obj, _) in enumerate(objects, 1)}
        runs.append((Case(name, image, folder / f"{name}_label.nii.gz"), 0, 1, names, "CT/MR organs"))
    return runs


def accuracy(folder: Path, quick: bool, threads: int) -> list[dict]:
    """Rows of ``evaluate_case`` for every run and protocol, with ``structure``, ``group`` and ``boxes`` added."""
    rows = []
    start = time.perf_counter()
    for case, axis, every, names, group in write_cases(folder, quick):
        seeds = range(SEEDS_2D) if group == "CT/MR organs" else range(1)
        for protocol, boxes, jitter in PROTOCOLS:
            for seed in seeds if protocol == "box_jitter" else range(1):
                config = EvalConfig(protocols=(protocol,), axis=axis, every=every, seed=seed, jitter_px=jitter or 20,
                                    device="cpu", torch_threads=threads)
                for row in evaluate_case(case, config):
                    rows.append({**row, "structure": names[int(row["label"])], "group": group, "boxes": boxes})
        print(f"  {case.name} axis {'KJI'[axis]} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
              flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and median Dice per (group, boxes, selection), then the same over all groups."""
    out = []
    for group in (*GROUPS, "all"):
        for boxes in dict.fromkeys(r["boxes"] for r in rows):
            for selection in SELECTIONS:
                values = [float(r["dice"]) for r in rows if r["boxes"] == boxes and r["selection"] == selection
                          and group in ("all", r["group"])]
                if values:
                    out.append({"group": group, "boxes": boxes, "selection": selection, "n": len(values),
                                "dice_mean": round(float(np.mean(values)), 4),
                                "dice_median": round(float(np.median(values)), 4)})
    return out


def per_structure(rows: list[dict]) -> list[dict]:
    """Mean Dice per (structure, axis, boxes) and selection, for the docs' long table."""
    keys = dict.fromkeys((r["structure"], r["axis"], r["boxes"]) for r in rows)
    out = []
    for structure, axis, boxes in keys:
        mine = [r for r in rows if (r["structure"], r["axis"], r["boxes"]) == (structure, axis, boxes)]
        entry = {"structure": structure, "axis": axis, "boxes": boxes,
                 "n": sum(r["selection"] == "single" for r in mine)}
        for selection in SELECTIONS:
            entry[selection] = round(float(np.mean([float(r["dice"]) for r in mine if r["selection"] == selection])), 4)
        out.append(entry)
    return out


def print_accuracy(summary: list[dict]) -> None:
    print("\nMean Dice (median) by group and box, per mask selection")
    print(f"{'group':14s} {'boxes':16s} {'n':>4s}  " + "  ".join(f"{s:>15s}" for s in SELECTIONS))
    for group in (*GROUPS, "all"):
        for boxes in dict.fromkeys(s["boxes"] for s in summary):
            cells = {s["selection"]: s for s in summary if s["group"] == group and s["boxes"] == boxes}
            if cells:
                n = next(iter(cells.values()))["n"]
                print(f"{group:14s} {boxes:16s} {n:4d}  " + "  ".join(
                    f"{cells[s]['dice_mean']:.3f} ({cells[s]['dice_median']:.3f})" for s in SELECTIONS))


def latency(threads: int, rounds: int) -> dict[str, float]:
    """Median ms per prompt on cached embeddings, see the module docstring."""
    torch.set_num_threads(threads)
    model = load_model("litemedsam", device="cpu")
    volume, _, structures = mni_structures()
    predictor = SlicePredictor(model, volume)
    picks = [("cerebellum", 0), ("vertex", 0), ("hemisphere", 2), ("frontal_pole", 1), ("temporal_pole", 1),
             ("wm_upper", 0), ("brain", 1), ("outline", 2)]
    cases = []
    for name, axis in picks:
        present = occupied_slices(structures[name], axis)
        index = int(present[len(present) // 2])
        cases.append((predictor, axis, index, Prompt(box=box_from_mask(take_slice(structures[name], axis, index)))))
    ct = _dicom("CT_small.dcm")
    body = largest_component(fill_holes((ct > 200) & (np.arange(ct.shape[0])[:, None] < 52)))
    cases.append((SlicePredictor(model, ct[None]), 0, 0, Prompt(box=box_from_mask(body))))
    embedded = [(p, a, i, prompt, p.embedding(a, i)) for p, a, i, prompt in cases]
    fns = {"single output only (decode)": lambda e: model.decode(e[4], e[3]),
           "four candidates (decode_candidates)": lambda e: model.decode_candidates(e[4], e[3])}
    for rule in RULES:
        fns[f"predict, selection={rule}"] = lambda e, rule=rule: e[0].predict(e[1], e[2], e[3], selection=rule)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():  # interleaved: load from other processes hits every variant alike
            for entry in embedded:
                start = time.perf_counter()
                fn(entry)
                times[name].append(1000 * (time.perf_counter() - start))
    result = {name: round(statistics.median(values), 2) for name, values in times.items()}
    print(f"\nPrompt -> mask on a cached embedding, median ms over {len(embedded)} boxes x {rounds} rounds "
          f"({threads} threads)")
    for name, ms in result.items():
        print(f"  {name:40s} {ms:7.2f}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 structures, 3 slices each, fewer latency rounds")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--out", type=Path, help="keep the case files and rows.csv here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--stages", default="accuracy,latency", help="accuracy, latency or both (default)")
    args = parser.parse_args(argv)
    stages = set(args.stages.split(","))
    if not stages <= {"accuracy", "latency"}:
        parser.error("--stages takes accuracy and/or latency")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result: dict[str, object] = {"date": date.today().isoformat(), "machine": platform.machine(),
                                 "cpu_count": os.cpu_count(), "threads": args.threads, "quick": args.quick}
    if "accuracy" in stages:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.out or Path(tmp)
            rows = accuracy(folder, args.quick, args.threads)
            if args.out:
                write_csv(rows, folder / "rows.csv", (*COLUMNS, "structure", "group", "boxes"))
        summary = summarize(rows)
        print_accuracy(summary)
        result.update(summary=summary, per_structure=per_structure(rows))
    if "latency" in stages:
        result["latency_ms"] = latency(args.threads, 3 if args.quick else 10)
    model = load_model("litemedsam", device="cpu")
    result.update(encoder_backend=model.backend, seconds=round(time.perf_counter() - start, 1))
    print(f"total {result['seconds']} s on {platform.machine()} with {args.threads} torch threads, encoder backend "
          f"{model.backend}; load average {[round(x, 1) for x in os.getloadavg()]}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
