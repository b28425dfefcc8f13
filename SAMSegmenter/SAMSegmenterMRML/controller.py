"""Every decision of the SAM effect, shared by its front ends (Slicer's Qt effect, the web app): no Qt.

A front end translates its view events into :meth:`InteractionController.pointer` and
:meth:`~InteractionController.key` calls, its buttons into the actions (``apply``, ``cancel``,
``propagate``, ``stop``, ``jump_to``, ``set_window``) and its choices into attributes (``apply_mode``,
``slice_range``, ``structure``), calls :meth:`~InteractionController.poll` from its
timer or event loop while :attr:`~InteractionController.wants_poll`, and draws
:attr:`~InteractionController.state` (also handed to ``on_change`` after every change). The controller
owns the prompt markups and the preview in the scene, the press-drag-release state machine, the key map,
and the life of model jobs, which run in the inference service through non-blocking calls:

- one job at a time: a new prompt, Cancel, a new window or a new segment cancels the running one, whose
  result is then never shown; Stop cancels it too (a prediction's result is dropped, a propagation
  keeps the slices it finished); p / u / d, the Propagate button and new prompts are refused while a
  propagation runs;
- after a propagation, a prompt on a slice of the same axis makes that slice a key slice: its new mask
  replaces the previewed one and only the slices it affects (up to the neighbouring key slices, see
  :func:`SAMSegmenterLib.propagation.plan.affected_range`) are propagated again;
- Apply writes every previewed slice through the front end's :class:`labelmaps.SegmentWriter` (undo
  state first, the editor's masking and overwrite settings).

Coordinates: pointer events carry display ``xy`` (pixels, for the drag threshold) and world ``ras``;
slices are [k, j, i] array slices (axis 0 = K, 1 = J, 2 = I) as in SAMSegmenterLib.volume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import slicer

from SAMSegmenterLib.errors import SAMSegmenterError
from SAMSegmenterLib.models.registry import DEFAULT_MODEL, get_spec
from SAMSegmenterLib.propagation.plan import DIRECTIONS, affected_range, structure_options
from SAMSegmenterLib.propagation.slice_quality import UNSURE

from .dependencies import missing_for_local_service
from .engines import ServiceEngine
from .geometry import SliceRef, view_slice, volume_ijk_to_world, volume_shape
from .labelmaps import WRITE_MODES, SegmentWriter, Slab, write_slab
from .logic import volume_array
from .markups import PromptMarkups
from .preview import PreviewSegmentation
from .slice_prompts import build_slice_prompt, drawn_box_problem

DRAG_PIXELS = 4
POLL_MS = 50  # the front end's poll period while nothing is being uploaded
PREFETCH_DELAY = 0.4  # seconds a view rests on a slice before that slice is embedded ahead of time
KEY_ACTIONS = {"a": "apply", "Return": "apply", "x": "cancel", "p": "both", "u": "up", "d": "down"}


@dataclass(frozen=True)
class PointerEvent:
    """A mouse event in a slice view, translated by the front end.

    kind: "press", "move" or "release"; button: "left", "right", "middle" or "none"; xy: display
    position in pixels (VTK convention, origin bottom-left); ras: world position (3,) under the pointer;
    slice_node: the view's vtkMRMLSliceNode.
    """

    kind: str
    button: str
    xy: tuple[float, float]
    ras: tuple[float, float, float]
    slice_node: Any
    ctrl: bool = False
    shift: bool = False
    alt: bool = False


@dataclass(frozen=True)
class SliceConfidence:
    """One previewed slice: the model's score (its predicted IoU, None for a slice given as a mask), the IoU of
    its mask with the neighbour it was propagated from (None for key slices), whether it is a key slice, and
    the propagation's confidence in it (:mod:`SAMSegmenterLib.propagation.slice_quality`, 0..1; None for key slices and
    single-slice predictions). The confidence, not the score, says whether a propagated slice looks right:
    the predicted IoU does not track accuracy (docs/propagation.md)."""

    index: int
    score: Optional[float]
    iou_with_previous: Optional[float]
    key: bool
    confidence: Optional[float] = None

    @property
    def unsure(self) -> bool:
        """A propagated slice whose confidence is below :data:`UNSURE`: show it as doubtful, not green."""
        return self.confidence is not None and self.confidence < UNSURE

    @property
    def label(self) -> str:
        """What a confidence strip shows for the slice: ``key``, its confidence with two decimals, or ``-``."""
        return "key" if self.key else "-" if self.confidence is None else f"{self.confidence:.2f}"


@dataclass(frozen=True)
class ControllerState:
    """What a front end shows: a status line, which actions are possible, progress and the preview."""

    status: str
    error: bool = False
    busy: bool = False
    can_apply: bool = False
    can_cancel: bool = False
    can_propagate: bool = False
    can_stop: bool = False
    progress: Optional[tuple[int, int]] = None
    axis: Optional[int] = None
    preview_range: Optional[tuple[int, int]] = None
    confidence: tuple[SliceConfidence, ...] = ()
    stops: dict[str, str] = field(default_factory=dict)
    model: str = ""
    device: str = ""
    service: str = ""

    def weakest(self) -> Optional[int]:
        """The propagated slice that looks least sure (lowest confidence; without confidences, lowest IoU with
        its neighbour)."""
        rated = [(c.confidence if c.confidence is not None else c.iou_with_previous, c.index)
                 for c in self.confidence if not c.key]
        rated = [(value, index) for value, index in rated if value is not None]
        return min(rated)[1] if rated else None


@dataclass
class _Drag:
    xy: tuple[float, float]
    ras: np.ndarray
    slice_node: Any
    include: bool
    box: bool = False


@dataclass
class _Job:
    kind: str  # "predict", "propagate", "stopped" (a propagation asked to stop) or "correct"
    call: Any
    ref: Optional[SliceRef] = None
    span: Optional[tuple[int, int]] = None  # slices a correction re-propagates


def _iou(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[float]:
    if a is None or b is None:
        return None
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b)) / union


class InteractionController:
    """The SAM effect for one volume, segmentation and segment (see the module docstring).

    engine: where model work runs (:class:`engines.ServiceEngine`: a local server or a remote one);
    writer: the front end's :class:`labelmaps.SegmentWriter`; model/checkpoint/window: what the service
    runs on this volume; on_change(state): called after every change of :attr:`state`.
    """

    def __init__(self, engine: ServiceEngine, volume_node: Any, segmentation_node: Any, segment_id: str,
                 writer: SegmentWriter, *, model: str = DEFAULT_MODEL, checkpoint: Optional[str] = None,
                 window: str = "auto", on_change: Optional[Callable[[ControllerState], None]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.volume_node = volume_node
        self.segmentation_node = segmentation_node
        self.segment_id = segment_id
        self.writer = writer
        self.spec = get_spec(model)
        self.checkpoint = checkpoint
        self.window = window
        self.on_change = on_change
        self.clock = clock
        self.apply_mode = "replace"  # what the apply keys (a, Enter) write: the front end's "Apply as" choice
        self.slice_range: Optional[tuple[int, int]] = None  # what p / u / d propagate over (None: all slices)
        self._structure = "anatomy"
        self.shape = volume_shape(volume_node)
        self.ijk_to_world = volume_ijk_to_world(volume_node)
        scene = volume_node.GetScene()
        self.markups = PromptMarkups(scene)
        self.preview = PreviewSegmentation(scene)
        self._remote: Any = None
        self._opening: Any = None
        self._after_open: Optional[Callable[[], None]] = None
        self._job: Optional[_Job] = None
        self._cancelled: list[Any] = []  # cancelled calls, polled until the service has stopped them
        self._drag: Optional[_Drag] = None
        self._ref: Optional[SliceRef] = None  # the slice the current prompts belong to
        self._axis: Optional[int] = None  # axis of the preview
        self._masks: dict[int, np.ndarray] = {}  # previewed slice -> (rows, columns) bool
        self._scores: dict[int, float] = {}
        self._sure: dict[int, float] = {}  # propagation confidence per propagated slice
        self._keys: dict[int, np.ndarray] = {}  # key slices of a propagated preview
        self._range: Optional[tuple[int, int]] = None  # the range the propagation was asked for
        self._stops: dict[str, str] = {}
        self._prefetch: Optional[tuple[float, Any]] = None
        self._status, self._error = "Drag a box around a structure in a slice view.", False
        self._missing = missing_for_local_service() if engine.local is not None else []
        if not self._refused_for_missing_packages():
            self._open()

    # state ------------------------------------------------------------------------------------

    @property
    def structure(self) -> str:
        """What propagations and corrections segment, the front end's "Structure" choice: ``anatomy`` or
        ``compact`` (:func:`SAMSegmenterLib.propagation.plan.structure_options`)."""
        return self._structure

    @structure.setter
    def structure(self, value: str) -> None:
        structure_options(value)  # InputError for an unknown kind
        self._structure = value

    @property
    def busy(self) -> bool:
        """A model job runs, or waits for the volume's upload."""
        return self._job is not None or self._after_open is not None

    @property
    def wants_poll(self) -> bool:
        """Whether poll() has work: a job or an upload in flight, a cancelled job the service has not yet been
        told to stop, a prefetch waiting for its delay, or a background request (a session being closed)."""
        return (self._job is not None or self._opening is not None or self._prefetch is not None
                or bool(self._cancelled) or self.engine.client.pending)

    @property
    def poll_interval_ms(self) -> int:
        """How often the front end should call poll(): as often as its event loop allows (0) while a volume is
        being sent (each poll sends for at most ~10 ms, the views redraw in between), otherwise every 50 ms."""
        calls = [self._opening, self._job.call if self._job is not None else None]
        return 0 if any(getattr(call, "uploading", False) for call in calls) else POLL_MS

    @property
    def state(self) -> ControllerState:
        has_preview = bool(self._masks)
        confidence = tuple(self._confidence()) if len(self._masks) > 1 else ()
        info = self._remote.info if self._remote is not None else {}
        device = f"{info['device']} ({info['precision']}, {info['backend']})" if info else ""
        return ControllerState(
            status=self._status, error=self._error, busy=self.busy,
            can_apply=has_preview and not self.busy, can_cancel=has_preview or self.busy or not self.markups.is_empty(),
            can_propagate=has_preview and not self.busy and not self._missing, can_stop=self.busy,
            progress=getattr(self._job.call, "progress", None) if self._job is not None else None,
            axis=self._axis if has_preview else None,
            preview_range=(min(self._masks), max(self._masks)) if has_preview else None,
            confidence=confidence, stops=dict(self._stops), model=self.spec.title, device=device,
            service=self.engine.describe())

    def _confidence(self) -> list[SliceConfidence]:
        out = []
        for index in sorted(self._masks):
            neighbour = None
            if self._keys and index not in self._keys:
                nearest = min(self._keys, key=lambda k: (abs(k - index), k))
                neighbour = index - 1 if index > nearest else index + 1
            out.append(SliceConfidence(index, self._scores.get(index),
                                       _iou(self._masks[index], self._masks.get(neighbour)) if neighbour is not None
                                       else None, index in self._keys,
                                       None if index in self._keys else self._sure.get(index)))
        return out

    def _say(self, status: str, error: bool = False) -> None:
        self._status, self._error = status, error

    def _refused_for_missing_packages(self) -> bool:
        """Say which packages the local service lacks (True), or nothing when it has them all."""
        if self._missing:
            self._say(f"Python packages are missing ({', '.join(self._missing)}): install them in the "
                      "SAM Segmenter module.", error=True)
        return bool(self._missing)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.state)

    # the volume on the service ----------------------------------------------------------------

    def _open(self) -> None:
        """Start uploading the volume (non-blocking); prompts made meanwhile wait for it."""
        if self._remote is None and self._opening is None and not self._missing:
            self._opening = self.engine.client.submit_open_volume(
                volume_array(self.volume_node, copy=False), self.window, self.spec.name, self.checkpoint,
                snapshot=True)

    def _when_open(self, action: Callable[[], None]) -> None:
        if self._remote is not None:
            action()
        else:
            self._after_open = action
            self._open()
            self._say("Starting the SAM service (loading the model)..." if self.engine.starting
                      else "Preparing the volume in the SAM service...")

    # view events ------------------------------------------------------------------------------

    def pointer(self, event: PointerEvent) -> bool:
        """Handle a mouse event; True when it was used (the view should not handle it too)."""
        if event.shift or event.alt:
            return False  # Shift and Alt keep their slice view meanings (crosshair, window/level)
        if event.kind == "press":
            return self._press(event)
        drag = self._drag
        if drag is None or event.slice_node is not drag.slice_node:
            return False
        if event.kind == "move":
            if drag.include and not drag.box and max(abs(event.xy[0] - drag.xy[0]),
                                                     abs(event.xy[1] - drag.xy[1])) >= DRAG_PIXELS:
                drag.box = True
            if drag.box:
                self.markups.set_box(self._corners(drag, np.asarray(event.ras, dtype=float)))
            return drag.box
        if event.kind == "release":
            self._drag = None
            if drag.box:
                self._prompt(drag.slice_node, box=self._corners(drag, np.asarray(event.ras, dtype=float)))
            elif not self.spec.point_prompts:
                self._say(f"{self.spec.title} was trained with box prompts only: drag a box.", error=True)
                self._changed()
            else:
                self._prompt(drag.slice_node, point=(drag.ras, drag.include))
            return True
        return False

    def _press(self, event: PointerEvent) -> bool:
        prompting = event.button == "left" or (event.button == "right" and self.spec.point_prompts)
        if prompting and self._job is not None and self._job.kind != "predict":
            self._say("A propagation is running: wait for it, or Stop it (the slices done are kept), "
                      "before drawing a new prompt.", error=True)
            self._changed()
            return True  # the view does not act on it either
        if event.button == "left":
            include = not event.ctrl
        elif event.button == "right" and self.spec.point_prompts:
            include = False
        else:
            return False  # box-only models leave right click (zoom, context menu) to the view
        self._drag = _Drag(event.xy, np.asarray(event.ras, dtype=float), event.slice_node, include)
        return True

    @staticmethod
    def _corners(drag: _Drag, end: np.ndarray) -> np.ndarray:
        """(4, 3) RAS corners of the rectangle dragged from ``drag.ras`` to ``end`` in the view's plane."""
        slice_to_ras = slicer.util.arrayFromVTKMatrix(drag.slice_node.GetSliceToRAS())
        u, v = slice_to_ras[:3, 0], slice_to_ras[:3, 1]
        u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
        delta = end - drag.ras
        along_u, along_v = (delta @ u) * u, (delta @ v) * v
        return np.array([drag.ras, drag.ras + along_u, drag.ras + along_u + along_v, drag.ras + along_v])

    def key(self, keysym: str) -> bool:
        """Handle a key press; True when it is one of the effect's keys (a, Enter, x, p, u, d).

        The apply keys write with :attr:`apply_mode`; p / u / d propagate over :attr:`slice_range`."""
        action = KEY_ACTIONS.get(keysym)
        if action is None:
            return False
        if action == "apply":
            self.apply(self.apply_mode)
        elif action == "cancel":
            self.cancel()
        else:
            self.propagate(action, self.slice_range)
        return True

    def view_changed(self, slice_node: Any) -> None:
        """A slice view moved: embed its slice ahead of time once it has rested there (see PREFETCH_DELAY)."""
        self._prefetch = (self.clock(), slice_node)

    # prompts ----------------------------------------------------------------------------------

    def _prompt(self, slice_node: Any, box: Optional[np.ndarray] = None,
                point: Optional[tuple[np.ndarray, bool]] = None) -> None:
        if self._refused_for_missing_packages():
            self._changed()
            return
        try:
            shown = view_slice(slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS()), self.ijk_to_world,
                               self.shape)
            if len(self._masks) > 1 and shown.axis != self._axis:
                first, last = min(self._masks), max(self._masks)
                raise SAMSegmenterError(f"Apply or cancel the preview on slices {first}-{last} "
                                        f"of axis {'KJI'[self._axis]} first.")
            if self._ref is not None and self._ref != shown:
                self.markups.clear()
                if not self._keys:  # a single-slice preview is replaced; a propagated one is corrected
                    self._clear_preview()
            self._ref = shown
            if box is not None:
                self.markups.set_box(box)
            if point is not None:
                self.markups.add_point(point[0], point[1])
            points, labels = self.markups.points()
            prompt = build_slice_prompt(self.shape, self.ijk_to_world, points, labels, self.markups.box_corners(),
                                        "RAS", shown.axis)
            problem = box is not None and drawn_box_problem(box, self.ijk_to_world, prompt.ref, self.shape)
            if problem:
                self.markups.clear()
                raise SAMSegmenterError(problem)
        except SAMSegmenterError as error:
            self._say(str(error), error=True)
            self._changed()
            return
        self._cancel_job()
        self._say(f"Segmenting slice {shown.axis_name}={shown.index}...")
        self._when_open(lambda: self._start("predict", self._remote.submit_predict(
            prompt.ref.axis, prompt.ref.index, prompt.engine_prompt()), ref=prompt.ref))
        self._changed()

    # actions ----------------------------------------------------------------------------------

    def apply(self, mode: str = "replace") -> None:
        """Write the preview into the segment with ``mode`` ("replace", "add", "remove"); undo restores."""
        if self.busy:
            self._say("Wait for the running job, or Stop it, before applying.", error=True)
        elif not self._masks:
            self._say("Nothing to apply: drag a box first.", error=True)
        elif mode not in WRITE_MODES:
            self._say(f"Unknown apply mode {mode!r}.", error=True)
        else:
            slab, mask = self._slab()
            try:
                write_slab(self.writer, self.volume_node, self.segment_id, mask, slab, mode)
            except SAMSegmenterError as error:
                self._say(f"Nothing written: {error}", error=True)
            else:
                count = slab.last - slab.first + 1
                self._clear_all()
                self._say(f"Applied to {count} slice{'s' if count > 1 else ''}. Undo restores the segment.")
        self._changed()

    def cancel(self) -> None:
        """Forget prompts and preview; a running job is cancelled and its result never shown."""
        self._cancel_job()
        self._clear_all()
        self._say("Prompts cleared.")
        self._changed()

    def stop(self) -> None:
        """Stop the running job: a prediction's result is dropped; a propagation is asked to stop, and the
        slices it finished are shown once the service answers (see _finish)."""
        job = self._job
        if job is not None and job.kind == "propagate":
            job.call.cancel()
            job.kind = "stopped"
            self._say("Stopping; the slices propagated so far are kept...")
        elif self.busy:
            self._cancel_job()
            self._say("Stopped; the preview is unchanged.")
        self._changed()

    def propagate(self, direction: str = "both", slice_range: Optional[tuple[int, int]] = None) -> None:
        """Propagate the preview through the volume: "up" (increasing index), "down" or "both";
        slice_range: inclusive (first, last) along the preview's axis, or None for all slices."""
        if self._refused_for_missing_packages():
            pass
        elif direction not in DIRECTIONS:
            self._say(f"Unknown direction {direction!r}.", error=True)
        elif self.busy:
            self._say("A job is running: Stop it first.", error=True)
        elif not self._masks:
            self._say("Segment a slice first: propagation starts from the preview.", error=True)
        else:
            axis = self._axis
            if slice_range is not None:
                count = self.shape[axis]
                slice_range = (max(0, min(slice_range)), min(count - 1, max(slice_range)))
            options = structure_options(self._structure)
            if self._keys:
                keys = dict(self._keys)
                call = self._remote.submit_propagate_between(axis, keys, slice_range=slice_range, options=options)
            else:
                seed = next(iter(self._masks))
                keys = {seed: self._masks[seed]}
                call = self._remote.submit_propagate(axis, seed, seed_mask=keys[seed], direction=direction,
                                                     slice_range=slice_range, options=options)
            self._start("propagate", call, ref=SliceRef(axis, next(iter(keys))))
            self._pending_keys, self._range = keys, slice_range
            self._say(f"Propagating {direction}...")
        self._changed()

    def jump_to(self, index: int, slice_node: Any) -> None:
        """Move ``slice_node``'s view to slice ``index`` of the preview's axis (e.g. from the confidence strip)."""
        if self._axis is None:
            return
        ijk = np.array([(self.shape[2] - 1) / 2, (self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2, 1.0])
        ijk[2 - self._axis] = index
        r, a, s = (self.ijk_to_world @ ijk)[:3]
        slice_node.JumpSliceByOffsetting(r, a, s)

    def set_window(self, window: str) -> None:
        """Use another intensity window: everything running or previewed is dropped, the volume reopened."""
        if window == self.window:
            return
        self._cancel_job()
        self._clear_all()
        self.window = window
        self._close_remote()
        self._open()
        self._say(f"Intensity window: {window}.")
        self._changed()

    def set_segment(self, segment_id: str) -> None:
        """Write to another segment: a running job is cancelled; an unapplied preview is kept (Apply writes it
        into the new segment, Cancel discards it) rather than dropped without a word."""
        if segment_id != self.segment_id:
            self._cancel_job()
            self.segment_id = segment_id
            if self._masks:
                self._show_preview()  # in the new segment's colour
                self._say(f"The preview of {len(self._masks)} slice(s) is kept: Apply writes it into the selected "
                          "segment, Cancel (x) discards it.")
            else:
                self._clear_all()
                self._say("Drag a box around a structure in a slice view.")
            self._changed()

    @property
    def has_preview(self) -> bool:
        """Whether an unapplied preview exists (a front end keeps it when the effect is left)."""
        return bool(self._masks)

    # jobs -------------------------------------------------------------------------------------

    def _start(self, kind: str, call: Any, ref: Optional[SliceRef] = None,
               span: Optional[tuple[int, int]] = None) -> None:
        self._job = _Job(kind, call, ref, span)

    def _cancel_job(self) -> None:
        self._after_open = None
        if self._job is not None:
            self._job.call.cancel()  # a propagation's cancel request goes out from poll(): keep polling it
            self._cancelled.append(self._job.call)
            self._job = None

    def poll(self) -> bool:
        """Advance uploads and jobs, show finished results, send due prefetches; True while more polls are
        wanted. Never blocks."""
        changed = False
        self.engine.client.poll()  # background requests (sessions being closed)
        self._cancelled = [call for call in self._cancelled if not call.poll()]  # results never shown
        if self._opening is not None and self._opening.poll():
            changed = True
            opening, self._opening = self._opening, None
            try:
                self._remote = opening.result(0)
            except SAMSegmenterError as error:
                self._after_open = None
                self._say(f"The SAM service cannot open this volume: {error}", error=True)
            else:
                action, self._after_open = self._after_open, None
                if action is not None:
                    action()
        job = self._job
        if job is not None:
            before = getattr(job.call, "progress", None)
            if job.call.poll():
                self._job = None
                changed = True
                self._finish(job)
            elif getattr(job.call, "progress", None) != before:
                changed = True
        if self._prefetch is not None and self.clock() - self._prefetch[0] >= PREFETCH_DELAY:
            self._send_prefetch(self._prefetch[1])
        if changed:
            self._changed()
        return self.wants_poll

    def _send_prefetch(self, slice_node: Any) -> None:
        self._prefetch = None
        if self._remote is None:
            return
        try:
            ref = view_slice(slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS()), self.ijk_to_world,
                             self.shape)
        except SAMSegmenterError:
            return  # the view shows no volume slice (oblique or outside): nothing to prefetch
        self._remote.prefetch(ref.axis, ref.index)

    def _finish(self, job: _Job) -> None:
        try:
            result = job.call.result(0)
        except SAMSegmenterError as error:
            if job.kind == "stopped":  # stopped before it finished a slice
                self._say("Stopped; the preview is unchanged.")
            else:
                self._say(f"SAM failed: {error}", error=True)
            return
        if job.kind == "predict":
            self._show_prediction(job.ref, result)
        elif job.kind in ("propagate", "stopped"):
            self._show_propagation(result)
            if job.kind == "stopped":
                first, last = min(self._masks), max(self._masks)
                self._say(f"Stopped; slices {first}-{last} are kept in the preview. Apply, correct or propagate "
                          "again.")
        else:
            self._show_correction(job.span, result)

    def _show_prediction(self, ref: SliceRef, prediction: Any) -> None:
        mask = np.asarray(prediction.mask, dtype=bool)
        if self._keys and ref.axis == self._axis:
            self._keys[ref.index] = self._masks[ref.index] = mask
            self._scores[ref.index] = float(prediction.score)
            first, last = self._range or (0, self.shape[ref.axis] - 1)
            span = affected_range(self._keys, ref.index, (min(first, ref.index), max(last, ref.index)))
            keys = {k: m for k, m in self._keys.items() if span[0] <= k <= span[1]}
            options = structure_options(self._structure)
            self._start("correct", self._remote.submit_propagate_between(ref.axis, keys, slice_range=span,
                                                                        options=options), ref=ref, span=span)
            self._say(f"Slice {ref.axis_name}={ref.index} corrected; propagating slices {span[0]}-{span[1]} again...")
        else:
            self._axis, self._masks, self._scores = ref.axis, {ref.index: mask}, {ref.index: float(prediction.score)}
            self._sure = {}
            self._keys, self._stops = {}, {}
            # the model's score (its predicted IoU) is not shown: it does not track accuracy (docs/propagation.md)
            self._say(f"Slice {ref.axis_name}={ref.index}: {int(mask.sum())} pixels segmented. "
                      "Apply, add prompts or propagate (p, u, d).")
        self._show_preview()

    def _show_propagation(self, result: Any) -> None:
        self._masks = {i: np.take(result.mask, i, axis=result.axis) for i in result.slices}
        self._masks.update(self._pending_keys)
        self._scores = {**{k: v for k, v in self._scores.items() if k in self._pending_keys}, **result.scores}
        self._sure = dict(getattr(result, "confidence", {}))
        self._keys, self._axis = dict(self._pending_keys), result.axis
        self._stops = dict(result.stop_details)
        first, last = min(self._masks), max(self._masks)
        self._say(f"Propagated over slices {first}-{last}. Correct any slice with a new box, or Apply.")
        self._show_preview()

    def _show_correction(self, span: tuple[int, int], result: Any) -> None:
        for index in range(span[0], span[1] + 1):
            if index in self._keys:
                continue
            mask = np.take(result.mask, index, axis=result.axis)
            if mask.any():
                self._masks[index], self._scores[index] = mask, result.scores.get(index)
                self._sure.pop(index, None)
                if index in getattr(result, "confidence", {}):
                    self._sure[index] = result.confidence[index]
            else:
                self._masks.pop(index, None)
                self._scores.pop(index, None)
                self._sure.pop(index, None)
        self._stops.update(result.stop_details)
        self._say(f"Slices {span[0]}-{span[1]} propagated again. Correct another slice, or Apply.")
        self._show_preview()

    # preview ----------------------------------------------------------------------------------

    def _slab(self) -> tuple[Slab, np.ndarray]:
        """The previewed slices as a slab and its bool [k, j, i] mask (unpreviewed slices inside it empty)."""
        slab = Slab(self._axis, min(self._masks), max(self._masks))
        mask = np.zeros(slab.shape(self.shape), dtype=bool)
        for index, slice_mask in self._masks.items():
            selector = [slice(None)] * 3
            selector[self._axis] = index - slab.first
            mask[tuple(selector)] = slice_mask
        return slab, mask

    def _show_preview(self) -> None:
        slab, mask = self._slab()
        segment = self.segmentation_node.GetSegmentation().GetSegment(self.segment_id)
        color = tuple(segment.GetColor()) if segment is not None else (0.9, 0.8, 0.2)
        self.preview.show(self.volume_node, self.segmentation_node, mask, slab, color)

    def _clear_preview(self) -> None:
        self._masks, self._scores, self._keys, self._stops, self._sure = {}, {}, {}, {}, {}
        self._axis = self._range = None
        self.preview.hide()

    def _clear_all(self) -> None:
        self._clear_preview()
        self.markups.clear()
        self._ref = None
        self._drag = None

    def _close_remote(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def close(self) -> None:
        """Cancel the running job, close the volume on the service, remove prompt and preview nodes."""
        self._cancel_job()
        self._close_remote()
        self._clear_all()
        self.markups.remove()
        self.preview.remove()
