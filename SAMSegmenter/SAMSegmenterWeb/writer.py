"""Segment writes of the SAM effect through trame-slicer's segment editor, with masking and undo.

`SegmentWriter` is the web app's ``SAMSegmenterMRML.labelmaps.SegmentWriter``: the interaction
controller computes a list of ``LabelmapEdit`` on the editor logic's reference geometry (with the
editor node's settings) and hands it to `SegmentWriter.write`, which applies them in order through
``SegmentModifier.apply_labelmap``: the editor node's masking (editable area, editable intensity
range) and overwrite mode apply, and the whole list is one step of the app's undo stack.
"""

from __future__ import annotations

from typing import Sequence

from slicer import vtkMRMLSegmentationNode, vtkMRMLSegmentEditorNode, vtkOrientedImageData
from trame_slicer.core import SegmentationEditor
from trame_slicer.segmentation import ModificationMode, SegmentModifier

from SAMSegmenterLib.errors import InputError
from SAMSegmenterMRML.labelmaps import LabelmapEdit

MODIFICATION_MODES = {"add": ModificationMode.Add, "remove": ModificationMode.Remove}


class SegmentWriter:
    """Reads and writes segments of ``segmentation_node`` while it is the editor's active segmentation."""

    def __init__(self, editor: SegmentationEditor, segmentation_node: vtkMRMLSegmentationNode) -> None:
        self.editor = editor
        self.segmentation_node = segmentation_node

    @property
    def editor_node(self) -> vtkMRMLSegmentEditorNode:
        """The editor node whose masking and overwrite settings the writes follow."""
        return self._modifier().logic.GetSegmentEditorNode()

    def reference_geometry(self) -> vtkOrientedImageData:
        """The segmentation's reference geometry image (a copy, no scalars), as effects see it."""
        logic = self._modifier().logic
        if not logic.UpdateReferenceGeometryImage():
            raise InputError("the segmentation has no reference geometry: load a volume first")
        return _copy(logic.GetReferenceGeometryImage())

    def write(self, segment_id: str, edits: Sequence[LabelmapEdit]) -> None:
        """Apply ``edits`` to ``segment_id`` in order, as one undo step, honouring the editor's masking."""
        self._require_segment(segment_id)
        unknown = sorted({edit.operation for edit in edits} - set(MODIFICATION_MODES))
        if unknown:
            raise InputError(f"unknown labelmap operation {unknown[0]!r}; expected one of {sorted(MODIFICATION_MODES)}")
        modifier = self._modifier()
        with modifier.group_undo_commands("SAM"):
            for edit in edits:
                modifier.apply_labelmap(
                    edit.labelmap,
                    segment_id=segment_id,
                    modification_mode=MODIFICATION_MODES[edit.operation],
                    modifier_extent=list(edit.extent),
                )

    def _modifier(self) -> SegmentModifier:
        modifier = self.editor.active_segment_modifier
        if modifier is None or modifier.segmentation.segmentation_node is not self.segmentation_node:
            raise InputError(f"segmentation '{self.segmentation_node.GetName()}' is no longer the one being edited")
        return modifier

    def _require_segment(self, segment_id: str) -> None:
        if self.segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            raise InputError(f"segment {segment_id!r} not found in '{self.segmentation_node.GetName()}'")


def _copy(image: vtkOrientedImageData) -> vtkOrientedImageData:
    copy = vtkOrientedImageData()
    copy.DeepCopy(image)
    return copy
