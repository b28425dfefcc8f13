"""The InteractionController on a real MRML scene with the real model in a real inference service.

Events are synthetic (what a front end would send after translating its view events); the slice views are
real vtkMRMLSliceNodes rotated to the volume plane. The volume is the oblique MNI crop (6 slices along K).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import slicer
from mrml_scene import oblique  # noqa: F401  (fixture)
from service_fixtures import local_service  # noqa: F401  (fixture)

from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt, box_from_mask
from SAMSegmenterLib.propagation import propagate
from SAMSegmenterLib.propagation.plan import affected_range, structure_options
from SAMSegmenterLib.propagation.slice_quality import UNSURE
from SAMSegmenterLib.service.client import ServiceClient
from SAMSegmenterLib.service.protocol import PREFIX
from SAMSegmenterMRML.controller import InteractionController, PointerEvent
from SAMSegmenterMRML.editor import SegmentEditorSession
from SAMSegmenterMRML.engines import ServiceEngine
from SAMSegmenterMRML.geometry import ijk_to_world, view_slice, volume_ijk_to_world
from SAMSegmenterMRML.labelmaps import Slab, labelmap_on_volume, segment_labelmap, write_slab
from SAMSegmenterMRML.logic import volume_array

SLICE = 2


@pytest.fixture(scope="module")
def engine(local_service):  # noqa: F811
    return ServiceEngine(client=ServiceClient(local_service))


@pytest.fixture(scope="module")
def local(litemedsam, oblique):  # noqa: F811
    """The same model in this process, on the same voxels: the masks the controller must show."""
    return SlicePredictor(litemedsam, volume_array(oblique.volume))


@pytest.fixture
def segmentation(oblique):  # noqa: F811
    node = oblique.new_segmentation("Segmentation", "Brain")
    yield node
    oblique.scene.RemoveNode(node)


@pytest.fixture
def writer(oblique, segmentation):  # noqa: F811
    session = SegmentEditorSession(segmentation, oblique.volume)
    yield session
    session.close()


@pytest.fixture
def controller(engine, oblique, segmentation, writer):  # noqa: F811
    states = []
    made = InteractionController(engine, oblique.volume, segmentation, "Brain", writer, on_change=states.append)
    made.states = states
    yield made
    made.close()


@pytest.fixture
def view(oblique):  # noqa: F811
    """An axial slice view rotated to the volume plane, through slice K=SLICE."""
    node = oblique.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetOrientation("Axial")
    node.RotateToVolumePlane(oblique.volume)
    show(node, oblique, SLICE)
    yield node
    oblique.scene.RemoveNode(node)


def show(node, oblique, index):  # noqa: F811
    """Move the view to slice K=index (through its centre)."""
    centre = np.array(oblique.array.shape[::-1], dtype=float) / 2
    centre[2] = index
    node.JumpSliceByOffsetting(*ijk_to_world(centre, oblique.ijk_to_ras)[0])


def ras(oblique, x, y, k):  # noqa: F811
    return tuple(ijk_to_world([(x, y, k)], oblique.ijk_to_ras)[0])


def drag_box(controller, view, oblique, box, k):  # noqa: F811
    """Press at one corner of ``box`` (x0, y0, x1, y1 voxels on slice k), move and release at the other."""
    x0, y0, x1, y1 = box
    assert controller.pointer(PointerEvent("press", "left", (10, 10), ras(oblique, x0, y0, k), view))
    assert controller.pointer(PointerEvent("move", "none", (40, 40), ras(oblique, (x0 + x1) / 2, (y0 + y1) / 2, k),
                                           view))
    assert controller.pointer(PointerEvent("release", "left", (60, 60), ras(oblique, x1, y1, k), view))


def click(controller, view, oblique, x, y, k, button="left", ctrl=False):  # noqa: F811
    pressed = controller.pointer(PointerEvent("press", button, (30, 30), ras(oblique, x, y, k), view, ctrl=ctrl))
    released = controller.pointer(PointerEvent("release", button, (30, 30), ras(oblique, x, y, k), view, ctrl=ctrl))
    return pressed, released


def settle(controller, timeout=600):
    """Poll like a GUI timer until the controller wants no more polls."""
    deadline = time.monotonic() + timeout
    while controller.poll():
        assert time.monotonic() < deadline, controller.state
        time.sleep(0.02)
    return controller.state


def preview(controller, oblique):  # noqa: F811
    node = controller.preview.node
    if node is None or not node.GetDisplayNode().GetVisibility():
        return np.zeros(oblique.array.shape, bool)
    return labelmap_on_volume(segment_labelmap(node, "SAMPreview"), oblique.volume, node)


def segment(segmentation, oblique):  # noqa: F811
    return labelmap_on_volume(segment_labelmap(segmentation, "Brain"), oblique.volume, segmentation)


def brain_box(oblique, k=SLICE):  # noqa: F811
    return tuple(int(v) for v in box_from_mask(oblique.brain[k]))


def test_box_previews_the_engines_mask_and_apply_writes_it_with_undo(controller, view, oblique, local,
                                                                     segmentation, writer):
    box = brain_box(oblique)
    drag_box(controller, view, oblique, box, SLICE)
    assert controller.busy and controller.markups.box_corners().shape == (4, 3)
    state = settle(controller)
    expected = local.predict(0, SLICE, Prompt(box=box)).mask
    assert not state.error, state.status
    assert state.can_apply and state.can_propagate and state.preview_range == (SLICE, SLICE)
    shown = preview(controller, oblique)
    np.testing.assert_array_equal(shown[SLICE], expected)
    assert shown.sum() == expected.sum() > 100
    assert state.device and "local service" in state.service
    assert controller.key("Return")
    after = controller.state
    assert "Applied to 1 slice" in after.status and not after.can_apply and not after.can_cancel
    written = segment(segmentation, oblique)
    np.testing.assert_array_equal(written[SLICE], expected)
    assert written.sum() == expected.sum()
    assert preview(controller, oblique).sum() == 0 and controller.markups.is_empty()
    writer.undo()
    assert segment(segmentation, oblique).sum() == 0


def test_box_only_model_leaves_right_click_to_the_view_and_refuses_clicks(controller, view, oblique):
    pressed = controller.pointer(PointerEvent("press", "right", (5, 5), ras(oblique, 40, 40, SLICE), view))
    assert not pressed  # zoom and context menu stay with Slicer
    assert click(controller, view, oblique, 40, 40, SLICE) == (True, True)
    state = controller.state
    assert state.error and "box prompts only" in state.status and not controller.busy
    assert controller.markups.is_empty()
    shifted = PointerEvent("press", "left", (5, 5), ras(oblique, 40, 40, SLICE), view, shift=True)
    assert not controller.pointer(shifted)
    assert not controller.key("q") and not controller.pointer(PointerEvent("move", "none", (9, 9), (0, 0, 0), view))


def test_stop_discards_a_running_prediction(controller, view, oblique):
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    controller.stop()
    state = settle(controller)
    assert "Stopped" in state.status and state.preview_range is None and not state.can_apply


def test_busy_rule_is_the_same_for_keys_and_the_button(controller, view, oblique):
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    controller.propagate("up")
    job = controller._job
    assert job is not None and controller.state.can_stop and not controller.state.can_propagate
    for refused in (lambda: controller.key("p"), lambda: controller.key("d"), lambda: controller.propagate("both")):
        refused()
        assert controller._job is job and controller.state.error and "running" in controller.state.status
    assert not controller.state.can_apply
    controller.stop()
    state = settle(controller)
    first, last = state.preview_range  # a stopped propagation keeps the slices it finished
    assert first <= SLICE <= last and "Stopped" in state.status and not state.error, state.status


def test_stop_stops_the_propagation_on_the_service(controller, view, oblique, engine):
    """The service is told to stop (a job left running would hold the CPU, and when its lease expires the
    service closes its volume, with any newer job on it)."""
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    controller.propagate("both")
    call = controller._job.call
    deadline = time.monotonic() + 60
    while call.job_id is None:  # the service has accepted the job
        controller.poll()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    controller.stop()
    state = settle(controller)
    first, last = state.preview_range
    assert first <= SLICE <= last and "Stopped" in state.status and not state.error, state.status
    assert [c.index for c in state.confidence] == ([] if first == last else list(range(first, last + 1)))
    assert engine.client.request("GET", f"{PREFIX}/jobs/{call.job_id}")["state"] == "cancelled"


@pytest.mark.parametrize("interrupt", ["cancel", "window"])
def test_a_running_propagation_is_cancelled_and_never_shown(controller, view, oblique, interrupt):
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    assert controller.key("p") and controller.busy
    if interrupt == "cancel":
        assert controller.key("x")
    else:
        controller.set_window("0,1000")
    state = settle(controller)
    assert state.preview_range is None, state.status
    assert not state.error, state.status


def test_a_prompt_during_a_propagation_is_refused(controller, view, oblique):
    """A box drawn while a propagation runs does not silently replace it: the press is refused with a reason."""
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    assert controller.key("p")
    job = controller._job
    show(view, oblique, SLICE + 1)
    x0, y0, _, _ = brain_box(oblique, SLICE + 1)
    assert controller.pointer(PointerEvent("press", "left", (10, 10), ras(oblique, x0, y0, SLICE + 1), view))
    assert controller._job is job and controller.state.error and "propagation is running" in controller.state.status
    assert not controller.pointer(PointerEvent("release", "left", (60, 60), ras(oblique, x0, y0, SLICE + 1), view))
    state = settle(controller)
    assert not state.error and state.preview_range[0] <= SLICE <= state.preview_range[1], state.status


@pytest.mark.parametrize("corners", [((20, 30), (60, 30)), ((20, 30), (21, 70)), ((20, 30), (400, 70))])
def test_a_degenerate_box_is_refused_with_a_reason(controller, view, oblique, corners):
    """A zero-height or one-voxel-wide box, or one dragged far past the image, is not sent to the model."""
    (x0, y0), (x1, y1) = corners
    drag_box(controller, view, oblique, (x0, y0, x1, y1), SLICE)
    state = controller.state
    assert state.error and ("too thin" in state.status or "past the edge" in state.status), state.status
    assert not controller.busy and state.preview_range is None and controller.markups.is_empty()


def test_propagate_then_correct_a_middle_slice(controller, view, oblique, local, segmentation):
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    assert controller.key("p")
    propagated = settle(controller)
    assert not propagated.error, propagated.status
    first, last = propagated.preview_range
    assert first < SLICE < last, propagated.status
    before = preview(controller, oblique)
    assert [c.index for c in propagated.confidence] == list(range(first, last + 1))
    assert [c.key for c in propagated.confidence].count(True) == 1 and propagated.stops
    # the strip rates propagated slices by the propagation's confidence; key slices have none
    assert all((c.confidence is None) == c.key for c in propagated.confidence)
    assert all(0 <= c.confidence <= 1 for c in propagated.confidence if not c.key)
    assert all(c.unsure == (c.confidence < UNSURE) for c in propagated.confidence if not c.key)

    fix = SLICE + 2 if SLICE + 2 <= last else SLICE + 1
    x0, y0, x1, y1 = brain_box(oblique, fix)
    smaller = (x0 + 6, y0 + 6, x1 - 6, y1 - 6)
    show(view, oblique, fix)
    drag_box(controller, view, oblique, smaller, fix)
    corrected = settle(controller)
    assert not corrected.error, corrected.status
    after = preview(controller, oblique)
    np.testing.assert_array_equal(after[fix], local.predict(0, fix, Prompt(box=smaller)).mask)  # exactly the new mask
    span = affected_range({SLICE: None, fix: None}, fix, (first, last))
    for k in range(oblique.array.shape[0]):
        if not span[0] <= k <= span[1]:
            np.testing.assert_array_equal(after[k], before[k])  # outside the affected slices nothing changed
    np.testing.assert_array_equal(after[SLICE], before[SLICE])  # the other key slice is kept as it was
    assert {c.index for c in corrected.confidence if c.key} == {SLICE, fix}

    weakest = corrected.weakest()
    assert weakest is not None and weakest not in (SLICE, fix)
    controller.jump_to(weakest, view)
    shown = view_slice(slicer.util.arrayFromVTKMatrix(view.GetSliceToRAS()), volume_ijk_to_world(oblique.volume),
                       oblique.array.shape)
    assert shown.index == weakest and shown.axis == 0

    controller.apply()
    written = segment(segmentation, oblique)
    np.testing.assert_array_equal(written, after)


def test_a_prompt_on_another_axis_keeps_a_propagated_preview(controller, view, oblique):
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    controller.propagate("both")
    settle(controller)
    kept = controller.state.preview_range
    sagittal = oblique.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    sagittal.SetOrientation("Sagittal")
    sagittal.RotateToVolumePlane(oblique.volume)
    sagittal.JumpSliceByOffsetting(*ras(oblique, 40, 40, 2))  # through column i = 40
    try:
        assert controller.pointer(PointerEvent("press", "left", (0, 0), ras(oblique, 40, 10, 1), sagittal))
        controller.pointer(PointerEvent("move", "none", (50, 50), ras(oblique, 40, 30, 3), sagittal))
        controller.pointer(PointerEvent("release", "left", (50, 50), ras(oblique, 40, 60, 4), sagittal))
        state = controller.state
        assert state.error and "Apply or cancel the preview" in state.status and state.preview_range == kept
    finally:
        oblique.scene.RemoveNode(sagittal)


def test_resting_on_a_slice_prefetches_it(engine, oblique, segmentation, writer, view):  # noqa: F811
    now = [0.0]
    controller = InteractionController(engine, oblique.volume, segmentation, "Brain", writer, window="0,900",
                                       clock=lambda: now[0])
    try:
        settle(controller)  # the upload
        cached = engine.client.status()["embedding_cache_mib"]
        show(view, oblique, 5)
        controller.view_changed(view)
        assert controller.poll() and controller.wants_poll  # not yet: the view has not rested long enough
        now[0] += 1.0
        controller.poll()
        assert not controller.wants_poll
        deadline = time.monotonic() + 300
        while engine.client.status()["embedding_cache_mib"] <= cached:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        controller.close()


def test_the_markups_do_not_take_the_place_tool(oblique, engine, segmentation, writer):  # noqa: F811
    """Adding the prompt nodes leaves the user's active point list as the target of the place tool."""
    selection = oblique.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    mine = oblique.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my points")
    assert selection.GetActivePlaceNodeID() == mine.GetID()  # the Markups logic does make new nodes active
    controller = InteractionController(engine, oblique.volume, segmentation, "Brain", writer)
    try:
        assert selection.GetActivePlaceNodeID() == mine.GetID()
        assert selection.GetActivePlaceNodeClassName() == "vtkMRMLMarkupsFiducialNode"
    finally:
        controller.close()
        oblique.scene.RemoveNode(mine)


def test_keys_apply_with_the_front_ends_mode_and_propagate_over_its_range(controller, view, oblique, segmentation,
                                                                          writer):
    """The front end's "Apply as" and "Limit to slices" choices hold for the keys as for its buttons."""
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    controller.slice_range = (SLICE, SLICE + 1)
    assert controller.key("u")
    state = settle(controller)
    assert not state.error and state.preview_range == (SLICE, SLICE + 1), state.status
    shown = preview(controller, oblique)

    kept = np.zeros(oblique.array.shape, bool)
    kept[SLICE, :3, :3] = True  # drawn before, outside the preview: "replace" would erase it, "add" keeps it
    assert not (kept & shown).any()
    write_slab(writer, oblique.volume, "Brain", kept[SLICE:SLICE + 1], Slab(0, SLICE, SLICE), "add")
    controller.apply_mode = "add"
    assert controller.key("a")
    assert "Applied to 2 slices" in controller.state.status
    np.testing.assert_array_equal(segment(segmentation, oblique), shown | kept)


def test_the_structure_choice_reaches_the_propagation(controller, view, oblique, local):
    """The front end's "Structure" choice sets the walk's options (here ``compact``: tighter boxes)."""
    with pytest.raises(InputError, match="structure must be one of"):
        controller.structure = "tumor"
    assert controller.structure == "anatomy"
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    controller.structure, controller.slice_range = "compact", (SLICE, SLICE + 2)
    assert controller.key("u")
    state = settle(controller)
    assert not state.error, state.status
    expected = propagate(local, 0, SLICE, seed_mask=preview(controller, oblique)[SLICE], direction="up",
                         slice_range=(SLICE, SLICE + 2), options=structure_options("compact"))
    np.testing.assert_array_equal(preview(controller, oblique), expected.mask)
    anatomy = propagate(local, 0, SLICE, seed_mask=expected.mask[SLICE], direction="up",
                        slice_range=(SLICE, SLICE + 2))
    assert not np.array_equal(anatomy.mask, expected.mask)  # the choice changed the walk


def test_another_segment_keeps_an_unapplied_propagation_and_apply_writes_it_there(controller, view, oblique,
                                                                                  segmentation):
    segmentation.GetSegmentation().AddEmptySegment("Other", "Other")
    drag_box(controller, view, oblique, brain_box(oblique), SLICE)
    settle(controller)
    controller.propagate("both")
    before = settle(controller)
    assert before.preview_range[1] > before.preview_range[0]
    shown = preview(controller, oblique)
    controller.set_segment("Other")
    after = controller.state
    assert controller.has_preview and "kept" in after.status and after.preview_range == before.preview_range
    np.testing.assert_array_equal(preview(controller, oblique), shown)
    controller.apply("replace")
    written = labelmap_on_volume(segment_labelmap(segmentation, "Other"), oblique.volume, segmentation)
    np.testing.assert_array_equal(written, shown)
    assert segment(segmentation, oblique).sum() == 0  # nothing went to the first segment
