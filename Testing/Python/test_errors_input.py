"""Broken and odd inputs: each is refused with one clear line, or handled as a user would expect.

Real files (a crop of the MNI152 template written by SimpleITK, then cut, emptied or given a
lying header); the model is the real LiteMedSAM where one runs.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import dice
from errors_support import write_volume

from SAMSegmenterLib.cli import main
from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.io import check_volume, read_volume
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt
from SAMSegmenterLib.windowing import ImageWarning, Window, parse_window, percentile_window

BOX = (40, 30, 120, 110)  # around the brain in the crop's slices (x = column, y = row)


@pytest.fixture(scope="module")
def crop(mni152) -> np.ndarray:
    """Six axial slices of the MNI152 template, float32 [k, j, i]."""
    return np.ascontiguousarray(mni152[0][88:94, 40:190, 20:180])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("keep", ["1000 bytes", "half", "all but 10 bytes"])
def test_truncated_files_are_refused(crop, tmp_path, suffix, keep):
    """ITK reads a cut NIfTI (compressed or not) as a full volume padded with zeros; every cut file is refused."""
    whole = write_volume(tmp_path / f"whole{suffix}", crop)
    data = whole.read_bytes()
    length = {"1000 bytes": 1000, "half": len(data) // 2, "all but 10 bytes": len(data) - 10}[keep]
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[:length])
    with pytest.raises(InputError) as info:
        read_volume(cut)
    message = str(info.value)
    assert str(cut) in message and "\n" not in message
    assert any(word in message for word in ("truncated", "cannot read", "damaged")), message


def test_damaged_compressed_stream_is_refused(crop, tmp_path):
    """Bytes flipped in the middle of a .nii.gz: the gzip stream's CRC (or inflate) catches it."""
    data = bytearray(write_volume(tmp_path / "whole.nii.gz", crop).read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged|truncated"):
        read_volume(damaged)


def test_complete_files_read_back_exactly(crop, tmp_path):
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd"):
        array, _ = read_volume(write_volume(tmp_path / f"whole{suffix}", crop))
        np.testing.assert_array_equal(array, crop)


def _nrrd(tmp_path, name: str, header: str, data: bytes = b"") -> str:
    path = tmp_path / name
    path.write_bytes(header.encode() + data)
    return str(path)


def test_lying_headers_and_odd_files(tmp_path):
    cases = {
        # a header declaring 4 TB of voxels with 10 bytes of data: refused before any allocation
        _nrrd(tmp_path, "huge.nrrd", "NRRD0004\ntype: float\ndimension: 3\nsizes: 10000 10000 10000\n"
              "encoding: raw\nendian: little\n\n", b"0123456789"): "more than this machine's memory",
        # a detached header whose data file is missing
        _nrrd(tmp_path, "detached.nhdr", "NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n"
              "endian: little\ndata file: missing.raw\n"): "missing.raw",
        # a 4D volume (two time points)
        _nrrd(tmp_path, "four.nrrd", "NRRD0004\ntype: uint8\ndimension: 4\nsizes: 4 5 6 2\nencoding: raw\n\n",
              bytes(240)): "4D",
        _nrrd(tmp_path, "empty.nii.gz", ""): "empty (0 bytes)",
        _nrrd(tmp_path, "text.nii", "just some text, not an image\n"): "cannot read",
        str(tmp_path / "nowhere.nii.gz"): "does not exist",
        str(tmp_path): "holds no DICOM series",
    }
    rgb = sitk.Image([8, 8, 3], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    cases[str(tmp_path / "rgb.nrrd")] = "3 components per voxel"
    for path, message in cases.items():
        for check in (read_volume, check_volume) if "detached" not in path else (read_volume,):
            with pytest.raises(InputError) as info:
                check(path)
            assert message in str(info.value) and "\n" not in str(info.value), (path, str(info.value))


def test_a_3d_volume_stored_with_a_fourth_dimension_of_one_is_read(crop, tmp_path):
    image = sitk.JoinSeries(sitk.GetImageFromArray(crop))  # 4D, size 1 along the fourth axis
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(tmp_path / "t1.nii.gz"))
    array, _ = read_volume(tmp_path / "t1.nii.gz")
    np.testing.assert_array_equal(array, crop)


def test_unreadable_file_is_one_line(crop, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode; an unreadable file cannot be made here")
    path = write_volume(tmp_path / "secret.nii.gz", crop)
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        read_volume(path)


# --- non-finite voxels -------------------------------------------------------------------------------------------

def test_non_finite_voxels_are_left_out_of_the_window(crop):
    dirty = crop.copy()
    dirty[0, :5, :5] = np.nan
    dirty[1, 0, 0] = np.inf
    dirty[2, 0, 0] = -np.inf
    clean = percentile_window(crop)
    window = percentile_window(dirty)
    assert math.isfinite(window.low) and math.isfinite(window.high)
    assert window.low == pytest.approx(clean.low, abs=1e-3) and window.high == pytest.approx(clean.high, rel=1e-2)
    shown = window.apply(dirty[:3, 0, 0])
    assert np.all(np.isfinite(shown)) and shown.tolist() == [0.0, 1.0, 0.0]  # NaN low, +inf high, -inf low
    with pytest.raises(InputError, match="every voxel"):
        percentile_window(np.full((2, 3, 3), np.nan, dtype=np.float32))


def test_non_finite_voxels_warn_once(crop):
    dirty = crop.copy()
    dirty[0, 0, :7] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_window("auto", dirty)
        parse_window("soft_tissue", crop)
    messages = [str(w.message) for w in caught if issubclass(w.category, ImageWarning)]
    assert len(messages) == 1 and messages[0].startswith("7 of ") and "NaN or infinite" in messages[0]


def test_one_nan_voxel_does_not_empty_its_slice(litemedsam, crop):
    """Before, a single NaN made the whole model input NaN and the mask empty."""
    dirty = crop.copy()
    dirty[3, 75, 80] = np.nan
    window = parse_window("auto", crop)  # the same window for both, so only the NaN voxel differs
    clean_mask = SlicePredictor(litemedsam, crop, window=window).predict(0, 3, Prompt(box=BOX)).mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        dirty_mask = SlicePredictor(litemedsam, dirty, window=window).predict(0, 3, Prompt(box=BOX)).mask
    assert clean_mask.sum() > 1000
    assert dice(dirty_mask, clean_mask) > 0.95


def test_huge_float64_values_are_windowed_in_float64():
    volume = np.array([[[0.0, 1e300, 2e300, 4e300]]])
    window = Window(0.0, 4e300)
    np.testing.assert_allclose(window.apply(volume[0, 0]), [0.0, 0.25, 0.5, 1.0])


def test_cli_json_stays_strict_json_with_nan_voxels(crop, tmp_path, capsys):
    dirty = crop.copy()
    dirty[:, :10, :] = np.nan  # a band of NaN across every slice (NRRD keeps NaN; ITK's NIfTI reader makes it 0)
    path = write_volume(tmp_path / "nan.nrrd", dirty)
    out = tmp_path / "labels.nii.gz"
    code = main(["segment", str(path), str(out), "--slice", "3", "--box", *map(str, BOX), "--device", "cpu",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1],
                         parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert summary["voxels"] > 1000 and 0 < summary["score"] <= 1
    warned = [line for line in captured.err.splitlines() if "NaN or infinite" in line]
    assert len(warned) == 1 and warned[0].startswith(f"warning: {10 * 160 * 6} of ")


def test_uniform_volume_and_empty_box_warn(crop, tmp_path, capsys):
    """An all-zero volume gives a confident blob: the user is told the image is blank."""
    zeros = write_volume(tmp_path / "zeros.nii.gz", np.zeros_like(crop))
    assert main(["segment", str(zeros), str(tmp_path / "a.nii.gz"), "--box", *map(str, BOX), "--device",
                 "cpu"]) == 0
    assert "warning: the volume is uniform (every voxel is 0)" in capsys.readouterr().err
    real = write_volume(tmp_path / "crop.nii.gz", crop)
    assert main(["segment", str(real), str(tmp_path / "b.nii.gz"), "--slice", "3", "--box", "2", "2", "5", "5",
                 "--device", "cpu"]) == 0
    assert "holds no image structure" in capsys.readouterr().err
    assert main(["segment", str(real), str(tmp_path / "c.nii.gz"), "--slice", "3", "--box", *map(str, BOX),
                 "--device", "cpu", "--window", "5000,6000"]) == 0
    assert "lies outside the volume's intensities" in capsys.readouterr().err
