"""Console-side segment editing through Slicer's Qt-free segment editor logic.

`SegmentEditorSession` (a :class:`labelmaps.SegmentWriter`) binds a vtkSlicerSegmentEditorLogic to one
segmentation node and a vtkMRMLSegmentEditorNode (yours, e.g. the Segment Editor module's, or a private one), so
edits honour the editor node's masking ("Editable area", "Editable intensity range") and
"Modify other segments" settings and can be undone, like edits made by an effect.
"""

from __future__ import annotations

from typing import Optional

import slicer

from SAMSegmenterLib.errors import InputError

from .labelmaps import LabelmapEdit

_MODIFICATION_MODES = {
    "add": slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd,
    "remove": slicer.vtkSlicerSegmentEditorLogic.ModificationModeRemove,
}


class SegmentEditorSession:
    """Edits of one segmentation with undo history, driven like the Segment Editor does it.

    segmentation_node: the segmentation to edit; source_volume_node: the volume the editor
    uses for intensity masking and as geometry when the segmentation has none yet.
    editor_node: the vtkMRMLSegmentEditorNode holding masking and overwrite settings; a
    private one (not saved with the scene) is created when omitted.
    """

    def __init__(
        self,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        source_volume_node: slicer.vtkMRMLScalarVolumeNode,
        editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None,
    ) -> None:
        scene = segmentation_node.GetScene()
        if scene is None:
            raise InputError("the segmentation node is not in a scene")
        self.owns_editor_node = editor_node is None
        if editor_node is None:
            editor_node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "SAMSegmenterConsoleEditor")
            editor_node.SetHideFromEditors(True)
            editor_node.SetSaveWithScene(False)
        self.editor_node = editor_node
        self.segmentation_node = segmentation_node
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(scene)
        self.logic.SetSegmentEditorNode(editor_node)
        self.logic.SetSegmentationNode(segmentation_node)
        self.logic.SetSourceVolumeNode(source_volume_node)
        if not segmentation_node.GetSegmentation().GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        ):
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(source_volume_node)

    def bind(self, source_volume_node: slicer.vtkMRMLScalarVolumeNode) -> None:
        """Point the editor node back at this session's segmentation and ``source_volume_node``.

        Needed when the editor node is shared with another user (e.g. the Segment Editor).
        """
        if self.editor_node.GetSegmentationNode() is not self.segmentation_node:
            self.logic.SetSegmentationNode(self.segmentation_node)
        if self.editor_node.GetSourceVolumeNode() is not source_volume_node:
            self.logic.SetSourceVolumeNode(source_volume_node)

    def reference_geometry(self) -> slicer.vtkOrientedImageData:
        """The segmentation's reference geometry image (no scalars), as effects see it."""
        self._require_labelmap_source()
        if not self.logic.UpdateReferenceGeometryImage():
            raise InputError("the segmentation has no reference geometry: select a source volume")
        return self.logic.GetReferenceGeometryImage()

    def write(self, segment_id: str, edits: list[LabelmapEdit]) -> None:
        """Save the state for undo, then apply ``edits`` to ``segment_id`` in order (a :class:`SegmentWriter`).

        Masking and overwrite follow the editor node, as for Segment Editor effects.
        """
        self._require_segment(segment_id)
        self._require_labelmap_source()
        self.logic.SetCurrentSegmentID(segment_id)
        self.logic.SaveStateForUndo()
        for edit in edits:
            self.logic.ModifySegmentByLabelmap(
                self.segmentation_node,
                segment_id,
                edit.labelmap,
                _MODIFICATION_MODES[edit.operation],
                edit.extent,
                True,
                False,
            )

    def undo(self) -> None:
        """Restore the segmentation as it was before the last `write`."""
        if not self.logic.CanUndo():
            raise InputError("nothing to undo")
        self.logic.Undo()

    def redo(self) -> None:
        if not self.logic.CanRedo():
            raise InputError("nothing to redo")
        self.logic.Redo()

    def close(self) -> None:
        """Forget the undo history and remove the private editor node."""
        self.logic.ClearUndoState()
        self.logic.SetSegmentEditorNode(None)
        scene = self.editor_node.GetScene()
        if self.owns_editor_node and scene is not None:
            scene.RemoveNode(self.editor_node)

    def _require_segment(self, segment_id: str) -> None:
        if self.segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            raise InputError(f"segment {segment_id!r} not found in '{self.segmentation_node.GetName()}'")

    def _require_labelmap_source(self) -> None:
        if self.logic.CanTriviallyConvertSourceRepresentationToBinaryLabelMap():
            self.logic.TrivialSetSourceRepresentationToBinaryLabelmap()
            return
        name = self.segmentation_node.GetSegmentation().GetSourceRepresentationName()
        if name != slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName():
            raise InputError(
                f"segmentation '{self.segmentation_node.GetName()}' stores {name}: "
                "make binary labelmap its source representation (Segmentations module) first"
            )


class ScriptedEffectWriter:
    """A :class:`labelmaps.SegmentWriter` through a Segment Editor effect (``scripted_effect``: the
    ``scriptedEffect`` of a Slicer scripted effect): edits go to the editor's selected segment by
    ``modifySelectedSegmentByLabelmap``, after ``saveStateForUndo``, so the editor's undo, masking and
    overwrite settings apply as for Slicer's own effects.

    add_mode, remove_mode: the effect's ``ModificationModeAdd`` and ``ModificationModeRemove``.
    """

    def __init__(self, scripted_effect: object, add_mode: int, remove_mode: int) -> None:
        self.scripted_effect = scripted_effect
        self._modes = {"add": add_mode, "remove": remove_mode}

    @property
    def editor_node(self) -> slicer.vtkMRMLSegmentEditorNode:
        return self.scripted_effect.parameterSetNode()

    @property
    def segmentation_node(self) -> slicer.vtkMRMLSegmentationNode:
        return self.editor_node.GetSegmentationNode()

    def reference_geometry(self) -> slicer.vtkOrientedImageData:
        image = self.scripted_effect.referenceGeometryImage()
        if image is None:
            raise InputError("the segmentation has no reference geometry: select a source volume")
        return image

    def write(self, segment_id: str, edits: list[LabelmapEdit]) -> None:
        """Apply ``edits`` to ``segment_id``, which must be the editor's selected segment and visible (the
        effect asks the user to show a hidden one), after saving the state for undo."""
        selected = self.editor_node.GetSelectedSegmentID()
        if segment_id != selected:
            raise InputError(f"segment {segment_id!r} is not the selected segment ({selected!r}): nothing written")
        if not self.scripted_effect.confirmCurrentSegmentVisible():
            raise InputError("the selected segment is hidden: nothing written")
        self.scripted_effect.saveStateForUndo()
        for edit in edits:
            self.scripted_effect.modifySelectedSegmentByLabelmap(edit.labelmap, self._modes[edit.operation],
                                                                 list(edit.extent))
