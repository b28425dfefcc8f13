"""Writing masks into segments through Slicer's segment editor logic.

Replace/add/remove, masking, overwrite, undo, files.

Masks here are the brain mask and hand-made shapes, so these tests need no model.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from mrml_scene import load_segmentation, oblique, save_segmentation  # noqa: F401  (fixture)

from SAMSegmenterLib.errors import InputError
from SAMSegmenterMRML.editor import SegmentEditorSession
from SAMSegmenterMRML.labelmaps import (
    Slab,
    labelmap_edits,
    oriented_labelmap,
    segment_labelmap,
    volume_ijk_to_segmentation,
    write_slab,
)
from SAMSegmenterMRML.logic import SAMSegmenterLogic, slab_mask

read = slicer.util.arrayFromSegmentBinaryLabelmap


def shape_of(volume) -> tuple[int, int, int]:
    return tuple(int(n) for n in reversed(volume.GetImageData().GetDimensions()))


@pytest.fixture
def segmentation(oblique):
    """A segmentation on the volume's grid with "Target" (a block on every slice) and "Other" (left half of slice 2)."""
    node = oblique.new_segmentation("Segmentation")
    shape = shape_of(oblique.volume)
    target = np.zeros(shape, np.uint8)
    target[:, 30:50, 30:50] = 1
    other = np.zeros(shape, np.uint8)
    other[2, :, :40] = 1
    for name, array in (("Target", target), ("Other", other)):
        node.GetSegmentation().AddEmptySegment(name)
        slicer.util.updateSegmentBinaryLabelmapFromArray(array, node, name, oblique.volume)
    yield node
    oblique.scene.RemoveNode(node)


def write(oblique, segmentation, session, mask_2d, index, mode="replace"):
    slab = Slab(0, index, index)
    write_slab(session, oblique.volume, "Target", slab_mask(mask_2d, slab, shape_of(oblique.volume)), slab, mode)


def arrays(oblique, segmentation):
    return read(segmentation, "Target", oblique.volume) > 0, read(segmentation, "Other", oblique.volume) > 0


def test_replace_changes_only_the_slab_and_overwrites_other_segments(oblique, segmentation):
    before_target, before_other = arrays(oblique, segmentation)
    session = SegmentEditorSession(segmentation, oblique.volume)
    brain = oblique.brain[2]
    write(oblique, segmentation, session, brain, 2)
    target, other = arrays(oblique, segmentation)
    expected = before_target.copy()
    expected[2] = brain
    np.testing.assert_array_equal(target, expected)
    np.testing.assert_array_equal(other, before_other & ~expected)  # default: modify all other segments
    session.undo()
    target, other = arrays(oblique, segmentation)
    np.testing.assert_array_equal(target, before_target)
    np.testing.assert_array_equal(other, before_other)
    session.redo()
    np.testing.assert_array_equal(arrays(oblique, segmentation)[0], expected)
    session.close()


def test_add_and_remove(oblique, segmentation):
    before_target, before_other = arrays(oblique, segmentation)
    session = SegmentEditorSession(segmentation, oblique.volume)
    square = np.zeros(before_target.shape[1:], bool)
    square[40:60, 40:60] = True
    write(oblique, segmentation, session, square, 4, "add")
    expected = before_target.copy()
    expected[4] |= square
    np.testing.assert_array_equal(arrays(oblique, segmentation)[0], expected)
    write(oblique, segmentation, session, square, 1, "remove")
    expected[1] &= ~square
    np.testing.assert_array_equal(arrays(oblique, segmentation)[0], expected)
    np.testing.assert_array_equal(arrays(oblique, segmentation)[1], before_other)
    session.close()


def test_editable_area_inside_another_segment_and_no_overwrite(oblique, segmentation):
    before_target, before_other = arrays(oblique, segmentation)
    session = SegmentEditorSession(segmentation, oblique.volume)
    session.editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    session.editor_node.SetMaskSegmentID("Other")
    session.editor_node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
    brain = oblique.brain[2]
    write(oblique, segmentation, session, brain, 2)
    target, other = arrays(oblique, segmentation)
    editable = before_other[2]
    expected = before_target.copy()
    expected[2] = (brain & editable) | (before_target[2] & ~editable)
    np.testing.assert_array_equal(target, expected)
    np.testing.assert_array_equal(other, before_other)  # not overwritten, nothing handed back to it
    assert (target[2] & ~editable).sum() == (before_target[2] & ~editable).sum() > 0
    session.close()


def test_editable_intensity_range(oblique, segmentation):
    before_target, _ = arrays(oblique, segmentation)
    session = SegmentEditorSession(segmentation, oblique.volume)
    threshold = float(np.percentile(oblique.array[3], 75))
    session.editor_node.SetSourceVolumeIntensityMask(True)
    session.editor_node.SetSourceVolumeIntensityMaskRange(threshold, float(oblique.array.max()))
    full = np.ones(before_target.shape[1:], bool)
    write(oblique, segmentation, session, full, 3, "add")
    target = arrays(oblique, segmentation)[0]
    bright = oblique.array[3] >= threshold
    np.testing.assert_array_equal(target[3], before_target[3] | bright)
    assert 0 < bright.sum() < bright.size
    session.close()


def test_segmentation_on_another_grid_is_resampled(oblique):
    """A segmentation whose grid has half the volume's in-plane resolution receives the mask resampled onto it."""
    node = oblique.new_segmentation("Coarse")
    geometry = slicer.vtkOrientedImageData()
    converter = slicer.vtkSegmentationConverter
    parameter = converter.GetReferenceImageGeometryParameterName()
    converter.DeserializeImageGeometry(node.GetSegmentation().GetConversionParameter(parameter), geometry, False)
    extent = geometry.GetExtent()
    spacing = geometry.GetSpacing()
    geometry.SetSpacing(2 * spacing[0], 2 * spacing[1], spacing[2])
    geometry.SetExtent(extent[0], extent[1] // 2, extent[2], extent[3] // 2, extent[4], extent[5])
    node.GetSegmentation().SetConversionParameter(parameter, converter.SerializeImageGeometry(geometry))
    node.GetSegmentation().AddEmptySegment("Target")
    session = SegmentEditorSession(node, oblique.volume)
    shape = shape_of(oblique.volume)
    square = np.zeros(shape[1:], bool)
    square[20:60, 10:50] = True
    slab = Slab(0, 2, 2)
    edits = labelmap_edits(
        slab_mask(square, slab, shape),
        slab,
        shape,
        volume_ijk_to_segmentation(oblique.volume, node),
        session.reference_geometry(),
        segment_labelmap(node, "Target"),
        "replace",
    )
    assert tuple(edits[-1].labelmap.GetSpacing()) == pytest.approx(tuple(geometry.GetSpacing()))
    session.write("Target", edits)
    on_volume_grid = read(node, "Target", oblique.volume) > 0
    # even voxels are voxel centres of the coarse grid, so they come back exactly
    np.testing.assert_array_equal(on_volume_grid[2, 20:60:2, 10:50:2], True)
    assert on_volume_grid[[0, 1, 3, 4, 5]].sum() == 0 and on_volume_grid[2, :, 52:].sum() == 0
    session.close()
    oblique.scene.RemoveNode(node)


def test_seg_nrrd_saved_and_reloaded_identically(oblique, segmentation, tmp_path):
    logic = SAMSegmenterLogic(in_process=True)
    brain = oblique.brain[1:4]
    logic.write(oblique.volume, segmentation, "Target", brain, Slab(0, 1, 3))
    target, other = arrays(oblique, segmentation)
    path = tmp_path / "written.seg.nrrd"
    save_segmentation(segmentation, path)
    loaded = load_segmentation(oblique.scene, path, "Reloaded")
    assert list(loaded.GetSegmentation().GetSegmentIDs()) == ["Target", "Other"]
    np.testing.assert_array_equal(read(loaded, "Target", oblique.volume) > 0, target)
    np.testing.assert_array_equal(read(loaded, "Other", oblique.volume) > 0, other)
    np.testing.assert_array_equal(target[1:4], brain)
    logic.undo(segmentation)
    assert not (arrays(oblique, segmentation)[0][1:4] == brain).all()
    with pytest.raises(InputError, match="nothing to undo"):
        logic.undo(segmentation)
    logic.close()
    oblique.scene.RemoveNode(loaded)


def test_bad_writes_are_refused(oblique, segmentation):
    logic = SAMSegmenterLogic(in_process=True)
    with pytest.raises(InputError, match="not found"):
        logic.write(oblique.volume, segmentation, "Missing", oblique.brain[2:3], Slab(0, 2, 2))
    with pytest.raises(InputError, match="does not match the slab"):
        logic.write(oblique.volume, segmentation, "Target", oblique.brain[2:4], Slab(0, 2, 2))
    with pytest.raises(InputError, match="write mode"):
        logic.write(oblique.volume, segmentation, "Target", oblique.brain[2:3], Slab(0, 2, 2), mode="merge")
    logic.close()


@pytest.mark.parametrize("axis, index", [(0, 3), (1, 47), (2, 21)])
def test_replace_writes_one_slice_along_any_axis(oblique, segmentation, axis, index):
    logic = SAMSegmenterLogic(in_process=True)
    before = arrays(oblique, segmentation)[0]
    mask = np.take(oblique.brain, index, axis=axis)
    slab = Slab(axis, index, index)
    logic.write(oblique.volume, segmentation, "Target", slab_mask(mask, slab, oblique.array.shape), slab)
    after = arrays(oblique, segmentation)[0]
    np.testing.assert_array_equal(np.take(after, index, axis=axis), mask)
    unchanged = np.ones(after.shape[axis], bool)
    unchanged[index] = False
    np.testing.assert_array_equal(np.compress(unchanged, after, axis=axis), np.compress(unchanged, before, axis=axis))
    logic.close()


@pytest.fixture
def layered(oblique):
    """Two overlapping segments in separate labelmap layers: "Target" (a block on every slice) and
    "Other" (a block overlapping it on every slice); "Target" is also on slices outside the slab."""
    node = oblique.new_segmentation("Layered")
    shape = shape_of(oblique.volume)
    target = np.zeros(shape, np.uint8)
    target[:, 30:50, 30:50] = 1
    other = np.zeros(shape, np.uint8)
    other[:, 40:60, 20:45] = 1
    segmentation = node.GetSegmentation()
    extent = Slab(0, 0, shape[0] - 1).extent(shape)
    for name, array in (("Target", target), ("Other", other)):
        image = oriented_labelmap(array, extent, volume_ijk_to_segmentation(oblique.volume, node))
        segmentation.AddEmptySegment(name, name)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, node, name, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    assert segmentation.GetNumberOfLayers() == 2
    yield node
    oblique.scene.RemoveNode(node)


OVERWRITE_MODES = {"all": slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments,
                   "visible": slicer.vtkMRMLSegmentEditorNode.OverwriteVisibleSegments,
                   "none": slicer.vtkMRMLSegmentEditorNode.OverwriteNone}


@pytest.mark.parametrize("overwrite", sorted(OVERWRITE_MODES))
def test_replace_changes_only_the_slab_with_segments_in_separate_layers(oblique, layered, overwrite):
    """Replace on slice 2 leaves every other slice of every segment as it was, for each overwrite mode;
    on the slab, Target becomes the mask and Other loses the mask's voxels only when overwrite applies."""
    before_target = read(layered, "Target", oblique.volume) > 0
    before_other = read(layered, "Other", oblique.volume) > 0
    session = SegmentEditorSession(layered, oblique.volume)
    session.editor_node.SetOverwriteMode(OVERWRITE_MODES[overwrite])
    mask = np.zeros(before_target.shape[1:], bool)
    mask[35:55, 35:55] = True
    slab = Slab(0, 2, 2)
    write_slab(session, oblique.volume, "Target", slab_mask(mask, slab, before_target.shape), slab)
    target = read(layered, "Target", oblique.volume) > 0
    other = read(layered, "Other", oblique.volume) > 0
    outside = np.ones(target.shape[0], bool)
    outside[2] = False
    np.testing.assert_array_equal(target[outside], before_target[outside])
    np.testing.assert_array_equal(other[outside], before_other[outside])  # the overlap elsewhere survives
    np.testing.assert_array_equal(target[2], mask)
    expected_other = before_other[2] & ~mask if overwrite != "none" else before_other[2]
    np.testing.assert_array_equal(other[2], expected_other)
    session.undo()
    np.testing.assert_array_equal(read(layered, "Target", oblique.volume) > 0, before_target)
    np.testing.assert_array_equal(read(layered, "Other", oblique.volume) > 0, before_other)
    session.close()
