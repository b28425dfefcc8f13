"""The inference service: models, volumes and embeddings in their own process, served over HTTP.

FastAPI on uvicorn (the stack MONAI Label and nnInteractive's server use). Every request needs the
bearer token, compared in constant time before any work; a non-loopback bind needs TLS or an
explicit ``insecure`` choice. Endpoints (API version 1, under ``/v1``; see docs/service.md):

    GET    /v1/status                       model, device, precision, backend, memory, limits, counts
    POST   /v1/sessions?shape=K,J,I&dtype=D&window=W&model=M&checkpoint=C   body: raw voxels -> session
    DELETE /v1/sessions/{id}
    POST   /v1/sessions/{id}/predict        {axis, index, prompt, selection, logits} -> mask + score
    POST   /v1/sessions/{id}/prefetch       {axis, index}
    POST   /v1/sessions/{id}/jobs           {kind: propagate | propagate_between, ...} -> job
    GET    /v1/jobs/{id}                    state, progress, result (renews the job's lease)
    DELETE /v1/jobs/{id}                    cancel

Requests run in FastAPI's worker threads (predictions) and the registry's job threads
(propagations); their encodes go through the encoder gate of each model, and all model work (loading,
encodes, decodes) runs on one thread of the process (``encoder_gate.use_model_thread``).

A client holding the token is not trusted with the server's memory, files or connections: sizes are
checked before anything is decoded or allocated (uploads: :mod:`.uploads`; masks: ``protocol.unpack_mask``),
JSON requests have their own limits (:class:`.guard.Guard`), ``checkpoint`` is a name the operator configured,
never a path (:func:`.guard.choose_checkpoint`), and connections time out and are capped (:mod:`.connections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import socket
import sys
import threading
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.requests import ClientDisconnect

from ..cache import DEFAULT_MAX_BYTES, EmbeddingCache
from ..errors import InputError, SAMSegmenterError
from ..models.registry import DEFAULT_MODEL, get_spec
from ..propagation.plan import PropagationOptions, check_key_walk, check_seed_walk
from ..volume import check_slice
from .connections import TALLY, connection_cap, guarded_protocol, quiet_accept_errors
from .guard import Guard, choose_checkpoint, scrub_paths
from .protocol import (
    API_VERSION,
    CLIENT_HEADER,
    PREFIX,
    READY_MARKER,
    error_to_json,
    prediction_to_json,
    prompt_from_json,
    unpack_mask,
)
from .sessions import Busy, Limits, NotFound, Registry, TooLarge
from .uploads import VolumeReader, declared_volume

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0
RETRY_AFTER_S = 2
"""Seconds a 503 (a limit reached) asks the client to wait before it tries again (``Retry-After``)."""
MAX_POINTS = 256
"""Most points one prompt may hold (each costs the decoder attention over the whole image embedding)."""


@dataclass
class ServerConfig:
    """How a server runs: the model settings, its token, limits and embedding cache size."""

    token: str
    model: str = DEFAULT_MODEL
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "auto"
    checkpoint: Optional[str] = None
    limits: Limits = field(default_factory=Limits)
    cache_bytes: int = DEFAULT_MAX_BYTES
    named_checkpoints: dict[str, str] = field(default_factory=dict)
    client_paths: bool = False
    max_json_bytes: int = 8 << 20
    max_json_values: int = 200_000
    request_timeout: float = 10.0
    max_connections: int = 64
    shutdown_timeout: float = 5.0

    @property
    def max_request_bytes(self) -> int:
        """Most bytes of a volume upload's body (a compressed body never exceeds the volume limit either)."""
        return self.limits.max_volume_bytes + (1 << 20)


def _options_model() -> type[BaseModel]:
    """A pydantic model of PropagationOptions' fields and types (unknown fields, NaN and infinity refused)."""
    hints = typing.get_type_hints(PropagationOptions)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(PropagationOptions)}
    return create_model("PropagationOptionsBody", __config__=ConfigDict(extra="forbid", allow_inf_nan=False,
                                                                         strict=False), **fields)


OptionsBody = _options_model()


class PromptBody(BaseModel):
    points: list[tuple[float, float]] = Field(default=[], max_length=MAX_POINTS)
    labels: Optional[list[int]] = Field(default=None, max_length=MAX_POINTS)
    box: Optional[tuple[float, float, float, float]] = None
    mask_input: Optional[str] = None


class PredictBody(BaseModel):
    axis: int = Field(ge=0, le=2)
    index: int
    prompt: PromptBody
    selection: Optional[str] = None
    logits: bool = False


class PrefetchBody(BaseModel):
    axis: int = Field(ge=0, le=2)
    index: int


class MaskBody(BaseModel):
    shape: list[int]
    bits: str


class JobBody(BaseModel):
    kind: Literal["propagate", "propagate_between"]
    axis: int = Field(ge=0, le=2)
    seed_index: Optional[int] = None
    seed_mask: Optional[MaskBody] = None
    seed_prompt: Optional[PromptBody] = None
    keys: Optional[dict[int, MaskBody]] = None
    direction: str = "both"
    slice_range: Optional[tuple[int, int]] = None
    extend: bool = True
    options: Optional[OptionsBody] = None  # type: ignore[valid-type]


def package_version() -> str:
    """The installed samsegmenter version, or ``unknown`` (run from a source folder)."""
    try:
        return importlib.metadata.version("samsegmenter")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _memory() -> dict[str, Optional[float]]:
    """Resident memory of this process (MiB) and, on CUDA, the allocated GPU memory."""
    rss = None
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        pass
    cuda = None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        cuda = torch.cuda.memory_allocated() / 2**20
    return {"rss_mib": None if rss is None else round(rss, 1), "cuda_allocated_mib": None if cuda is None
            else round(cuda, 1)}


def create_app(config: ServerConfig) -> tuple[FastAPI, Registry]:
    """The ASGI application of a server and its registry (sessions, jobs)."""
    from ..models.encoder_gate import on_model_thread, use_model_thread
    from ..models.loader import load_model

    use_model_thread()  # requests and jobs arrive on many threads; the model work runs on one

    def load(name: str, checkpoint: Optional[str]) -> Any:
        get_spec(name)
        if checkpoint is None and name == config.model:
            checkpoint = config.checkpoint
        try:
            return on_model_thread(lambda: load_model(name, config.device, config.precision, checkpoint,
                                                      config.backend))
        except SAMSegmenterError as exc:
            if config.client_paths:
                raise
            log.warning("loading %s failed: %s", name, exc)  # the whole message for the operator, one line
            raise type(exc)(scrub_paths(str(exc))) from None

    registry = Registry(config.limits, load, EmbeddingCache(config.cache_bytes))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        quiet_accept_errors(asyncio.get_running_loop())
        yield

    app = FastAPI(title="SAMSegmenter inference service", version=str(API_VERSION), docs_url=None,
                  redoc_url=None, openapi_url=f"{PREFIX}/openapi.json", lifespan=lifespan)

    @app.exception_handler(SAMSegmenterError)
    async def engine_error(request: Request, exc: SAMSegmenterError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 503 if isinstance(exc, Busy) else \
            413 if isinstance(exc, TooLarge) else 422
        body = error_to_json(exc)
        if isinstance(exc, NotFound):
            body["error"]["code"] = "not_found"
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes each wrong input back: a whole body, or a float JSON cannot hold (500)
        detail = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")}
                  for e in exc.errors()[:10]]
        return JSONResponse({"detail": detail}, status_code=422)

    logged: set[tuple[str, str]] = set()

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        where = (type(exc).__name__, request.url.path.split("/")[2] if request.url.path.count("/") > 1 else "")
        if where in logged:  # one line per repeat: a client cannot fill the disk with tracebacks
            log.error("request %s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        else:
            logged.add(where)
            log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse(error_to_json(RuntimeError(f"internal error: {type(exc).__name__}")), status_code=500)

    @app.get(f"{PREFIX}/status")
    def status() -> dict:
        from ..models.loader import loaded_models

        return {"api": API_VERSION, "version": package_version(), "model": config.model, "device": config.device,
                "precision": config.precision, "backend": config.backend,
                "loaded": [{"model": m.name, "device": str(m.device), "precision": m.precision,
                            "backend": m.backend} for m in loaded_models()],
                "memory": _memory(), "limits": asdict(config.limits), **registry.stats()}

    @app.post(f"{PREFIX}/sessions")
    async def open_session(request: Request, shape: str, dtype: str, window: str = "auto",
                           model: str = DEFAULT_MODEL, checkpoint: Optional[str] = None) -> dict:
        encoding = request.headers.get("content-encoding", "").lower()
        client = request.headers.get(CLIENT_HEADER, "")[:100]
        dims, kind, nbytes = declared_volume(shape, dtype, encoding)
        get_spec(model)
        weights = choose_checkpoint(checkpoint, config.named_checkpoints, config.client_paths)
        reservation = registry.reserve(nbytes)  # before a byte is read: uploads count against the limits
        try:
            reader = VolumeReader(dims, kind, encoding, config.max_request_bytes)
            volume = await reader.read(request.stream())
        except ClientDisconnect:
            reservation.release()
            TALLY.add("uploads abandoned by their client")
            return Response(status_code=400)
        except BaseException:
            reservation.release()
            raise
        session = await run_in_threadpool(registry.open, client, volume, window, model, weights, reservation,
                                          reader.fingerprint)
        return session.describe()

    @app.delete(f"{PREFIX}/sessions/{{session_id}}")
    def close_session(session_id: str) -> dict:
        registry.close(session_id)
        return {"closed": session_id}

    @app.post(f"{PREFIX}/sessions/{{session_id}}/predict")
    def predict(session_id: str, body: PredictBody) -> dict:
        predictor = registry.session(session_id).predictor
        check_slice(predictor.volume.shape, body.axis, body.index)
        prompt = prompt_from_json(body.prompt.model_dump())
        prediction = predictor.predict(body.axis, body.index, prompt, selection=body.selection)
        return prediction_to_json(prediction, logits=body.logits)

    @app.post(f"{PREFIX}/sessions/{{session_id}}/prefetch", status_code=202)
    def prefetch(session_id: str, body: PrefetchBody) -> dict:
        predictor = registry.session(session_id).predictor
        check_slice(predictor.volume.shape, body.axis, body.index)
        predictor.prefetch(body.axis, body.index)
        return {}

    @app.post(f"{PREFIX}/sessions/{{session_id}}/jobs", status_code=202)
    def start_job(session_id: str, body: JobBody) -> dict:
        from ..propagation.walk import propagate, propagate_between

        session = registry.session(session_id)
        predictor = session.predictor
        options = PropagationOptions(**(body.options.model_dump() if body.options is not None else {}))
        options.check(predictor.model.spec)
        plane = predictor.slice_shape(body.axis)
        count = predictor.num_slices(body.axis)
        # every check the propagation would make later, made now: a refused job is a 422, never a failed job
        if body.kind == "propagate":
            if body.seed_index is None:
                raise InputError("a propagation needs seed_index")
            check_seed_walk(count, body.axis, body.direction, body.slice_range, body.seed_index,
                            body.seed_mask is not None, body.seed_prompt is not None)
            seed_mask = None if body.seed_mask is None else unpack_mask(body.seed_mask.model_dump(), shape=plane)
            seed_prompt = None if body.seed_prompt is None else prompt_from_json(body.seed_prompt.model_dump())

            def work(progress, cancel):
                return propagate(predictor, body.axis, body.seed_index, seed_mask=seed_mask, seed_prompt=seed_prompt,
                                 direction=body.direction, slice_range=body.slice_range, options=options,
                                 progress=progress, cancel=cancel)
        else:
            check_key_walk(count, body.axis, body.keys or {}, body.slice_range)
            keys = {int(k): unpack_mask(v.model_dump(), shape=plane) for k, v in body.keys.items()}

            def work(progress, cancel):
                return propagate_between(predictor, body.axis, keys, slice_range=body.slice_range,
                                         extend=body.extend, options=options, progress=progress, cancel=cancel)
        return registry.start_job(session, body.kind, work).to_json()

    @app.get(f"{PREFIX}/jobs/{{job_id}}")
    def job_state(job_id: str) -> dict:
        return registry.job(job_id).to_json()

    @app.delete(f"{PREFIX}/jobs/{{job_id}}")
    def cancel_job(job_id: str) -> dict:
        job = registry.job(job_id)
        job.cancel_event.set()
        return job.to_json()

    return app, registry


def _announce(url: str, token_file: Optional[Path], ready_file: Optional[Path]) -> None:
    """Print the machine-readable ready line and write it to ``ready_file`` (atomically)."""
    info = {"url": url, "api": API_VERSION, "pid": os.getpid(),
            "token_file": None if token_file is None else str(token_file)}
    line = f"{READY_MARKER} {json.dumps(info)}"
    print(line, flush=True)
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(line + "\n", encoding="utf-8")
        os.replace(tmp, ready_file)


def _watch_stdin(server: Any) -> None:
    """Stop the server when standard input closes (the parent that started it has exited)."""
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except (OSError, ValueError):
        pass
    log.warning("standard input closed: the parent process is gone, stopping")
    server.should_exit = True
    time.sleep(10)
    os._exit(0)  # a request stuck in model work must not keep an orphan alive


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), port 0 picking a free one; InputError when it cannot be bound.

    Its protocol is named (IPPROTO_TCP): asyncio turns Nagle's algorithm off (TCP_NODELAY) on the
    connections it accepts only when the socket says TCP, and with protocol 0 every answer waited
    about 40 ms for the client's delayed acknowledgement.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 0, tls: Optional[tuple[str, str]] = None,
          token_file: Optional[Path] = None, ready_file: Optional[Path] = None, watch_stdin: bool = False,
          preload: bool = True, log_level: str = "warning") -> None:
    """Run a server until interrupted (blocking).

    tls: (certificate file, key file) to serve HTTPS; port 0 picks a free port. The ready line
    (``SAMSEGMENTER_SERVICE {"url": ...}``) is printed once the model is loaded and the socket listens.
    """
    import uvicorn

    app, registry = create_app(config)
    if preload:
        registry.load(config.model, config.checkpoint)
    sock = listening_socket(host, port)
    bound = sock.getsockname()[1]
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    guard = Guard(app, config.token, config.max_request_bytes, config.max_json_bytes, config.max_json_values)
    connections = connection_cap(config.max_connections)
    if connections < config.max_connections:
        log.warning("serving at most %d connections at a time: the open-file limit of this process (ulimit -n) "
                    "leaves no room for more", connections)
    uv_config = uvicorn.Config(guard, log_level=log_level, ssl_certfile=tls[0] if tls else None,
                               ssl_keyfile=tls[1] if tls else None, access_log=False,
                               http=guarded_protocol(config.request_timeout, connections),
                               timeout_keep_alive=int(config.request_timeout),
                               timeout_graceful_shutdown=max(1, round(config.shutdown_timeout)))
    server = uvicorn.Server(uv_config)

    def when_started() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            _announce(f"{scheme}://{shown}:{bound}", token_file, ready_file)

    def sweep() -> None:
        while not server.should_exit:
            time.sleep(SWEEP_SECONDS)
            for session_id in registry.sweep():
                log.info("closed session %s (idle, or its client stopped polling its job)", session_id)

    threading.Thread(target=when_started, daemon=True).start()
    threading.Thread(target=sweep, daemon=True).start()
    if watch_stdin:
        threading.Thread(target=_watch_stdin, args=(server,), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        registry.shutdown()
        # model work in a request thread cannot be interrupted: exit regardless once it had its time
        threading.Thread(target=_exit_after, args=(config.shutdown_timeout,), daemon=True).start()


def _exit_after(seconds: float) -> None:
    time.sleep(seconds)
    log.warning("a request still ran %.0f s after the server stopped: exiting without it", seconds)
    logging.shutdown()
    os._exit(0)
