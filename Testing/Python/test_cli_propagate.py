"""``segment ... --propagate`` on a real volume file: the 3D result, progress on stderr, the JSON summary, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import dice

from SAMSegmenterLib.cli import main
from SAMSegmenterLib.prompts import box_from_mask
from SAMSegmenterLib.propagation.postprocess import largest_component

CROP = (slice(4, 30), slice(20, 140), slice(30, 170))  # low axial slices of MNI152: cerebellum and brainstem
SEED = 12  # slice index in the cropped volume (k = 16 in the template)


@pytest.fixture(scope="module")
def case(tmp_path_factory, mni152, mni152_masks):
    """The crop as NIfTI with its own spacing/origin, and the cerebellum reference (see test_propagation)."""
    volume, _ = mni152
    brain = mni152_masks["brain"]
    k, j, _ = np.indices(brain.shape, sparse=True)
    reference = largest_component(brain & (k <= 32) & (j <= 115))[CROP]
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume[CROP]))
    image.SetSpacing((1.0, 1.0, 1.5))
    image.SetOrigin((3.0, -4.0, 10.0))
    path = tmp_path_factory.mktemp("propagate") / "crop.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, reference


def _box(reference: np.ndarray) -> list[str]:
    return [str(int(v)) for v in box_from_mask(reference[SEED])]


@pytest.mark.slow
def test_propagate_writes_the_range(case, tmp_path, capsys):
    path, reference = case
    out = tmp_path / "labels.nii.gz"
    code = main(["segment", str(path), str(out), "--slice", str(SEED), "--box", *_box(reference),
                 "--propagate", "--range", "10", "14", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    prop = summary["propagation"]
    assert prop["direction"] == "both" and prop["range"] == [10, 14] and prop["slices"] == [10, 14]
    assert prop["structure"] == "anatomy"
    assert prop["slices_segmented"] == 5 and prop["slices_visited"] == 5
    assert prop["encoder_calls"] <= prop["slices_visited"]
    assert prop["stop_reasons"] == {"up": "range_end", "down": "range_end"}
    assert prop["last"] == {"up": 14, "down": 10}
    assert sorted(prop["confidence"]) == ["10", "11", "13", "14"]  # every propagated slice, not the seed
    assert all(0 <= c <= 1 for c in prop["confidence"].values())
    assert set(prop["unsure_slices"]) <= {10, 11, 13, 14}
    assert 0 < prop["mean_score"] <= 1 and "propagate_s" in summary["timings"]
    assert "propagation: 4/4 slices" in captured.err  # progress on stderr, not stdout
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert labels.shape == reference.shape and labels.sum() == summary["voxels"]
    segmented = np.flatnonzero(labels.any(axis=(1, 2)))
    assert segmented.tolist() == [10, 11, 12, 13, 14]
    assert dice(labels[10:15] > 0, reference[10:15]) > 0.85  # measured 0.96
    assert sitk.ReadImage(str(out)).GetSpacing() == (1.0, 1.0, 1.5)


def test_propagate_up_only_with_postprocessing(case, tmp_path, capsys):
    path, reference = case
    out = tmp_path / "up.nii.gz"
    code = main(["segment", str(path), str(out), "--slice", str(SEED), "--box", *_box(reference),
                 "--propagate", "--direction", "up", "--range", "0", "14", "--largest-3d", "--fill-holes"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    assert np.flatnonzero(labels.any(axis=(1, 2))).tolist() == [12, 13, 14]
    assert np.array_equal(labels, largest_component(labels))
    assert "stopped" in captured.out and "down: direction 'up' (not_requested)" in captured.out


@pytest.mark.parametrize("args, message", [
    (["--range", "10", "14"], "only apply with --propagate"),
    (["--direction", "up"], "only apply with --propagate"),
    (["--structure", "compact"], "--structure compact only apply with --propagate"),
    (["--propagate", "--range", "10", "99"], "outside the volume"),
    (["--propagate", "--range", "0", "5"], "seed slice 12 lies outside the slice range 0..5"),
    (["--propagate", "--selection", "best_score"], "cannot be combined with --propagate"),
    (["--propagate", "--propagation-prompt", "box+points"], "box prompts only"),
])
def test_propagation_errors_are_one_line(case, tmp_path, capsys, args, message):
    path, reference = case
    code = main(["segment", str(path), str(tmp_path / "x.nii.gz"), "--slice", str(SEED), "--box",
                 *_box(reference), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.nii.gz").exists()


def test_propagation_options_reach_the_walk():
    """Every propagation flag lands in PropagationOptions (the defaults are the engine's)."""
    from SAMSegmenterLib.cli import build_parser
    from SAMSegmenterLib.cli.segment import _propagation_options
    from SAMSegmenterLib.propagation import PropagationOptions, structure_options

    base = ["segment", "in.nii.gz", "out.nii.gz", "--slice", "3", "--box", "1", "1", "5", "5", "--propagate"]
    assert _propagation_options(build_parser().parse_args(base)) == PropagationOptions()
    args = build_parser().parse_args(base + ["--box-margin", "3", "--box-fraction", "0.1", "--shrink-fraction", "0",
                                             "--max-intensity-shift", "0", "--min-iou", "0.3"])
    options = _propagation_options(args)
    assert (options.box_margin, options.box_fraction, options.shrink_fraction) == (3, 0.1, 0)
    assert options.max_intensity_shift is None and options.min_iou == 0.3
    compact = base + ["--structure", "compact"]
    assert _propagation_options(build_parser().parse_args(compact)) == structure_options("compact")
    margin = _propagation_options(build_parser().parse_args(compact + ["--box-margin", "5"]))  # a flag wins
    assert (margin.box_margin, margin.shrink_fraction) == (5, structure_options("compact").shrink_fraction)
    for value, expected in (("off", None), ("OFF", None), ("0", 0.0), ("0.2", 0.2)):
        for structure in ([], ["--structure", "compact"]):
            chosen = _propagation_options(build_parser().parse_args(base + structure + ["--candidate-margin", value]))
            assert chosen.candidate_margin == expected
    assert _propagation_options(build_parser().parse_args(compact)).candidate_margin is None
    with pytest.raises(SystemExit):  # argparse's usage error
        build_parser().parse_args(base + ["--candidate-margin", "never"])
