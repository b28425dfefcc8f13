"""Loading volumes into the web app's scene: real files, a real DICOM slice in a folder, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("trame_slicer")

from SAMSegmenterLib.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def slicer_app():
    from trame_slicer.core import SlicerApp

    return SlicerApp()


def volume_count(app) -> int:
    return app.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")


def test_dicom_folder_with_other_files(slicer_app, tmp_path, ct_small):
    from pydicom.data import get_testdata_file

    from SAMSegmenterWeb.loading import load_volume

    folder = tmp_path / "series" / "sub"
    folder.mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "IM0001")
    (folder / "notes.txt").write_text("not DICOM\n")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    node = load_volume(slicer_app.io_manager, slicer_app.scene, [tmp_path / "series"])
    image = node.GetImageData()
    assert image.GetDimensions() == (128, 128, 1)
    assert image.GetScalarRange() == pytest.approx((float(ct_small[0].min()), float(ct_small[0].max())))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("notes.txt", b"hello\n", "cannot load notes.txt: it holds no volume"),
        ("scan.nii.gz", b"\x1f\x8b not really gzip", "cannot load scan.nii.gz: it holds no volume"),
        ("empty.nrrd", b"", "cannot load empty.nrrd: it holds no volume"),
    ],
)
def test_bad_files_raise_one_line_and_leave_the_scene_alone(slicer_app, tmp_path, name, content, message):
    from SAMSegmenterWeb.loading import load_volume

    path = tmp_path / name
    path.write_bytes(content)
    before = volume_count(slicer_app)
    with pytest.raises(InputError, match=message) as raised:
        load_volume(slicer_app.io_manager, slicer_app.scene, [path])
    assert "\n" not in str(raised.value)
    assert volume_count(slicer_app) == before


def test_colour_image_is_refused(slicer_app, tmp_path):
    import numpy as np
    from PIL import Image

    from SAMSegmenterWeb.loading import load_volume

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    before = volume_count(slicer_app)
    with pytest.raises(InputError, match="cannot load photo.png"):
        load_volume(slicer_app.io_manager, slicer_app.scene, [path])
    assert volume_count(slicer_app) == before


def test_empty_and_missing_paths(slicer_app, tmp_path):
    from SAMSegmenterWeb.loading import load_volume

    with pytest.raises(InputError, match="empty holds no files"):
        (tmp_path / "empty").mkdir()
        load_volume(slicer_app.io_manager, slicer_app.scene, [tmp_path / "empty"])
    with pytest.raises(InputError, match="does not exist"):
        load_volume(slicer_app.io_manager, slicer_app.scene, [tmp_path / "missing.nii.gz"])


def test_uploads_keep_base_names_inside_the_folder(tmp_path):
    from SAMSegmenterWeb.loading import write_uploads

    files = [
        {"name": "../../escape.nii.gz", "content": b"a"},
        {"name": "IM0001", "content": [b"b", b"c"]},
        {"name": "IM0001", "content": b"d"},
    ]
    paths = write_uploads(files, tmp_path)
    assert [p.name for p in paths] == ["escape.nii.gz", "IM0001", "IM0001"]
    assert all(tmp_path in p.parents for p in paths)
    assert [p.read_bytes() for p in paths] == [b"a", b"bc", b"d"]


@pytest.mark.parametrize(
    "name, expected", [("mni152.nii.gz", "mni152"), ("Head.NRRD", "Head"), ("1: Unnamed Series", "1: Unnamed Series")]
)
def test_volume_names_lose_their_file_suffix(name, expected):
    from SAMSegmenterWeb.loading import volume_name

    assert volume_name(name) == expected


def test_describe_names_the_first_path():
    from SAMSegmenterWeb.loading import describe

    assert describe([Path("a/x.dcm")]) == "x.dcm"
    assert describe([Path("x.dcm"), Path("y.dcm"), Path("z.dcm")]) == "x.dcm and 2 more"
