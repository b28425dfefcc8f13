"""Run the SAMSegmenter evaluation on a Dask cluster.

The evaluation's unit of work is ``evaluate_case(case, config) -> rows``, a plain function of
picklable arguments; ``run_evaluation`` accepts any ``concurrent.futures.Executor``. Dask's
``Client.get_executor()`` is one, so the cluster does the scheduling and nothing here does.
Each Dask worker process loads the model once (``load_model`` caches it per process).

  # local cluster of 2 worker processes, 1 thread each, on demo cases built from MNI152:
  python examples/evaluate_dask.py --demo --out dask_out

  # an existing cluster (every worker needs SAMSegmenterLib installed, e.g. `pip install .`
  # in this repository, and must see the case files at the same paths, e.g. a shared disk):
  python examples/evaluate_dask.py --scheduler tcp://scheduler:8786 --cases cases.csv --out dask_out

Writes cases.csv and summary.csv to --out and prints a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1] / "SAMSegmenter"
if MODULE_DIR.is_dir() and str(MODULE_DIR) not in sys.path:  # running from a source checkout
    sys.path.insert(0, str(MODULE_DIR))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(MODULE_DIR), os.environ.get("PYTHONPATH")]))

import numpy as np  # noqa: E402
from dask.distributed import Client, LocalCluster  # noqa: E402

from SAMSegmenterLib.evaluation.evaluate import COLUMNS, Case, EvalConfig, find_cases, run_evaluation  # noqa: E402
from SAMSegmenterLib.evaluation.report import SUMMARY_COLUMNS, summarize, write_csv  # noqa: E402
from SAMSegmenterLib.io import Geometry, write_labels  # noqa: E402
from SAMSegmenterLib.propagation.plan import STRUCTURES, structure_options  # noqa: E402


def demo_cases(folder: Path) -> list[Case]:
    """Two cases cut from the MNI152 template (nilearn, offline) with labels from its brain mask.

    ``temporal_poles``: the two temporal poles in the axial slices where they are separate from
    the rest of the brain (labels 1 and 2, the pieces of the brain mask in the crop that do not
    reach its posterior face); ``posterior_fossa``: the brain in the lowest axial slices
    (cerebellum and brain stem, label 1). The mask comes from a tissue probability map, so it is
    an imperfect ground truth.
    """
    import SimpleITK as sitk

    from SAMSegmenterLib.io.sample_data import load_sample

    image, geometry = load_sample("mni152")
    brain = load_sample("mni152_brain")[0] > 0
    reference = geometry.apply(sitk.GetImageFromArray(image))
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, (k0, k1, j0, j1, i0, i1) in (("temporal_poles", (16, 30, 100, 170, 25, 175)),
                                           ("posterior_fossa", (6, 22, 40, 125, 40, 160))):
        crop = np.s_[k0:k1, j0:j1, i0:i1]
        pieces = sitk.ConnectedComponent(sitk.GetImageFromArray(brain[crop].astype(np.uint8)))
        components = sitk.GetArrayFromImage(pieces)
        if name == "temporal_poles":
            keep = [c for c in np.unique(components) if c and not (components[:, 0, :] == c).any()]
        else:
            keep = [int(np.argmax(np.bincount(components[components > 0])))]  # the largest piece
        labels = np.zeros(components.shape, np.uint8)
        for value, component in enumerate(sorted(keep, key=lambda c: np.argwhere(components == c)[:, 2].mean()), 1):
            labels[components == component] = value  # numbered along i
        crop_geometry = Geometry(geometry.spacing, reference.TransformIndexToPhysicalPoint((i0, j0, k0)),
                                 geometry.direction)
        image_path, label_path = folder / f"{name}_image.nii.gz", folder / f"{name}_label.nii.gz"
        sitk.WriteImage(crop_geometry.apply(sitk.GetImageFromArray(image[crop])), str(image_path))
        write_labels(label_path, labels, crop_geometry)
        cases.append(Case(name, image_path, label_path))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cases", type=Path, help="CSV of image,label pairs or a folder (as `evaluate --cases`)")
    source.add_argument("--demo", action="store_true", help="build two small MNI152 cases in --out/demo_cases")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster worker processes (default 2)")
    parser.add_argument("--protocol", action="append", dest="protocols", help="as `evaluate --protocol`")
    parser.add_argument("--every", type=int, default=4, help="every Nth labelled slice (default 4)")
    parser.add_argument("--largest", action="store_true", help="only the largest slice of each label")
    parser.add_argument("--structure", choices=STRUCTURES, default="anatomy",
                        help="what the labels are, for propagate3d (as `evaluate --structure`)")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    cases = demo_cases(args.out / "demo_cases") if args.demo else find_cases(args.cases)
    config = EvalConfig(protocols=tuple(args.protocols) if args.protocols else None, every=args.every,
                        slices="largest" if args.largest else "all", device="cpu", torch_threads=1,
                        propagation=structure_options(args.structure))
    start = time.perf_counter()
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    with client:
        workers = len(client.scheduler_info()["workers"])
        executor = client.get_executor()
        rows = run_evaluation(cases, config, executor,
                              progress=lambda done, total, name: print(f"{done}/{total} cases done ({name})",
                                                                       file=sys.stderr))
        if not args.scheduler:
            cluster.close()
    summary = summarize(rows)
    write_csv(rows, args.out / "cases.csv", COLUMNS)
    write_csv(summary, args.out / "summary.csv", SUMMARY_COLUMNS)
    elapsed = time.perf_counter() - start
    pooled = [s for s in summary if s["label"] == "all"] or summary
    for s in pooled:
        print(f"{s['protocol']:<12} {s['selection']:<11} label {s['label']!s:<4} n={s['n']:<4} "
              f"median Dice {s['dice_median']:.3f}")
    print(json.dumps({"cases": len(cases), "rows": len(rows), "workers": workers, "elapsed_s": round(elapsed, 1),
                      "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
