"""SAMSegmenterLogic, the console API, with the real LiteMedSAM on a real MRML scene.

Most tests run the model in this process (``in_process=True``); one runs the same calls through the
inference service and checks that the written segments are the same. Encoder calls are few: the
tests prompt slice K=2 of the oblique MNI crop and propagate over slices 2-4.
"""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import oblique  # noqa: F401  (fixture)
from service_fixtures import local_service  # noqa: F401  (fixture)

from SAMSegmenterLib.errors import InputError, PromptError
from SAMSegmenterLib.prompts import Prompt, box_from_mask
from SAMSegmenterLib.service.client import ServiceClient
from SAMSegmenterMRML.engines import ServiceEngine
from SAMSegmenterMRML.geometry import SliceRef, ijk_to_world
from SAMSegmenterMRML.labelmaps import labelmap_on_volume, segment_labelmap
from SAMSegmenterMRML.logic import SAMSegmenterLogic

SLICE = 2


@pytest.fixture(scope="module")
def logic():
    logic = SAMSegmenterLogic(in_process=True, device="cpu")
    yield logic
    logic.close()


@pytest.fixture
def segmentation(oblique):  # noqa: F811
    node = oblique.new_segmentation("Segmentation", "Brain")
    yield node
    oblique.scene.RemoveNode(node)


def box_ijk(oblique, k=SLICE) -> np.ndarray:  # noqa: F811
    """Tight (x0, y0, x1, y1) box of the brain on slice K=k (x = i, y = j)."""
    return box_from_mask(oblique.brain[k])


def box_corners_ras(oblique, k=SLICE) -> np.ndarray:  # noqa: F811
    x0, y0, x1, y1 = box_ijk(oblique, k)
    return ijk_to_world([(x0, y0, k), (x1, y1, k)], oblique.ijk_to_ras)


def read(segmentation, oblique, segment_id="Brain"):  # noqa: F811
    return labelmap_on_volume(segment_labelmap(segmentation, segment_id), oblique.volume, segmentation)


def engine_mask(logic, oblique, k=SLICE, selection=None) -> np.ndarray:  # noqa: F811
    """The engine's own answer for the same box given in IJK (``selection``: None for the default rule)."""
    return logic.volume(oblique.volume).predict(0, k, Prompt(box=box_ijk(oblique, k)), selection=selection).mask


def test_segment_from_ras_box_writes_the_engines_mask(logic, oblique, segmentation):  # noqa: F811
    result = logic.segment(oblique.volume, segmentation=segmentation, segment="Brain", box=box_corners_ras(oblique))
    assert result.ref == SliceRef(0, SLICE) and result.segment_id == "Brain" and result.segmentation is segmentation
    expected = engine_mask(logic, oblique)
    np.testing.assert_array_equal(result.mask, expected)
    written = read(segmentation, oblique)
    np.testing.assert_array_equal(written[SLICE], expected)
    assert written.sum() == expected.sum() > 100
    logic.undo(segmentation)
    assert read(segmentation, oblique).sum() == 0


def test_ijk_prompts_give_the_same_segment(logic, oblique, segmentation):  # noqa: F811
    x0, y0, x1, y1 = box_ijk(oblique)
    result = logic.segment(oblique.volume, segmentation=segmentation, segment="Brain",
                           box=[(x0, y0, SLICE), (x1, y1, SLICE)], coordinates="IJK")
    np.testing.assert_array_equal(result.mask, engine_mask(logic, oblique))


def test_segmentation_and_segment_are_created_when_missing(logic, oblique):  # noqa: F811
    result = logic.segment(oblique.volume, box=box_corners_ras(oblique), segment="tumour")
    node = result.segmentation
    try:
        assert node.GetDisplayNode() is not None
        assert node.GetSegmentation().GetSegment(result.segment_id).GetName() == "tumour"
        again = logic.segment(oblique.volume, segmentation=node, segment="tumour", box=box_corners_ras(oblique))
        assert again.segment_id == result.segment_id and node.GetSegmentation().GetNumberOfSegments() == 1
        np.testing.assert_array_equal(read(node, oblique, result.segment_id)[SLICE], engine_mask(logic, oblique))
    finally:
        oblique.scene.RemoveNode(node)


def test_segment_follows_the_editor_nodes_masking(logic, oblique, segmentation):  # noqa: F811
    import slicer

    editor_node = oblique.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    segmentation.GetSegmentation().AddEmptySegment("Left", "Left")
    left = np.zeros(oblique.array.shape, np.uint8)
    left[:, :, :40] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(left, segmentation, "Left", oblique.volume)
    editor_node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor_node.SetMaskSegmentID("Left")
    logic.segment(oblique.volume, segmentation=segmentation, segment="Brain", box=box_corners_ras(oblique),
                  editor_node=editor_node)
    expected = engine_mask(logic, oblique) & (left[SLICE] > 0)
    np.testing.assert_array_equal(read(segmentation, oblique)[SLICE], expected)
    oblique.scene.RemoveNode(editor_node)


def test_roi_gives_the_box_and_the_propagation_range(logic, oblique, segmentation):  # noqa: F811
    """The two-line console call: r = logic.propagate(volume, box=roi, segment=...); print(r.slices, r.stop_reasons)."""
    import slicer

    x0, y0, x1, y1 = box_ijk(oblique)
    corners = ijk_to_world([(x0, y0, SLICE - 0.4), (x1, y1, SLICE + 2.4)], oblique.ijk_to_ras)
    roi = oblique.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "R")
    # an ROI aligned to the volume (the oblique grid): its axes are the volume's i, j, k directions
    matrix = np.eye(4)
    matrix[:3, :3] = oblique.ijk_to_ras[:3, :3] / np.linalg.norm(oblique.ijk_to_ras[:3, :3], axis=0)
    matrix[:3, 3] = corners.mean(axis=0)
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(matrix))
    spacing = np.linalg.norm(oblique.ijk_to_ras[:3, :3], axis=0)
    roi.SetSize(*(np.array([x1 - x0, y1 - y0, 2.8]) * spacing))
    try:
        assert logic.roi_range(oblique.volume, roi) == (SLICE, SLICE + 2)
        prompt = logic.slice_prompt(oblique.volume, box=roi)
        assert prompt.ref == SliceRef(0, SLICE + 1) and prompt.box == tuple(int(v) for v in box_ijk(oblique))
        r = logic.propagate(oblique.volume, box=roi, segmentation=segmentation, segment="Brain")
        assert r.range == (SLICE, SLICE + 2) and set(r.slices) <= {SLICE, SLICE + 1, SLICE + 2}
        assert SLICE + 1 in r.slices and set(r.stop_reasons) == {"up", "down"}
        written = read(segmentation, oblique)
        for k in r.slices:
            np.testing.assert_array_equal(written[k], r.mask[k])
    finally:
        oblique.scene.RemoveNode(roi)


def test_point_list_labels_come_from_descriptions(logic, oblique):  # noqa: F811
    points = oblique.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")
    for x, y, description in ((40, 40, ""), (20, 30, "Exclude: skull"), (45, 38, "include")):
        points.AddControlPointWorld(*ijk_to_world([(x, y, SLICE)], oblique.ijk_to_ras)[0])
        points.SetNthControlPointDescription(points.GetNumberOfControlPoints() - 1, description)
    points.SetNthControlPointSelected(0, False)  # selection is ignored
    try:
        prompt = logic.slice_prompt(oblique.volume, points=points)
        assert prompt.points == ((40, 40), (20, 30), (45, 38)) and prompt.labels == (1, 0, 1)
        with pytest.raises(PromptError, match="box prompts only"):
            logic.segment(oblique.volume, points=points)
    finally:
        oblique.scene.RemoveNode(points)


def test_prompt_seeded_propagation_writes_the_visited_slices(logic, oblique, segmentation):  # noqa: F811
    before = read(segmentation, oblique)
    result = logic.propagate(oblique.volume, segmentation=segmentation, segment="Brain", box=box_corners_ras(oblique),
                             direction="up", slice_range=(SLICE, SLICE + 2), min_iou=None)
    assert not result.cancelled and result.stop_reasons["down"] == "not_requested"
    written = read(segmentation, oblique)
    accepted = result.slices
    assert accepted[0] == SLICE and max(accepted) > SLICE
    for k in range(oblique.array.shape[0]):
        expected = result.mask[k] if min(accepted) <= k <= max(accepted) else before[k]
        np.testing.assert_array_equal(written[k], expected)
    # a propagation keeps the single output on every slice it predicts, the seed included (PropagationOptions)
    np.testing.assert_array_equal(written[SLICE], engine_mask(logic, oblique, selection="single"))
    logic.undo(segmentation)
    np.testing.assert_array_equal(read(segmentation, oblique), before)
    with pytest.raises(InputError, match="unknown propagation option"):
        logic.propagate(oblique.volume, segmentation=segmentation, box=box_corners_ras(oblique), min_iuo=0.3)
    with pytest.raises(InputError, match="structure must be one of anatomy, compact"):
        logic.propagate(oblique.volume, segmentation=segmentation, box=box_corners_ras(oblique), structure="tumour")


def test_mask_seeded_propagation_and_cancel(logic, oblique, segmentation):  # noqa: F811
    logic.segment(oblique.volume, segmentation=segmentation, segment="Brain", box=box_corners_ras(oblique))
    before = read(segmentation, oblique)
    result = logic.propagate(oblique.volume, segmentation=segmentation, segment="Brain", axis="K", seed_index=SLICE,
                             cancel=lambda: True)
    assert result.cancelled
    np.testing.assert_array_equal(read(segmentation, oblique), before)  # a cancelled propagation writes nothing
    result = logic.propagate(oblique.volume, segmentation=segmentation, segment="Brain", axis="K", seed_index=SLICE,
                             direction="up", slice_range=(SLICE, SLICE + 1))
    np.testing.assert_array_equal(read(segmentation, oblique)[SLICE], before[SLICE])  # the seed is kept as drawn
    assert result.slices[0] == SLICE
    with pytest.raises(PromptError, match="empty on slice"):
        logic.propagate(oblique.volume, segmentation=segmentation, segment="Brain", axis="K", seed_index=0)


def test_volumes_are_cached_per_voxel_state_and_window(logic, oblique):  # noqa: F811
    """Runs last: it marks the voxels modified, which makes every later prompt re-embed."""
    first = logic.volume(oblique.volume)
    assert logic.volume(oblique.volume) is first
    assert logic.volume(oblique.volume, window="0,2000") is not first
    oblique.volume.GetImageData().GetPointData().GetScalars().Modified()
    assert logic.volume(oblique.volume) is not first


def test_the_service_writes_what_the_process_writes(local_service, oblique, segmentation, logic):  # noqa: F811
    remote = SAMSegmenterLogic(engine=ServiceEngine(client=ServiceClient(local_service)))
    try:
        result = remote.segment(oblique.volume, segmentation=segmentation, segment="Brain",
                                box=box_corners_ras(oblique))
        np.testing.assert_array_equal(result.mask, engine_mask(logic, oblique))
        propagated = remote.propagate(oblique.volume, segmentation=segmentation, segment="Brain", axis="K",
                                      seed_index=SLICE, direction="up", slice_range=(SLICE, SLICE + 2))
        here = logic.volume(oblique.volume).propagate(0, SLICE, seed_mask=read(segmentation, oblique)[SLICE],
                                                       direction="up", slice_range=(SLICE, SLICE + 2))
        np.testing.assert_array_equal(propagated.mask, here.mask)
        assert propagated.stop_reasons == here.stop_reasons
    finally:
        remote.release_volumes()
