"""A recording stand-in for the interaction controller, for the tests of the web app's plumbing.

The interaction controller (SAMSegmenterMRML) makes every decision of the SAM effect; the web app
only translates events and actions into its calls. `Recorder` has the controller's interface as
the web app uses it, records each call and answers as told, so the plumbing tests can check what
reaches the controller. It is never part of the product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from SAMSegmenterLib.errors import InputError


@dataclass
class Recorder:
    """Made by ControllerSupport.create(volume, segmentation, segment_id, writer, on_change, window)."""

    volume: Any
    segmentation: Any
    segment_id: str
    writer: Any
    on_change: Any
    window: str = "auto"
    consume: set = field(default_factory=lambda: {"left"})
    pointers: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    views: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    polls_left: int = 0
    fail_with: str = ""

    def pointer(self, event: dict) -> bool:
        self.pointers.append(event)
        return event["button"] in self.consume

    def key(self, keysym: str) -> bool:
        self.keys.append(keysym)
        return keysym == "a"

    def view_changed(self, slice_node: Any) -> None:
        self.views.append(slice_node)

    def poll(self) -> bool:
        self.polls_left -= 1
        return self.polls_left > 0

    def apply(self, mode: str) -> None:
        if self.fail_with:
            raise InputError(self.fail_with)
        self.actions.append(("apply", mode))

    def cancel(self) -> None:
        self.actions.append(("cancel",))

    def propagate(self, direction: str, slice_range: Any) -> None:
        self.actions.append(("propagate", direction, slice_range))

    def stop(self) -> None:
        self.actions.append(("stop",))

    def jump_to(self, index: int, slice_node: Any) -> None:
        self.actions.append(("jump_to", index, slice_node))

    def set_window(self, spec: str) -> None:
        self.actions.append(("set_window", spec))


@dataclass
class SliceConfidence:
    index: int
    score: Optional[float]
    iou_with_previous: Optional[float]
    key: bool
    confidence: Optional[float] = None
    unsure: bool = False


@dataclass
class ControllerState:
    """The fields of SAMSegmenterMRML's ControllerState that the web panel shows, with example values."""

    status: str = "Propagating"
    error: bool = False
    busy: bool = True
    can_apply: bool = False
    can_cancel: bool = True
    can_propagate: bool = False
    can_stop: bool = True
    progress: Optional[tuple] = (3, 12)
    axis: Optional[int] = 1
    preview_range: Optional[tuple] = (40, 51)
    confidence: tuple = (SliceConfidence(40, 0.91234, None, True), SliceConfidence(41, None, 0.5, False, 0.31234, True))
    stops: dict = field(default_factory=lambda: {"up": "stopped at slice 52: the mask vanished"})
    model: str = "litemedsam"
    device: str = "cpu"
    service: str = "local"
