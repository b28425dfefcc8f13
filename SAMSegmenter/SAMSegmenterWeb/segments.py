"""The segments list of the web app: add, select, rename, colour, show/hide, delete, undo and redo.

Mirrors trame-slicer's SegmentationEditor (the active segmentation's segments and the undo stack)
into trame state for its ``SegmentList`` widget, and runs the list's actions on the editor. Each
segment's size (voxels, and millilitres from the voxel spacing) is shown under its name and
recomputed whenever the segmentation or the undo stack changes, with its largest diameter and mean
intensity (statistics.py) on a second line.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from slicer import vtkMRMLSegmentationNode, vtkSegment, vtkSegmentationConverter
from trame.widgets import client, html
from trame.widgets.vuetify3 import Template, VIcon, VListItem
from trame_server import Server
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.logic import SegmentEditLogic
from trame_slicer.app.ui import SegmentList, SegmentListState, SegmentState
from trame_slicer.app.ui.text_components import TextField
from trame_slicer.core import SegmentationEditor, SlicerApp
from undo_stack import UndoStack
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from .statistics import describe_statistics, segment_statistics

UNDO_LIMIT = 10
# Colours of new segments, in order (RGB 0-255): saturated, so that a translucent segment stays visible on
# grey anatomy (trame-slicer's random colours are sometimes grey or dark).
SEGMENT_COLORS = (
    (230, 60, 60),
    (60, 200, 80),
    (60, 130, 240),
    (240, 200, 40),
    (220, 70, 220),
    (40, 200, 220),
    (250, 140, 30),
    (150, 90, 240),
)
SIZES_KEY = "web_segment_sizes"
STATS_KEY = "web_segment_stats"


def segment_size(segment: vtkSegment) -> Optional[tuple[int, float]]:
    """(voxels, millilitres) of a segment's binary labelmap, or None when it has no labelmap."""
    image = segment.GetRepresentation(vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None:
        return None
    voxels = int(np.count_nonzero(vtk_to_numpy(scalars) == segment.GetLabelValue()))
    matrix = vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    voxel_mm3 = abs(np.linalg.det(np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])))
    return voxels, voxels * voxel_mm3 / 1000.0


def describe_size(size: Optional[tuple[int, float]]) -> str:
    """What the list shows: "12,345 voxels · 12.3 mL", "empty", or "" (no labelmap)."""
    if size is None:
        return ""
    voxels, millilitres = size
    if voxels == 0:
        return "empty"
    return f"{voxels:,} voxel{'s' if voxels != 1 else ''} · {millilitres:.{2 if millilitres < 10 else 1}f} mL"


def segment_sizes(segmentation_node: Optional[vtkMRMLSegmentationNode]) -> dict[str, str]:
    """segment id -> describe_size of each segment of ``segmentation_node``."""
    if segmentation_node is None:
        return {}
    segmentation = segmentation_node.GetSegmentation()
    return {
        segment_id: describe_size(segment_size(segmentation.GetSegment(segment_id)))
        for segment_id in segmentation.GetSegmentIDs()
    }


class SizedSegmentList(SegmentList):
    """trame-slicer's segment list with each segment's size (state key SIZES_KEY) under its name."""

    def _build_ui(self) -> None:
        names = self._typed_state.name
        with self:
            client.Style(".v-list-item__prepend { display: grid }")
            with VListItem(
                v_for=f"(item, i) in {names.segments}",
                key="i",
                value="item",
                active=(f"item.segment_id === {names.active_segment_id}",),
                click=self._server_trigger(self.select_segment_clicked),
            ):
                with Template(v_slot_prepend=True):
                    VIcon(icon="mdi-circle", color=("item.color",),
                          click=self._server_trigger(self.edit_segment_color_clicked))
                with Template(v_slot_default=True):
                    TextField(v_if=(f"item.segment_id !== {names.active_segment_id}",), disabled=True,
                              v_model=("item.name",))
                    self._edit_ui._build_name_textfield(v_else=True)
                    html.Div(
                        f"{{{{ {SIZES_KEY}[item.segment_id] }}}}",
                        classes="segment-size text-caption text-medium-emphasis px-4",
                        raw_attrs=['aria-label="Segment size"'],
                    )
                    html.Div(
                        f"{{{{ {STATS_KEY}[item.segment_id] }}}}",
                        v_if=f"{STATS_KEY}[item.segment_id]",
                        classes="segment-stats text-caption text-medium-emphasis px-4",
                        raw_attrs=['aria-label="Segment statistics"'],
                    )
                with Template(v_slot_append=True):
                    VIcon(classes="mr-2", icon=("item.is_visible ? 'mdi-eye-outline' : 'mdi-eye-off-outline'",),
                          click=self._server_trigger(self.toggle_segment_visibility_clicked))
                    VIcon(icon="mdi-delete-outline", click=self._server_trigger(self.delete_segment_clicked))


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

    def connect(self, segment_list: SizedSegmentList) -> None:
        segment_list.select_segment_clicked.connect(self.select)
        segment_list.delete_segment_clicked.connect(self.editor.remove_segment)
        segment_list.toggle_segment_visibility_clicked.connect(self.toggle_visibility)
        segment_list.edit_segment_color_clicked.connect(self.edit_color)
        self.edit_logic.set_ui(segment_list._edit_ui)

    def add(self) -> str:
        """Add an empty segment (it becomes the active one) with the next colour of SEGMENT_COLORS; return its id."""
        color = SEGMENT_COLORS[len(self.editor.get_segment_ids()) % len(SEGMENT_COLORS)]
        return self.editor.add_empty_segment(segment_color=[c / 255.0 for c in color])

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

    def sizes(self) -> dict[str, str]:
        """segment id -> what the list shows as its size (see describe_size)."""
        return segment_sizes(self.editor.active_segmentation_node)

    def statistics(self) -> dict[str, str]:
        """segment id -> its statistics line (statistics.describe_statistics), "" for an empty segment."""
        node = self.editor.active_segmentation_node
        if node is None:
            return {}
        segmentation = node.GetSegmentation()
        volume = self.editor.active_volume_node
        return {
            segment_id: describe_statistics(segment_statistics(segmentation.GetSegment(segment_id), volume))
            for segment_id in segmentation.GetSegmentIDs()
        }

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
            self.server.state[SIZES_KEY] = self.sizes()
            self.server.state[STATS_KEY] = self.statistics()
            self.server.state.web_has_segments = bool(self.editor.get_segment_ids())
            self.server.state.web_can_undo = self.undo_stack.can_undo()
            self.server.state.web_can_redo = self.undo_stack.can_redo()
