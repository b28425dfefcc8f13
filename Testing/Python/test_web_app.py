"""The web app's wiring in-process (no browser): what the page's state changes and buttons do.

A real SAMSegmenterWebApp (trame server not started, its asyncio loop run by the test) with the
MNI152 sample; the page is represented by its trame state. The interaction controller is the
recording stand-in (web_stand_in.Recorder): the tests check which calls reach it, not decisions.
"""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip("trame_slicer")

from web_stand_in import ControllerState, Recorder  # noqa: E402


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """(app, loop, controllers made); the app holds the MNI152 sample."""
    with pytest.MonkeyPatch.context() as patch:
        from SAMSegmenterWeb.rendering import WINDOW_VARIABLE, choose_window

        window = choose_window(os.environ)
        if window is not None:
            patch.setenv(WINDOW_VARIABLE, window)
        from trame.app import get_server
        from trame_server.utils import asynchronous

        from SAMSegmenterLib.io.sample_data import write_sample
        from SAMSegmenterWeb.app import SAMSegmenterWebApp
        from SAMSegmenterWeb.controller_host import ControllerSupport

        made: list[Recorder] = []

        def create(*args):
            made.append(Recorder(*args))
            return made[-1]

        loop = asynchronous.get_event_loop()
        app = SAMSegmenterWebApp(
            server=get_server("test_web_app", client_type="vue3"), controller_support=ControllerSupport(create, dict)
        )
        app.state.ready()
        app.load([write_sample("mni152", tmp_path_factory.mktemp("web_app") / "mni152.nii.gz")])
        loop.run_until_complete(asyncio.sleep(0.2))
        yield app, loop, made
        tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
        asyncio.set_event_loop(None)


def change(app, **values) -> None:
    """Set trame state as the page would, and run the change callbacks."""
    for key, value in values.items():
        app.state[key] = value
    app.state.flush()


def test_view_annotations_name_the_orientation_and_the_slice(web):
    app, _, _ = web
    red = app.slicer.view_manager.get_view("Red")
    low, high = red.get_slice_range()
    red.set_slice_value(low + 30 * red.get_slice_step())
    labels = app.state.web_view_info["Red"]
    assert (labels["left"], labels["right"], labels["top"], labels["bottom"]) == ("R", "L", "A", "P")
    assert labels["slice"] == "K = 30 (0-188)"
    sagittal = app.state.web_view_info["Yellow"]
    assert (sagittal["top"], sagittal["bottom"]) == ("S", "I") and sagittal["slice"].startswith("I = ")


def test_display_presets_and_segment_opacity(web):
    app, _, _ = web
    display = app.volume_node.GetDisplayNode()
    change(app, web_display="bone")
    assert not display.GetAutoWindowLevel() and (display.GetWindow(), display.GetLevel()) == (1000.0, 400.0)
    change(app, web_display="auto")
    assert display.GetAutoWindowLevel()
    change(app, web_segment_opacity=0.3)
    assert app.segmentation_node.GetDisplayNode().GetOpacity() == pytest.approx(0.3)
    change(app, web_segment_opacity=1.0)


def test_load_shows_the_volume_with_an_empty_segmentation(web):
    app, _, _ = web
    assert app.state.web_volume_name == "mni152"
    red = app.slicer.view_manager.get_view("Red")
    assert red.get_background_volume_id() == app.volume_node.GetID()
    assert app.editor.active_segmentation_node is app.segmentation_node
    assert app.segmentation_node.GetSegmentation().GetNumberOfSegments() == 0


def test_masking_options_set_the_editor_node(web):
    from trame_slicer.segmentation import SegmentationOverwriteMode

    app, _, _ = web
    low, high = app.state.web_mask_limits
    assert (low, high) == pytest.approx(app.volume_node.GetImageData().GetScalarRange())
    change(
        app,
        web_mask_intensity=True,
        web_mask_range=[low + 10, high - 10],
        web_mask_overwrite=SegmentationOverwriteMode.ALLOW_OVERLAP.value,
    )
    node = app.editor.editor_node
    assert node.GetSourceVolumeIntensityMask()
    assert node.GetSourceVolumeIntensityMaskRange() == pytest.approx((low + 10, high - 10))
    assert app.editor.get_overwrite_mode() == SegmentationOverwriteMode.ALLOW_OVERLAP
    change(app, web_mask_intensity=False, web_mask_overwrite=SegmentationOverwriteMode.OVERWRITE_ALL.value)
    assert not node.GetSourceVolumeIntensityMask()


def test_three_slice_layout_shows_the_volume_in_every_view(web):
    app, loop, _ = web
    change(app, web_layout="slices")
    loop.run_until_complete(asyncio.sleep(0.1))
    views = app.slicer.view_manager.filter_visible_views(app.slicer.view_manager.get_slice_views())
    assert sorted(view.get_singleton_tag() for view in views) == ["Green", "Red", "Yellow"]
    assert all(view.get_background_volume_id() == app.volume_node.GetID() for view in views)
    assert not app.slicer.view_manager.filter_visible_views(app.slicer.view_manager.get_threed_views())
    change(app, web_layout="axial")


def test_choosing_sam_makes_a_controller_for_a_new_segment(web):
    app, _, made = web
    change(app, sam_window="brain", web_effect="sam")
    segment_id = app.editor.get_active_segment_id()
    assert segment_id, "SAM got a segment to write to"
    assert made and app.host.controller is made[-1]
    controller = made[-1]
    assert (controller.volume, controller.segmentation, controller.segment_id) == (
        app.volume_node,
        app.segmentation_node,
        segment_id,
    )
    assert controller.writer.segmentation_node is app.segmentation_node
    assert controller.window == "brain" and controller.actions == []
    assert app.editor.active_effect is app.sam_effect


def test_panel_buttons_reach_the_controller(web):
    app, _, made = web
    controller = made[-1]
    controller.actions.clear()
    change(app, sam_apply_mode="add", sam_direction="up", sam_limit=True, sam_first=10, sam_last=20)
    app.sam_apply()
    app.sam_propagate()
    app.sam_stop()
    app.sam_jump_to(33)
    app.sam_cancel()
    change(app, sam_limit=False, sam_window="auto", sam_structure="compact")
    app.sam_propagate()
    assert controller.structure == "compact" and controller.apply_mode == "add" and controller.slice_range is None
    red = app.slicer.view_manager.get_view("Red").get_view_node()
    assert controller.actions == [
        ("apply", "add"),
        ("propagate", "up", (10, 20)),
        ("stop",),
        ("jump_to", 33, red),
        ("cancel",),
        ("set_window", "auto"),
        ("propagate", "up", None),
    ]


def test_controller_states_and_errors_reach_the_page(web):
    app, loop, made = web
    controller = made[-1]
    controller.polls_left = 2
    controller.on_change(ControllerState(status="Propagating", progress=(6, 12)))
    assert app.state.sam["status"] == "Propagating" and app.state.sam["progress"]["percent"] == 50.0
    loop.run_until_complete(asyncio.sleep(0.3))
    assert controller.polls_left == 0, "polled while busy until poll() returned False"
    controller.fail_with = "nothing to apply: draw a box first"
    app.sam_apply()
    assert app.state.web_message == {"type": "error", "text": "nothing to apply: draw a box first"}
    controller.fail_with = ""


def test_another_segment_and_leaving_sam(web):
    app, _, made = web
    first = made[-1]
    new_id = app.segments.add()
    assert made[-1].segment_id == new_id and ("cancel",) in first.actions
    change(app, web_effect="none")
    assert app.host.controller is None and ("cancel",) in made[-1].actions
    assert app.state.sam["attached"] is False
    assert app.editor.active_effect is not app.sam_effect


def test_new_segments_get_saturated_colours_in_turn(web):
    from SAMSegmenterWeb.segments import SEGMENT_COLORS

    app, _, _ = web
    count = len(app.editor.get_segment_ids())
    added = [app.segments.add() for _ in range(3)]
    colours = [tuple(round(255 * c) for c in app.editor.get_segment(i).GetColor()) for i in added]
    expected = [SEGMENT_COLORS[(count + n) % len(SEGMENT_COLORS)] for n in range(3)]
    assert colours == expected and len(set(colours)) == 3
    assert all(max(c) - min(c) >= 150 for c in colours), "saturated: visible over grey"
    for segment_id in added:
        app.editor.remove_segment(segment_id)


def test_segment_sizes_follow_writes_and_undo(web):
    import numpy as np

    from SAMSegmenterMRML.labelmaps import Slab, write_slab
    from SAMSegmenterWeb.writer import SegmentWriter

    app, _, _ = web
    first = app.segments.add()
    second = app.segments.add()
    sizes = app.state.web_segment_sizes
    assert sizes[first] == sizes[second] == "empty"
    mask = np.zeros((1, 233, 197), dtype=bool)
    mask[0, 100:130, 80:120] = True  # 1,200 voxels of 1 mm^3
    mask[0, 100, 80] = False
    write_slab(SegmentWriter(app.editor, app.segmentation_node), app.volume_node, second, mask, Slab(0, 90, 90))
    sizes = app.state.web_segment_sizes
    assert sizes[second] == "1,199 voxels · 1.20 mL" and sizes[first] == "empty"
    from vtkmodules.util.numpy_support import vtk_to_numpy

    image = app.volume_node.GetImageData()
    volume = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
    mean = float(volume[90][mask[0]].mean())
    # 1 mm voxels: the farthest voxel centres are (j 100, i 119) and (j 129, i 80), (100, 80) being left out
    assert app.state.web_segment_stats[second] == f"max diameter {np.hypot(29, 39):.1f} mm · mean {mean:.1f}"
    assert app.state.web_segment_stats[first] == ""
    app.segments.undo()
    assert app.state.web_segment_sizes[second] == "empty"
    app.segments.redo()
    assert app.state.web_segment_sizes[second] == "1,199 voxels · 1.20 mL"
