"""Server-side state of the inference service: sessions (one opened volume each) and their jobs.

A session holds one volume (``[k, j, i]``) with a model, as a :class:`predictor.SlicePredictor` sharing
the server's embedding cache; jobs (propagations) run in worker threads at the encoder gate's JOB
priority. Idle sessions expire; a running job that nobody has polled for ``job_lease_s`` is cancelled,
and its session closed unless the client used it meanwhile (the client went away); finished jobs are
kept ``finished_job_s`` for a late poll.
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..cache import EmbeddingCache
from ..errors import Cancelled, InputError, SAMSegmenterError, ServiceError
from ..models.encoder_gate import JOB, priority
from ..predictor import SlicePredictor, volume_fingerprint
from ..propagation.plan import PropagationResult
from .protocol import error_to_json, result_to_json


class NotFound(ServiceError):
    """No session or job of that id (never opened, closed, or expired)."""


class Busy(ServiceError):
    """The server is at one of its limits (sessions, memory, jobs); try again later (HTTP 503, Retry-After)."""


class TooLarge(InputError):
    """A request or a declared size above this server's limits (HTTP 413)."""


class Reservation:
    """Room held for one volume being uploaded: counted against the session and memory limits until the
    session opens (:meth:`Registry.open`) or the upload fails (:meth:`release`)."""

    def __init__(self, registry: "Registry", nbytes: int):
        self.registry = registry
        self.nbytes = nbytes
        self.held = True

    def release(self) -> None:
        """Give the room back (idempotent)."""
        with self.registry._lock:
            self._drop()

    def _drop(self) -> None:  # inside the registry's lock
        if self.held:
            self.held = False
            self.registry._pending.remove(self)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a server's memory and work in check (defaults suit one workstation)."""

    max_sessions: int = 16
    max_volume_bytes: int = 1 << 30
    max_total_volume_bytes: int = 4 << 30
    max_jobs: int = 4
    session_idle_s: float = 1800.0
    job_lease_s: float = 60.0
    finished_job_s: float = 300.0


class Job:
    """One propagation running for a session; ``cancel_event`` is its cancel request."""

    def __init__(self, session_id: str, kind: str):
        self.id = secrets.token_urlsafe(12)
        self.session_id = session_id
        self.kind = kind
        self.cancel_event = threading.Event()
        self.progress: Optional[tuple[int, int]] = None
        self.state = "running"  # running, done, failed, cancelled
        self.result: Optional[dict[str, Any]] = None
        self.error: Optional[dict[str, Any]] = None
        self.touched = time.monotonic()

    def report(self, done: int, total: int) -> None:
        self.progress = (int(done), int(total))

    def to_json(self) -> dict[str, Any]:
        return {"job": self.id, "kind": self.kind, "state": self.state,
                "progress": None if self.progress is None else list(self.progress),
                "result": self.result, **(self.error or {})}


class Session:
    """One client's volume with one model on this server."""

    def __init__(self, client: str, model_name: str, predictor: SlicePredictor):
        self.id = secrets.token_urlsafe(16)
        self.client = client
        self.model_name = model_name
        self.predictor = predictor
        self.nbytes = int(predictor.volume.nbytes)
        self.touched = time.monotonic()
        self.jobs: dict[str, Job] = {}

    def describe(self) -> dict[str, Any]:
        window = self.predictor.window
        return {"session": self.id, "shape": list(self.predictor.volume.shape),
                "dtype": str(self.predictor.volume.dtype), "model": self.model_name,
                "device": str(self.predictor.model.device), "precision": self.predictor.model.precision,
                "backend": self.predictor.model.backend,
                "window": {"low": window.low, "high": window.high, "name": window.name}}


Work = Callable[[Callable[[int, int], None], Callable[[], bool]], PropagationResult]


class Registry:
    """Sessions and jobs of one server, with its limits; thread-safe.

    load(model_name, checkpoint) returns a loaded SamModel; cache is shared by every session.
    """

    def __init__(self, limits: Limits, load: Callable[[str, Optional[str]], Any], cache: EmbeddingCache):
        self.limits = limits
        self.load = load
        self.cache = cache
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._jobs: dict[str, Job] = {}
        self._pending: list[Reservation] = []
        self._workers = ThreadPoolExecutor(max_workers=limits.max_jobs, thread_name_prefix="sam-job")

    def open(self, client: str, volume: np.ndarray, window: str, model_name: str,
             checkpoint: Optional[str], reservation: Optional[Reservation] = None,
             fingerprint: Optional[str] = None) -> Session:
        """A new session on ``volume`` (its own array, [k, j, i]); Busy at the limits.

        reservation: the room held while the volume was uploaded (:meth:`reserve`); it becomes the
        session's, or is released if the session cannot open. fingerprint: the volume's
        :func:`volume_fingerprint` when known (hashed during the upload), else computed here.
        """
        if reservation is None:
            reservation = self.reserve(int(volume.nbytes))
        try:
            model = self.load(model_name, checkpoint)
            predictor = SlicePredictor(model, volume, window=window, cache=self.cache,
                                       volume_id=fingerprint or volume_fingerprint(volume))
        except BaseException:
            reservation.release()
            raise
        session = Session(client, model_name, predictor)
        with self._lock:
            reservation._drop()
            self._sessions[session.id] = session
        return session

    def reserve(self, nbytes: int) -> Reservation:
        """Hold room for one more volume of ``nbytes`` (before its upload is read); TooLarge above the
        per-volume limit, Busy when the sessions or the volume memory (open and uploading) are full."""
        if nbytes > self.limits.max_volume_bytes:
            raise TooLarge(f"the volume has {nbytes / 2**20:.0f} MiB; this server takes at most "
                           f"{self.limits.max_volume_bytes / 2**20:.0f} MiB per volume")
        with self._lock:
            if len(self._sessions) + len(self._pending) >= self.limits.max_sessions:
                raise Busy(f"this server holds its maximum of {self.limits.max_sessions} open volumes; "
                           "close one or try again later")
            used = sum(s.nbytes for s in self._sessions.values()) + sum(r.nbytes for r in self._pending)
            if used + nbytes > self.limits.max_total_volume_bytes:
                raise Busy(f"this server's volume memory is full ({used / 2**20:.0f} MiB of "
                           f"{self.limits.max_total_volume_bytes / 2**20:.0f} MiB, uploads included); close a "
                           "volume or try again later")
            reservation = Reservation(self, nbytes)
            self._pending.append(reservation)
            return reservation

    def session(self, session_id: str) -> Session:
        """The open session ``session_id`` (marked as used); NotFound otherwise."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise NotFound(f"no open volume {session_id!r} on this server (closed, expired or never opened)")
            session.touched = time.monotonic()
            return session

    def close(self, session_id: str) -> None:
        """Close a session: cancel its jobs, drop its volume. NotFound if it is not open."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise NotFound(f"no open volume {session_id!r} on this server")
        self._release(session)

    def _release(self, session: Session) -> None:
        for job in session.jobs.values():
            job.cancel_event.set()
        session.predictor.close()

    def start_job(self, session: Session, kind: str, work: Work) -> Job:
        """Run ``work(progress, cancel)`` in a worker thread at JOB priority; Busy when all workers are taken."""
        with self._lock:
            running = sum(1 for job in self._jobs.values() if job.state == "running")
            if running >= self.limits.max_jobs:
                raise Busy(f"this server runs its maximum of {self.limits.max_jobs} propagations at a time (it "
                           "does not queue them); try again when one has finished")
            job = Job(session.id, kind)
            self._jobs[job.id] = job
            session.jobs[job.id] = job
        self._workers.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Work) -> None:
        try:
            with priority(JOB):
                result = work(job.report, job.cancel_event.is_set)
            job.result = result_to_json(result)
            job.state = "cancelled" if result.cancelled else "done"
        except Cancelled:
            job.state = "cancelled"
        except SAMSegmenterError as exc:
            job.error, job.state = error_to_json(exc), "failed"
        except Exception as exc:  # reported to the client; the server keeps serving
            job.error, job.state = error_to_json(ServiceError(f"the propagation failed on the server: {exc}")), "failed"

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` (its lease renewed, its session marked as used); NotFound otherwise."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r} on this server (finished long ago, expired or never started)")
            job.touched = time.monotonic()
            session = self._sessions.get(job.session_id)
            if session is not None:
                session.touched = job.touched
            return job

    def sweep(self, now: Optional[float] = None) -> list[str]:
        """Cancel running jobs nobody polls any more; close sessions whose client went away (a job lost its
        lease and nothing else touched the session meanwhile) or that stayed idle; forget old finished jobs.

        Returns the ids of the sessions closed.
        """
        now = time.monotonic() if now is None else now
        limits = self.limits
        with self._lock:
            abandoned = [job for job in self._jobs.values()
                         if job.state == "running" and now - job.touched > limits.job_lease_s]
            for job in abandoned:
                job.cancel_event.set()
            gone = {job.session_id for job in abandoned}
            closing = [s for s in self._sessions.values()
                       if (s.id in gone and now - s.touched > limits.job_lease_s)
                       or (now - s.touched > limits.session_idle_s
                           and not any(j.state == "running" for j in s.jobs.values()))]
            for session in closing:
                del self._sessions[session.id]
            closed = {s.id for s in closing}
            for job_id, job in list(self._jobs.items()):
                finished_long_ago = job.state != "running" and now - job.touched > limits.finished_job_s
                if finished_long_ago or job.session_id in closed:
                    del self._jobs[job_id]
        for session in closing:
            self._release(session)
        return [s.id for s in closing]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"sessions": len(self._sessions), "uploads": len(self._pending),
                    "volume_mib": round(sum(s.nbytes for s in self._sessions.values()) / 2**20, 1),
                    "upload_mib": round(sum(r.nbytes for r in self._pending) / 2**20, 1),
                    "jobs_running": sum(1 for j in self._jobs.values() if j.state == "running"),
                    "embedding_cache_mib": round(self.cache.nbytes / 2**20, 1)}

    def shutdown(self) -> None:
        """Cancel every job and close every session (server exit)."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            self._release(session)
        self._workers.shutdown(wait=False, cancel_futures=True)
