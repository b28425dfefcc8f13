"""The ``segment`` command on real files: geometry kept, formats, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import MODULE_DIR, dice

from SAMSegmenterLib.cli import main
from SAMSegmenterLib.io import read_volume


def _rotation(ax: float, ay: float, az: float) -> tuple[float, ...]:
    """An exactly orthonormal direction matrix (radians about x, y, z), flattened row-major."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return tuple((rz @ ry @ rx).ravel())


OBLIQUE = _rotation(0.15, 0.2, 0.3)


@pytest.fixture(scope="module")
def oblique_volume(tmp_path_factory, mni152):
    """A crop of the MNI152 template with anisotropic spacing and an oblique direction, as NRRD."""
    volume, _ = mni152
    crop = np.ascontiguousarray(volume[60:66, 40:190, 20:180])
    image = sitk.GetImageFromArray(crop)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-12.5, 30.25, 7.0))
    image.SetDirection(OBLIQUE)
    path = tmp_path_factory.mktemp("cli") / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(MODULE_DIR), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "SAMSegmenterLib", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("suffix", [".nii.gz", ".seg.nrrd"])
def test_segment_keeps_geometry(oblique_volume, tmp_path, suffix):
    out = tmp_path / f"labels{suffix}"
    done = _run("segment", str(oblique_volume), str(out), "--slice", "3", "--box", "20", "15", "140", "130", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["slice"] == 3 and summary["voxels"] > 1000 and 0 < summary["score"] <= 1
    assert summary["selection"] == "box_fit" and summary["candidate"] in (0, 1, 2, 3)  # the default for a box
    assert set(summary["timings"]) >= {"load_s", "predict_s", "total_s"}
    source = sitk.ReadImage(str(oblique_volume))
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == source.GetSize()
    np.testing.assert_allclose(labels.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(labels.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(labels.GetDirection(), source.GetDirection(), atol=1e-5)
    array = sitk.GetArrayFromImage(labels)
    assert array.sum() == summary["voxels"]
    assert array[3].sum() == summary["voxels"]  # only the prompted slice
    rows, cols = np.nonzero(array[3])
    assert cols.min() >= 10 and cols.max() <= 150 and rows.min() >= 5 and rows.max() <= 140


def test_seg_nrrd_is_a_slicer_segmentation(oblique_volume, tmp_path):
    """The .seg.nrrd output loads as a segmentation in Slicer's own MRML code (slicer-core)."""
    slicer = pytest.importorskip("slicer")
    out = tmp_path / "labels.seg.nrrd"
    assert main(["segment", str(oblique_volume), str(out), "--slice", "2", "--box", "20", "15", "140", "130"]) == 0
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(out))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    assert segmentation.GetNthSegment(0).GetName() == "Segment_1"


def _assert_fails(capsys, tmp_path, args, message):
    out = tmp_path / "never.nii.gz"
    code = main([*args[:1], *(a.replace("OUT", str(out)) for a in args[1:])])
    err = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: "))
    assert code == 2
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".partial-*"))


def test_error_paths(oblique_volume, tmp_path, capsys):
    vol = str(oblique_volume)
    _assert_fails(capsys, tmp_path, ["segment", str(tmp_path / "missing.nrrd"), "OUT", "--box", "1", "1", "5", "5"],
                  "does not exist")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not an image")
    _assert_fails(capsys, tmp_path, ["segment", str(junk), "OUT", "--box", "1", "1", "5", "5"], "cannot read")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT"], "no prompt")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--slice", "6", "--box", "1", "1", "5", "5"],
                  "slice 6 is outside")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--box", "1", "1", "500", "5"], "outside the 160 x 150")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--box", "50", "1", "5", "5"], "inverted")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--point", "5", "5", "2"], "label must be 1")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--point", "5", "5", "1"], "box prompts only")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--box", "1", "1", "5", "5", "--checkpoint",
                                     str(junk)], "is not a PyTorch weights file")
    import torch

    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--box", "1", "1", "5", "5", "--device", "cuda:7"],
                  "does not exist" if torch.cuda.is_available() else "CUDA is not available")
    _assert_fails(capsys, tmp_path, ["segment", vol, "OUT", "--box", "1", "1", "5", "5", "--window", "9,2"],
                  "unknown window")
    bad_out = tmp_path / "labels.png"
    assert main(["segment", vol, str(bad_out), "--box", "1", "1", "5", "5"]) == 2
    assert "must end with" in capsys.readouterr().err and not bad_out.exists()


def test_selection_option(oblique_volume, tmp_path, capsys):
    """--selection picks which of the decoder's four masks is written; the summary says which."""
    written = {}
    for rule in ("single", "best_score", "box_fit"):
        out = tmp_path / f"{rule}.nii.gz"
        args = ["segment", str(oblique_volume), str(out), "--slice", "3", "--box", "20", "15", "140", "130",
                "--selection", rule, "--json"]
        assert main(args) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["selection"] == rule
        assert summary["candidate"] in {"single": {0}, "best_score": {1, 2, 3}, "box_fit": {0, 1, 2, 3}}[rule]
        written[rule] = (summary["candidate"], read_volume(out)[0][3] > 0)
    for rule, (candidate, mask) in written.items():
        same = [other for other, (c, _) in written.items() if c == candidate]
        for other in same:
            assert np.array_equal(mask, written[other][1])  # the same candidate gives the same mask
    assert dice(written["single"][1], written["best_score"][1]) < 1.0  # different candidates differ
    _assert_fails(capsys, tmp_path, ["segment", str(oblique_volume), "OUT", "--point", "5", "5", "1",
                                     "--selection", "box_fit"], "--selection box_fit needs --box")
    with pytest.raises(SystemExit):
        main(["segment", str(oblique_volume), str(tmp_path / "x.nii.gz"), "--box", "1", "1", "5", "5",
              "--selection", "oracle"])
    assert "invalid choice: 'oracle'" in capsys.readouterr().err


def test_unknown_model_is_rejected_by_the_parser(oblique_volume, tmp_path):
    done = _run("segment", str(oblique_volume), str(tmp_path / "x.nii.gz"), "--box", "1", "1", "5", "5",
                "--model", "sam_vit_x")
    assert done.returncode == 2 and "invalid choice: 'sam_vit_x'" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_weights_error_has_no_traceback(oblique_volume, tmp_path):
    done = _run("segment", str(oblique_volume), str(tmp_path / "x.nii.gz"), "--box", "1", "1", "5", "5",
                "--model", "sam_vit_l")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "download sam_vit_l" in done.stderr or "no weights" in done.stderr


def test_read_volume_axes_order(oblique_volume):
    array, geometry = read_volume(oblique_volume)
    assert array.shape == (6, 150, 160)  # [k, j, i]
    assert geometry.spacing == pytest.approx((0.8, 0.9, 2.5)) and geometry.spacing_kji == pytest.approx((2.5, 0.9, 0.8))


def test_backend_option_selects_the_encoder(oblique_volume, tmp_path, capsys):
    """--backend picks the encoder (reported in --json); the reference and the fused float32
    encoder give the same labels, and an unknown backend is refused by the parser."""
    arrays = {}
    for backend in ("torch", "fused"):
        out = tmp_path / f"{backend}.nii.gz"
        assert main(["segment", str(oblique_volume), str(out), "--slice", "3", "--box", "20", "15", "140", "130",
                     "--device", "cpu", "--backend", backend, "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["backend"] == backend
        arrays[backend] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert arrays["torch"].sum() > 1000 and dice(arrays["torch"] > 0, arrays["fused"] > 0) >= 0.99
    with pytest.raises(SystemExit):
        main(["segment", str(oblique_volume), str(tmp_path / "x.nii.gz"), "--box", "1", "1", "5", "5",
              "--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
