"""SAMSegmenter Web: the browser app, composed from trame-slicer's parts.

One `SAMSegmenterWebApp` serves one user (trame keeps one state per server process). It holds a
trame-slicer ``SlicerApp`` (MRML scene, logics, segment editor), remote-rendered views in a 2D
layout by default, and one volume with one segmentation at a time; loading another volume
replaces both, after the user confirmed it when the segmentation holds voxels (the dialog offers
to download it first). The segmentation downloads as .seg.nrrd or NIfTI (`export`). The SAM
effect is registered with the segmentation editor; its events and panel go through a `ControllerHost`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLSliceNode
from trame.app import TrameApp
from trame_server import Server
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.segmentation import BrushDiameterMode, SegmentationEffectErase, SegmentationEffectPaint

from SAMSegmenterLib.errors import SAMSegmenterError

from .controller_host import ControllerHost, ControllerSupport
from .dicom_seg import read_headers
from .display import DisplayLogic
from .effect import SAMEffect
from .export import ALL_FORMATS, FORMATS, export_file_name, export_segmentation
from .layouts import DEFAULT_LAYOUT, SLICES_LAYOUT, layouts
from .loading import describe, frames_notice, load_volume, volume_files, write_uploads
from .masking import MaskingLogic
from .panel import WINDOWS, panel_state
from .segments import SegmentsLogic
from .ui import build_ui, slice_view_gutter
from .views import RenderSettings, register_view_factories

RED_VIEW = "Red"
BRUSH_EFFECTS = {"paint": SegmentationEffectPaint, "erase": SegmentationEffectErase}
EFFECT_CHOICES = ("none", "sam", *BRUSH_EFFECTS)
DEFAULT_BRUSH_MM = 5.0


@dataclass(frozen=True)
class ServiceOptions:
    """The inference service the user named on the command line (``--server URL --token-file F``)."""

    url: str
    token_file: Optional[Path] = None


SESSION_PATH = "/paraview/"  # where trame's page first asks a launcher for its websocket address


def _answer_session_requests(wslink_server: Any) -> None:
    """Answer the page's launcher request with this server's websocket, instead of a 405 error.

    trame's page POSTs to SESSION_PATH before it connects; without a launcher the request fails
    ("405 Method Not Allowed" in the browser's console) and the page falls back to "ws://<host>/ws".
    The answer names that address ("USE_HOST" is replaced by the page's host): the same
    connection, without the error.
    """
    from aiohttp import web

    async def session(_request: Any) -> Any:
        return web.json_response({"sessionURL": "ws://USE_HOST/ws"})

    app = getattr(wslink_server, "app", None)
    if app is not None:
        app.router.add_post(SESSION_PATH, session)


class SAMSegmenterWebApp(TrameApp):
    """The app; `load` puts a volume in it, `server.start(...)` serves it."""

    def __init__(
        self,
        server: Server | str | None = None,
        *,
        controller_support: Optional[ControllerSupport] = None,
        service: Optional[ServiceOptions] = None,
        render_settings: RenderSettings = RenderSettings(),
    ) -> None:
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.service = service
        self.slicer = SlicerApp()
        self.slice_view_factory, self.threed_view_factory = register_view_factories(
            self.slicer.view_manager, self.server, render_settings, slice_view_gutter
        )
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layout_manager.register_layout_dict(layouts(), lazy_initialization=True)
        self.editor = self.slicer.segmentation_editor
        self.segments = SegmentsLogic(self.server, self.slicer)
        self.masking = MaskingLogic(self.server, self.editor)
        self.host = ControllerHost(
            self.editor, controller_support, self._show_controller_state, self.show_error, self._red_slice_node
        )
        self.sam_effect = self.editor.get_effect(SAMEffect)
        self.sam_effect.host = self.host
        self.editor.active_effect_name_changed.connect(self._on_effect_name)
        self.editor.active_segment_id_changed.connect(self._on_active_segment)
        self.volume_node: Optional[vtkMRMLScalarVolumeNode] = None
        self.segmentation_node: Optional[vtkMRMLSegmentationNode] = None
        self._range_axis = 0  # the axis the Limit to slices fields were last filled for
        self.dicom_headers: list = []  # pydicom headers of the DICOM files the volume was read from
        self._dicom_headers: dict[str, list] = {}  # volume node id -> its headers, until it is shown
        self._pending: Optional[tuple[vtkMRMLScalarVolumeNode, str, str]] = None  # (volume, message, kind)
        self._init_state()
        self.ui = build_ui(self)
        self.server.controller.on_server_bind.add(_answer_session_requests)
        # The slice views of every layout are made now, before any segmentation: a slice view made after a
        # segmentation was added drew its segments opaque and dark (blended with black, not with the
        # anatomy), as seen after a switch to "3 slices" (trame-slicer 2.0.0 / slicer-core 5.11).
        self.layout_manager.set_layout(SLICES_LAYOUT)
        self.layout_manager.set_layout(DEFAULT_LAYOUT)
        self.display = DisplayLogic(
            self.server,
            self.slicer.view_manager.get_slice_views(),
            lambda: self.volume_node,
            lambda: self.segmentation_node,
            lambda: self.state.web_effect == "none",
            self.slicer.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode"),
        )

    def _init_state(self) -> None:
        state = self.state
        state.trame__title = "SAMSegmenter"
        state.web_layout = DEFAULT_LAYOUT
        state.web_effect = "none"
        state.web_volume_name = ""
        state.web_message = None
        state.web_export_names = {}
        state.web_replace = None  # {"volume", "segments", "files"} while the replace-volume dialog is open
        state.web_service = self.service.url if self.service else ""
        state.sam = panel_state(None)
        state.sam_apply_mode, state.sam_direction, state.sam_window = "replace", "both", "auto"
        state.sam_structure = "anatomy"
        state.sam_limit, state.sam_first, state.sam_last = False, 0, 0
        state.change("web_layout")(self._on_layout)
        state.web_brush_mm = DEFAULT_BRUSH_MM
        state.change("web_effect")(self._on_effect_choice)
        state.change("web_brush_mm")(self._on_brush)
        state.change("sam_window")(self._on_window)
        state.change("sam_apply_mode", "sam_limit", "sam_first", "sam_last", "sam_structure")(self._send_settings)

    # Volumes.
    def load(self, paths: Sequence[Path]) -> vtkMRMLScalarVolumeNode:
        """Load a volume file or DICOM folder, replacing the current volume and segmentation (without asking).

        Raises InputError (scene unchanged) when ``paths`` holds no grey-level volume.
        """
        node = load_volume(self.slicer.io_manager, self.slicer.scene, paths)
        self._keep_dicom_headers(node, paths)
        self._replace_with(node)
        return node

    def _keep_dicom_headers(self, node: vtkMRMLScalarVolumeNode, paths: Sequence[Path]) -> None:
        """Remember the headers of the DICOM files ``node`` was read from (for DICOM SEG), while they exist."""
        headers = read_headers(volume_files(paths))
        if headers:
            self._dicom_headers[node.GetID()] = headers

    def _replace_with(self, node: vtkMRMLScalarVolumeNode) -> None:
        """Show ``node`` (already in the scene) with a new empty segmentation; the old volume and segmentation go."""
        self.host.detach()
        self.editor.deactivate_effect()
        for old in (self.volume_node, self.segmentation_node):
            if old is not None:
                self.slicer.scene.RemoveNode(old)
        self.volume_node = node
        self.dicom_headers = self._dicom_headers.pop(node.GetID(), [])
        self._dicom_headers.clear()
        self.segmentation_node = self.editor.create_empty_segmentation_node()
        self.segmentation_node.SetName(f"{node.GetName()} segmentation")
        self.editor.set_active_segmentation(self.segmentation_node, node)
        self._show_volume(reset=True)
        self.display.on_volume_changed()
        self.masking.on_volume_changed(node)
        with self.state:
            self.state.web_volume_name = node.GetName()
            self.state.web_effect = "none"
            formats = ALL_FORMATS if self.dicom_headers else FORMATS
            self.state.web_export_names = {fmt: export_file_name(node.GetName(), fmt) for fmt in formats}
            self.state.sam_limit = False
            self._full_slice_range(0)

    def segmented_voxels(self) -> bool:
        """True when some segment of the current segmentation holds voxels (what a new volume would discard)."""
        return any(size not in ("", "empty") for size in self.segments.sizes().values())

    async def load_uploads(self, files: list[dict]) -> None:
        """Load files the browser sent (one volume file, several files of a series, or a DICOM folder).

        The files are read first (a bad file gets its message and changes nothing). When the current
        segmentation holds voxels, the new volume waits: the page asks (`confirm_replace`,
        `cancel_replace`) and offers to download the segmentation first.
        """
        if not files:
            return
        names = [Path(entry.get("name") or "upload") for entry in files]
        with tempfile.TemporaryDirectory(prefix="samsegmenter-upload-") as folder:
            try:
                paths = write_uploads(files, Path(folder))
                node = load_volume(self.slicer.io_manager, self.slicer.scene, paths)
                self._keep_dicom_headers(node, paths)
            except SAMSegmenterError as exc:
                self.show_error(str(exc))
                return
            notice = frames_notice([str(p) for p in paths])
        self._drop_pending()
        loaded = f"Loaded {describe(names)}" + (f". {notice}" if notice else "")
        if self.segmented_voxels():
            self._pending = (node, loaded, "warning" if notice else "success")
            with self.state:
                self.state.web_replace = {
                    "volume": self.state.web_volume_name,
                    "segments": self.segmentation_node.GetSegmentation().GetNumberOfSegments(),
                    "files": describe(names),
                }
            return
        self._replace_with(node)
        self.show_message("warning" if notice else "success", loaded)

    def confirm_replace(self) -> None:
        """The user chose to discard the segmentation: show the volume that was waiting."""
        pending, self._pending = self._pending, None
        self.state.web_replace = None
        if pending is not None:
            node, message, kind = pending
            self._replace_with(node)
            self.show_message(kind, message)

    def cancel_replace(self) -> None:
        """The user keeps the current volume and segmentation: the volume that was waiting is dropped."""
        self._drop_pending()
        self.state.web_replace = None
        self.show_message("info", f"Kept {self.state.web_volume_name} and its segmentation.")

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._dicom_headers.pop(self._pending[0].GetID(), None)
            self.slicer.scene.RemoveNode(self._pending[0])
            self._pending = None

    def export(self, file_format: str) -> Any:
        """The segmentation as a file (``file_format``: a key of export.FORMATS), as a download attachment;
        None (and an error message) when there is nothing to save."""
        if self.segmentation_node is None or self.volume_node is None:
            self.show_error("Load a volume and segment it before saving")
            return None
        try:
            name, data = export_segmentation(self.segmentation_node, self.volume_node, file_format, self.dicom_headers)
        except SAMSegmenterError as exc:
            self.show_error(f"Nothing saved: {exc}")
            return None
        self.show_message("success", f"Saved {name} ({len(data) / 1024:.0f} KiB) on the volume's grid")
        return self.server.protocol.addAttachment(data)

    def show_message(self, kind: str, text: str) -> None:
        """Show ``text`` above the panel; kind is a Vuetify alert type (success, info, warning, error)."""
        with self.state:
            self.state.web_message = {"type": kind, "text": text}

    def show_error(self, text: str) -> None:
        self.show_message("error", text)

    def _show_volume(self, reset: bool) -> None:
        """Show the volume in every slice view; with reset, or for views that did not show it yet, fit them."""
        if self.volume_node is None:
            return
        for view in self.slicer.view_manager.get_slice_views():
            if reset or view.get_background_volume_id() != self.volume_node.GetID():
                view.set_background_volume_id(self.volume_node.GetID())
                view.set_foreground_volume_id(None)
                view.reset_view()

    # Layout, effect and segment changes from the browser or the editor.
    def _on_layout(self, web_layout: str, **_: Any) -> None:
        self.layout_manager.set_layout(web_layout)
        self._show_volume(reset=False)
        has_3d = bool(self.slicer.view_manager.filter_visible_views(self.slicer.view_manager.get_threed_views()))
        for view in self.slicer.view_manager.get_slice_views():
            view.set_visible_in_3d(has_3d)
        if self.segmentation_node is not None:
            self.editor.set_surface_representation_enabled(has_3d)
        self._activate_new_pipelines()

    def _activate_new_pipelines(self) -> None:
        """Make the app's effects work in views the layout just created (trame-slicer 2.0.0 leaves them broken).

        trame-slicer makes an effect's pipeline for each new view while the view is being built, before
        the view manager knows the view, so the pipeline gets no view (a brush pipeline then fails when
        the effect is activated); and it activates pipelines only when the effect is activated, so the
        active effect ignored new views until it was chosen again. Here each pipeline without a view gets
        its view, and the active effect is switched off and on by itself, which activates every pipeline
        without the editor's signals (the SAM controller, its preview and prompts stay).
        """
        view_manager = self.slicer.view_manager
        for effect in (self.sam_effect, *(self.editor.get_effect(brush) for brush in BRUSH_EFFECTS.values())):
            for weak in effect.pipelines:
                pipeline = weak()
                if pipeline is not None and getattr(pipeline, "_view", None) is None and pipeline.GetViewNode():
                    pipeline.SetView(view_manager.get_view(pipeline.GetViewNode()))
        effect = self.editor.active_effect
        if effect is not None and effect.is_active:
            effect.set_active(False)
            effect.set_active(True)

    def _on_effect_choice(self, web_effect: str, **_: Any) -> None:
        effect = self._effect_for(web_effect)
        if effect is self.editor.active_effect:
            return
        if effect is None:
            self.editor.deactivate_effect()
            return
        if self.segmentation_node is None:
            self.show_error("Load a volume before choosing an effect")
            self.state.web_effect = "none"
            return
        if not self.editor.get_active_segment_id():
            self.segments.add()
        self._activate_new_pipelines()
        self.editor.set_active_effect(effect)
        if effect is self.sam_effect:
            self._attach(self.editor.get_active_segment_id())
        else:
            self._on_brush(self.state.web_brush_mm)

    def _effect_for(self, web_effect: str) -> Any:
        """The editor's effect for a value of the effect switch (None for "none")."""
        if web_effect == "sam":
            return self.sam_effect
        brush = BRUSH_EFFECTS.get(web_effect)
        return self.editor.get_effect(brush) if brush is not None else None

    def _on_brush(self, web_brush_mm: float, **_: Any) -> None:
        """Paint and erase use a brush of ``web_brush_mm`` millimetres (diameter, in the slice plane)."""
        for brush in BRUSH_EFFECTS.values():
            self.editor.get_effect(brush).set_brush_diameter(float(web_brush_mm), BrushDiameterMode.Absolute)

    def _attach(self, segment_id: str) -> None:
        """Give SAM a controller for ``segment_id``, with the intensity window chosen in the panel."""
        self.host.attach(self.volume_node, self.segmentation_node, segment_id, self.state.sam_window or WINDOWS[0])

    def _on_effect_name(self, _name: str) -> None:
        active = self.editor.active_effect
        if active is not self.sam_effect:
            self.host.detach()
        choices = [value for value in EFFECT_CHOICES if value != "none" and self._effect_for(value) is active]
        choice = choices[0] if choices else "none"
        with self.state:
            self.state.web_effect = choice

    def _on_active_segment(self, segment_id: str) -> None:
        if self.editor.active_effect is self.sam_effect and segment_id and self.volume_node is not None:
            self._attach(segment_id)

    def _on_window(self, sam_window: str, **_: Any) -> None:
        self.host.set_window(sam_window)

    # SAM effect host callbacks.
    def _show_controller_state(self, controller_state: Any) -> None:
        with self.state:
            axis = getattr(controller_state, "axis", None)
            if axis is not None and axis != self._range_axis and not self.state.sam_limit:
                self._full_slice_range(axis)
            self.state.sam = panel_state(controller_state)

    def _full_slice_range(self, axis: int) -> None:
        """Set the *Limit to slices* fields to every slice along ``axis`` (0 = K, 1 = J, 2 = I) of the volume."""
        self._range_axis = axis
        if self.volume_node is not None:
            count = self.volume_node.GetImageData().GetDimensions()[2 - axis]
            self.state.sam_first, self.state.sam_last = 0, count - 1
            self._send_settings()

    def _red_slice_node(self) -> Optional[vtkMRMLSliceNode]:
        view = self.slicer.view_manager.get_view(RED_VIEW)
        return view.get_view_node() if view is not None else None

    # Panel actions.
    def undo(self) -> None:
        """Undo the last edit (undo button); the SAM panel no longer says what was applied."""
        self.segments.undo()
        self._note_history("Undone: the segment is as it was before the last edit. Redo brings the edit back.")

    def redo(self) -> None:
        self.segments.redo()
        self._note_history("Redone.")

    def _note_history(self, text: str) -> None:
        """Replace the SAM panel's status (e.g. "Applied to 3 slices. Undo restores...") after undo or redo."""
        sam = self.state.sam
        if sam and sam.get("attached"):
            self.state.sam = {**sam, "status": text, "error": False}

    def sam_apply(self) -> None:
        self.host.apply(self.state.sam_apply_mode)

    def sam_cancel(self) -> None:
        self.host.cancel()

    def sam_propagate(self) -> None:
        self.host.propagate(self.state.sam_direction, self._slice_limit())

    def _slice_limit(self) -> Optional[tuple[int, int]]:
        """The *Limit to slices* range when it is checked (and both fields hold numbers), else None."""
        if not self.state.sam_limit:
            return None
        try:
            return int(self.state.sam_first), int(self.state.sam_last)
        except (TypeError, ValueError):
            return None

    def _send_settings(self, **_: Any) -> None:
        """The keys (a / Enter, p / u / d) follow the panel's apply mode and slice limit; propagations and
        corrections its structure."""
        self.host.set_settings(self.state.sam_apply_mode or "replace", self._slice_limit(),
                               self.state.sam_structure or "anatomy")

    def sam_stop(self) -> None:
        self.host.stop()

    def sam_jump_to(self, index: int) -> None:
        self.host.jump_to(int(index))
