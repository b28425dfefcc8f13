"""How the web app shows the volume and segments: window/level presets and drag, segment opacity, the
crosshair, and the orientation letters and slice label of each slice view.

`DisplayLogic` binds the trame state keys ``web_display`` (a key of DISPLAY_PRESETS, or "custom" after
a window/level drag), ``web_segment_opacity`` (0-1) and ``web_view_info`` (slice view tag ->
annotations.view_annotations labels) and ``web_crosshair`` (bool) to the volume's display node, the
crosshair node, the segmentation's display node
and each slice view's slice node.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from slicer import vtkMRMLCrosshairNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.util import arrayFromVTKMatrix
from trame_server import Server
from vtkmodules.vtkCommonCore import vtkCommand

from SAMSegmenterMRML.geometry import volume_ijk_to_world, volume_shape

from .annotations import view_annotations
from .window_level import WindowLevelDrag

# Display window/level presets, (window, level) in the volume's units (Hounsfield units for CT; 3D Slicer's
# CT presets). "auto" is Slicer's automatic window from the volume's histogram.
DISPLAY_PRESETS: dict[str, Optional[tuple[float, float]]] = {
    "auto": None,
    "brain": (100.0, 50.0),
    "abdomen": (350.0, 40.0),
    "lung": (1400.0, -500.0),
    "bone": (1000.0, 400.0),
}
CUSTOM = "custom"  # the window/level was dragged


class DisplayLogic:
    """See the module docstring. volume() and segmentation() give the app's current nodes (or None);
    drag_enabled() says whether a left drag sets window/level (no effect active)."""

    def __init__(
        self,
        server: Server,
        slice_views: list[Any],
        volume: Callable[[], Optional[vtkMRMLScalarVolumeNode]],
        segmentation: Callable[[], Optional[vtkMRMLSegmentationNode]],
        drag_enabled: Callable[[], bool],
        crosshair: Optional[vtkMRMLCrosshairNode] = None,
    ) -> None:
        self.state = server.state
        self.slice_views = slice_views
        self.volume = volume
        self.segmentation = segmentation
        self.state.web_display, self.state.web_segment_opacity, self.state.web_view_info = "auto", 1.0, {}
        self.state.change("web_display")(self._on_display)
        self.state.change("web_segment_opacity")(self._on_segment_opacity)
        self.crosshair = crosshair
        self.state.web_crosshair = False
        self.state.change("web_crosshair")(self._on_crosshair)
        self.window_level_drags = []
        for view in slice_views:
            view.get_view_node().AddObserver(vtkCommand.ModifiedEvent, lambda *_, v=view: self.annotate(v))
            self.window_level_drags.append(WindowLevelDrag(view, self._volume_display, drag_enabled, self._dragged))

    def on_volume_changed(self) -> None:
        """A new volume and segmentation: automatic window, the chosen segment opacity, fresh view labels."""
        with self.state:
            self.state.web_display = "auto"
        self._on_display("auto")
        self._on_segment_opacity(self.state.web_segment_opacity)
        for view in self.slice_views:
            self.annotate(view)

    def _volume_display(self) -> Any:
        volume = self.volume()
        return volume.GetDisplayNode() if volume is not None else None

    def _on_display(self, web_display: str, **_: Any) -> None:
        """Show the volume with a window/level preset of DISPLAY_PRESETS ("auto": Slicer's automatic window)."""
        display = self._volume_display()
        if display is None or web_display not in DISPLAY_PRESETS:
            return
        preset = DISPLAY_PRESETS[web_display]
        display.SetAutoWindowLevel(preset is None)
        if preset is not None:
            display.SetWindowLevel(*preset)

    def _on_crosshair(self, web_crosshair: bool, **_: Any) -> None:
        """Show the crosshair (Shift + mouse move places it and moves the other views to it, as in 3D Slicer)."""
        if self.crosshair is not None:
            mode = vtkMRMLCrosshairNode.ShowBasic if web_crosshair else vtkMRMLCrosshairNode.NoCrosshair
            self.crosshair.SetCrosshairMode(mode)

    def _dragged(self) -> None:
        """The window/level was dragged: the display select says "custom"."""
        with self.state:
            self.state.web_display = CUSTOM

    def _on_segment_opacity(self, web_segment_opacity: float, **_: Any) -> None:
        """Opacity of every segment in the views (0 to 1; multiplies the fill's and the outline's)."""
        node = self.segmentation()
        display = node.GetDisplayNode() if node is not None else None
        if display is not None:
            display.SetOpacity(float(web_segment_opacity))

    def annotate(self, view: Any) -> None:
        """Refresh the orientation letters and slice label of a slice view (state ``web_view_info``)."""
        node = self.volume()
        geometry = (volume_ijk_to_world(node), volume_shape(node)) if node is not None else (None, None)
        labels = view_annotations(arrayFromVTKMatrix(view.get_view_node().GetSliceToRAS()), *geometry)
        tag = view.get_singleton_tag()
        info = dict(self.state.web_view_info or {})
        if info.get(tag) != labels:
            info[tag] = labels
            with self.state:
                self.state.web_view_info = info
