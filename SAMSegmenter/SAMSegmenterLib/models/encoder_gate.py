"""One image encode at a time per model: prompts first, prefetches never in their way.

Every slice embedding of a model is computed through that model's :class:`EncoderGate`
(:func:`gate_for`), whoever asks (interactive prompts, propagation jobs, prefetches, from any
thread):

- a slice asked for while it is being computed is computed once; the others wait for it;
- one encode runs at a time (two would share the same cores and both finish late);
- waiting encodes start by priority: :data:`PROMPT` (a user waits), then :data:`JOB`
  (propagation), then :data:`PREFETCH` (a guess about what comes next);
- a running prefetch is preempted when a prompt or a job needs the encoder for another slice:
  torch encoders stop at the next submodule boundary (forward pre-hooks), encoders with a
  ``cancel()`` method (ONNX Runtime, OpenVINO) are cancelled; the prefetch is retried later.
  A prompt that needs the slice a prefetch is computing waits for it instead (that is a head start).

The caller's priority is :data:`PROMPT` unless set for its thread with :func:`priority`.

At interpreter exit (:func:`close_all`, registered with ``atexit``) queued prefetches are dropped, the encode
in progress is preempted, and the exit waits for it and for a decode in progress: the prefetch and model threads
are daemon threads, and one killed inside PyTorch's or OpenVINO's native code aborts the whole process
("terminate called without an active exception", exit code 134) after its work was done.

In a process that serves many callers from many threads (the inference service), :func:`use_model_thread`
makes every model's work (loading, encodes, decodes) run on one persistent thread of the process
(:func:`on_model_thread`), whichever thread asked. PyTorch's CPU operators run on an OpenMP team that
belongs to the thread calling them; GNU OpenMP stops spinning between operators and sleeps instead
(a futex wake per operator) as soon as the teams of all threads together have more threads than the
CPU has cores. On a 2-core Xeon, model work spread over the server's worker threads made a cached
prompt about 10 ms slower and a propagation 40-130 ms slower per slice than in-process. Off by default:
inside Slicer's process model work must stay on the calling thread (Slicer's idle main thread holds
the GIL, so other Python threads crawl), and a script's main thread is already the only one.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import queue
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Any, Callable, Hashable, Iterator, Optional

from ..errors import Cancelled

PROMPT, JOB, PREFETCH = 0, 1, 2
MAX_QUEUED_PREFETCHES = 4  # newest first; older guesses are dropped
EXIT_WAIT_SECONDS = 30.0  # the longest the exit waits for the model work in progress

_local = threading.local()
_model_lane: Optional["Lane"] = None
_model_lane_lock = threading.Lock()


class Preempted(Exception):
    """A prefetch gave the encoder up to more urgent work (internal to this module)."""


@contextlib.contextmanager
def priority(level: int) -> Iterator[None]:
    """Run the encodes requested by this thread inside the block at ``level`` (PROMPT, JOB or PREFETCH)."""
    previous = getattr(_local, "priority", PROMPT)
    _local.priority = level
    try:
        yield
    finally:
        _local.priority = previous


def preempt_requested() -> bool:
    """Whether the encode running in this thread has been asked to give the encoder up.

    Encoders with a ``cancel()`` method check it after arming their cancellation, so that a
    request arriving just before the call starts is not lost.
    """
    flag = getattr(_local, "preempt", None)
    return flag is not None and flag.is_set()


def _checkpoint(module: Any, args: Any) -> None:
    """Forward pre-hook: stop a preempted prefetch at the next submodule."""
    if preempt_requested():
        raise Preempted()


def use_model_thread() -> None:
    """From now on run model work of this process on one thread of its own (see the module docstring)."""
    global _model_lane
    with _model_lane_lock:
        if _model_lane is None:
            _model_lane = Lane("sam-model")


def on_model_thread(work: Callable[[], Any], preempt: Optional[threading.Event] = None) -> Any:
    """``work()`` on the process's model thread once :func:`use_model_thread` was called, else here."""
    lane = _model_lane
    return work() if lane is None else lane.call(work, preempt)


class Lane:
    """One persistent daemon thread that runs the calls given to it, one at a time, in order of arrival."""

    def __init__(self, name: str):
        self._queue: "queue.SimpleQueue[Optional[tuple[Callable[[], Any], Optional[threading.Event], Future]]]" = \
            queue.SimpleQueue()
        self._closed = False
        self._closing = threading.Lock()  # no call is queued behind the stop marker
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def call(self, function: Callable[[], Any], preempt: Optional[threading.Event] = None) -> Any:
        """``function()`` on the lane's thread (with ``preempt`` as that call's :func:`preempt_requested`
        flag); returns its result or raises its exception in the caller; :class:`Cancelled` once closed."""
        future: Future = Future()
        with self._closing:
            if self._closed:
                raise Cancelled("the process is exiting")
            self._queue.put((function, preempt, future))
        return future.result()

    def close(self, timeout: float) -> None:
        """Run no more calls; wait up to ``timeout`` s for the one in progress (the queued ones are cancelled)."""
        with self._closing:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # close()'s stop marker: nothing is queued behind it
                return
            function, preempt, future = item
            if self._closed:
                future.set_exception(Cancelled("the process is exiting"))
                continue
            _local.preempt = preempt
            try:
                future.set_result(function())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)
            finally:
                _local.preempt = None


class _Running:
    def __init__(self, key: Hashable, level: int):
        self.key = key
        self.level = level
        self.preempt = threading.Event()


class EncoderGate:
    """The encoder schedule of one model (see the module docstring).

    encoder: the model's image encoder; torch modules get forward pre-hooks that let a
    preempted prefetch stop early, other encoders are preempted through their ``cancel()``.
    """

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self._cond = threading.Condition()
        self._running: Optional[_Running] = None
        self._waiting: dict[int, int] = {}  # ticket -> priority
        self._tickets = itertools.count()
        self._inflight: dict[Hashable, tuple[Future, _Running]] = {}
        self._prefetches: list[tuple[Hashable, Callable[[], Any], Callable[[Any], None], object]] = []
        self._prefetcher: Optional[threading.Thread] = None
        self._closed = False  # by close(): no more encodes start
        self.preemptions = 0
        if hasattr(encoder, "modules") and hasattr(encoder, "register_forward_pre_hook"):
            for module in encoder.modules():
                module.register_forward_pre_hook(_checkpoint)

    def run(self, key: Hashable, compute: Callable[[], Any], store: Callable[[Any], None],
            level: Optional[int] = None) -> Any:
        """``compute()`` for ``key`` once (others asking meanwhile wait for it), then ``store(result)``.

        level: PROMPT, JOB or PREFETCH (default: this thread's :func:`priority`).
        Raises whatever ``compute`` raises; a preempted prefetch raises :class:`Preempted`.
        """
        level = getattr(_local, "priority", PROMPT) if level is None else level
        while True:
            with self._cond:
                joined = self._inflight.get(key)
                if joined is not None:
                    future, running = joined
                    running.level = min(running.level, level)  # a wanted slice is no longer a mere guess
                    if level < PREFETCH and not self._closed:
                        running.preempt.clear()
                else:
                    future, running = Future(), _Running(key, level)
                    self._inflight[key] = (future, running)
            if joined is None:
                break
            try:
                return future.result()
            except Preempted:  # the prefetch we joined was cancelled before our request reached it
                if level == PREFETCH:
                    raise
        try:
            result = self._compute(running, compute)
            store(result)
        except BaseException as exc:
            with self._cond:
                self._inflight.pop(key, None)
            future.set_exception(exc)
            raise
        with self._cond:
            self._inflight.pop(key, None)
        future.set_result(result)
        return result

    def _compute(self, running: _Running, compute: Callable[[], Any]) -> Any:
        ticket = next(self._tickets)
        with self._cond:
            self._waiting[ticket] = running.level
            while self._running is not None or min(self._waiting.values()) < self._waiting[ticket]:
                self._waiting[ticket] = running.level  # joined by a more urgent caller meanwhile
                current = self._running
                if current is not None and current.level == PREFETCH and running.level < PREFETCH:
                    self._preempt(current)
                self._cond.wait()
            del self._waiting[ticket]
            if self._closed:
                self._cond.notify_all()
                raise Cancelled("the process is exiting")
            self._running = running
        _local.preempt = running.preempt
        try:
            return on_model_thread(compute, running.preempt)
        except Exception as exc:
            if running.preempt.is_set():
                raise (Cancelled("the process is exiting") if self._closed else Preempted()) from exc
            raise
        finally:
            _local.preempt = None
            with self._cond:
                self._running = None
                self._cond.notify_all()

    def _preempt(self, running: _Running) -> None:
        if running.preempt.is_set():
            return
        running.preempt.set()
        self.preemptions += 1
        cancel = getattr(self.encoder, "cancel", None)
        if callable(cancel):
            cancel()

    def prefetch(self, key: Hashable, compute: Callable[[], Any], store: Callable[[Any], None],
                 owner: object = None) -> None:
        """Compute ``key`` in the background at PREFETCH priority (the newest request first)."""
        with self._cond:
            if self._closed or key in self._inflight or any(item[0] == key for item in self._prefetches):
                return
            self._prefetches.append((key, compute, store, owner))
            del self._prefetches[:-MAX_QUEUED_PREFETCHES]
            if self._prefetcher is None:
                self._prefetcher = threading.Thread(target=self._prefetch_loop, name="sam-prefetch", daemon=True)
                self._prefetcher.start()

    def drop_prefetches(self, owner: object) -> None:
        """Forget the queued prefetches of ``owner`` (a predictor being closed)."""
        with self._cond:
            self._prefetches = [item for item in self._prefetches if item[3] is not owner]

    def _prefetch_loop(self) -> None:
        while True:
            with self._cond:
                if not self._prefetches:
                    self._prefetcher = None
                    return
                key, compute, store, _ = self._prefetches.pop()
            try:
                self.run(key, compute, store, PREFETCH)
            except Preempted:
                with self._cond:  # retry once the urgent work is done, unless newer guesses crowd it out
                    self._prefetches.insert(0, (key, compute, store, _))
                    del self._prefetches[:-MAX_QUEUED_PREFETCHES]
            except Exception:  # a failed guess costs nothing; the real request will report the error
                pass

    def close(self, timeout: float) -> None:
        """Start no more encodes: drop the queued prefetches, stop the encode in progress (whoever asked for it:
        the process is exiting) at its next layer or through ``cancel()``, and wait up to ``timeout`` s for it."""
        with self._cond:
            self._closed = True
            self._prefetches.clear()
            if self._running is not None:
                self._preempt(self._running)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._running is None, timeout)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until no encode runs and no prefetch is queued (for scripts and tests); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._running is None and not self._prefetches
                                       and self._prefetcher is None, timeout)


_GATES: "weakref.WeakKeyDictionary[Any, EncoderGate]" = weakref.WeakKeyDictionary()
_GATES_LOCK = threading.Lock()


def gate_for(model: Any) -> EncoderGate:
    """The gate of a loaded model (one per model object, created on first use)."""
    with _GATES_LOCK:
        gate = _GATES.get(model)
        if gate is None:
            gate = _GATES[model] = EncoderGate(model.encoder)
        return gate


@atexit.register
def close_all() -> None:
    """At interpreter exit: close every gate, then the model thread (see the module docstring)."""
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    with _GATES_LOCK:
        gates = list(_GATES.values())
    for gate in gates:
        gate.close(max(0.0, deadline - time.monotonic()))
    if _model_lane is not None:
        _model_lane.close(max(0.0, deadline - time.monotonic()))
