"""The SAM effect panel: renders the interaction controller's state and sends the user's actions.

`panel_state` turns a controller state into the JSON-able dict the browser shows (trame state
key ``sam``); `SAMPanel` builds the panel's widgets. The state is the controller's
``ControllerState``: status (str), error, busy, can_apply, can_cancel, can_propagate, can_stop
(bool), progress ((done, total) or None), axis (0 = K, 1 = J, 2 = I, or None), preview_range
((first, last) or None), confidence (SliceConfidence(index, score or None, iou_with_previous or
None, key) per previewed slice), stops (walk -> sentence), model, device, service (str).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from trame.widgets import html
from trame.widgets import vuetify3 as v3

from SAMSegmenterLib.volume import AXES

AXIS_NAMES = {number: name for name, number in AXES.items()}
APPLY_MODES = (("replace", "Replace slices"), ("add", "Add"), ("remove", "Remove"))
DIRECTIONS = (("both", "Both ways"), ("up", "Up"), ("down", "Down"))
STRUCTURES = (("anatomy", "Organ / anatomy"), ("compact", "Tumour / compact"))
STRUCTURE_HINT = "Tumour / compact: tighter boxes on each slice, for tumours, lesions and round organs (kidneys)."
WINDOWS = ("auto", "soft_tissue", "lung", "bone", "brain")
LIMIT_HINT = "Give a range next to a look-alike structure: a walk can run on into it."

IDLE_PANEL: dict[str, Any] = {
    "attached": False,
    "status": "",
    "error": False,
    "busy": False,
    "can_apply": False,
    "can_cancel": False,
    "can_propagate": False,
    "can_stop": False,
    "progress": None,
    "axis": "",
    "preview_range": None,
    "confidence": [],
    "stops": [],
    "model": "",
    "device": "",
    "service": "",
}


def _optional_float(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 3)


def panel_state(state: Any) -> dict[str, Any]:
    """The browser's view of a controller state (IDLE_PANEL's keys); IDLE_PANEL for None (no controller)."""
    if state is None:
        return dict(IDLE_PANEL)
    progress = None
    if state.progress is not None:
        done, total = (int(n) for n in state.progress)
        progress = {"done": done, "total": total, "percent": 100.0 * done / total if total else 0.0}
    return {
        "attached": True,
        "status": str(state.status),
        "error": bool(state.error),
        "busy": bool(state.busy),
        "can_apply": bool(state.can_apply),
        "can_cancel": bool(state.can_cancel),
        "can_propagate": bool(state.can_propagate),
        "can_stop": bool(state.can_stop),
        "progress": progress,
        "axis": "" if state.axis is None else AXIS_NAMES[int(state.axis)],
        "preview_range": None if state.preview_range is None else [int(v) for v in state.preview_range],
        "confidence": [
            {
                "index": int(c.index),
                "score": _optional_float(c.score),
                "iou": _optional_float(c.iou_with_previous),
                "key": bool(c.key),
                "confidence": _optional_float(c.confidence),
                "unsure": bool(c.unsure),
            }
            for c in state.confidence
        ],
        "stops": [{"walk": str(walk), "sentence": str(sentence)} for walk, sentence in state.stops.items()],
        "model": str(state.model),
        "device": str(state.device),
        "service": str(state.service),
    }


# Bar colour of a slice in the confidence strip: the propagation's confidence (slice_quality), red (0) to green
# (1), with every slice below UNSURE red whatever its value; key slices (drawn or corrected by the user) blue.
# The model's predicted IoU is not used: it does not track accuracy on propagated slices (docs/propagation.md).
BAR_COLOR = ("c.key ? '#5b8def' : c.confidence === null ? '#777' : c.unsure ? '#c62828' : "
             "`hsl(${Math.round(120 * c.confidence)}, 70%, 45%)`")
BAR_TITLE = (
    "`slice ${c.index}${c.key ? ' (key)' : ''}: confidence ${c.confidence === null ? '-' : c.confidence.toFixed(2)}`"
    " + `${c.unsure ? ' (unsure: check this slice)' : ''}`"
    " + `, IoU with previous ${c.iou === null ? '-' : c.iou.toFixed(2)}`"
)


class SAMPanel(html.Div):
    """Widgets of the SAM effect; callbacks run the host's actions with the panel's settings."""

    def __init__(
        self,
        apply: Callable[[], None],
        cancel: Callable[[], None],
        propagate: Callable[[], None],
        stop: Callable[[], None],
        jump_to: Callable[[int], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(
            classes="d-flex flex-column ga-2 pa-2", raw_attrs=['role="region"', 'aria-label="SAM effect"'], **kwargs
        )
        with self:
            html.Div(
                "No SAM controller is attached: events in the views go to the viewer.",
                v_if="!sam.attached",
                classes="text-body-2 text-medium-emphasis",
                raw_attrs=['role="status"'],
            )
            with html.Div(v_if="sam.attached", classes="d-flex flex-column ga-2"):
                html.Div(
                    "{{ [sam.model, sam.device, sam.service].filter(Boolean).join(' · ') }}",
                    classes="text-caption text-medium-emphasis",
                )
                v3.VAlert(
                    text=("sam.status",),
                    type=("sam.error ? 'error' : 'info'",),
                    density="compact",
                    variant="tonal",
                    v_if="sam.status",
                    raw_attrs=['role="status"'],
                )
                v3.VProgressLinear(
                    v_if="sam.progress",
                    model_value=("sam.progress ? sam.progress.percent : 0",),
                    height=6,
                    color="primary",
                )
                v3.VProgressLinear(v_else_if="sam.busy", indeterminate=True, height=6, color="primary")
                self._apply_row(apply, cancel)
                self._propagate_rows(propagate, stop)
                self._confidence_strip(jump_to)
                html.Div(
                    "{{ s.walk }}: {{ s.sentence }}",
                    v_for="s in sam.stops",
                    key="s.walk",
                    classes="text-caption",
                )

    @staticmethod
    def _apply_row(apply: Callable[[], None], cancel: Callable[[], None]) -> None:
        with v3.VBtnToggle(v_model=("sam_apply_mode", "replace"), mandatory=True, density="compact", divided=True):
            for value, title in APPLY_MODES:
                v3.VBtn(title, value=value, size="small")
        with html.Div(classes="d-flex ga-2"):
            v3.VBtn("Apply", click=apply, disabled=("!sam.can_apply",), color="primary", size="small")
            v3.VBtn("Cancel", click=cancel, disabled=("!sam.can_cancel",), size="small")

    @staticmethod
    def _propagate_rows(propagate: Callable[[], None], stop: Callable[[], None]) -> None:
        with v3.VBtnToggle(v_model=("sam_direction", "both"), mandatory=True, density="compact", divided=True):
            for value, title in DIRECTIONS:
                v3.VBtn(title, value=value, size="small")
        with v3.VBtnToggle(v_model=("sam_structure", "anatomy"), mandatory=True, density="compact", divided=True,
                           title=STRUCTURE_HINT):
            for value, title in STRUCTURES:
                v3.VBtn(title, value=value, size="small")
        with html.Div(classes="d-flex ga-2 align-center"):
            v3.VCheckbox(v_model=("sam_limit", False), label="Limit to slices", density="compact", hide_details=True,
                         title=LIMIT_HINT, style="flex: 0 0 auto;")
            v3.VTextField(
                v_model_number=("sam_first", 0),
                type="number",
                label="first",
                disabled=("!sam_limit",),
                density="compact",
                hide_details=True,
                style="max-width: 5.5rem;",
            )
            v3.VTextField(
                v_model_number=("sam_last", 0),
                type="number",
                label="last",
                disabled=("!sam_limit",),
                density="compact",
                hide_details=True,
                style="max-width: 5.5rem;",
            )
        with html.Div(classes="d-flex ga-2"):
            v3.VBtn("Propagate", click=propagate, disabled=("!sam.can_propagate",), size="small")
            v3.VBtn(
                "Stop", click=stop, disabled=("!sam.can_stop",), size="small", color=("sam.can_stop ? 'warning' : ''",)
            )
        v3.VSelect(
            v_model=("sam_window", "auto"),
            items=("sam_windows", list(WINDOWS)),
            label="Intensity window",
            density="compact",
            hide_details=True,
        )

    @staticmethod
    def _confidence_strip(jump_to: Callable[[int], None]) -> None:
        with html.Div(v_if="sam.confidence.length", classes="d-flex flex-column ga-1", style="min-width: 0;"):
            html.Div(
                "Confidence per slice ({{ sam.axis }} {{ sam.preview_range ? sam.preview_range.join('-') : '' }}):"
                " click a slice to show it",
                classes="text-caption",
            )
            with html.Div(
                classes="d-flex align-end confidence-strip",
                # Never wider than the panel: with many slices the bars keep 2 px each and the strip scrolls.
                style="height: 40px; gap: 1px; background: rgba(255,255,255,0.05); max-width: 100%;"
                " overflow-x: auto; overflow-y: hidden;",
                role="list",
                raw_attrs=['aria-label="Confidence per slice"'],
            ):
                html.Div(
                    v_for="c in sam.confidence",
                    key="c.index",
                    click=(jump_to, "[c.index]"),
                    title=(BAR_TITLE,),
                    raw_attrs=['role="listitem"'],
                    style=(
                        "{flex: '1 0 2px', minWidth: '2px', cursor: 'pointer', background: "
                        + BAR_COLOR
                        + ", height: (c.confidence === null ? 20 : 15 + 85 * c.confidence) + '%',"
                        " outline: c.key ? '1px solid white' : 'none'}",
                    ),
                )
