"""Remote views of the web app and how they are rendered and streamed (trame-rca image streaming).

Each view renders into an off-screen VTK window; trame-rca grabs the frame, encodes it as a JPEG
on a thread pool and pushes it over the websocket, where it replaces the ``src`` of the view's
``<img>``. Rendering runs on the server's event loop and blocks it, so every millisecond of it
delays the next frame, the next event and the model's polling. The factories here are
trame-slicer's remote view factories with `RenderSettings` applied to each view they create;
docs/web.md has the measurements the defaults come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from slicer import vtkMRMLApplicationLogic, vtkMRMLScene
from trame_server import Server
from trame_slicer.app.ui import create_vertical_view_gutter_ui
from trame_slicer.core import ViewManager
from trame_slicer.rca_view import RemoteSliceViewFactory, RemoteThreeDViewFactory
from trame_slicer.rca_view.rca_view_factory import RcaView
from trame_slicer.views import ViewLayoutDefinition

from .events import translate_browser_keys


@dataclass(frozen=True)
class RenderSettings:
    """How views render and stream.

    slice_multisamples: MSAA samples of slice views. trame-slicer asks for 8, which on a
    CPU renderer (Mesa llvmpipe) makes a slice render ~200 ms instead of ~15 ms; Slicer's own
    slice views use none.
    quality: JPEG quality of every frame. trame-rca sends a first frame at an "interactive"
    quality and renders and sends the view again at a "still" quality a few frames later; one
    quality means one render per change, which keeps the event loop free sooner.
    max_pixels: cap on the pixels a view renders (0: none). trame-rca renders a view at its size
    in the page times the screen's pixel ratio; on a CPU every stage (reslicing, drawing, reading
    back, encoding) scales with that count, and a HiDPI screen quadruples it. Above the cap the
    view renders smaller and the browser scales the image up.
    target_fps: frame rate cap of the view the mouse is over; blur_fps: of the other views (equal,
    so that a view changed by a button in the panel is not held back).
    """

    slice_multisamples: int = 0
    quality: int = 80
    max_pixels: int = 1_000_000
    target_fps: float = 30.0
    blur_fps: float = 30.0

    def apply(self, view: RcaView, is_slice_view: bool) -> None:
        if is_slice_view:
            view.slicer_view.render_window().SetMultiSamples(self.slice_multisamples)
        view.view_adapter.update_quality(self.quality, self.quality)
        view.view_adapter.max_pixel_count = self.max_pixels

    def factory_options(self) -> dict[str, Any]:
        return {
            "target_fps": self.target_fps,
            "blur_fps": self.blur_fps,
            "interactive_quality": self.quality,
        }


class _AppliesSettings:
    """Mixin for trame-slicer's remote view factories: each view they create gets the app's render settings."""

    settings: RenderSettings
    is_slice_view: bool

    def _create_view(
        self, view: ViewLayoutDefinition, scene: vtkMRMLScene, app_logic: vtkMRMLApplicationLogic
    ) -> RcaView:
        rca_view = super()._create_view(view, scene, app_logic)
        self.settings.apply(rca_view, is_slice_view=self.is_slice_view)
        if self.is_slice_view:
            translate_browser_keys(rca_view.slicer_view)
        return rca_view


class SliceViewFactory(_AppliesSettings, RemoteSliceViewFactory):
    """trame-slicer's remote slice views, with the app's render settings."""

    is_slice_view = True

    def __init__(self, server: Server, settings: RenderSettings, populate_view_ui_f: Callable) -> None:
        super().__init__(server, populate_view_ui_f=populate_view_ui_f, **settings.factory_options())
        self.settings = settings


class ThreeDViewFactory(_AppliesSettings, RemoteThreeDViewFactory):
    """trame-slicer's remote 3D view, with the app's JPEG quality and frame rates."""

    is_slice_view = False

    def __init__(self, server: Server, settings: RenderSettings) -> None:
        super().__init__(server, populate_view_ui_f=create_vertical_view_gutter_ui, **settings.factory_options())
        self.settings = settings


def register_view_factories(
    view_manager: ViewManager, server: Server, settings: RenderSettings, slice_view_ui: Callable
) -> tuple[SliceViewFactory, ThreeDViewFactory]:
    """Register the app's remote view factories; return them (they give access to each view's stream)."""
    factories = (SliceViewFactory(server, settings, slice_view_ui), ThreeDViewFactory(server, settings))
    for factory in factories:
        view_manager.register_factory(factory)
    return factories
