"""The SAM segmentation effect for trame-slicer: a thin translator of slice-view events.

`SAMEffect` is registered with ``SegmentationEditor.register_effect_type``; the editor creates
one `SAMEffectPipeline` per slice view. While the effect is active and a controller is attached
(see controller_host), the pipeline claims mouse button, mouse move and key-press events, hands
them to the controller, and gives every event the controller does not consume to the slice
view's own interaction (the crosshair displayable manager: scrolling, panning, zooming, its
keyboard shortcuts). It also reports scrolling: each modification of its view's slice node is
passed on as ``view_changed``.
"""

from __future__ import annotations

from typing import Optional

from slicer import (
    vtkMRMLAbstractViewNode,
    vtkMRMLInteractionEventData,
    vtkMRMLNode,
    vtkMRMLSliceNode,
)
from trame_slicer.segmentation import SegmentationEffect, SegmentationEffectPipeline
from vtkmodules.vtkCommonCore import reference, vtkCommand

from .controller_host import ControllerHost
from .events import CONTROLLER_KEYS, KEY_EVENT, POINTER_EVENTS, held_button_after, key_symbol, pointer_fields

VIEW_INTERACTION_MANAGER = "vtkMRMLCrosshairDisplayableManager"


class SAMEffect(SegmentationEffect):
    """Segment Anything: box and point prompts in slice views, handled by the interaction controller."""

    def __init__(self) -> None:
        super().__init__()
        self.host: Optional[ControllerHost] = None

    def _create_pipeline(
        self, view_node: vtkMRMLAbstractViewNode, _parameter: vtkMRMLNode
    ) -> Optional[SegmentationEffectPipeline]:
        return SAMEffectPipeline() if isinstance(view_node, vtkMRMLSliceNode) else None


class SAMEffectPipeline(SegmentationEffectPipeline[SAMEffect]):
    """Per slice view: forwards interaction events to the controller, the rest to the view."""

    def __init__(self) -> None:
        super().__init__()
        self._held_button = "none"
        self._observed: Optional[vtkMRMLSliceNode] = None
        self._observer_tag: Optional[int] = None

    def _host(self) -> Optional[ControllerHost]:
        host = self._effect.host if self._effect else None
        return host if host is not None and host.controller is not None else None

    def CanProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> tuple[bool, float]:
        supported = event_data.GetType() in POINTER_EVENTS or event_data.GetType() == KEY_EVENT
        return bool(supported and self.IsActive() and self._host() is not None), 0.0

    def ProcessInteractionEvent(self, event_data: vtkMRMLInteractionEventData) -> bool:
        host = self._host()
        if host is None:
            return False
        if event_data.GetType() == KEY_EVENT:
            keysym = key_symbol(event_data)
            consumed = keysym is not None and host.key(CONTROLLER_KEYS.get(keysym, keysym))
        else:
            fields = pointer_fields(event_data, self.GetViewNode(), self._held_button)
            self._held_button = held_button_after(fields, self._held_button)
            consumed = host.pointer(fields)
        return consumed or self._forward_to_view(event_data)

    def _forward_to_view(self, event_data: vtkMRMLInteractionEventData) -> bool:
        """Let the slice view's own interaction handle an event the controller left alone."""
        manager = self._view.get_displayable_manager_by_class(VIEW_INTERACTION_MANAGER) if self._view else None
        distance2 = reference(0.0)
        return bool(
            manager is not None
            and manager.CanProcessInteractionEvent(event_data, distance2)
            and manager.ProcessInteractionEvent(event_data)
        )

    def SetViewNode(self, view_node: vtkMRMLAbstractViewNode) -> None:
        super().SetViewNode(view_node)
        if self._observed is not None:
            self._observed.RemoveObserver(self._observer_tag)
        self._observed = view_node if isinstance(view_node, vtkMRMLSliceNode) else None
        if self._observed is not None:
            self._observer_tag = self._observed.AddObserver(vtkCommand.ModifiedEvent, self._on_slice_node_modified)

    def _on_slice_node_modified(self, slice_node: vtkMRMLSliceNode, _event: str) -> None:
        host = self._host()
        if host is not None and self.IsActive():
            host.view_changed(slice_node)
