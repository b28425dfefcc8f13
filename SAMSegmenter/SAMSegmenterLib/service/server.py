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

Model work runs in FastAPI's worker threads (predictions) and the registry's job threads
(propagations), all through the encoder gate of each model.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import json
import logging
import os
import socket
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..cache import DEFAULT_MAX_BYTES, EmbeddingCache
from ..errors import AuthError, InputError, SAMSegmenterError
from ..models.registry import DEFAULT_MODEL, get_spec
from ..volume import check_slice
from .protocol import (
    API_VERSION,
    PREFIX,
    READY_MARKER,
    VOLUME_DTYPES,
    error_to_json,
    options_from_json,
    prediction_to_json,
    prompt_from_json,
    unpack_mask,
)
from .sessions import Busy, Limits, NotFound, Registry

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")


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

    @property
    def max_request_bytes(self) -> int:
        return self.limits.max_volume_bytes + (1 << 20)


class PromptBody(BaseModel):
    points: list[tuple[float, float]] = []
    labels: Optional[list[int]] = None
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
    options: Optional[dict[str, Any]] = None


class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: the bearer token (constant-time) and the request size, checked before any work."""

    def __init__(self, app: Any, token: str, max_bytes: int):
        self.app = app
        self.token = token.encode()
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"")
        if not (given.startswith(b"Bearer ") and hmac.compare_digest(given[7:], self.token)):
            why = "a wrong access token" if given else "no access token"
            return await _send_json(send, 401, error_to_json(AuthError(f"the service refused {why}")))
        declared = headers.get(b"content-length")
        if declared is not None and int(declared) > self.max_bytes:
            return await _send_json(send, 413, _too_large(self.max_bytes))
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _send_json(send, 413, _too_large(self.max_bytes))


def _too_large(limit: int) -> dict:
    return error_to_json(InputError(f"the request is larger than this server's limit of {limit / 2**20:.0f} MiB"))


async def _send_json(send: Any, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def _volume_from_body(body: bytes, shape: str, dtype: str, encoding: str) -> np.ndarray:
    """The uploaded voxels as a [k, j, i] array; InputError when shape, dtype and size disagree."""
    try:
        dims = tuple(int(n) for n in shape.split(","))
    except ValueError:
        raise InputError(f"shape must be K,J,I (three whole numbers), got {shape!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"shape must be three positive sizes K,J,I, got {shape!r}")
    if dtype not in VOLUME_DTYPES:
        raise InputError(f"voxel type {dtype!r} is not accepted; use one of {', '.join(VOLUME_DTYPES)}")
    if encoding in ("deflate", "gzip"):
        try:
            body = zlib.decompress(body, wbits=31 if encoding == "gzip" else 15)
        except zlib.error as exc:
            raise InputError(f"the volume is not valid {encoding} data ({exc})") from None
    elif encoding not in ("", "identity"):
        raise InputError(f"content encoding {encoding!r} is not accepted; use deflate, gzip or none")
    expected = int(np.prod(dims, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(body) != expected:
        raise InputError(f"{len(body)} bytes of voxels do not match shape {dims} of {dtype} ({expected} bytes)")
    return np.frombuffer(body, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims).astype(dtype, copy=True)


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
    from ..models.loader import load_model

    def load(name: str, checkpoint: Optional[str]) -> Any:
        get_spec(name)
        if checkpoint is None and name == config.model:
            checkpoint = config.checkpoint
        return load_model(name, config.device, config.precision, checkpoint, config.backend)

    registry = Registry(config.limits, load, EmbeddingCache(config.cache_bytes))
    app = FastAPI(title="SAMSegmenter inference service", version=str(API_VERSION), docs_url=None,
                  redoc_url=None, openapi_url=f"{PREFIX}/openapi.json")

    @app.exception_handler(SAMSegmenterError)
    async def engine_error(request: Request, exc: SAMSegmenterError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 503 if isinstance(exc, Busy) else 422
        body = error_to_json(exc)
        if isinstance(exc, NotFound):
            body["error"]["code"] = "not_found"
        return JSONResponse(body, status_code=status)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse(error_to_json(RuntimeError(f"internal error: {type(exc).__name__}: {exc}")),
                            status_code=500)

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
        body = await request.body()
        encoding = request.headers.get("content-encoding", "").lower()
        client = request.headers.get("x-samsegmenter-client", "")
        volume = _volume_from_body(body, shape, dtype, encoding)
        session = await run_in_threadpool(registry.open, client, volume, window, model, checkpoint)
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
        registry.session(session_id).predictor.prefetch(body.axis, body.index)
        return {}

    @app.post(f"{PREFIX}/sessions/{{session_id}}/jobs", status_code=202)
    def start_job(session_id: str, body: JobBody) -> dict:
        from ..propagation.walk import propagate, propagate_between

        session = registry.session(session_id)
        predictor = session.predictor
        options = options_from_json(body.options)
        options.check(predictor.model.spec)
        if body.kind == "propagate":
            if body.seed_index is None:
                raise InputError("a propagation needs seed_index")
            seed_mask = None if body.seed_mask is None else unpack_mask(body.seed_mask.model_dump())
            seed_prompt = None if body.seed_prompt is None else prompt_from_json(body.seed_prompt.model_dump())

            def work(progress, cancel):
                return propagate(predictor, body.axis, body.seed_index, seed_mask=seed_mask, seed_prompt=seed_prompt,
                                 direction=body.direction, slice_range=body.slice_range, options=options,
                                 progress=progress, cancel=cancel)
        else:
            keys = {int(k): unpack_mask(v.model_dump()) for k, v in (body.keys or {}).items()}

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
    uv_config = uvicorn.Config(Guard(app, config.token, config.max_request_bytes), log_level=log_level,
                               ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None,
                               timeout_keep_alive=30, access_log=False)
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
