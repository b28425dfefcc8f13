"""The segments list of the web app: add, select, rename, colour, show/hide, delete, undo and redo.

Mirrors trame-slicer's SegmentationEditor (the active segmentation's segments and the undo stack)
into trame state for its ``SegmentList`` widget, and runs the list's actions on the editor.
"""

from __future__ import annotations

from trame_server import Server
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.logic import SegmentEditLogic
from trame_slicer.app.ui import SegmentList, SegmentListState, SegmentState
from trame_slicer.core import SegmentationEditor, SlicerApp
from undo_stack import UndoStack

UNDO_LIMIT = 10


class SegmentsLogic:
    """Keeps the segment list and the undo/redo buttons in step with the segmentation editor."""

    def __init__(self, server: Server, slicer_app: SlicerApp) -> None:
        self.server = server
        self.editor: SegmentationEditor = slicer_app.segmentation_editor
        self.list_state = TypedState(server.state, SegmentListState, namespace="web_segments")
        self.undo_stack = UndoStack(undo_limit=UNDO_LIMIT)
        self.editor.set_undo_stack(self.undo_stack)
        self.edit_logic = SegmentEditLogic(server, slicer_app)
        for signal in (
            self.editor.segmentation_modified,
            self.editor.active_segment_id_changed,
            *self.undo_stack.signals(),
        ):
            signal.connect(self.refresh)
        self.refresh()

    def connect(self, segment_list: SegmentList) -> None:
        segment_list.select_segment_clicked.connect(self.select)
        segment_list.delete_segment_clicked.connect(self.editor.remove_segment)
        segment_list.toggle_segment_visibility_clicked.connect(self.toggle_visibility)
        segment_list.edit_segment_color_clicked.connect(self.edit_color)
        self.edit_logic.set_ui(segment_list._edit_ui)

    def add(self) -> str:
        """Add an empty segment (it becomes the active one) and return its id."""
        return self.editor.add_empty_segment()

    def select(self, segment_id: str) -> None:
        self.editor.set_active_segment_id(segment_id)

    def toggle_visibility(self, segment_id: str) -> None:
        self.editor.set_segment_visibility(segment_id, not self.editor.get_segment_visibility(segment_id))
        self.refresh()

    def edit_color(self, segment_id: str) -> None:
        self.select(segment_id)
        self.edit_logic.show_color_dialog()

    def undo(self) -> None:
        self.undo_stack.undo()

    def redo(self) -> None:
        self.undo_stack.redo()

    def refresh(self, *_: object) -> None:
        with self.server.state:
            self.list_state.data.segments = [
                SegmentState(
                    name=properties.name,
                    color=properties.color_hex,
                    segment_id=segment_id,
                    is_visible=bool(self.editor.get_segment_visibility(segment_id)),
                )
                for segment_id, properties in self.editor.get_all_segment_properties().items()
            ]
            active = self.editor.get_active_segment_id()
            self.list_state.data.active_segment_id = active
            self.edit_logic.set_active_segment_id(active)
            self.server.state.web_can_undo = self.undo_stack.can_undo()
            self.server.state.web_can_redo = self.undo_stack.can_redo()
