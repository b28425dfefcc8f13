"""OpenVINO runtime for LiteMedSAM's image encoder on the CPU (backends ``openvino`` and ``openvino-bf16``).

The network is the fused float32 encoder that :func:`backends.export_onnx` writes to
ONNX once per checkpoint; OpenVINO reads that file and compiles it for this CPU with

- ``INFERENCE_PRECISION_HINT`` ``f32`` (``openvino``: the reference's masks) or
  ``bf16`` (``openvino-bf16``). OpenVINO silently runs float32 where the CPU has no
  native bf16 (AVX512-BF16, AMX); that is refused here, so ``openvino-bf16`` never
  poses as a bf16 path it is not;
- ``INFERENCE_NUM_THREADS`` = the PyTorch thread count when the encoder is built (the
  process's CPU budget), one stream, the latency hint;
- no CPU pinning: several worker processes, each with a thread or two, must not all
  pin their threads to the same first cores;
- compiled blobs cached under ``<cache>/SAMSegmenter/backends/openvino/<f32|bf16>/``
  (OpenVINO's ``CACHE_DIR``), one folder per precision, never in the repository.
  OpenVINO 2026.4 gives the f32 and the bf16 compilation of one model the same cache
  key: with one shared folder, a bf16 compilation imports the blob that an f32 one
  wrote and crashes (SIGSEGV) at its first inference (docs/speed.md has the
  reproduction). Separate folders keep each precision's blobs apart.

``openvino`` is imported only when one of these backends is built.
"""

from __future__ import annotations

import importlib
import threading
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ..errors import Cancelled, ModelError

PRECISION_HINTS = {"openvino": "f32", "openvino-bf16": "bf16"}


class OpenVinoUnavailable(ModelError):
    """OpenVINO is not installed, or cannot run the requested precision on this CPU."""


def openvino_module():
    """The ``openvino`` package; OpenVinoUnavailable when it cannot be imported (imported only here)."""
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:
        raise OpenVinoUnavailable(f"openvino is not installed ({exc})") from None


def openvino_version() -> str:
    """The installed OpenVINO version from its package metadata (without importing it), or ``absent``."""
    try:
        return metadata.version("openvino")
    except metadata.PackageNotFoundError:
        return "absent"


class OpenVinoEncoder:
    """A compiled OpenVINO model behind the encoder interface: (1, 3, S, S) float tensor -> embedding
    tensor (1, 256, S/4, S/4) float32 on the CPU.

    Calls from several threads run one after another on one inference request.
    :meth:`cancel` makes the call running now raise :class:`errors.Cancelled` within
    about one layer's time; calls waiting for it are not affected.
    """

    def __init__(self, onnx: Path, backend: str, threads: int, cache_dir: Path):
        ov = openvino_module()
        hint = PRECISION_HINTS[backend]
        cache_dir = cache_dir / hint  # never share compiled blobs between precisions (see the module docstring)
        cache_dir.mkdir(parents=True, exist_ok=True)
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": max(1, threads), "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False, "CACHE_DIR": str(cache_dir)}
        self.backend = backend
        self.compiled = ov.Core().compile_model(str(onnx), "CPU", config)
        runs = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if runs != hint:
            raise OpenVinoUnavailable(f"this CPU has no native {hint} arithmetic (OpenVINO would run {runs})")
        self._request = self.compiled.create_infer_request()
        self._serial = threading.Lock()  # one inference at a time on the request
        self._state = threading.Lock()  # guards _running/_cancelled against cancel()
        self._running = False
        self._cancelled = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        with self._serial:
            with self._state:
                self._running, self._cancelled = True, False
                self._request.start_async({0: image}, share_inputs=True)
            try:
                self._request.wait()
            except RuntimeError as exc:
                if not self._cancelled:
                    raise RuntimeError(f"OpenVINO inference failed: {exc}") from None
            finally:
                with self._state:
                    self._running = False
            if self._cancelled:  # also when it finished just before cancel() reached it: cancel() said True
                raise Cancelled("image encoding was cancelled")
            return torch.from_numpy(self._request.get_output_tensor(0).data.copy())

    def cancel(self) -> bool:
        """Stop the encoding running now (it raises Cancelled); False when none was running."""
        with self._state:
            if not self._running:
                return False
            self._cancelled = True
            self._request.cancel()
            return True
