"""The inference service's wire format, shared by the server and the client (standard library + numpy).

API version 1, JSON over HTTP (see docs/service.md). Volumes travel as raw C-order
bytes of the ``[k, j, i]`` array (optionally deflate-compressed); masks as bit-packed, zlib-compressed,
base64 text with their shape. Engine errors travel as ``{"error": {"type": ..., "message": ...}}`` and
are raised again on the client as the same exception class.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import zlib
from typing import Any, Mapping, Optional

import numpy as np

from .. import errors
from ..predictor import SlicePrediction
from ..prompts import Prompt
from ..propagation.plan import PropagationOptions, PropagationResult

API_VERSION = 1
PREFIX = f"/v{API_VERSION}"
TOKEN_HEADER = "Authorization"
CLIENT_HEADER = "X-SAMSegmenter-Client"
READY_MARKER = "SAMSEGMENTER_SERVICE"
"""First word of the one line the server prints on stdout when it is ready: ``SAMSEGMENTER_SERVICE {json}``."""

VOLUME_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
"""Voxel types a volume may be uploaded as (little-endian)."""

ERROR_TYPES: dict[str, type[errors.SAMSegmenterError]] = {
    cls.__name__: cls for cls in (errors.SAMSegmenterError, errors.InputError, errors.PromptError, errors.ModelError,
                                  errors.CheckpointError, errors.DeviceError, errors.Cancelled, errors.ServiceError,
                                  errors.AuthError)
}


def pack_mask(mask: np.ndarray) -> dict[str, Any]:
    """A boolean array of any shape as JSON: {"shape": [...], "bits": base64(zlib(packbits))}."""
    mask = np.asarray(mask, dtype=bool)
    bits = zlib.compress(np.packbits(mask.ravel()).tobytes(), 1)
    return {"shape": list(mask.shape), "bits": base64.b64encode(bits).decode("ascii")}


INFLATE_STEP = 16 << 20
"""Most bytes one zlib call may produce: inflating never holds more than this beside its destination."""


def inflate(data: bytes, limit: int, wbits: int = 15) -> bytes:
    """zlib (or, with ``wbits=31``, gzip) ``data`` inflated; InputError once it yields more than ``limit`` bytes.

    Inflated incrementally: no more than ``limit + 1`` bytes are ever produced, whatever the data
    claim (a few KiB of zeros can inflate to gigabytes).
    """
    inflater = zlib.decompressobj(wbits)
    parts, size = [], 0
    try:
        while data:
            part = inflater.decompress(data, min(limit - size, INFLATE_STEP) + 1)
            size += len(part)
            if size > limit:
                raise errors.InputError(f"the data inflate to more than the {limit} bytes they declare")
            parts.append(part)
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as exc:
        raise errors.InputError(f"the data are not valid zlib data ({exc})") from None
    return b"".join(parts)


def _shape(value: Any) -> tuple[int, ...]:
    """A shape given as JSON: a list of whole numbers >= 0 (booleans and floats refused)."""
    if not isinstance(value, (list, tuple)) or len(value) > 8:
        raise errors.InputError(f"malformed mask: shape must be a list of at most 8 sizes, got {value!r:.80}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value):
        raise errors.InputError(f"malformed mask: shape must hold whole numbers >= 0, got {value!r:.80}")
    return tuple(value)


def unpack_mask(data: Mapping[str, Any], shape: Optional[tuple[int, ...]] = None,
                max_count: Optional[int] = None) -> np.ndarray:
    """Inverse of :func:`pack_mask`; InputError when the data do not describe a mask.

    shape: the shape the mask must have (checked before anything is decoded); max_count: most
    elements its declared shape may hold. The declared size is checked (Python integers: no
    overflow) before anything is allocated, and the bits are inflated to at most that size.
    """
    try:
        declared = _shape(data["shape"])
        if shape is not None and declared != tuple(shape):
            raise errors.InputError(f"malformed mask: shape {list(declared)} where {list(shape)} is expected")
        count = math.prod(declared)
        if max_count is not None and count > max_count:
            raise errors.InputError(f"malformed mask: shape {list(declared)} holds more than {max_count} elements")
        nbytes = (count + 7) // 8
        packed = inflate(base64.b64decode(data["bits"], validate=True), nbytes)
    except errors.InputError as exc:
        message = str(exc)
        raise errors.InputError(message if message.startswith("malformed") else f"malformed mask: {message}") \
            from None
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise errors.InputError(f"malformed mask: {exc}") from None
    if len(packed) != nbytes:
        raise errors.InputError(f"malformed mask: {len(packed)} bytes do not hold shape {list(declared)}")
    bits = np.frombuffer(packed, dtype=np.uint8)
    return np.unpackbits(bits, count=count).view(bool).reshape(declared)


MASK_INPUT_BYTES = 256 * 256 * 4
"""Size of a prompt's mask input: (256, 256) float32 low-resolution logits."""


def prompt_to_json(prompt: Prompt) -> dict[str, Any]:
    """A slice prompt (points, labels, box, mask input) as JSON."""
    out: dict[str, Any] = {"points": prompt.points.tolist(), "labels": prompt.labels.tolist(),
                           "box": None if prompt.box is None else prompt.box.tolist()}
    if prompt.mask_input is not None:
        raw = zlib.compress(np.asarray(prompt.mask_input, dtype="<f4").tobytes(), 1)
        out["mask_input"] = base64.b64encode(raw).decode("ascii")
    return out


def prompt_from_json(data: Mapping[str, Any]) -> Prompt:
    """Inverse of :func:`prompt_to_json`; PromptError for malformed prompts."""
    if not isinstance(data, Mapping):
        raise errors.PromptError("the prompt must be an object with points, labels and box")
    mask_input = None
    if data.get("mask_input") is not None:
        try:
            raw = inflate(base64.b64decode(data["mask_input"], validate=True), MASK_INPUT_BYTES)
            mask_input = np.frombuffer(raw, dtype="<f4").reshape(256, 256)
        except (TypeError, ValueError, binascii.Error, errors.InputError) as exc:
            raise errors.PromptError(f"malformed mask input: {exc}") from None
        if not np.isfinite(mask_input).all():
            raise errors.PromptError("malformed mask input: the logits must be finite numbers (no NaN or infinity)")
    try:
        return Prompt(points=data.get("points") or (), labels=data.get("labels"), box=data.get("box"),
                      mask_input=mask_input)
    except (TypeError, ValueError) as exc:
        raise errors.PromptError(f"malformed prompt: {exc}") from None


def prediction_to_json(prediction: SlicePrediction, logits: bool = False) -> dict[str, Any]:
    """A slice prediction as JSON; the (256, 256) low-resolution logits only when ``logits``."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(prediction):
        value = getattr(prediction, item.name)
        if item.name in ("mask", "masks"):
            out[item.name] = pack_mask(value)
        elif item.name == "scores":
            out[item.name] = [float(v) for v in np.asarray(value).ravel()]
        elif item.name == "candidate_logits":
            continue  # the engine's own, for a walk's choice; never sent
        elif item.name == "low_res_logits":
            if logits and value is not None:
                raw = zlib.compress(np.asarray(value, dtype="<f4").tobytes(), 1)
                out[item.name] = base64.b64encode(raw).decode("ascii")
        elif isinstance(value, (np.floating, np.integer)):
            out[item.name] = value.item()
        else:
            out[item.name] = value
    return out


def prediction_from_json(data: Mapping[str, Any]) -> SlicePrediction:
    """Inverse of :func:`prediction_to_json` (``low_res_logits`` is None unless they were sent)."""
    values = dict(data)
    values["mask"] = unpack_mask(values["mask"])
    values["masks"] = unpack_mask(values["masks"])
    values["scores"] = np.asarray(values["scores"], dtype=np.float32)
    logits = values.get("low_res_logits")
    values["low_res_logits"] = (None if logits is None else
                                np.frombuffer(zlib.decompress(base64.b64decode(logits)), dtype="<f4").reshape(256, 256))
    known = {item.name for item in dataclasses.fields(SlicePrediction)}
    return SlicePrediction(**{k: v for k, v in values.items() if k in known})


def options_to_json(options: PropagationOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def result_to_json(result: PropagationResult) -> dict[str, Any]:
    """A propagation result as JSON: the mask is sent as its slab (first..last slice along ``axis``)."""
    slices = result.slices
    slab = None
    if slices:
        index = [slice(None)] * 3
        index[result.axis] = slice(slices[0], slices[-1] + 1)
        slab = {"first": slices[0], "mask": pack_mask(result.mask[tuple(index)])}
    return {"shape": list(result.mask.shape), "axis": result.axis, "slab": slab,
            "scores": {str(k): float(v) for k, v in result.scores.items()},
            "confidence": {str(k): float(v) for k, v in result.confidence.items()},
            "cues": {str(k): {name: float(v) for name, v in c.items()} for k, c in result.cues.items()},
            "stop_reasons": result.stop_reasons, "stop_details": result.stop_details,
            "last": {k: int(v) for k, v in result.last.items()}, "cancelled": result.cancelled,
            "encoder_calls": result.encoder_calls, "slices_visited": result.slices_visited,
            "decodes": result.decodes, "range": list(result.range), "seconds": result.seconds}


def result_from_json(data: Mapping[str, Any]) -> PropagationResult:
    """Inverse of :func:`result_to_json`."""
    mask = np.zeros(tuple(data["shape"]), dtype=bool)
    axis = int(data["axis"])
    if data.get("slab"):
        part = unpack_mask(data["slab"]["mask"])
        index = [slice(None)] * 3
        first = int(data["slab"]["first"])
        index[axis] = slice(first, first + part.shape[axis])
        mask[tuple(index)] = part
    return PropagationResult(
        mask=mask, axis=axis, scores={int(k): float(v) for k, v in data["scores"].items()},
        confidence={int(k): float(v) for k, v in data.get("confidence", {}).items()},
        cues={int(k): {name: float(v) for name, v in c.items()} for k, c in data.get("cues", {}).items()},
        stop_reasons=dict(data["stop_reasons"]), stop_details=dict(data["stop_details"]),
        last={k: int(v) for k, v in data["last"].items()}, cancelled=bool(data["cancelled"]),
        encoder_calls=int(data["encoder_calls"]), slices_visited=int(data["slices_visited"]),
        decodes=int(data.get("decodes", 0)),
        range=tuple(data["range"]), seconds=float(data["seconds"]))


def error_to_json(exc: BaseException) -> dict[str, Any]:
    """``{"error": {"type", "message"}}`` for an engine error (its class name, or that of its nearest known
    base class: the server's own subclasses travel as the class the client knows) or any other failure."""
    kind = next((cls.__name__ for cls in type(exc).__mro__ if ERROR_TYPES.get(cls.__name__) is cls), "ServiceError")
    return {"error": {"type": kind, "message": str(exc) or type(exc).__name__}}


def error_from_json(data: Any, status: int) -> errors.SAMSegmenterError:
    """The engine exception a server error response stands for."""
    if isinstance(data, Mapping) and isinstance(data.get("error"), Mapping):
        error = data["error"]
        cls = ERROR_TYPES.get(str(error.get("type")), errors.ServiceError)
        return cls(str(error.get("message", "")))
    if isinstance(data, Mapping) and "detail" in data:  # FastAPI's own validation errors
        return errors.InputError(f"the service refused the request (HTTP {status}): {_detail(data['detail'])}")
    return errors.ServiceError(f"the service answered HTTP {status} without a SAMSegmenter error: is the URL that "
                               "of a SAMSegmenter service (python -m SAMSegmenterLib serve)?")


def _detail(detail: Any) -> str:
    if isinstance(detail, list) and detail and isinstance(detail[0], Mapping):
        first = detail[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
    return str(detail)
