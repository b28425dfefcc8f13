"""The server side of the SAM effect: owns the interaction controller and talks to it.

All decisions (prompts, jobs, previews, what a key does) belong to the interaction controller
(``SAMSegmenterMRML``); this host only

- creates one controller per (volume node, segmentation node, segment id) through the
  `ControllerSupport` it was given, with a `SegmentWriter` for that segmentation;
- forwards the view events the effect pipeline translated (`pointer`, `key`, `view_changed`)
  and the panel's actions (`apply`, `cancel`, `propagate`, `stop`, `jump_to`, `set_window`), and the
  panel's settings (`set_settings`: apply mode and slice range for the keys, structure);
- passes each state the controller reports (``on_change``) to the panel, and calls
  ``controller.poll()`` on the server's asyncio loop while the controller wants polls
  (``wants_poll``: a job or an upload in flight, a prefetch due): at once when it starts wanting
  them, then every `POLL_PERIOD_S`, until ``poll()`` returns False.

The client of the inference service sends a request and reads its answer only inside ``poll()``,
so the poll period adds to every prompt's latency twice (a request waits for the first poll, an
answer for the next one after it arrived); a poll that has nothing to do costs a few
microseconds. docs/web.md has the measurements.

Without a `ControllerSupport` no controller is ever created and every event is left to the view.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Optional

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLSliceNode
from trame_slicer.core import SegmentationEditor

from SAMSegmenterLib.errors import SAMSegmenterError

from .writer import SegmentWriter

POLL_PERIOD_S = 0.01

CreateController = Callable[
    [vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, str, SegmentWriter, Callable[[Any], None], str], Any
]


@dataclass(frozen=True)
class ControllerSupport:
    """How the web app makes interaction controllers.

    create(volume_node, segmentation_node, segment_id, writer, on_change, window) returns a
    controller that reports each new state through ``on_change(state)``; pointer_event(**fields)
    builds the controller's pointer event from the fields of `SAMSegmenterWeb.events.pointer_fields`.
    """

    create: CreateController
    pointer_event: Callable[..., Any]


def service_support(engine: Any, model: str, checkpoint: Optional[str]) -> ControllerSupport:
    """Controllers of the SAM effect running ``model`` (and its ``checkpoint``) on the inference service
    ``engine`` (a ``SAMSegmenterMRML.engines.ServiceEngine``)."""
    from SAMSegmenterMRML.controller import InteractionController, PointerEvent

    def create(volume_node, segmentation_node, segment_id, writer, on_change, window):
        return InteractionController(engine, volume_node, segmentation_node, segment_id, writer, model=model,
                                     checkpoint=checkpoint, window=window, on_change=on_change)

    return ControllerSupport(create, PointerEvent)


class ControllerHost:
    """Holds the SAM effect's current controller; see the module docstring.

    on_state(state or None) receives every state the controller reports (None when there is
    no controller); on_error(message) receives the message of a SAMSegmenterError raised by an
    action; default_slice_node() names the view used by `jump_to` before any pointer event.
    """

    def __init__(
        self,
        editor: SegmentationEditor,
        support: Optional[ControllerSupport],
        on_state: Callable[[Any], None],
        on_error: Callable[[str], None],
        default_slice_node: Callable[[], Optional[vtkMRMLSliceNode]],
    ) -> None:
        self.editor = editor
        self.support = support
        self.on_state = on_state
        self.on_error = on_error
        self.default_slice_node = default_slice_node
        self.controller: Any = None
        self.key_ids: tuple[str, str, str] | None = None
        self.last_slice_node: vtkMRMLSliceNode | None = None
        self._poll_task: asyncio.Task | None = None
        self.apply_mode = "replace"
        self.slice_range: tuple[int, int] | None = None
        self.structure = "anatomy"

    @property
    def available(self) -> bool:
        """True when controllers can be made (a ControllerSupport was given)."""
        return self.support is not None

    def attach(
        self,
        volume_node: vtkMRMLScalarVolumeNode,
        segmentation_node: vtkMRMLSegmentationNode,
        segment_id: str,
        window: str = "auto",
    ) -> bool:
        """Make the controller for this volume, segmentation and segment (with the intensity ``window``)
        unless it is the current one.

        Returns True when a new controller was made.
        """
        key_ids = (volume_node.GetID(), segmentation_node.GetID(), segment_id)
        if self.support is None or key_ids == self.key_ids:
            return False
        self.detach()
        writer = SegmentWriter(self.editor, segmentation_node)
        try:
            self.controller = self.support.create(
                volume_node, segmentation_node, segment_id, writer, self._on_change, window
            )
        except SAMSegmenterError as exc:
            self.on_error(str(exc))
            return False
        self.key_ids = key_ids
        self._send_settings()
        self._keep_polling()
        return True

    def detach(self) -> None:
        """Cancel what the current controller does and forget it."""
        controller, self.controller, self.key_ids = self.controller, None, None
        if self._poll_task is not None:
            self._poll_task.cancel()
            self._poll_task = None
        if controller is not None:
            self._call(controller.cancel)
        self.on_state(None)

    # View events, translated by the effect pipeline.
    def pointer(self, fields: dict[str, Any]) -> bool:
        """Forward a pointer event (fields of events.pointer_fields); True when the controller consumed it."""
        if self.controller is None:
            return False
        self.last_slice_node = fields["slice_node"]
        return bool(self._call(self.controller.pointer, self.support.pointer_event(**fields)))

    def key(self, keysym: str) -> bool:
        return self.controller is not None and bool(self._call(self.controller.key, keysym))

    def view_changed(self, slice_node: vtkMRMLSliceNode) -> None:
        if self.controller is not None:
            self._call(self.controller.view_changed, slice_node)
            self._keep_polling()

    # Panel actions.
    def apply(self, mode: str) -> None:
        self._action("apply", mode)

    def cancel(self) -> None:
        self._action("cancel")

    def propagate(self, direction: str, slice_range: tuple[int, int] | None) -> None:
        self._action("propagate", direction, slice_range)

    def stop(self) -> None:
        self._action("stop")

    def jump_to(self, index: int) -> None:
        """Show slice ``index`` of the preview in the view the pointer was last in (the red view at first)."""
        self._action("jump_to", index, self.last_slice_node or self.default_slice_node())

    def set_settings(self, apply_mode: str, slice_range: tuple[int, int] | None, structure: str) -> None:
        """The panel's settings: a / Enter apply with ``apply_mode``; p / u / d propagate over ``slice_range``
        (inclusive, None: every slice); propagations and corrections segment a ``structure``
        (``anatomy`` or ``compact``). Kept for later controllers."""
        self.apply_mode, self.slice_range, self.structure = apply_mode, slice_range, structure
        self._send_settings()

    def _send_settings(self) -> None:
        if self.controller is not None:
            self.controller.apply_mode = self.apply_mode
            self.controller.slice_range = self.slice_range
            self._call(setattr, self.controller, "structure", self.structure)  # an unknown one: a message

    def set_window(self, spec: str) -> None:
        self._action("set_window", spec)

    def _action(self, name: str, *args: Any) -> None:
        if self.controller is not None:
            self._call(getattr(self.controller, name), *args)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except SAMSegmenterError as exc:
            self.on_error(str(exc))
            return None

    def _on_change(self, state: Any) -> None:
        self.on_state(state)
        self._keep_polling()

    def _keep_polling(self) -> None:
        """Start the poll loop when the controller has work (a job, an upload, a prefetch due) and none runs."""
        wants = self.controller is not None and getattr(self.controller, "wants_poll", True)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the server's loop (scripts, tests): the thread's loop, if any
            try:
                loop = asyncio.get_event_loop()
            except RuntimeError:
                return
        task = self._poll_task
        if wants and (task is None or task.done() or task.get_loop() is not loop):
            self._poll_task = loop.create_task(self._poll())

    async def _poll(self) -> None:
        """Call the current controller's ``poll()`` now (in the loop's next turn), then every POLL_PERIOD_S,
        until it asks for no more."""
        while self.controller is not None and self._call(self.controller.poll):
            await asyncio.sleep(POLL_PERIOD_S)
