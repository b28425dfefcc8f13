"""The SAM effect's plumbing in a real trame-slicer slice view (off-screen, headless OpenGL).

Real mouse and key events are injected into the red view's VTK interactor; Slicer's interactor
style hands them to the displayable managers, the SAM effect pipeline translates them and the
ControllerHost forwards them to a controller. The interaction controller itself is not part of
this package (SAMSegmenterMRML provides it), so a small recording controller stands in for it
here (web_stand_in.Recorder): it records calls and answers ``consumed`` as told, and these tests
check only the translation, the fall-through to the view's own interaction, scrolling reports,
the poll loop and when controllers are made.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("trame_slicer")

from vtkmodules.vtkCommonCore import vtkCommand  # noqa: E402
from web_stand_in import Recorder  # noqa: E402


@pytest.fixture(scope="module")
def red_view(tmp_path_factory):
    """SlicerApp with the MNI152 volume in an off-screen red slice view, and the SAM effect active."""
    with pytest.MonkeyPatch.context() as patch:
        from SAMSegmenterWeb.rendering import WINDOW_VARIABLE, choose_window

        window = choose_window(os.environ)
        if window is not None:
            patch.setenv(WINDOW_VARIABLE, window)
        from trame_slicer.core import SlicerApp
        from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition

        from SAMSegmenterLib.io.sample_data import write_sample
        from SAMSegmenterWeb.controller_host import ControllerHost, ControllerSupport
        from SAMSegmenterWeb.effect import SAMEffect
        from SAMSegmenterWeb.loading import load_volume

        app = SlicerApp()
        app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
        view = app.view_manager.create_view(ViewLayoutDefinition.axial_view())
        app.view_manager.set_current_view_ids([view.get_singleton_tag()])
        path = write_sample("mni152", tmp_path_factory.mktemp("web_effect") / "mni152.nii.gz")
        volume = load_volume(app.io_manager, app.scene, [path])
        view.set_background_volume_id(volume.GetID())
        view.render_window().SetSize(400, 400)
        view.interactor().UpdateSize(400, 400)
        view.reset_view()
        view.render()
        editor = app.segmentation_editor
        segmentation = editor.create_empty_segmentation_node()
        editor.set_active_segmentation(segmentation, volume)
        segment_id = editor.add_empty_segment(segment_name="A")
        states, errors, made = [], [], []

        def create(*args):
            made.append(Recorder(*args))
            return made[-1]

        host = ControllerHost(editor, ControllerSupport(create, dict), states.append, errors.append, lambda: None)
        effect = editor.get_effect(SAMEffect)
        effect.host = host
        editor.set_active_effect(effect)
        assert host.attach(volume, segmentation, segment_id)
        assert not host.attach(volume, segmentation, segment_id), "the same key keeps its controller"
        yield app, view, host, made[0], states, errors
        host.detach()


def send(view, event: int, x: int = 0, y: int = 0, ctrl: bool = False, key: str = "", code: str = "\0") -> None:
    interactor = view.interactor()
    interactor.SetEventInformation(x, y, int(ctrl), 0, code, 0, key or None)
    if key:
        interactor.SetKeySym(key)
    interactor.InvokeEvent(event)


def xy_to_ras(slice_node, x: float, y: float) -> np.ndarray:
    matrix = slice_node.GetXYToRAS()
    return np.array([sum(matrix.GetElement(r, c) * v for c, v in enumerate((x, y, 0.0, 1.0))) for r in range(3)])


def test_the_controller_gets_the_writer_for_its_segmentation(red_view):
    app, _, _, recorder, _, _ = red_view
    assert recorder.writer.segmentation_node is recorder.segmentation
    assert recorder.segment_id in recorder.segmentation.GetSegmentation().GetSegmentIDs()
    assert recorder.volume is app.segmentation_editor.active_volume_node


def test_a_left_drag_reaches_the_controller_with_positions(red_view):
    _, view, _, recorder, _, _ = red_view
    recorder.pointers.clear()
    send(view, vtkCommand.LeftButtonPressEvent, 120, 150, ctrl=True)
    send(view, vtkCommand.MouseMoveEvent, 200, 220, ctrl=True)
    send(view, vtkCommand.LeftButtonReleaseEvent, 200, 220, ctrl=True)
    kinds = [(e["kind"], e["button"]) for e in recorder.pointers]
    assert kinds == [("press", "left"), ("move", "left"), ("release", "left")]
    slice_node = view.get_view_node()
    for event, xy in zip(recorder.pointers, [(120, 150), (200, 220), (200, 220)]):
        assert event["xy"] == xy and event["ctrl"] and not event["shift"] and not event["alt"]
        assert event["slice_node"] is slice_node
        np.testing.assert_allclose(event["ras"], xy_to_ras(slice_node, *xy), atol=1e-6)
    send(view, vtkCommand.MouseMoveEvent, 210, 230)
    assert (recorder.pointers[-1]["kind"], recorder.pointers[-1]["button"]) == ("move", "none")


def test_unconsumed_events_keep_the_views_own_interaction(red_view):
    _, view, _, recorder, _, _ = red_view
    slice_node = view.get_view_node()

    def right_drag() -> float:
        before = slice_node.GetFieldOfView()[0]
        send(view, vtkCommand.RightButtonPressEvent, 200, 200)
        for y in range(195, 120, -15):
            send(view, vtkCommand.MouseMoveEvent, 200, y)
        send(view, vtkCommand.RightButtonReleaseEvent, 200, 120)
        return slice_node.GetFieldOfView()[0] / before

    recorder.consume = {"left"}
    assert abs(right_drag() - 1.0) > 0.05, "a right drag the controller leaves alone zooms the view"
    assert ("press", "right") in [(e["kind"], e["button"]) for e in recorder.pointers]
    recorder.consume = {"left", "right"}
    assert right_drag() == pytest.approx(1.0), "a consumed right drag does not"
    recorder.consume = {"left"}


def test_keys_and_scrolling_reach_the_controller(red_view):
    _, view, _, recorder, _, _ = red_view
    recorder.keys.clear()
    # What the browser sends (VTK's remote interaction adapter makes a KeyPressEvent of each): a printable key
    # as "keydown" (no character code) then "keypress" (its code); Escape only as "keydown".
    for key, code in (("a", "\0"), ("a", "a"), ("Escape", "\0"), ("Enter", "\0"), ("Enter", "\r"), ("PageUp", "\0")):
        send(view, vtkCommand.KeyPressEvent, 200, 200, key=key, code=code)
    assert recorder.keys == ["a", "x", "Return", "Prior"], "each key once, VTK's symbols, Escape as x (cancel)"
    recorder.views.clear()
    low, high = view.get_slice_range()
    view.set_slice_value((low + high) / 2 + 3 * view.get_slice_step())
    assert recorder.views and all(node is view.get_view_node() for node in recorder.views)


def test_jump_to_uses_the_view_the_pointer_was_last_in(red_view):
    _, view, host, recorder, _, _ = red_view
    host.jump_to(42)
    assert recorder.actions[-1] == ("jump_to", 42, view.get_view_node())


def test_poll_runs_while_busy_and_stops(red_view):
    _, _, host, recorder, states, _ = red_view

    @dataclass
    class Busy:
        busy: bool

    async def scenario() -> None:
        recorder.polls_left = 3
        recorder.on_change(Busy(True))
        for _ in range(50):
            await asyncio.sleep(0.02)
            if recorder.polls_left <= 0:
                break
        await asyncio.sleep(0.15)

    asyncio.run(scenario())
    assert recorder.polls_left == 0, "poll() is called until it returns False, then no more"
    assert states[-1] == Busy(True)


def test_the_first_poll_does_not_wait_for_the_poll_period(red_view):
    """A request the controller just made is sent by poll(): the host polls in the loop's next turn."""
    _, _, host, recorder, _, _ = red_view

    @dataclass
    class Busy:
        busy: bool

    async def scenario() -> int:
        recorder.polls_left = 2
        recorder.on_change(Busy(True))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        polled = 2 - recorder.polls_left
        for _ in range(50):
            await asyncio.sleep(0.02)
            if recorder.polls_left <= 0:
                break
        return polled

    assert asyncio.run(scenario()) == 1


def test_another_segment_gets_its_own_controller(red_view):
    app, _, host, recorder, states, _ = red_view
    segment_id = app.segmentation_editor.add_empty_segment(segment_name="B")
    assert host.attach(recorder.volume, recorder.segmentation, segment_id)
    assert ("cancel",) in recorder.actions, "the previous controller is cancelled"
    assert host.controller is not recorder and host.controller.segment_id == segment_id
    assert states[-1] is None, "the panel was cleared in between"
