"""DICOM input: a file, or a folder holding a series, read with its geometry; broken exports refused.

Series are written slice by slice with pydicom from real pixel data (the MNI152 template, as CT-like
int16 values), on an oblique grid, with shuffled file names and instance numbers, so the reader has
to sort by position. pydicom's own CT_small.dcm is a real single-slice file.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SAMSegmenterLib.cli import main
from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.io import read_volume
from SAMSegmenterLib.io.dicom import SeriesChoiceError, list_series

pydicom = pytest.importorskip("pydicom")

SPACING = (0.8, 0.9, 2.5)  # column, row, slice (mm)
ORIGIN = np.array([-40.0, 25.0, 12.5])


def _rotation() -> np.ndarray:
    a, b = 0.2, 0.3
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx  # columns: row direction (i), column direction (j), slice normal (k)


def write_series(folder: Path, volume: np.ndarray, description: str = "MNI152 as CT", seed: int = 0,
                 series_uid: str | None = None, skip: tuple[int, ...] = ()) -> str:
    """Write ``volume`` [k, j, i] (int16) as one CT series, one file per slice; returns its SeriesInstanceUID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rotation = _rotation()
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    rng = np.random.default_rng(seed)
    numbers = rng.permutation(len(volume)) + 1
    for k in range(len(volume)):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesDescription, ds.Modality, ds.PatientName, ds.PatientID = description, "CT", "Phantom^MNI", "0"
        ds.InstanceNumber = int(numbers[k])
        position = ORIGIN + rotation[:, 2] * SPACING[2] * k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*rotation[:, 0], *rotation[:, 1])]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # row spacing, column spacing
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(volume[k], dtype="<i2").tobytes()
        ds.save_as(folder / f"IM{rng.integers(10**6):06d}_{k}", enforce_file_format=True)
    return series_uid


@pytest.fixture(scope="module")
def ct_like(mni152) -> np.ndarray:
    """Eight axial slices of the MNI152 template scaled to int16 (0..1000)."""
    return np.round(mni152[0][84:92, 40:190, 20:180] * 1000).astype(np.int16)


@pytest.fixture(scope="module")
def series(tmp_path_factory, ct_like) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "series"
    write_series(folder, ct_like)
    return folder


def test_series_reads_in_position_order_with_its_geometry(series, ct_like):
    array, geometry = read_volume(series)
    np.testing.assert_array_equal(array, ct_like)
    assert geometry.spacing == pytest.approx(SPACING, abs=1e-4)
    assert geometry.origin == pytest.approx(tuple(ORIGIN), abs=1e-4)
    np.testing.assert_allclose(np.reshape(geometry.direction, (3, 3)), _rotation(), atol=1e-6)


def test_single_dicom_file(series, ct_like):
    ct = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    array, geometry = read_volume(ct)
    assert array.shape == (1, 128, 128) and array.min() < -500 < 500 < array.max()  # Hounsfield units
    assert geometry.spacing[:2] == pytest.approx((0.661468, 0.661468))
    one = sorted(series.iterdir())[0]
    assert read_volume(one)[0].shape == (1, *ct_like.shape[1:])


def test_several_series_are_listed_and_chosen(tmp_path, ct_like):
    first = write_series(tmp_path, ct_like, "axial T1", seed=1)
    second = write_series(tmp_path, ct_like[:5], "short scout", seed=2)
    with pytest.raises(SeriesChoiceError) as info:
        read_volume(tmp_path)
    message = str(info.value)
    assert f"{first} 'axial T1' (8 files)" in message and f"{second} 'short scout' (5 files)" in message
    assert "\n" not in message and {s.uid for s in info.value.series} == {first, second}
    assert read_volume(tmp_path, series=second)[0].shape == (5, *ct_like.shape[1:])
    with pytest.raises(SeriesChoiceError, match="holds no DICOM series 1.2.3; it holds"):
        read_volume(tmp_path, series="1.2.3")
    assert [len(s.files) for s in sorted(list_series(tmp_path), key=lambda s: s.uid != first)] == [8, 5]


def test_folders_without_a_readable_series(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="holds no DICOM series"):
        read_volume(tmp_path)
    shutil.copy(pydicom.data.get_testdata_file("rtplan.dcm"), tmp_path / "plan.dcm")  # DICOM without pixels
    with pytest.raises(InputError, match="1 DICOM file\\(s\\) but no readable image series"):
        read_volume(tmp_path)
    with pytest.raises(InputError, match="without readable image data"):
        read_volume(pydicom.data.get_testdata_file("MR_truncated.dcm"))


def test_missing_or_cut_slices_are_refused(tmp_path, ct_like):
    write_series(tmp_path / "gap", ct_like, skip=(4,))
    with pytest.raises(InputError, match="not evenly spaced: 5 mm between .* 2.5 mm elsewhere"):
        read_volume(tmp_path / "gap")
    write_series(tmp_path / "cut", ct_like)
    victim = sorted((tmp_path / "cut").iterdir(), key=lambda p: int(p.name.split("_")[1]))[3]
    victim.write_bytes(victim.read_bytes()[:4000])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(InputError, match="not evenly spaced"):
        warnings.simplefilter("always")
        read_volume(tmp_path / "cut")
    assert any(f"(e.g. {victim.name}: truncated" in str(w.message) for w in caught)


def test_slices_of_different_sizes_are_named(tmp_path, ct_like):
    write_series(tmp_path, ct_like[:4], seed=7)
    odd = sorted(tmp_path.iterdir())[2]
    ds = pydicom.dcmread(odd)
    ds.Rows, ds.Columns = 100, 90
    ds.PixelData = np.ascontiguousarray(ct_like[0, :100, :90], dtype="<i2").tobytes()
    ds.save_as(odd)
    with pytest.raises(InputError, match=f"its slices differ in size: {odd.name} is 90 x 100, 3 others 160 x 150"):
        read_volume(tmp_path)


def test_two_images_per_position_are_refused(tmp_path, ct_like):
    uid = write_series(tmp_path, ct_like[:4], seed=3)
    write_series(tmp_path, ct_like[:4], seed=4, series_uid=uid)  # a second echo in the same series
    with pytest.raises(InputError, match="several images at one slice position"):
        read_volume(tmp_path)


def test_segment_and_evaluate_take_a_dicom_folder(series, ct_like, tmp_path, capsys):
    out = tmp_path / "labels.nii.gz"
    code = main(["segment", str(series), str(out), "--slice", "4", "--box", "40", "30", "120", "110",
                 "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["voxels"] > 1000
    labels, source = sitk.ReadImage(str(out)), read_volume(series)[1]
    assert labels.GetSpacing() == pytest.approx(source.spacing, abs=1e-5)
    assert labels.GetOrigin() == pytest.approx(source.origin, abs=1e-4)
    np.testing.assert_allclose(labels.GetDirection(), source.direction, atol=1e-5)

    brain = (ct_like > 100).astype(np.uint8)
    image = sitk.GetImageFromArray(brain)
    source.apply(image)
    sitk.WriteImage(image, str(tmp_path / "brain.nii.gz"))
    code = main(["evaluate", "--image", str(series), "--label", str(tmp_path / "brain.nii.gz"), "--largest",
                 "--protocol", "box", "--no-figures", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    rows = (tmp_path / "run" / "cases.csv").read_text().splitlines()
    assert len(rows) == 5 and all(row.startswith("series,1,K,") for row in rows[1:])  # 4 mask selections


def test_cli_names_the_series_flag(tmp_path, ct_like, capsys):
    write_series(tmp_path, ct_like[:3], "one", seed=5)
    write_series(tmp_path, ct_like[:2], "two", seed=6)
    code = main(["segment", str(tmp_path), str(tmp_path / "x.nii.gz"), "--box", "1", "1", "5", "5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and err.endswith("(give --series UID)") and "\n" not in err
    assert "'one' (3 files)" in err and "'two' (2 files)" in err


def test_cases_csv_names_the_series(tmp_path, ct_like, capsys):
    from SAMSegmenterLib.evaluation.evaluate import find_cases

    first = write_series(tmp_path / "study", ct_like[:3], "one", seed=8)
    write_series(tmp_path / "study", ct_like[:2], "two", seed=9)
    label = tmp_path / "label.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray((ct_like[:3] > 100).astype(np.uint8)), str(label))
    listed = tmp_path / "cases.csv"
    listed.write_text("image,label\nstudy,label.nii.gz\n")
    code = main(["evaluate", "--cases", str(listed), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "holds 2 DICOM series" in err and err.endswith(f"(give it in a 'series' column of {listed})")
    listed.write_text(f"image,label,series\nstudy,label.nii.gz,{first}\n")
    [case] = find_cases(listed)
    assert case.series == first and read_volume(case.image, case.series)[0].shape == (3, 150, 160)
