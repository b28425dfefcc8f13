"""Translation of slice-view interaction events (``vtkMRMLInteractionEventData``) into pointer fields.

The SAM effect's pipeline hands the interaction controller a pointer event with these fields:
kind ("press", "move", "release"), button ("left", "right", "middle", or "none" for a move with
no button held), xy (display position in pixels, VTK convention: origin at the bottom-left of
the view), ras (world position, (3,) millimetres, as the view computed it), slice_node (the
view's vtkMRMLSliceNode) and the ctrl, shift and alt modifiers.
"""

from __future__ import annotations

from typing import Any

from slicer import vtkMRMLInteractionEventData, vtkMRMLSliceNode
from vtkmodules.vtkCommonCore import vtkCommand
from vtkmodules.vtkInteractionWidgets import vtkEvent

BUTTON_EVENTS: dict[int, tuple[str, str]] = {
    vtkCommand.LeftButtonPressEvent: ("press", "left"),
    vtkCommand.LeftButtonReleaseEvent: ("release", "left"),
    vtkCommand.RightButtonPressEvent: ("press", "right"),
    vtkCommand.RightButtonReleaseEvent: ("release", "right"),
    vtkCommand.MiddleButtonPressEvent: ("press", "middle"),
    vtkCommand.MiddleButtonReleaseEvent: ("release", "middle"),
}
POINTER_EVENTS = frozenset([*BUTTON_EVENTS, vtkCommand.MouseMoveEvent])
KEY_EVENT = vtkCommand.KeyPressEvent
# The browser's names of keys (KeyboardEvent.key) -> VTK's / Qt's key symbols, as the controller knows them.
KEYSYMS = {
    "Enter": "Return",
    "ArrowUp": "Up",
    "ArrowDown": "Down",
    "ArrowLeft": "Left",
    "ArrowRight": "Right",
    "PageUp": "Prior",
    "PageDown": "Next",
}
PAGE_STEPS = {"Prior": 1, "Next": -1}
# Keys the web app gives the controller under another name: Escape cancels, as x does (in 3D Slicer the
# Segment Editor keeps Escape for itself).
CONTROLLER_KEYS = {"Escape": "x"}
KEY_TRANSLATION_PRIORITY = 100.0  # above the view's interaction observers


def pointer_fields(
    event_data: vtkMRMLInteractionEventData, slice_node: vtkMRMLSliceNode, held_button: str = "none"
) -> dict[str, Any] | None:
    """The pointer-event fields of ``event_data`` (see the module docstring), or None for other events.

    slice_node: the node of the view the event happened in (the event data does not carry it).
    held_button: the button pressed before this event, reported as the button of a move.
    """
    event_type = event_data.GetType()
    if event_type == vtkCommand.MouseMoveEvent:
        kind, button = "move", held_button
    elif event_type in BUTTON_EVENTS:
        kind, button = BUTTON_EVENTS[event_type]
    else:
        return None
    xy = [0, 0]
    event_data.GetDisplayPosition(xy)
    ras = [0.0, 0.0, 0.0]
    event_data.GetWorldPosition(ras)
    modifiers = event_data.GetModifiers()
    return {
        "kind": kind,
        "button": button,
        "xy": (int(xy[0]), int(xy[1])),
        "ras": tuple(float(v) for v in ras),
        "slice_node": slice_node,
        "ctrl": bool(modifiers & vtkEvent.ControlModifier),
        "shift": bool(modifiers & vtkEvent.ShiftModifier),
        "alt": bool(modifiers & vtkEvent.AltModifier),
    }


def held_button_after(fields: dict[str, Any], held_button: str) -> str:
    """The button held once the event described by ``fields`` has happened."""
    if fields["kind"] == "press":
        return fields["button"]
    if fields["kind"] == "release" and fields["button"] == held_button:
        return "none"
    return held_button


def translate_browser_keys(view: Any) -> None:
    """Give every key press in ``view`` (a trame-slicer slice view) VTK's key symbol (KEYSYMS), and make
    Page Up / Page Down move one slice.

    The observer runs before the view's own interaction, which then knows the arrows (Up/Right: next
    slice, Down/Left: previous slice, as in 3D Slicer); the browser's names ("ArrowUp") meant nothing to it.
    """
    interactor = view.interactor()

    def translate(caller: Any, _event: str) -> None:
        keysym = caller.GetKeySym() or ""
        caller.SetKeySym(KEYSYMS.get(keysym, keysym))
        step = PAGE_STEPS.get(caller.GetKeySym())
        if step and hasattr(view, "get_slice_value"):
            view.set_slice_value(view.get_slice_value() + step * view.get_slice_step())

    interactor.AddObserver(vtkCommand.KeyPressEvent, translate, KEY_TRANSLATION_PRIORITY)


def key_symbol(event_data: vtkMRMLInteractionEventData) -> str | None:
    """The key symbol of a key-press event from the browser, or None for the duplicate of a key press.

    The browser reports a printable key twice, as "keydown" (no character code) and "keypress" (with
    one), and VTK's remote interaction adapter turns both into a KeyPressEvent; keys that print
    nothing (Escape, arrows, Page Up) come only as "keydown". The keydown of a printable key (one
    character, or Enter) is the duplicate. Browser key names are translated with KEYSYMS (the
    interactor already did it when `translate_browser_keys` observes it).
    """
    keysym = event_data.GetKeySym() or ""
    code = event_data.GetKeyCode()
    has_code = bool(code) and code != "\0"
    if not has_code and (len(keysym) == 1 or keysym in ("Enter", "Return")):
        return None
    return KEYSYMS.get(keysym, keysym)
