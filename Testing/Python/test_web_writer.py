"""SegmentWriter against a real trame-slicer scene: the MNI152 sample loaded from a NIfTI file,
edits from SAMSegmenterMRML.labelmaps.write_slab, masks from nilearn's real tissue maps.

Checks what lands in the segments (replace, add, remove), the editor's masking (editable area,
editable intensity range, overwrite of other segments), and that each write is one undo step.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trame_slicer")

from SAMSegmenterLib.errors import InputError  # noqa: E402
from SAMSegmenterMRML.labelmaps import (  # noqa: E402
    LabelmapEdit,
    Slab,
    labelmap_on_volume,
    segment_labelmap,
    write_slab,
)

SLICE = 90  # an axial slice through the lateral ventricles


@pytest.fixture(scope="module")
def web_scene(tmp_path_factory):
    """A trame-slicer SlicerApp with the MNI152 template read from a NIfTI file, and its voxels [k, j, i]."""
    from trame_slicer.core import SlicerApp
    from vtk.util import numpy_support

    from SAMSegmenterLib.io.sample_data import write_sample
    from SAMSegmenterWeb.loading import load_volume

    path = write_sample("mni152", tmp_path_factory.mktemp("web_writer") / "mni152.nii.gz")
    app = SlicerApp()
    volume = load_volume(app.io_manager, app.scene, [path])
    image = volume.GetImageData()
    dims = image.GetDimensions()
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    return app, volume, voxels


@pytest.fixture
def editing(web_scene):
    """A fresh segmentation with segments A and B, active in the editor, with an undo stack; and its writer."""
    from undo_stack import UndoStack

    from SAMSegmenterWeb.writer import SegmentWriter

    app, volume, voxels = web_scene
    editor = app.segmentation_editor
    editor.set_undo_stack(UndoStack(undo_limit=10))
    segmentation = editor.create_empty_segmentation_node()
    editor.set_active_segmentation(segmentation, volume)
    a = editor.add_empty_segment(segment_name="A")
    b = editor.add_empty_segment(segment_name="B")
    editor.undo_stack.clear()
    yield editor, SegmentWriter(editor, segmentation), a, b, voxels
    editor.set_editable_area(type(editor.get_editable_area()).EVERYWHERE)
    editor.editor_node.SetSourceVolumeIntensityMask(False)
    app.scene.RemoveNode(segmentation)


def segment_array(writer, segment_id: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The segment as a bool [k, j, i] array on the volume grid, read through the segmentation node."""
    node, volume = writer.segmentation_node, writer.editor.active_volume_node
    array = labelmap_on_volume(segment_labelmap(node, segment_id), volume, node)
    assert array.shape == shape
    return array


def write(writer, segment_id: str, mask_2d: np.ndarray, index: int, mode: str, shape) -> None:
    write_slab(writer, writer.editor.active_volume_node, segment_id, mask_2d[None], Slab(0, index, index), mode)


def test_the_volume_is_read_voxel_for_voxel(web_scene, mni152):
    _, volume, voxels = web_scene
    np.testing.assert_array_equal(voxels, mni152[0])
    assert volume.GetName() == "mni152"


def test_replace_writes_one_slice_as_one_undo_step(editing, mni152_masks):
    editor, writer, a, _, voxels = editing
    brain, wm = mni152_masks["brain"], mni152_masks["wm"]
    write(writer, a, wm[SLICE - 10], SLICE - 10, "add", voxels.shape)
    write(writer, a, brain[SLICE], SLICE, "replace", voxels.shape)
    result = segment_array(writer, a, voxels.shape)
    np.testing.assert_array_equal(result[SLICE], brain[SLICE])
    np.testing.assert_array_equal(result[SLICE - 10], wm[SLICE - 10])
    assert result.sum() == brain[SLICE].sum() + wm[SLICE - 10].sum()

    editor.undo_stack.undo()
    undone = segment_array(writer, a, voxels.shape)
    assert not undone[SLICE].any()
    np.testing.assert_array_equal(undone[SLICE - 10], wm[SLICE - 10])
    editor.undo_stack.redo()
    np.testing.assert_array_equal(segment_array(writer, a, voxels.shape), result)

    write(writer, a, wm[SLICE], SLICE, "remove", voxels.shape)
    np.testing.assert_array_equal(segment_array(writer, a, voxels.shape)[SLICE], brain[SLICE] & ~wm[SLICE])


def test_editable_area_inside_another_segment(editing, mni152_masks):
    from trame_slicer.segmentation import SegmentationEditableAreaMode

    editor, writer, a, b, voxels = editing
    brain, wm = mni152_masks["brain"][SLICE], mni152_masks["wm"][SLICE]
    write(writer, b, wm, SLICE, "add", voxels.shape)
    editor.set_mask_segment_id(b)
    editor.set_editable_area(SegmentationEditableAreaMode.INSIDE_SINGLE_SEGMENT)
    write(writer, a, brain, SLICE, "add", voxels.shape)
    result = segment_array(writer, a, voxels.shape)
    np.testing.assert_array_equal(result[SLICE], brain & wm)
    assert result.sum() == (brain & wm).sum() < brain.sum()


def test_editable_intensity_range(editing, mni152_masks):
    editor, writer, a, _, voxels = editing
    brain = mni152_masks["brain"][SLICE]
    low, high = np.percentile(voxels[SLICE][brain], [40, 90])
    editor.editor_node.SetSourceVolumeIntensityMask(True)
    editor.editor_node.SetSourceVolumeIntensityMaskRange(float(low), float(high))
    write(writer, a, brain, SLICE, "add", voxels.shape)
    expected = brain & (voxels[SLICE] >= low) & (voxels[SLICE] <= high)
    result = segment_array(writer, a, voxels.shape)
    np.testing.assert_array_equal(result[SLICE], expected)
    assert 0 < expected.sum() < brain.sum()


@pytest.mark.parametrize("mode, b_keeps_overlap", [("OVERWRITE_ALL", False), ("ALLOW_OVERLAP", True)])
def test_overwrite_other_segments(editing, mni152_masks, mode, b_keeps_overlap):
    from trame_slicer.segmentation import SegmentationOverwriteMode

    editor, writer, a, b, voxels = editing
    brain, wm = mni152_masks["brain"][SLICE], mni152_masks["wm"][SLICE]
    write(writer, b, brain, SLICE, "add", voxels.shape)
    editor.set_overwrite_mode(SegmentationOverwriteMode[mode])
    write(writer, a, wm, SLICE, "add", voxels.shape)
    b_now = segment_array(writer, b, voxels.shape)[SLICE]
    np.testing.assert_array_equal(b_now, brain if b_keeps_overlap else brain & ~wm)
    np.testing.assert_array_equal(segment_array(writer, a, voxels.shape)[SLICE], wm)
    editor.set_overwrite_mode(SegmentationOverwriteMode.OVERWRITE_ALL)


def test_bad_writes_are_refused(editing, web_scene, mni152_masks):
    from SAMSegmenterWeb.writer import SegmentWriter

    editor, writer, a, _, voxels = editing
    with pytest.raises(InputError, match="segment 'nope' not found"):
        writer.write("nope", [])
    edit = LabelmapEdit(writer.reference_geometry(), "invert", (0, -1, 0, -1, 0, -1))
    with pytest.raises(InputError, match="unknown labelmap operation 'invert'"):
        writer.write(a, [edit])
    other = editor.create_empty_segmentation_node()
    other.GetSegmentation().AddEmptySegment("X")
    with pytest.raises(InputError, match="no longer the one being edited"):
        SegmentWriter(editor, other).write("X", [])
    web_scene[0].scene.RemoveNode(other)
    assert not editor.undo_stack.can_undo()
