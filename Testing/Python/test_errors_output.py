"""Outputs that cannot be written: refused before the model loads, in one line, with nothing left behind.

Read-only and full disks are real tmpfs mounts (the tests run as root in CI, where file modes do
not stop writes); "before the model loads" is shown by a PyTorch that cannot be imported.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from errors_support import assert_one_line_error, fill, partials, run_cli, tmpfs, write_volume

from SAMSegmenterLib.cli import main
from SAMSegmenterLib.errors import OutputError
from SAMSegmenterLib.io import read_volume, write_labels

BOX = ["40", "30", "120", "110"]


@pytest.fixture(scope="module")
def volume(tmp_path_factory, mni152):
    """Six axial slices of the MNI152 template as NIfTI, and the full template's geometry."""
    crop = np.ascontiguousarray(mni152[0][88:94, 40:190, 20:180])
    return write_volume(tmp_path_factory.mktemp("outputs") / "crop.nii.gz", crop)


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """A folder whose ``torch`` package fails to import: put first on PYTHONPATH, it shows that a run
    ended before loading a model (and before importing PyTorch at all)."""
    folder = tmp_path_factory.mktemp("no_torch")
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text('raise ImportError("torch was imported before the checks ended")\n')
    return folder


def _segment(volume, out, *extra, no_torch=None):
    return run_cli("segment", str(volume), str(out), "--box", *BOX, *extra, extra_path=no_torch)


def test_read_only_folder_is_refused_before_the_model(volume, tmp_path, no_torch):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        done = _segment(volume, ro / "labels.nii.gz", no_torch=no_torch)
        assert_one_line_error(done, f"cannot write to output folder {ro}: read-only file system")
        done = run_cli("evaluate", "--image", str(volume), "--label", str(volume), "--out", str(ro / "run"),
                       extra_path=no_torch)
        assert_one_line_error(done, f"--out folder {ro / 'run'} cannot be created in {ro}: read-only file system")


def test_output_that_is_a_folder_is_refused_before_the_model(volume, tmp_path, no_torch):
    done = _segment(volume, tmp_path, no_torch=no_torch)
    assert_one_line_error(done, f"output {tmp_path} is a folder")


def test_missing_folders_and_bad_prompts_before_the_model(volume, tmp_path, no_torch):
    out = tmp_path / "labels.nii.gz"
    nowhere = tmp_path / "nowhere"
    checks = [
        (["--overlay", str(nowhere / "slice.png")], f"overlay folder {nowhere} does not exist"),
        (["--overlay", str(tmp_path / "slice.jpg")], "must end with one of .png"),
        (["--slice", "6"], "slice 6 is outside"),
        (["--box", "1", "1", "500", "5"], "extends outside"),
        (["--window", "9,2"], "unknown window"),
        (["--propagate", "--range", "0", "9"], "outside the volume"),
        (["--point", "5", "5", "1"], "box prompts only"),
        (["--series", "1.2.3"], "applies to a folder of DICOM files"),
    ]
    for extra, message in checks:
        done = _segment(volume, out, *extra, no_torch=no_torch)
        assert_one_line_error(done, message)
    done = _segment(volume, tmp_path / "missing" / "labels.nii.gz", no_torch=no_torch)
    assert_one_line_error(done, f"output folder {tmp_path / 'missing'} does not exist")
    assert not out.exists() and not partials(tmp_path)


def test_overlay_that_cannot_be_written_takes_the_label_file_with_it(volume, tmp_path, capsys):
    """The disk has room for the label file but not for the overlay PNG, written after it: the run fails in one
    line and the label file does not appear either (outputs are committed together)."""
    with tmpfs(tmp_path / "small", size="256k") as small:
        fill(small, leave=12 * 1024)
        out = small / "labels.nii.gz"
        code = main(["segment", str(volume), str(out), "--box", *BOX, "--device", "cpu", "--overlay",
                     str(small / "slice.png")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == f"error: cannot write {small / 'slice.png'}: no space left on device"
        assert sorted(p.name for p in small.iterdir()) == ["filler"]


def test_full_disk_leaves_nothing(volume, tmp_path, capsys):
    """ITK's NIfTI writer reports a full disk only on stderr and leaves a cut file: the write is verified."""
    labels = np.zeros(read_volume(volume)[0].shape, dtype=np.uint8)
    labels[3, 40:110, 40:120] = 1
    geometry = read_volume(volume)[1]
    with tmpfs(tmp_path / "full", size="256k") as full:
        fill(full)
        for name in ("labels.nii.gz", "labels.nii", "labels.seg.nrrd", "labels.mha"):
            with pytest.raises(OutputError) as info:
                write_labels(full / name, labels, geometry)
            assert str(info.value) == f"cannot write {full / name}: no space left on device"
            assert not (full / name).exists() and not partials(full)
        code = main(["segment", str(volume), str(full / "labels.nii.gz"), "--box", *BOX, "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == f"error: cannot write {full / 'labels.nii.gz'}: no space left on device"
        assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_outputs_get_the_users_umask(volume, tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        out, overlay = tmp_path / "labels.seg.nrrd", tmp_path / "slice.png"
        assert main(["segment", str(volume), str(out), "--box", *BOX, "--device", "cpu", "--overlay",
                     str(overlay)]) == 0
        for path in (out, overlay):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)
        os.umask(0o027)
        write_labels(tmp_path / "group.nii.gz", np.zeros((2, 3, 4), np.uint8), read_volume(volume)[1])
        assert stat.S_IMODE((tmp_path / "group.nii.gz").stat().st_mode) == 0o640
    finally:
        os.umask(previous)
    capsys.readouterr()


def test_failed_evaluate_leaves_no_out_folder(volume, tmp_path, capsys):
    """The label volume has no non-zero voxel: the run fails, and the --out folder it would have made is not there."""
    empty_label = write_volume(tmp_path / "label.nii.gz", np.zeros(read_volume(volume)[0].shape, np.uint8))
    out = tmp_path / "new" / "run"
    code = main(["evaluate", "--image", str(volume), "--label", str(empty_label), "--out", str(out),
                 "--device", "cpu"])
    assert code == 2 and "no non-zero voxel" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_json_lines_are_strict():
    from SAMSegmenterLib.cli.strict_json import dumps

    text = dumps({"score": float("nan"), "hd95": [1.5, float("inf"), np.float32("-inf")], "n": np.int64(3),
                  "ok": np.bool_(True), "nested": ({"x": np.array([0.5, np.nan])},)})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "score": None, "hd95": [1.5, None, None], "n": 3, "ok": True, "nested": [{"x": [0.5, None]}]}


def test_suffix_case_is_one_that_itk_readers_know(volume, tmp_path, no_torch):
    """ITK's writers and readers (Slicer's too) know NIfTI and NRRD suffixes in lower or upper case and MetaImage's
    in lower case only: an upper-case NIfTI is written and reads back, the others are refused before the model."""
    for name in ("labels.MHA", "labels.Nii.Gz"):
        done = _segment(volume, tmp_path / name, no_torch=no_torch)
        assert_one_line_error(done, f"output {tmp_path / name}: write its suffix as")
    with pytest.raises(OutputError, match="write its suffix as .mha"):
        write_labels(tmp_path / "direct.MHA", np.zeros((2, 3, 4), np.uint8), read_volume(volume)[1])
    upper = tmp_path / "labels.NII.GZ"
    done = _segment(volume, upper)
    assert done.returncode == 0, done.stderr
    assert read_volume(upper)[0].sum() > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.NII.GZ"]  # nothing else, no partial files


def test_upper_case_metaimage_input_is_read(volume, tmp_path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(volume))
    sitk.WriteImage(image, str(tmp_path / "scan.mha"))
    (tmp_path / "scan.mha").rename(tmp_path / "scan.MHA")
    voxels, _ = read_volume(tmp_path / "scan.MHA")
    np.testing.assert_array_equal(voxels, read_volume(volume)[0])


def test_label_values_a_label_file_cannot_hold_are_refused(volume, tmp_path):
    """Labels are written one byte per voxel: 0.5, 300 or -1 would come out as other labels, so they are refused;
    whole numbers in any integer or float type, and booleans, are written as they are."""
    from SAMSegmenterLib.errors import InputError

    geometry = read_volume(volume)[1]
    shape = read_volume(volume)[0].shape
    for bad in (0.5, 300, -1, np.nan):
        labels = np.zeros(shape, np.float64 if isinstance(bad, float) else np.int64)
        labels[0, 0, 0] = bad
        with pytest.raises(InputError, match="labels must be whole numbers 0..255"):
            write_labels(tmp_path / "bad.nii.gz", labels, geometry)
    assert not list(tmp_path.iterdir())
    labels = np.zeros(shape, np.float32)
    labels[1, 2:5, 3:7] = 2
    write_labels(tmp_path / "good.nii.gz", labels, geometry)
    np.testing.assert_array_equal(read_volume(tmp_path / "good.nii.gz")[0], labels.astype(np.uint8))
