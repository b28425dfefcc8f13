"""Masking options of the segment editor in the web app: editable area, intensity range, overwrite.

They are settings of the editor's vtkMRMLSegmentEditorNode, so every write through the segment
editor logic (the SAM effect's included) honours them.
"""

from __future__ import annotations

from slicer import vtkMRMLScalarVolumeNode
from trame_server import Server
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.logic.segmentation.segment_mask_select_logic import SegmentMaskSelectLogic
from trame_slicer.app.ui import DynamicSelectState, enum_to_title
from trame_slicer.core import SegmentationEditor
from trame_slicer.segmentation import SegmentationOverwriteMode

OVERWRITE_ITEMS = [{"title": enum_to_title(mode), "value": mode.value} for mode in SegmentationOverwriteMode]


class MaskingLogic:
    """Binds the masking widgets' state (``web_mask_*``) to the editor node."""

    def __init__(self, server: Server, editor: SegmentationEditor) -> None:
        self.server = server
        self.editor = editor
        self.area_state = TypedState(server.state, DynamicSelectState, namespace="web_mask_area")
        self.area_logic = SegmentMaskSelectLogic(self.area_state, editor)
        state = server.state
        state.web_mask_overwrite = editor.get_overwrite_mode().value
        state.web_mask_intensity = False
        state.web_mask_limits = [0.0, 1.0]
        state.web_mask_range = [0.0, 1.0]
        state.change("web_mask_overwrite")(self._on_overwrite)
        state.change("web_mask_intensity", "web_mask_range")(self._on_intensity)

    def on_volume_changed(self, volume_node: vtkMRMLScalarVolumeNode) -> None:
        """Reset the intensity range to the new volume's scalar range (mask off)."""
        low, high = (float(v) for v in volume_node.GetImageData().GetScalarRange())
        with self.server.state as state:
            state.web_mask_limits = [low, high]
            state.web_mask_range = [low, high]
            state.web_mask_intensity = False
        self.area_logic.update_ui_from_slicer()

    def _on_overwrite(self, web_mask_overwrite: int, **_: object) -> None:
        self.editor.set_overwrite_mode(SegmentationOverwriteMode(web_mask_overwrite))

    def _on_intensity(self, web_mask_intensity: bool, web_mask_range: list[float], **_: object) -> None:
        node = self.editor.editor_node
        node.SetSourceVolumeIntensityMask(bool(web_mask_intensity))
        node.SetSourceVolumeIntensityMaskRange(float(web_mask_range[0]), float(web_mask_range[1]))
