"""``demo OUTDIR``: the main job on a real sample volume, end to end.

Writes the MNI152 T1 template (shipped with nilearn) to OUTDIR, prompts the
embedded LiteMedSAM with one box around the cerebellum on its middle axial slice,
propagates up and down within the posterior fossa's slice range (as a user limits
propagation to the slices of a structure; above it the cerebellum meets the
cerebrum with no edge LiteMedSAM stops at), and writes the
segmentation (.seg.nrrd for Slicer and .nii.gz), a PNG overlay of the seed slice,
and the 3D Dice against a reference: nilearn's brain mask in the posterior fossa
(axial slices k <= 32, below the temporal lobes, and j <= 115), largest component,
i.e. cerebellum and lower brain stem. That mask comes from a tissue probability
map, so it is an imperfect ground truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..io.outputs import StagedOutputs, new_folders
from . import checks, interrupts, strict_json
from .engine import add_server_options, check_server_args, opened_volume
from .options import add_model_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="segment the cerebellum in the MNI152 sample volume and write the results",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", type=Path, nargs="?", default=Path("output"), help="output folder (default: output)")
    p.add_argument("--json", action="store_true", help="print one JSON summary object last")
    add_model_options(p)
    add_server_options(p)
    p.set_defaults(run=run)


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\rpropagating: {done}/{total} slices")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    with new_folders(args.outdir), StagedOutputs() as staged:
        check_server_args(args)
        if args.server is None:
            checks.weights_and_device(args)
        summary = _demo(args, staged)
        interrupts.finishing()
        staged.commit()
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(f"cerebellum segmented on {summary['slices_segmented']} slices in {summary['seconds']} s; "
          f"3D Dice {summary['dice_vs_reference']:.3f} against the reference; results in {args.outdir}/")
    if args.json:
        print(strict_json.dumps(summary))
    return 0


def _demo(args: argparse.Namespace, staged: StagedOutputs) -> dict:
    """Stage the demo's files in ``staged``; returns the summary."""
    from ..evaluation.overlay import overlay_rgb, write_png
    from ..io.sample_data import write_sample
    from ..io.volumes import read_volume, verify_written, write_labels
    from ..metrics import dice
    from ..prompts import Prompt, box_from_mask
    from ..propagation.postprocess import largest_component
    from ..volume import occupied_slices, take_slice
    from ..windowing import parse_window

    volume, geometry = read_volume(write_sample("mni152", args.outdir / "mni152_t1.nii.gz", staged))
    brain = read_volume(write_sample("mni152_brain", args.outdir / "mni152_brain_mask.nii.gz", staged))[0] > 0
    k, j, _ = np.indices(brain.shape, sparse=True)
    reference = largest_component(brain & (k <= 32) & (j <= 115))
    axis = 0
    slices = occupied_slices(reference, axis)
    seed = int(slices[len(slices) // 2])
    prompt = Prompt(box=box_from_mask(take_slice(reference, axis, seed)))
    with opened_volume(args, volume, "auto") as (predictor, where):
        result = predictor.propagate(axis, seed, seed_prompt=prompt, direction="both",
                                     slice_range=(int(slices[0]), int(slices[-1])), progress=_progress)
    sys.stderr.write("\n")
    labels = result.mask.astype(np.uint8)
    write_labels(args.outdir / "cerebellum.seg.nrrd", labels, geometry, names={1: "cerebellum"}, staging=staged)
    write_labels(args.outdir / "cerebellum.nii.gz", labels, geometry, staging=staged)
    image = parse_window("auto", volume).apply(take_slice(volume, axis, seed))
    picture = overlay_rgb(image, take_slice(result.mask, axis, seed), prompt,
                          reference=take_slice(reference, axis, seed))
    staged.write(args.outdir / "seed_slice.png", lambda path: verify_written(write_png(path, picture)))
    return {"outdir": str(args.outdir), **where, "seed_slice": seed,
            "slices_segmented": int(result.mask.any(axis=(1, 2)).sum()), "encoder_calls": result.encoder_calls,
            "dice_vs_reference": round(dice(result.mask, reference), 4), "stop_reasons": result.stop_reasons}
