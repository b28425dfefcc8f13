"""How the views are rendered and streamed to the browser (trame-rca image streaming).

Each view renders into an off-screen VTK window; trame-rca grabs the frame, encodes it as an
image on a thread pool and pushes it over the websocket, where it replaces the ``src`` of the
view's ``<img>``. These settings trade image quality for time to screen; docs/web.md has the
measurements they come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RenderSettings:
    """target_fps: frame rate cap of a view the mouse is over; blur_fps: of the others.

    interactive_quality: JPEG quality of the first frame after a change.
    """

    target_fps: float = 30.0
    blur_fps: float = 10.0
    interactive_quality: int = 50

    def factory_options(self) -> dict[str, Any]:
        """Keyword arguments of trame-slicer's ``register_rca_factories``."""
        return {
            "target_fps": self.target_fps,
            "blur_fps": self.blur_fps,
            "interactive_quality": self.interactive_quality,
        }
