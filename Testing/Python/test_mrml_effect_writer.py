"""The Segment Editor effect's writer (editor.ScriptedEffectWriter) on slicer-core.

Slicer's qSlicerSegmentEditorScriptedEffect cannot run here (it needs the Qt application), so the effect is
`LogicBackedEffect`: for the calls the writer makes it does what qSlicerSegmentEditorAbstractEffect.cxx does
in Slicer 5.10 and current (referenceGeometryImage: the editor's reference geometry;
saveStateForUndo: the editor's undo state; modifySelectedSegmentByLabelmap(labelmap, mode, extent):
vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap on the editor's segmentation and selected segment with
perSegment true and no masking bypass), on the same Qt-free vtkSlicerSegmentEditorLogic. No model is needed.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer
from mrml_scene import oblique  # noqa: F401  (fixture)

from SAMSegmenterLib.errors import InputError
from SAMSegmenterMRML.editor import ScriptedEffectWriter, SegmentEditorSession
from SAMSegmenterMRML.labelmaps import Slab, write_slab

LOGIC = slicer.vtkSlicerSegmentEditorLogic
read = slicer.util.arrayFromSegmentBinaryLabelmap


class LogicBackedEffect:
    """The scriptedEffect calls of the writer, done as Slicer's effect does them (see the module docstring)."""

    def __init__(self, session: SegmentEditorSession, visible: bool = True):
        self.session, self.visible, self.calls = session, visible, []

    def parameterSetNode(self):
        return self.session.editor_node

    def referenceGeometryImage(self):
        return self.session.reference_geometry()

    def confirmCurrentSegmentVisible(self):
        self.calls.append("confirm")
        return 1 if self.visible else 0  # ConfirmedWithoutDialog / NotConfirmed

    def saveStateForUndo(self):
        self.calls.append("undo state")
        self.session.logic.SaveStateForUndo()

    def modifySelectedSegmentByLabelmap(self, labelmap, mode, extent):
        self.calls.append({LOGIC.ModificationModeAdd: "add", LOGIC.ModificationModeRemove: "remove"}[mode])
        node = self.session.editor_node
        self.session.logic.ModifySegmentByLabelmap(node.GetSegmentationNode(), node.GetSelectedSegmentID(), labelmap,
                                                   mode, extent, True, False)


@pytest.fixture
def segmentation(oblique):  # noqa: F811
    """"Target" holds a block on every slice; "Other" is empty."""
    node = oblique.new_segmentation("Segmentation", "Target", "Other")
    target = np.zeros(oblique.array.shape, np.uint8)
    target[:, 30:50, 30:50] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(target, node, "Target", oblique.volume)
    yield node
    oblique.scene.RemoveNode(node)


@pytest.fixture
def effect(oblique, segmentation):  # noqa: F811
    session = SegmentEditorSession(segmentation, oblique.volume)
    session.editor_node.SetSelectedSegmentID("Target")
    yield LogicBackedEffect(session)
    session.close()


def replace_on_slice_2(oblique, effect, segment="Target"):  # noqa: F811
    writer = ScriptedEffectWriter(effect, LOGIC.ModificationModeAdd, LOGIC.ModificationModeRemove)
    mask = np.zeros((1, *oblique.array.shape[1:]), bool)
    mask[0, 40:60, 40:60] = True
    write_slab(writer, oblique.volume, segment, mask, Slab(0, 2, 2), "replace")
    return mask[0]


def test_replace_through_the_effect_writes_the_slab_after_the_undo_state(oblique, segmentation, effect):  # noqa: F811
    before = read(segmentation, "Target", oblique.volume) > 0
    mask = replace_on_slice_2(oblique, effect)
    assert effect.calls == ["confirm", "undo state", "remove", "add"]
    after = read(segmentation, "Target", oblique.volume) > 0
    np.testing.assert_array_equal(after[2], mask)
    np.testing.assert_array_equal(np.delete(after, 2, axis=0), np.delete(before, 2, axis=0))
    effect.session.undo()
    np.testing.assert_array_equal(read(segmentation, "Target", oblique.volume) > 0, before)


@pytest.mark.parametrize("case", ["another segment", "hidden"])
def test_nothing_is_written_to_a_segment_that_is_not_selected_or_is_hidden(oblique, segmentation, effect,  # noqa: F811
                                                                           case):
    before = read(segmentation, "Target", oblique.volume) > 0
    effect.visible = case != "hidden"
    with pytest.raises(InputError, match="nothing written"):
        replace_on_slice_2(oblique, effect, "Other" if case == "another segment" else "Target")
    assert "undo state" not in effect.calls
    np.testing.assert_array_equal(read(segmentation, "Target", oblique.volume) > 0, before)
    assert not (read(segmentation, "Other", oblique.volume) > 0).any()
