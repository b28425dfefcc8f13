"""SAMSegmenterLogic and the effect's InteractiveSession with the real LiteMedSAM on a real MRML scene.

Encoder calls are few: every test prompts slice K=2 of the oblique MNI crop (one embedding,
reused through the logic's predictor cache); propagation adds slices 3 and 4.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from mrml_scene import matrix_array, oblique  # noqa: F401  (fixture)

from SAMSegmenterLib.errors import PromptError
from SAMSegmenterLib.prompts import Prompt, box_from_mask
from SAMSegmenterMRML.editor import SegmentEditorSession
from SAMSegmenterMRML.geometry import SliceRef, ijk_to_world
from SAMSegmenterMRML.interactive import InteractiveSession
from SAMSegmenterMRML.jobs import BackgroundRunner
from SAMSegmenterMRML.logic import SAMSegmenterLogic

SLICE = 2
read = slicer.util.arrayFromSegmentBinaryLabelmap


@pytest.fixture(scope="module")
def logic(litemedsam):
    logic = SAMSegmenterLogic(model=litemedsam)
    yield logic
    logic.close()


@pytest.fixture
def segmentation(oblique):
    node = oblique.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(oblique.volume)
    node.GetSegmentation().AddEmptySegment("Brain")
    yield node
    oblique.scene.RemoveNode(node)


def box_ijk(oblique) -> np.ndarray:
    """Tight (x0, y0, x1, y1) box of the brain on slice K=SLICE (x = i, y = j)."""
    return box_from_mask(oblique.brain[SLICE])


def box_corners_ras(oblique) -> np.ndarray:
    x0, y0, x1, y1 = box_ijk(oblique)
    return ijk_to_world([(x0, y0, SLICE), (x1, y1, SLICE)], oblique.ijk_to_ras)


def engine_mask(logic, oblique) -> np.ndarray:
    """The engine's own answer for the same box given in IJK."""
    return logic.predictor(oblique.volume).predict(0, SLICE, Prompt(box=box_ijk(oblique))).mask


def test_segment_from_ras_box_writes_the_engines_mask(logic, oblique, segmentation):
    result = logic.segment(oblique.volume, segmentation, "Brain", box=box_corners_ras(oblique))
    assert result.ref == SliceRef(0, SLICE)
    written = read(segmentation, "Brain", oblique.volume) > 0
    expected = engine_mask(logic, oblique)
    np.testing.assert_array_equal(written[SLICE], expected)
    np.testing.assert_array_equal(result.mask, expected)
    assert written.sum() == expected.sum() > 500  # nothing outside the slice
    dice = 2 * (expected & oblique.brain[SLICE]).sum() / (expected.sum() + oblique.brain[SLICE].sum())
    assert dice > 0.5  # a brain cross-section from its box (NOTES: ~0.5-0.7 for such large boxes)
    assert logic.predictor(oblique.volume).encoder_calls == 1


def test_ijk_prompts_give_the_same_segment_and_undo_restores(logic, oblique, segmentation):
    x0, y0, x1, y1 = box_ijk(oblique)
    logic.segment(oblique.volume, segmentation, "Brain", box=[(x0, y0, SLICE), (x1, y1, SLICE)], coordinates="IJK")
    written = read(segmentation, "Brain", oblique.volume) > 0
    np.testing.assert_array_equal(written[SLICE], engine_mask(logic, oblique))
    logic.undo(segmentation)
    assert (read(segmentation, "Brain", oblique.volume) > 0).sum() == 0
    logic.redo(segmentation)
    np.testing.assert_array_equal(read(segmentation, "Brain", oblique.volume) > 0, written)


def test_segment_follows_the_editor_nodes_masking(logic, oblique, segmentation):
    shape = oblique.array.shape
    left = np.zeros(shape, np.uint8)
    left[:, :, : shape[2] // 2] = 1
    segmentation.GetSegmentation().AddEmptySegment("Left")
    slicer.util.updateSegmentBinaryLabelmapFromArray(left, segmentation, "Left", oblique.volume)
    editor_node = oblique.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor_node.SetMaskSegmentID("Left")
    logic.segment(oblique.volume, segmentation, "Brain", box=box_corners_ras(oblique), editor_node=editor_node)
    written = read(segmentation, "Brain", oblique.volume) > 0
    expected = engine_mask(logic, oblique) & (left[SLICE] > 0)
    np.testing.assert_array_equal(written[SLICE], expected)
    remaining = read(segmentation, "Left", oblique.volume) > 0
    np.testing.assert_array_equal(remaining[SLICE], (left[SLICE] > 0) & ~expected)  # overwritten where SAM wrote
    oblique.scene.RemoveNode(editor_node)


def axial_view(oblique, index: int) -> np.ndarray:
    """SliceToRAS of an axial view rotated to the volume plane, through slice K=index."""
    node = oblique.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetOrientation("Axial")
    node.RotateToVolumePlane(oblique.volume)
    slice_to_ras = matrix_array(node.GetSliceToRAS())
    oblique.scene.RemoveNode(node)
    centre = np.array(oblique.array.shape[::-1], dtype=float) / 2
    centre[2] = index
    slice_to_ras[:3, 3] = ijk_to_world(centre, oblique.ijk_to_ras)[0]
    return slice_to_ras


def box_drag_corners(oblique) -> np.ndarray:
    x0, y0, x1, y1 = box_ijk(oblique)
    return ijk_to_world([(x0, y0, SLICE), (x1, y0, SLICE), (x1, y1, SLICE), (x0, y1, SLICE)], oblique.ijk_to_ras)


def test_interactive_box_runs_off_thread_previews_and_applies(logic, oblique, segmentation):
    session = InteractiveSession(logic, oblique.volume, segmentation)
    view = axial_view(oblique, SLICE)
    runner = BackgroundRunner()
    job = session.set_box(box_drag_corners(oblique), view)
    runner.submit(job.generation, job.run)
    assert runner.wait(120)
    (finished,) = runner.poll()
    assert finished.error is None and finished.tag == job.generation
    assert session.accept(job, finished.value)
    expected = engine_mask(logic, oblique)
    preview = read(session.preview.node, "SAMPreview", oblique.volume) > 0
    np.testing.assert_array_equal(preview[SLICE], expected)
    assert preview.sum() == expected.sum()
    assert session.markups.box_corners().shape == (4, 3)

    editor = SegmentEditorSession(segmentation, oblique.volume)
    editor.apply("Brain", session.edits(editor.reference_geometry(), editor.segment_labelmap("Brain")))
    np.testing.assert_array_equal((read(segmentation, "Brain", oblique.volume) > 0)[SLICE], expected)
    editor.undo()
    assert (read(segmentation, "Brain", oblique.volume) > 0).sum() == 0

    stale = session.set_box(box_drag_corners(oblique), view)
    session.clear()  # Cancel: prompts, preview and pending result go; the running job becomes stale
    assert not session.accept(stale, stale.run())
    assert session.result is None and session.markups.is_empty()
    with pytest.raises(PromptError, match="nothing to apply"):
        session.edits(editor.reference_geometry(), None)
    editor.close()
    session.close()
    assert session.preview.node is None and session.markups.include.GetScene() is None


def test_prompts_on_another_slice_start_a_new_prompt_set(logic, oblique, segmentation):
    session = InteractiveSession(logic, oblique.volume, segmentation)
    session.set_box(box_drag_corners(oblique), axial_view(oblique, SLICE))
    moved = box_drag_corners(oblique) + (
        ijk_to_world([(0, 0, 1)], oblique.ijk_to_ras) - ijk_to_world([(0, 0, 0)], oblique.ijk_to_ras)
    )
    job = session.set_box(moved, axial_view(oblique, SLICE + 1))
    assert job.prompt.ref == SliceRef(0, SLICE + 1) and session.ref == SliceRef(0, SLICE + 1)
    assert session.markups.box_corners().shape == (4, 3)
    session.close()


def test_box_only_model_refuses_point_clicks(logic, oblique, segmentation):
    session = InteractiveSession(logic, oblique.volume, segmentation)
    centre = ijk_to_world([(40, 40, SLICE)], oblique.ijk_to_ras)[0]
    with pytest.raises(PromptError, match="box prompts only"):
        session.add_point(centre, True, axial_view(oblique, SLICE))
    assert session.markups.is_empty()
    session.close()


def test_prefetch_embeds_the_slice_a_view_shows(logic, oblique, segmentation):
    session = InteractiveSession(logic, oblique.volume, segmentation)
    predictor = logic.predictor(oblique.volume)
    assert not predictor.is_cached(0, SLICE + 1)
    work = session.prefetch(axial_view(oblique, SLICE + 1))
    calls = predictor.encoder_calls
    work()
    predictor.embedding(0, SLICE + 1)  # waits for the running prefetch instead of encoding again
    assert predictor.is_cached(0, SLICE + 1) and predictor.encoder_calls == calls + 1
    outside = axial_view(oblique, SLICE)
    outside[:3, 3] += 1000.0
    with pytest.raises(PromptError, match="outside the volume"):
        session.prefetch(outside)
    session.close()


def test_propagate_writes_the_visited_slices(logic, oblique, segmentation):
    logic.segment(oblique.volume, segmentation, "Brain", box=box_corners_ras(oblique))
    before = read(segmentation, "Brain", oblique.volume) > 0
    result = logic.propagate(
        oblique.volume,
        segmentation,
        "Brain",
        axis="K",
        seed_index=SLICE,
        direction="up",
        slice_range=(SLICE, SLICE + 2),
    )
    assert not result.cancelled
    written = read(segmentation, "Brain", oblique.volume) > 0
    accepted = [SLICE, *result.scores]
    assert max(accepted) > SLICE
    for k in range(oblique.array.shape[0]):
        if min(accepted) <= k <= max(accepted):
            np.testing.assert_array_equal(written[k], result.mask[k])
        else:
            np.testing.assert_array_equal(written[k], before[k])
    np.testing.assert_array_equal(written[SLICE], before[SLICE])  # the seed is kept as drawn
    logic.undo(segmentation)
    np.testing.assert_array_equal(read(segmentation, "Brain", oblique.volume) > 0, before)


def test_cancelled_propagation_writes_nothing(logic, oblique, segmentation):
    logic.segment(oblique.volume, segmentation, "Brain", box=box_corners_ras(oblique))
    before = read(segmentation, "Brain", oblique.volume) > 0
    result = logic.propagate(oblique.volume, segmentation, "Brain", axis="K", seed_index=SLICE, cancel=lambda: True)
    assert result.cancelled
    np.testing.assert_array_equal(read(segmentation, "Brain", oblique.volume) > 0, before)
    with pytest.raises(PromptError, match="empty on slice"):
        logic.propagate(oblique.volume, segmentation, "Brain", axis="K", seed_index=0)


def test_interactive_propagation_previews_and_applies(logic, oblique, segmentation):
    session = InteractiveSession(logic, oblique.volume, segmentation)
    box_job = session.set_box(box_drag_corners(oblique), axial_view(oblique, SLICE))
    assert session.accept(box_job, box_job.run())
    runner = BackgroundRunner()
    job = session.propagation_job("up", (SLICE, SLICE + 2))
    runner.submit(job.generation, lambda: job.run(runner.report, runner.cancel_requested))
    assert runner.wait(300)
    (finished,) = runner.poll()
    assert finished.error is None
    assert runner.progress is not None and runner.progress[0] == runner.progress[1]
    assert session.accept_propagation(job, finished.value)
    slab, mask = session.result
    assert slab.first == SLICE and slab.last > SLICE
    preview = read(session.preview.node, "SAMPreview", oblique.volume) > 0
    np.testing.assert_array_equal(preview[slab.index()], mask)
    editor = SegmentEditorSession(segmentation, oblique.volume)
    editor.apply("Brain", session.edits(editor.reference_geometry(), editor.segment_labelmap("Brain")))
    np.testing.assert_array_equal((read(segmentation, "Brain", oblique.volume) > 0)[slab.index()], mask)
    editor.close()
    session.close()


def test_predictors_are_cached_per_volume_state_and_window(logic, oblique):
    """Runs last: it marks the voxels modified, which makes every later prompt re-embed.

    Until a predictor is built, every request gets the same source (one voxel copy, one build)."""
    source = logic.predictor_source(oblique.volume, window="0,1000")
    assert logic.predictor_source(oblique.volume, window="0,1000") is source
    built = source()
    assert logic.predictor_source(oblique.volume, window="0,1000")() is built
    first = logic.predictor(oblique.volume)
    assert logic.predictor(oblique.volume) is first
    assert logic.predictor(oblique.volume, window="0,2000") is not first
    oblique.volume.GetImageData().GetPointData().GetScalars().Modified()
    assert logic.predictor(oblique.volume) is not first
