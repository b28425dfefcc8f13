"""Evaluation runner and CLI on real data (MNI152 from nilearn) with the real embedded LiteMedSAM.

The target: the two temporal poles of the MNI152 template, cut from nilearn's brain mask where
they are separate from the rest of the brain (labels 1 and 2), in a 14-slice crop. The mask is
thresholded from a tissue probability map, so it is an imperfect ground truth.
"""

import csv
import io
import json
import math
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SAMSegmenterLib import cli
from SAMSegmenterLib.cli.evaluate import ProgressBar
from SAMSegmenterLib.errors import InputError, SAMSegmenterError
from SAMSegmenterLib.evaluation.evaluate import (
    COLUMNS,
    SELECTIONS,
    Case,
    EvalConfig,
    evaluate_case,
    find_cases,
    local_executor,
    run_evaluation,
    seed_slice,
)
from SAMSegmenterLib.evaluation.protocols import tight_box
from SAMSegmenterLib.evaluation.report import plot_boxplots, summarize, write_csv
from SAMSegmenterLib.io import Geometry, read_volume, write_labels
from SAMSegmenterLib.metrics import dice
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt

REPO = Path(__file__).resolve().parents[2]
CROP = np.s_[16:30, 100:170, 25:175]  # [k, j, i] of the 197 x 233 x 189 template


@pytest.fixture(scope="module")
def poles(tmp_path_factory, mni152, mni152_masks):
    """(Case, label array [k, j, i]) of the temporal-pole crop, written as NIfTI files."""
    image, geometry = mni152
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mni152_masks["brain"][CROP].astype(np.uint8)))
    components = sitk.GetArrayFromImage(sitk.RelabelComponent(components))
    labels = np.zeros(components.shape, np.uint8)
    poles = [c for c in (1, 2, 3) if not (components == c)[:, 0, :].any()]  # the third piece touches the crop edge
    assert len(poles) == 2
    for value, component in enumerate(sorted(poles, key=lambda c: np.argwhere(components == c)[:, 2].mean()), 1):
        labels[components == component] = value
    full = geometry.apply(sitk.GetImageFromArray(image))
    k, j, i = (s.start for s in CROP)
    crop_geometry = Geometry(geometry.spacing, full.TransformIndexToPhysicalPoint((i, j, k)), geometry.direction)
    folder = tmp_path_factory.mktemp("poles")
    sitk.WriteImage(crop_geometry.apply(sitk.GetImageFromArray(image[CROP])), str(folder / "poles_image.nii.gz"))
    write_labels(folder / "poles_label.nii.gz", labels, crop_geometry)
    return Case("poles", folder / "poles_image.nii.gz", folder / "poles_label.nii.gz"), labels


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _run_cli(argv):
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(argv)
    return code, out.getvalue()


# --- inputs ---------------------------------------------------------------------------------

def _touch_volume(path, shape=(4, 5, 6), spacing=(1.0, 1.0, 1.0), value=1):
    array = np.zeros(shape, np.uint8)
    array[1:3, 1:3, 1:3] = value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_find_cases_csv_and_folders(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        _touch_volume(tmp_path / "images" / f"{name}_0000.nii.gz")
        _touch_volume(tmp_path / "labels" / f"{name}.nii.gz")
    assert [(c.name, c.image.name, c.label.name) for c in find_cases(tmp_path)] == [
        ("a", "a_0000.nii.gz", "a.nii.gz"), ("b", "b_0000.nii.gz", "b.nii.gz")]

    flat = tmp_path / "flat"
    flat.mkdir()
    _touch_volume(flat / "x_image.nrrd")
    _touch_volume(flat / "x_label.nrrd")
    assert [(c.name, c.label.name) for c in find_cases(flat)] == [("x", "x_label.nrrd")]

    listing = tmp_path / "list.csv"
    listing.write_text("image,label,case\nimages/a_0000.nii.gz,labels/a.nii.gz,first\n"
                       "images/b_0000.nii.gz,labels/b.nii.gz,\n")
    cases = find_cases(listing)
    assert [c.name for c in cases] == ["first", "b_0000"]
    assert cases[0].image == tmp_path / "images" / "a_0000.nii.gz"


def test_find_cases_errors(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _touch_volume(tmp_path / "images" / "lonely.nii.gz")
    with pytest.raises(InputError, match="no label volume.*lonely"):
        find_cases(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("img,lab\na,b\n")
    with pytest.raises(InputError, match="'image' and 'label'"):
        find_cases(bad)
    twice = tmp_path / "twice.csv"
    twice.write_text("image,label,case\na.nii.gz,b.nii.gz,same\nc.nii.gz,d.nii.gz,same\n")
    with pytest.raises(InputError, match="repeated: same"):
        find_cases(twice)
    with pytest.raises(InputError, match="neither"):
        find_cases(tmp_path / "missing")


def test_geometry_mismatch_and_missing_label_value_are_clear_errors(tmp_path):
    image = _touch_volume(tmp_path / "img.nii.gz")
    other_spacing = _touch_volume(tmp_path / "lab_spacing.nii.gz", spacing=(1.0, 1.0, 2.5))
    other_size = _touch_volume(tmp_path / "lab_size.nii.gz", shape=(4, 5, 7))
    config = EvalConfig()
    with pytest.raises(InputError, match=r"not on the same voxel grid: spacing \(1.0, 1.0, 1.0\) vs \(1.0, 1.0, 2.5\)"):
        evaluate_case(Case("c", image, other_spacing), config)
    with pytest.raises(InputError, match="not on the same voxel grid: size"):
        evaluate_case(Case("c", image, other_size), config)
    label = _touch_volume(tmp_path / "lab.nii.gz", value=3)
    with pytest.raises(InputError, match=r"label value\(s\) 5 not found in lab.nii.gz \(values present: 3\)"):
        evaluate_case(Case("c", image, label), EvalConfig(labels=(5,)))
    # Through the command line: one line on stderr, exit code 2, nothing on stdout.
    code, stdout = _run_cli(["evaluate", "--image", str(image), "--label", str(other_spacing),
                             "--out", str(tmp_path / "out")])
    assert code == 2 and stdout == ""


def test_protocols_the_model_cannot_take_are_refused():
    assert EvalConfig().protocols == ("box", "box_jitter")  # LiteMedSAM takes boxes only
    assert "center" in EvalConfig(model="sam_vit_b").protocols
    with pytest.raises(InputError, match="points3.*box prompts only"):
        EvalConfig(protocols=("box", "points3"))
    with pytest.raises(InputError, match="unknown"):
        EvalConfig(protocols=("lasso",))


def test_jitter_and_tolerance_are_checked_before_any_model():
    with pytest.raises(InputError, match="box_jitter range must be >= 0"):
        EvalConfig(jitter_px=-5)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="NSD tolerance"):
            EvalConfig(tolerance_mm=bad)


def test_structure_sets_the_propagation_of_propagate3d(tmp_path, capsys):
    from SAMSegmenterLib.cli.evaluate import preflight
    from SAMSegmenterLib.propagation import PropagationOptions, structure_options

    image, label = _touch_volume(tmp_path / "i.nii.gz"), _touch_volume(tmp_path / "l.nii.gz")
    base = ["evaluate", "--image", str(image), "--label", str(label), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert preflight(cli.build_parser().parse_args(base))[1].propagation == PropagationOptions()
    chosen = base + ["--protocol", "propagate3d", "--structure", "compact"]
    assert preflight(cli.build_parser().parse_args(chosen))[1].propagation == structure_options("compact")
    assert cli.main(base + ["--structure", "compact"]) == 2
    assert "--structure compact applies to the propagate3d protocol" in capsys.readouterr().err


def test_progress_bar_draws_in_place():
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10, enabled=True)
    bar(3, 6, "case")
    bar(6, 6, "case")
    bar.close()
    text = stream.getvalue()
    assert "\r[#####-----] 3/6 case" in text and "\r[##########] 6/6 case" in text and text.endswith("\n")
    silent = io.StringIO()
    ProgressBar(silent, enabled=False)(1, 2, "x")
    assert silent.getvalue() == ""


def test_summary_statistics_by_hand_with_an_empty_prediction(tmp_path):
    def row(label, dice_value, hd):
        return {"case": "c", "label": label, "axis": "K", "slice": 0, "scope": "slice", "protocol": "box",
                "selection": "single", "dice": dice_value, "iou": dice_value / (2 - dice_value), "hd95": hd,
                "nsd": dice_value, "score": 0.5, "ref_voxels": 10, "pred_voxels": 10}

    rows = [row(1, 0.2, 4.0), row(1, 0.6, 2.0), row(1, 1.0, 0.0), row(2, 0.0, math.inf), row(2, 0.8, 1.0)]
    summary = {(s["label"], s["protocol"]): s for s in summarize(rows)}
    one = summary[(1, "box")]
    assert one["n"] == 3 and one["dice_median"] == pytest.approx(0.6) and one["dice_mean"] == pytest.approx(0.6)
    assert (one["dice_q1"], one["dice_q3"]) == (pytest.approx(0.4), pytest.approx(0.8))
    two = summary[(2, "box")]
    assert two["hd95_inf"] == 1 and two["hd95_mean"] == pytest.approx(1.0)  # HD95 stats over finite values
    pooled = summary[("all", "box")]
    assert pooled["n"] == 5 and pooled["hd95_inf"] == 1 and pooled["dice_median"] == pytest.approx(0.6)
    write_csv(rows, tmp_path / "cases.csv", COLUMNS)
    assert [r["hd95"] for r in _read_csv(tmp_path / "cases.csv")] == ["4", "2", "0", "inf", "1"]


def test_figures_without_matplotlib_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(SAMSegmenterError, match="pip install matplotlib"):
        plot_boxplots([], tmp_path / "b.png")


# --- real model, real data ------------------------------------------------------------------

def test_cli_end_to_end_on_mni152_poles(poles, tmp_path, litemedsam):
    case, labels = poles
    out = tmp_path / "out"
    code, stdout = _run_cli(["evaluate", "--image", str(case.image), "--label", str(case.label), "--every", "5",
                             "--out", str(out), "--overlays", "1", "--device", "cpu", "--json"])
    assert code == 0
    summary_line = json.loads(stdout.strip().splitlines()[-1])
    rows = _read_csv(out / "cases.csv")
    assert list(rows[0]) == list(COLUMNS)
    # Every 5th of the slices holding each label (2 of 10), 2 protocols (LiteMedSAM: boxes only), 4 selections.
    expected = {(value, int(k)) for value in (1, 2)
                for k in np.flatnonzero((labels == value).any(axis=(1, 2)))[::5]}
    assert {(int(r["label"]), int(r["slice"])) for r in rows} == expected
    assert len(rows) == len(expected) * 2 * 4 == summary_line["rows"]
    assert {r["protocol"] for r in rows} == {"box", "box_jitter"}
    assert {r["selection"] for r in rows} == set(SELECTIONS)
    for r in rows:
        assert 0 <= float(r["dice"]) <= 1 and 0 <= float(r["nsd"]) <= 1 and float(r["hd95"]) >= 0
        assert int(r["ref_voxels"]) == int((labels[int(r["slice"])] == int(r["label"])).sum())
    # Every selection chooses among the same four candidates, so the oracle is at least as good as each.
    by_key = {(r["label"], r["slice"], r["protocol"], r["selection"]): float(r["dice"]) for r in rows}
    for (label, index, protocol, selection), value in by_key.items():
        assert value <= by_key[(label, index, protocol, "oracle")]
    # The model really segments: a tight box on these compact structures gives a good Dice.
    box_single = [float(r["dice"]) for r in rows if r["protocol"] == "box" and r["selection"] == "single"]
    assert np.median(box_single) > 0.6
    # A row's Dice is the Dice of that prediction, recomputed here independently of the runner; box_fit
    # is what the predictor gives a box by default.
    row = next(r for r in rows if r["protocol"] == "box" and r["selection"] == "box_fit")
    index, value = int(row["slice"]), int(row["label"])
    image, _ = read_volume(case.image)
    reference = labels[index] == value
    mask = SlicePredictor(litemedsam, image).predict(0, index, Prompt(box=tight_box(reference))).mask
    assert dice(mask, reference) == pytest.approx(float(row["dice"]), abs=1e-4)

    summary = _read_csv(out / "summary.csv")
    groups = {(s["protocol"], s["selection"], s["label"]) for s in summary}
    assert ("box", "single", "all") in groups and ("box_jitter", "oracle", "2") in groups
    pooled = next(s for s in summary if (s["protocol"], s["selection"], s["label"]) == ("box", "single", "all"))
    assert int(pooled["n"]) == len(box_single)
    assert float(pooled["dice_median"]) == pytest.approx(np.median(box_single), abs=1e-5)
    assert float(pooled["dice_q1"]) <= float(pooled["dice_median"]) <= float(pooled["dice_q3"])
    for name in ("boxplots.png", "overlays.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert json.loads((out / "run.json").read_text())["config"]["every"] == 5


def test_torch_threads_hold_while_a_case_runs_and_the_callers_count_comes_back(poles):
    import torch

    case, _ = poles
    before = torch.get_num_threads()
    seen = []
    config = EvalConfig(slices="largest", labels=(1,), device="cpu", torch_threads=before + 1)
    rows = evaluate_case(case, config, progress=lambda done, total: seen.append(torch.get_num_threads()))
    assert rows and seen == [before + 1]
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_propagate3d_scored_per_object_in_3d(poles):
    case, labels = poles
    rows = evaluate_case(case, EvalConfig(protocols=("propagate3d",), labels=(1,), device="cpu"))
    assert len(rows) == 1
    row = rows[0]
    reference = labels == 1
    assert (row["scope"], row["selection"]) == ("object", "single")
    assert row["slice"] == seed_slice(reference, 0)
    assert row["ref_voxels"] == int(reference.sum())  # the whole 3D object, not one slice
    assert row["pred_voxels"] > 0 and 0.0 <= row["nsd"] <= 1.0 and math.isfinite(row["hd95"])
    assert row["dice"] > 0.5


@pytest.mark.slow
def test_process_pool_gives_the_rows_of_a_serial_run(poles, tmp_path):
    case, _ = poles
    other = Case("poles_again", case.image, case.label)
    config = EvalConfig(slices="largest", device="cpu")
    serial = run_evaluation([case, other], config)
    with local_executor(2) as executor:
        assert isinstance(executor, ProcessPoolExecutor)
        seen = []
        pooled = run_evaluation([case, other], replace(config, torch_threads=1), executor,
                                progress=lambda d, t, n: seen.append((d, t)))
    assert sorted(seen) == [(1, 2), (2, 2)]
    assert [r["case"] for r in pooled] == [r["case"] for r in serial]
    for a, b in zip(serial, pooled):
        assert {k: a[k] for k in COLUMNS if k not in ("dice", "iou", "hd95", "nsd", "score", "pred_voxels")} == \
               {k: b[k] for k in COLUMNS if k not in ("dice", "iou", "hd95", "nsd", "score", "pred_voxels")}
        assert b["dice"] == pytest.approx(a["dice"], abs=0.02)  # thread counts may flip a border pixel


@pytest.mark.slow
def test_dask_example_on_a_local_cluster(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "examples" / "evaluate_dask.py"), "--demo", "--largest",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["workers"] == 2 and summary["cases"] == 2
    rows = _read_csv(tmp_path / "cases.csv")
    assert {r["case"] for r in rows} == {"temporal_poles", "posterior_fossa"}
    assert len(rows) == summary["rows"] == (2 + 1) * 2 * 4  # 3 labels, largest slice, 2 protocols, 4 selections


@pytest.mark.slow
def test_every_2d_protocol_runs_on_a_point_capable_model(poles, tmp_path):
    """SAM ViT-B with its initial weights (the official ones cannot be downloaded here), saved as a
    user's checkpoint: the point protocols go through the real engine; mask quality is not tested."""
    import torch

    from SAMSegmenterLib.evaluation.protocols import SLICE_PROTOCOLS
    from SAMSegmenterLib.models import loaded_models, unload_model
    from SAMSegmenterLib.models import segment_anything as _segment_anything

    case, _ = poles
    torch.manual_seed(0)
    network = _segment_anything.build_sam().sam_model_registry["vit_b"](checkpoint=None)
    checkpoint = tmp_path / "sam_vit_b_initial.pth"
    torch.save(network.state_dict(), checkpoint)
    del network
    config = EvalConfig(model="sam_vit_b", checkpoint=str(checkpoint), device="cpu", labels=(2,), slices="largest")
    assert config.protocols == SLICE_PROTOCOLS
    try:
        rows = evaluate_case(case, config)
    finally:
        for model in [m for m in loaded_models() if m.name == "sam_vit_b"]:
            unload_model(model)
    with_box = ("box", "box_jitter", "box_points")  # box_fit needs a box
    assert [(r["protocol"], r["selection"]) for r in rows] == [(p, s) for p in SLICE_PROTOCOLS for s in SELECTIONS
                                                               if s != "box_fit" or p in with_box]
    assert len({r["slice"] for r in rows}) == 1
    for r in rows:
        assert 0 <= r["dice"] <= 1 and 0 <= r["nsd"] <= 1 and r["hd95"] >= 0
