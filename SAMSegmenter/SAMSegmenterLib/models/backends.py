"""Image-encoder backends: the reference PyTorch network or a faster equivalent, chosen per machine.

Backends (``BACKENDS``):

- ``torch``: the model's own image encoder, under the model's autocast. The
  reference, and the fallback for everything else.
- ``fused``: LiteMedSAM's encoder rebuilt for inference (:mod:`fused_tiny_vit`:
  batch norms folded into convolutions, channels-last activations, PyTorch's fused
  attention kernel, on CPUs oneDNN convolution/linear + GELU fusion and a banded
  first stage). float32, equal to the reference up to rounding.
- ``fused-bf16``: the same in bfloat16 (CPUs with native bf16 such as AVX512-BF16
  or AMX, and CUDA): about 1.5x as fast again on such CPUs, but not the reference's
  numbers. Measured on MNI152 and CT slices, its masks differ from the float32
  reference more than moving the box by a pixel does (Dice down to 0.86; worst where
  the model itself is unsure), so ``auto`` offers it only to models loaded with
  ``precision="bf16"``, whose reference already runs in bf16 (autocast).
- ``fused-mixed``: the fused encoder with the matrix products of the transformer
  blocks' linear layers, their local depth-wise convolutions, the patch merges, the
  MBConv projections and the neck in bfloat16, and the residual stream, attention,
  patch embedding and first-stage convolutions in float32 (see
  :meth:`fused_tiny_vit.FusedTinyViT.mixed_precision_layers`). CPUs with native bf16
  and CUDA; not within Dice 0.99 of the reference on every ambiguous box, so ``auto``
  offers it only after it passed the ground-truth rule (:mod:`.ground_truth_parity`).
- ``onnxruntime``: the fused float32 encoder exported to ONNX once (into the
  per-user cache, keyed by checkpoint SHA-256 and PyTorch version) and run by ONNX
  Runtime on the CPU. ``onnxruntime`` is imported only when this backend is tried.
- ``openvino`` / ``openvino-bf16``: the same ONNX file compiled by OpenVINO for this
  CPU in float32 / bfloat16 (:mod:`openvino_backend`; ``openvino-bf16`` only where the
  CPU has native bf16). Its encoder object has ``cancel()``.

The bf16 backends need native bf16 on a CPU. For accuracy measurements on CPUs without
it (``benchmarks/speed.py --emulate-bf16``), ``SAMSEGMENTER_EMULATE_BF16=1`` lets the
fused bf16 backends run on PyTorch's generic bf16 kernels: the same bf16 rounding of
inputs, weights and outputs, several times slower than float32.

``auto`` (:func:`choose_backend`): ``torch`` on CUDA and MPS (where the model's
autocast precision applies; the fused backends may still be requested by name
there) and for the SAM ViT models. On a CPU, each candidate LiteMedSAM backend
(:func:`candidates`: the float32 ones, plus the lower-precision ones that passed the
ground-truth rule of :mod:`ground_truth_parity` in a recorded run, on a CPU with native
bf16) is built, warmed up, checked against the reference on a probe image (every probe
box's mask must reach Dice >= ``PARITY_DICE`` with the reference mask) and timed against
it; the fastest one that passes wins, ``torch`` if none is faster. A backend that cannot
be imported, fails at warm-up or misses parity is skipped with its reason. All of this runs
in a child process (:mod:`backend_trials`): a candidate that crashes there in native code is
marked failed with the signal's name, and the caller's process lives on. The decision
is kept for the process and in the per-user cache (``backends/choices.json``), keyed by
model, checkpoint digest, precision, PyTorch, ONNX Runtime and OpenVINO versions, the
backends eligible by the ground-truth rule, CPU and thread count; a cached choice that
later fails to build or warm up is measured again.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
import torch

from ..errors import ModelError
from ..metrics import dice
from ..prompts import Prompt
from . import ground_truth_parity
from .backend_trials import measure_in_child
from .download import cache_root, cached_sha256
from .embedding import ImageEmbedding
from .encoder_gate import Preempted, preempt_requested
from .fused_tiny_vit import FusedTinyViT, fuse_tiny_vit, mixed_precision, onednn_available
from .openvino_backend import PRECISION_HINTS, OpenVinoEncoder, OpenVinoUnavailable, openvino_module, openvino_version
from .preprocess import image_tensor
from .registry import BACKENDS

if TYPE_CHECKING:
    from .loader import SamModel

log = logging.getLogger(__name__)

PARITY_DICE = 0.99  # every probe mask of a candidate must reach this Dice with the reference mask
TILE_ROWS = 32  # band height of the fused encoder's wide intermediates on CPUs
ONNX_OPSET = 17
FUSED_FORMAT = 1  # bump when fused_tiny_vit changes what an exported ONNX file computes
DECISION_FORMAT = 4  # bump when the candidates, their computation or the parity rule change: old decisions are ignored
EMULATE_BF16_ENV = "SAMSEGMENTER_EMULATE_BF16"
ONNX_BACKENDS = ("onnxruntime", *PRECISION_HINTS)  # backends that run the exported ONNX file
_TIMING_ROUNDS = 2

Encoder = Callable[[torch.Tensor], torch.Tensor]


class BackendError(ModelError):
    """A requested encoder backend cannot run here (missing package, wrong device or model)."""


@dataclass
class Trial:
    """What measuring one backend gave: ms per image (best of the timed rounds), the
    smallest probe-mask Dice with the reference, or why it was skipped."""

    backend: str
    ms: Optional[float] = None
    parity_dice: Optional[float] = None
    error: Optional[str] = None


@dataclass
class BackendChoice:
    """The backend picked for a model, why, and the measurements behind it."""

    backend: str
    reason: str
    trials: list[Trial] = field(default_factory=list)


def backend_cache_dir() -> Path:
    """Per-user folder for backend decisions and exported models: beside the checkpoints folder."""
    return cache_root() / "backends"


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 arithmetic natively in oneDNN (AVX512-BF16, AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    except RuntimeError:
        return False


def _onnxruntime():
    """The onnxruntime module; BackendError when it is not installed (imported only here)."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise BackendError(f"onnxruntime is not installed ({exc})") from None


def ground_truth_eligible() -> list[str]:
    """Lower-precision backends that passed the ground-truth rule in a recorded run."""
    return [name for name in ground_truth_parity.LOWER_PRECISION if ground_truth_parity.passed(name)]


def candidates(model: SamModel) -> list[str]:
    """Backends ``auto`` measures for ``model`` (``torch`` excluded), all on a CPU with LiteMedSAM: for an
    fp32 model the float32 ones and, on a CPU with native bf16, the lower-precision ones that passed the
    ground-truth rule; for a bf16 model the bf16 ones on such a CPU; none off the CPU or for the ViTs."""
    if model.spec.architecture != "tiny_vit" or model.device.type != "cpu":
        return []
    if model.precision == "bf16":
        return ["fused-bf16", "openvino-bf16"] if bf16_native() else []
    return ["fused", "onnxruntime", "openvino", *(ground_truth_eligible() if bf16_native() else [])]


def _fused(model: SamModel, precision: str) -> FusedTinyViT:
    """The fused encoder of ``model`` in ``precision``: "fp32", "mixed" or "bf16"."""
    if model.spec.architecture != "tiny_vit":
        raise BackendError(f"the fused backends rebuild LiteMedSAM's TinyViT encoder; {model.name} has a ViT")
    cpu = model.device.type == "cpu"
    native = precision == "fp32" or not cpu or bf16_native()
    if precision != "fp32":
        if model.device.type == "mps":
            raise BackendError("bf16 is not supported on MPS")
        if not native and os.environ.get(EMULATE_BF16_ENV) != "1":
            raise BackendError("this CPU has no native bf16 arithmetic (AVX512-BF16 or AMX)")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # oneDNN's fused operators need native bf16; emulated bf16 runs PyTorch's generic kernels
    encoder = fuse_tiny_vit(model.network.image_encoder, dtype, onednn=cpu and native and onednn_available(),
                            tile_rows=TILE_ROWS if cpu else None)
    return mixed_precision(encoder) if precision == "mixed" else encoder


class OnnxEncoder:
    """An ONNX Runtime session behind the encoder interface: (1, 3, S, S) float tensor -> embedding tensor.

    ``cancel()`` (from another thread) makes the running call raise promptly; calls run one at a time
    (the encoder gate sees to that).
    """

    def __init__(self, path: Path, threads: int):
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_mem_pattern = False  # measured: half the peak memory (300 instead of 575 MiB), same speed
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self._run_options = ort.RunOptions()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = x.detach().to("cpu", torch.float32).contiguous().numpy()
        self._run_options = options = _onnxruntime().RunOptions()
        if preempt_requested():  # asked before this call armed its options
            raise Preempted()
        return torch.from_numpy(self.session.run(None, {self.input_name: image}, options)[0])

    def cancel(self) -> None:
        """Stop the running call (it raises); the next call runs normally."""
        self._run_options.terminate = True


def openvino_cache_dir() -> Path:
    """OpenVINO's compiled-model cache in the per-user cache (it keys the blobs by model, settings, version)."""
    return backend_cache_dir() / "openvino"


def onnx_path(model: SamModel) -> Path:
    """Where the exported ONNX encoder of ``model``'s checkpoint lives in the per-user cache."""
    digest = cached_sha256(model.checkpoint)
    return (backend_cache_dir() / "onnx"
            / f"{model.name}-{digest[:16]}-torch{torch.__version__.split('+')[0]}-fused{FUSED_FORMAT}.onnx")


def export_onnx(model: SamModel) -> Path:
    """Export the fused float32 encoder of a CPU ``model`` to ONNX (once per checkpoint and PyTorch version)."""
    if model.device.type != "cpu":
        raise BackendError("the ONNX Runtime backend runs on the CPU only")
    if model.spec.architecture != "tiny_vit":
        raise BackendError(f"the ONNX backend exports LiteMedSAM's encoder; {model.name} has a ViT")
    path = onnx_path(model)
    if path.is_file():
        return path
    net = fuse_tiny_vit(model.network.image_encoder)  # standard operators only (no oneDNN fusion, no bands)
    size = model.spec.preprocessing.size
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.part", dir=path.parent)
    os.close(fd)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's tracer and constant-folding notes
            torch.onnx.export(net, (torch.zeros(1, 3, size, size),), tmp, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["image"], output_names=["embedding"])
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def build_encoder(model: SamModel, backend: str) -> Encoder:
    """A callable computing ``model``'s image embedding with ``backend``; BackendError if it cannot run here."""
    if backend == "torch":
        return model.network.image_encoder
    fused = {"fused": "fp32", "fused-mixed": "mixed", "fused-bf16": "bf16"}
    if backend in fused:
        return _fused(model, fused[backend])
    if backend == "onnxruntime":
        if model.device.type != "cpu":
            raise BackendError("the ONNX Runtime backend runs on the CPU only")
        _onnxruntime()
        return OnnxEncoder(export_onnx(model), torch.get_num_threads())
    if backend in PRECISION_HINTS:
        if model.device.type != "cpu":
            raise BackendError("the OpenVINO backends run on the CPU only")
        try:
            openvino_module()  # before the export: a missing package is reported at once
            return OpenVinoEncoder(export_onnx(model), backend, torch.get_num_threads(), openvino_cache_dir())
        except OpenVinoUnavailable as exc:
            raise BackendError(str(exc)) from None
    raise BackendError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def probe() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A fixed 224 x 256 test slice in [0, 1] (smooth background, four ellipses of different
    contrast, noise) and box prompts: each ellipse's tight box and one box around two of them."""
    rows, cols = 224, 256
    rr, cc = np.mgrid[:rows, :cols]
    image = 0.25 + 0.15 * (cc / cols) + 0.05 * np.sin(rr / 17.0)
    shapes = [((60, 70), (30, 42), 0.45), ((150, 80), (40, 28), -0.2), ((70, 185), (22, 35), 0.25),
              ((165, 190), (35, 45), 0.35)]
    boxes = []
    for (y, x), (ry, rx), contrast in shapes:
        inside = ((rr - y) / ry) ** 2 + ((cc - x) / rx) ** 2 <= 1.0
        image = image + contrast * inside
        boxes.append((x - rx, y - ry, x + rx, y + ry))
    image = image + np.random.default_rng(0).normal(0.0, 0.03, image.shape)
    boxes.append((boxes[2][0], boxes[2][1], boxes[3][2], boxes[3][3]))
    return np.clip(image, 0.0, 1.0).astype(np.float32), boxes


class _Probe:
    """Runs encoders on the probe slice through ``model``'s preprocessing, autocast and decoder."""

    def __init__(self, model: SamModel):
        self.model = model
        self.image, self.boxes = probe()
        self.x, self.input_size = image_tensor(model.spec.preprocessing, self.image, model.device)

    def run(self, encoder: Encoder) -> ImageEmbedding:
        embedding = self.model.embed(self.x, self.image.shape, self.input_size, encoder)
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
        return embedding

    def masks(self, embedding: ImageEmbedding) -> list[np.ndarray]:
        return [self.model.decode(embedding, Prompt(box=box)).masks[0] for box in self.boxes]

    def time_ms(self, encoder: Encoder) -> float:
        start = time.perf_counter()
        self.run(encoder)
        return 1000.0 * (time.perf_counter() - start)


def measure(model: SamModel, names: list[str], rounds: int = _TIMING_ROUNDS,
            on_stage: Callable[[str], None] = lambda name: None) -> list[Trial]:
    """Build, warm up, parity-check and time each of ``names`` against ``torch`` on the probe slice.

    The first trial is the reference (``torch``). Timing rounds interleave the
    backends so that load from other processes hits them alike; each gets the best
    of its rounds. ``on_stage(name)`` is called before each step that runs backend
    ``name``'s code (:mod:`backend_trials` uses it to tell which candidate crashed).
    This runs in the caller's process: :func:`choose_backend` runs it in a child.
    """

    probe_run = _Probe(model)
    on_stage("torch")
    reference = build_encoder(model, "torch")
    ref_masks = probe_run.masks(probe_run.run(reference))
    trials = [Trial("torch", parity_dice=1.0)]
    encoders: dict[str, Encoder] = {"torch": reference}
    for name in names:
        trial = Trial(name)
        trials.append(trial)
        on_stage(name)
        try:
            encoder = build_encoder(model, name)
            masks = probe_run.masks(probe_run.run(encoder))  # first run doubles as warm-up
        except Exception as exc:  # missing package, unsupported operator, export failure: skip it
            trial.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            continue
        trial.parity_dice = min(dice(a, b) for a, b in zip(ref_masks, masks))
        if trial.parity_dice < PARITY_DICE:
            trial.error = f"masks differ from the reference (Dice {trial.parity_dice:.4f} < {PARITY_DICE})"
            continue
        encoders[name] = encoder
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            on_stage(name)
            times[name].append(probe_run.time_ms(encoder))
    for trial in trials:
        if trial.backend in times:
            trial.ms = min(times[trial.backend])
    return trials


def cpu_name() -> str:
    """The CPU model name (Linux /proc/cpuinfo), else what platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def onnxruntime_version() -> str:
    """The installed ONNX Runtime version, or ``absent``."""
    try:
        return _onnxruntime().__version__
    except BackendError:
        return "absent"


def decision_key(model: SamModel) -> str:
    """What a cached decision depends on: model, weights, precision, device, software and CPU. The CPU's name
    alone does not tell CPUs apart under a hypervisor (Zen 3 and Zen 4 VMs both say "AMD EPYC"), so whether it
    runs bf16 natively (which decides the candidates) is part of the key: a cache shared between such machines
    (a home directory on a cluster, a copied VM image) does not carry one machine's choice to the other."""
    return " | ".join([f"v{DECISION_FORMAT}", model.name, cached_sha256(model.checkpoint)[:16], model.precision,
                       model.device.type, f"torch {torch.__version__}", f"onnxruntime {onnxruntime_version()}",
                       f"openvino {openvino_version()}",
                       f"ground truth: {','.join(ground_truth_eligible()) or 'none'}", cpu_name(),
                       "native bf16" if bf16_native() else "no native bf16", f"{torch.get_num_threads()} threads"])


_DECISIONS: dict[str, BackendChoice] = {}
_DECISIONS_LOCK = threading.Lock()


def _choices_file() -> Path:
    return backend_cache_dir() / "choices.json"


def _read_choices() -> dict:
    try:
        return json.loads(_choices_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_choice(key: str, choice: BackendChoice) -> None:
    path = _choices_file()
    try:
        choices = _read_choices()
        choices[key] = asdict(choice)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(choices, fh, indent=1)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not stop segmentation
        log.warning("could not store the backend decision in %s: %s", path, exc)


def _from_dict(data: dict) -> BackendChoice:
    return BackendChoice(data["backend"], data["reason"], [Trial(**t) for t in data.get("trials", [])])


@contextmanager
def _machine_lock() -> Iterator[None]:
    """Hold the per-user lock on backend decisions (an advisory file lock) while the block runs.

    Two processes starting at once (a CLI run and the SAM service, two evaluation workers) would
    otherwise both measure and could pick different backends on timing noise, and so give
    different masks for the same thread budget; with the lock the second one reads the first's
    decision. Without a lockable cache folder the block runs unlocked.
    """
    path = backend_cache_dir() / "choices.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")
    except OSError:
        yield
        return
    with handle:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s: keep waiting
                    continue
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def choose_backend(model: SamModel, refresh: bool = False) -> BackendChoice:
    """The ``auto`` decision for ``model`` (see the module docstring); measured at most once per machine."""
    names = candidates(model)
    if not names:
        where = model.device.type if model.spec.architecture == "tiny_vit" else model.name
        return BackendChoice("torch", f"reference encoder: no faster backend applies to {where}")
    key = decision_key(model)
    with _DECISIONS_LOCK:
        if not refresh and key in _DECISIONS:
            return _DECISIONS[key]
        with _machine_lock():
            return _decide(model, names, key, refresh)


def _decide(model: SamModel, names: list[str], key: str, refresh: bool) -> BackendChoice:
    """The stored decision for ``key``, else measure ``names`` and store the result (under the machine lock)."""
    if not refresh:
        stored = _read_choices().get(key)
        if stored is not None:
            _DECISIONS[key] = _from_dict(stored)
            return _DECISIONS[key]
    trials = measure_in_child(model, names)
    reference_ms = trials[0].ms
    passing = [t for t in trials[1:] if t.error is None and t.ms is not None]
    best = min(passing, key=lambda t: t.ms, default=None)
    if best is not None and reference_ms is not None and best.ms < reference_ms:
        reason = (f"fastest with parity: {best.ms:.0f} ms vs reference {reference_ms:.0f} ms, "
                  f"probe Dice >= {best.parity_dice:.4f}")
        records = ground_truth_parity.passed(best.backend)
        if records:
            reason += "; lower precision, " + "; ".join(f"{r.verdict.summary()} (recorded {r.date}, {r.machine})"
                                                        for r in records)
        choice = BackendChoice(best.backend, reason, trials)
    else:
        choice = BackendChoice("torch", "no candidate was faster than the reference with parity", trials)
    if choice.backend not in ONNX_BACKENDS:
        onnx_path(model).unlink(missing_ok=True)  # do not keep an export nobody uses
    if choice.backend not in PRECISION_HINTS:
        shutil.rmtree(openvino_cache_dir(), ignore_errors=True)
    _DECISIONS[key] = choice
    _write_choice(key, choice)
    return choice


def select_encoder(model: SamModel, backend: str = "auto") -> tuple[Encoder, str]:
    """The image encoder of ``backend`` for ``model`` and its name (``auto``: see :func:`choose_backend`).

    ``model`` supplies the reference network, preprocessing and decoder; the caller
    installs the result with ``model.with_encoder``. An explicit backend that cannot run
    raises BackendError. With ``auto``, a cached choice that fails to build or warm up is
    measured again, and whatever fails falls back to the reference encoder.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return build_encoder(model, backend), backend
    choice = choose_backend(model)
    try:
        return _warmed_up(model, choice.backend), choice.backend
    except Exception as exc:  # e.g. a package removed since the choice was cached
        log.warning("encoder backend %s failed (%s); measuring again", choice.backend, exc)
        choice = choose_backend(model, refresh=True)
        try:
            return _warmed_up(model, choice.backend), choice.backend
        except Exception as again:
            log.warning("encoder backend %s failed again (%s); using the reference encoder", choice.backend, again)
            return model.network.image_encoder, "torch"


def _warmed_up(model: SamModel, backend: str) -> Encoder:
    encoder = build_encoder(model, backend)
    _Probe(model).run(encoder)
    return encoder
