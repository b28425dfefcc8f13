"""Speed of SAMSegmenter's engine: the reference PyTorch path and every encoder backend, side by side.

Stages, each measured for all paths in the same run (timings interleaved, so that
load from other processes hits them alike):

  encoder       LiteMedSAM image encoder per slice (preprocessing included), CPU.
                reference: the PyTorch fp32 network (backend "torch");
                fast: what load_model(backend="auto") picked on this machine.
                Every encoder backend that runs here is also timed, with its peak
                memory and its mask parity (Dice with the reference mask per case).
  decoder       prompt -> its four candidate masks on a cached embedding (SamModel.decode_candidates,
                what every prompt costs since mask selection: prompt encoder,
                mask decoder, upsampling to the slice, numpy): reference decoder vs
                fast_decoder, with the fast path's parts, and fast_decoder compiled by
                OpenVINO (measured to decide whether the engine should use it).
  propagation   propagation.propagate through 100 axial slices of the MNI152 brain
                on a cold embedding cache, for the reference and every backend; slices/s.
  ground_truth  the ground-truth parity rule (SAMSegmenterLib.models.ground_truth_parity)
                for every lower-precision backend against the float32 reference, through evaluate on
                its case set (box and box_jitter prompts on MNI152 structures along three
                axes and CT; --quick: a small subset): mean Dice and 5th percentile, the
                differences from float32 and the verdict.
  gpu           batched encoder throughput of LiteMedSAM and SAM ViT-B (random weights)
                in fp32/fp16/bf16 on CUDA, when a CUDA device is present.

It ends with the tables of docs/speed.md in Markdown (one row per backend: speed,
memory, mask parity, ground-truth parity, propagation; the decoder; the targets).
With --emulate-bf16 on a CPU without native bf16, the fused bf16 backends run on
PyTorch's generic kernels for the accuracy columns only (mask parity, ground truth):
their timings would mean nothing and are not taken. OpenVINO has no such emulation.

Benchmark cases (real slices, box prompts from masks): MNI152 slices with boxes from
nilearn's brain/white/grey-matter masks (several are ambiguous boxes where moving
the box by one pixel changes the reference mask by 1-2%: the strictest parity
test) and structures the model does segment (cerebellum, temporal pole), plus
pydicom's CT_small vertebra box. Parity is also measured on seeded random cases that
no backend was tuned on: MNI152 slices along random axes, boxes around a brain, grey-
or white-matter mask or around one structure of it in a random part of the slice.
Peak memory (Linux) is, for the encoder, the
resident-set growth of two encodes in a fresh process with the model loaded; for
the other stages the growth while the stage runs (after handing free heap back);
on CUDA, the peak allocation.

    python benchmarks/speed.py [--quick] [--json] [--threads N] [--slices 100] [--emulate-bf16]
                               [--stages encoder,decoder,propagation,ground_truth,gpu]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))

from SAMSegmenterLib.evaluation import ground_truth  # noqa: E402
from SAMSegmenterLib.io.sample_data import load_sample  # noqa: E402
from SAMSegmenterLib.models import SamModel, backends, ground_truth_parity, load_model  # noqa: E402
from SAMSegmenterLib.models.openvino_backend import openvino_version  # noqa: E402
from SAMSegmenterLib.models.preprocess import masks_to_original  # noqa: E402
from SAMSegmenterLib.predictor import SlicePredictor  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.propagation import PropagationOptions, propagate  # noqa: E402
from SAMSegmenterLib.propagation.postprocess import largest_component  # noqa: E402
from SAMSegmenterLib.volume import take_slice  # noqa: E402

STAGES = ("encoder", "decoder", "propagation", "ground_truth", "gpu")
BACKENDS = ("torch", "fused", "onnxruntime", "openvino", "fused-mixed", "fused-bf16", "openvino-bf16")
PRECISION = {"torch": "fp32", "fused": "fp32", "onnxruntime": "fp32", "openvino": "fp32", "fused-mixed": "bf16 + fp32",
             "fused-bf16": "bf16", "openvino-bf16": "bf16"}
try:
    LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: memory growth is measured without trimming first
    LIBC = None


@dataclass
class Case:
    name: str
    image: np.ndarray
    box: np.ndarray


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


class PeakMemory:
    """Peak growth of the process's resident memory (MiB) while the block runs, sampled every 2 ms
    (Linux); on CUDA, the peak allocation of the block instead. Free heap memory is handed back
    first (glibc ``malloc_trim``), so that memory kept from earlier calls counts as used again."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: Optional[float] = None
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> Optional[int]:
        try:
            with open("/proc/self/statm", encoding="ascii") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            rss = self._rss()
            if rss is not None:
                self._peak = max(self._peak, rss)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        if LIBC is not None:
            LIBC.malloc_trim(0)
        self._base = self._peak = self._rss() or 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        self._stop.set()
        self._thread.join()
        if self._rss() is not None:
            self.mib = (self._peak - self._base) / 2**20


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": backends.cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": backends.onnxruntime_version(), "openvino": openvino_version(),
            "bf16_native": backends.bf16_native(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": [round(x, 2) for x in load] if load else None}


def benchmark_cases(quick: bool) -> list[Case]:
    volume, _ = load_sample("mni152")
    masks = {name: load_sample(f"mni152_{name}")[0] > 0 for name in ("brain", "gm", "wm")}
    kji = np.indices(volume.shape, sparse=True)
    targets = {
        "cerebellum": largest_component(masks["brain"] & (kji[0] <= 32) & (kji[1] <= 115)),
        "temporal_pole": largest_component(masks["brain"] & (kji[0] <= 40) & (kji[1] > 105) & (kji[2] < 98)),
        "wm": masks["wm"], "gm": masks["gm"], "brain": masks["brain"],
    }
    picks = [("wm", 0, 60), ("brain", 0, 90), ("gm", 1, 120), ("wm", 2, 70), ("cerebellum", 0, 16),
             ("cerebellum", 0, 24), ("temporal_pole", 0, 35), ("brain", 1, 100)]
    if quick:
        picks = picks[:2] + picks[4:5]
    predictor = SlicePredictor(load_model("litemedsam", device="cpu", backend="torch"), volume)
    cases = [Case(f"MNI152 {name} axis {'KJI'[axis]} {index}", predictor.slice_image(axis, index),
                  box_from_mask(take_slice(targets[name], axis, index))) for name, axis, index in picks]
    ct, _ = load_sample("ct_small")
    bone = ct[0] > 200
    bone[: ct.shape[1] // 2] = False  # the vertebral body, in the lower half
    cases.append(Case("CT_small vertebra", SlicePredictor(predictor.model, ct, window="bone").slice_image(0, 0),
                      box_from_mask(bone)))
    return cases


def random_cases(count: int, seed: int = 7) -> list[Case]:
    """``count`` seeded random MNI152 cases (parity only): a random axis and slice in the middle
    60% of the volume, a box around the brain, grey- or white-matter mask of that slice, or
    (every other case) around the largest piece of it inside a random half-size window."""
    volume, _ = load_sample("mni152")
    masks = [load_sample(f"mni152_{name}")[0] > 0 for name in ("brain", "gm", "wm")]
    predictor = SlicePredictor(load_model("litemedsam", device="cpu", backend="torch"), volume)
    rng = np.random.default_rng(seed)
    cases: list[Case] = []
    while len(cases) < count:
        name, axis = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        index = int(rng.integers(int(0.2 * volume.shape[axis]), int(0.8 * volume.shape[axis])))
        mask = take_slice(masks[name], axis, index)
        if rng.random() < 0.5:
            h, w = mask.shape
            r0, c0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            part = np.zeros_like(mask)
            part[r0:r0 + h // 2, c0:c0 + w // 2] = mask[r0:r0 + h // 2, c0:c0 + w // 2]
            mask = largest_component(part) if part.any() else part
        if mask.sum() >= 30:
            cases.append(Case(f"random {('brain', 'gm', 'wm')[name]} axis {'KJI'[axis]} {index}",
                              predictor.slice_image(axis, index), box_from_mask(mask)))
    return cases


def encoder_peak_mib(backend: str) -> Optional[float]:
    """Peak resident-memory growth (MiB) of two encodes in a fresh process with the model and its
    backend loaded (so first-use allocations such as ONNX Runtime's arena count); None where the
    OS does not say (not Linux)."""
    done = subprocess.run([sys.executable, __file__, "--encoder-memory", backend, "--threads",
                           str(torch.get_num_threads())], capture_output=True, text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    return float(lines[-1]) if done.returncode == 0 and lines and lines[-1] != "None" else None


def encoder_memory_child(backend: str) -> None:
    """Child side of :func:`encoder_peak_mib`: prints the peak growth in MiB (or None)."""
    model = load_model("litemedsam", device="cpu", backend=backend)
    image = np.random.default_rng(0).random((233, 197)).astype(np.float32)
    with PeakMemory(model.device) as mem:
        for _ in range(2):
            model.encode(image)
    print(mem.mib)


def with_encoder(model: SamModel, backend: str) -> SamModel:
    """A shallow copy of ``model`` (same network) whose encoder is ``backend``'s."""
    out = copy.copy(model)
    out.encoder, out.backend = backends.build_encoder(model, backend), backend
    return out


def reference_model() -> SamModel:
    """LiteMedSAM on the CPU as the engine ran before: PyTorch encoder, segment-anything's decoder."""
    out = copy.copy(load_model("litemedsam", device="cpu", backend="torch"))
    out.fast_decoder = None
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return 1000.0 * (time.perf_counter() - start)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """ms of each function over ``rounds`` rounds, the functions taking turns within a round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def backend_models(fast: SamModel) -> tuple[dict[str, SamModel], dict[str, str], set[str]]:
    """({backend: model} for every backend that runs here, {backend: why not} for the others, the emulated
    ones). "torch" is :func:`reference_model`; the others share ``fast``'s network and fast decoder."""
    models = {"torch": reference_model()}
    missing: dict[str, str] = {}
    emulated = set()
    for name in BACKENDS[1:]:
        try:
            models[name] = fast if name == fast.backend else with_encoder(fast, name)
        except backends.BackendError as exc:
            missing[name] = str(exc)
            continue
        if name.startswith("fused-") and not backends.bf16_native():
            emulated.add(name)
    return models, missing, emulated


def _parity(models: dict[str, SamModel], cases: list[Case]) -> dict[str, list[float]]:
    """Per backend, the Dice of its mask with the reference ("torch") mask for each case."""
    masks = {name: [model.decode(model.encode(c.image), Prompt(box=c.box)).masks[0] for c in cases]
             for name, model in models.items()}
    return {name: [dice(a, b) for a, b in zip(masks["torch"], ms)] for name, ms in masks.items()}


def encoder_section(models: dict[str, SamModel], emulated: set[str], fast: str, cases: list[Case],
                    extra: list[Case], rounds: int) -> dict:
    parity, random_parity = _parity(models, cases), _parity(models, extra)
    timed_models = {name: model for name, model in models.items() if name not in emulated}
    peak = {name: encoder_peak_mib(name) for name in timed_models}
    images = [c.image for c in cases[:3]]
    times = interleaved({name: (lambda m=model: [m.encode(im) for im in images])
                         for name, model in timed_models.items()}, rounds)
    per_slice = {name: [t / len(images) for t in ts] for name, ts in times.items()}
    ms = {name: statistics.median(ts) for name, ts in per_slice.items()}
    print(f"\nEncoder, LiteMedSAM on the CPU, ms per slice ({len(images)} slices x {rounds} rounds; parity on "
          f"{len(cases)} cases and {len(extra)} random ones)")
    print(f"  {'backend':16s} {'median':>8s} {'best':>8s} {'ratio':>7s} {'peak MiB':>9s} {'min Dice':>9s} "
          f"{'random: min Dice, n < 0.99':>27s}")
    for name in models:
        low = sum(d < backends.PARITY_DICE for d in random_parity[name])
        if name in emulated:
            timing = f"{'emulated bf16: accuracy only':>43s}"
        else:
            mib = "n/a" if peak[name] is None else f"{peak[name]:.0f}"
            timing = (f"{ms[name]:8.1f} {min(per_slice[name]):8.1f} {ms['torch'] / ms[name]:6.2f}x {mib:>9s}")
        note = "  (auto's choice)" if name == fast else ""
        print(f"  {name:16s} {timing} {min(parity[name]):9.4f} {min(random_parity[name]):12.4f} "
              f"{low:4d} of {len(extra):<4d}{note}")
    print("\n  Mask parity per case (Dice with the reference mask):")
    print("  " + f"{'case':40s}" + "".join(f"{name[:14]:>15s}" for name in models if name != "torch"))
    for i, case in enumerate(cases):
        print("  " + f"{case.name:40s}" + "".join(f"{parity[name][i]:15.4f}" for name in models if name != "torch"))
    return {"encoder_ms_reference": ms["torch"], "encoder_ms_fast": ms[fast], "encoder_ms_by_backend": ms,
            "encoder_peak_mib": peak, "parity_dice_min": min(parity[fast]),
            "parity_dice_by_backend": {k: min(v) for k, v in parity.items()},
            "parity_random_cases": len(extra),
            "parity_random_dice_min_by_backend": {k: min(v) for k, v in random_parity.items()},
            "parity_random_below_0_99_by_backend": {k: sum(d < backends.PARITY_DICE for d in v)
                                                    for k, v in random_parity.items()},
            "parity_dice_per_case": {k: dict(zip([c.name for c in cases], v)) for k, v in parity.items()}}


class _AllCandidates(torch.nn.Module):
    """The fast decoder's four outputs (the single output, then the three multimask ones), as a module to trace."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, image: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor):
        return self.decoder.predict_outputs(image, sparse, dense, range(0, 4))


class OpenVinoDecoder:
    """The fast mask decoder compiled by OpenVINO (float32, one box, the four candidates a prompt decodes):
    measured here to decide whether the engine should use it; the engine does not. Called like
    FastMaskDecoder.predict_outputs."""

    def __init__(self, model: SamModel, box: torch.Tensor):
        import openvino

        with torch.inference_mode():
            sparse, dense = model.network.prompt_encoder(points=None, boxes=box, masks=None)
            example = (torch.zeros(1, 256, 64, 64), sparse.clone(), dense.contiguous().clone())
            converted = openvino.convert_model(_AllCandidates(model.fast_decoder), example_input=example)
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": False}
        self.request = openvino.Core().compile_model(converted, "CPU", config).create_infer_request()

    def predict_outputs(self, image: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor, selected: range):
        if selected != range(0, 4):
            raise ValueError("compiled for the four candidates only")
        out = self.request.infer([image.contiguous().numpy(), sparse.numpy(), dense.contiguous().numpy()])
        return torch.from_numpy(out[0].copy()), torch.from_numpy(out[1].copy())


def decoder_section(ref: SamModel, fast: SamModel, cases: list[Case], repeats: int) -> dict:
    embeddings = [(fast.encode(c.image), Prompt(box=c.box)) for c in cases]
    paths = {"reference": ref, "fast": fast}
    try:
        paths["openvino"] = copy.copy(fast)
        paths["openvino"].fast_decoder = OpenVinoDecoder(fast, torch.tensor([[30.0, 40.0, 200.0, 180.0]]))
    except Exception as exc:  # not installed, or conversion failed: say so
        del paths["openvino"]
        print(f"  OpenVINO decoder: not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
    fns = {label: (lambda m=model: [m.decode_candidates(e, p) for e, p in embeddings])
           for label, model in paths.items()}
    times = {k: [t / len(embeddings) for t in v] for k, v in interleaved(fns, repeats).items()}
    ms = {k: statistics.median(v) for k, v in times.items()}
    peak = {}
    for label, model in paths.items():
        with PeakMemory(model.device) as mem:
            model.decode_candidates(*embeddings[0])
        peak[label] = mem.mib
    parts = decode_parts(fast, *embeddings[0], repeats * len(embeddings))
    agree = {label: min(dice(ref.decode_candidates(e, p).masks[i], model.decode_candidates(e, p).masks[i])
                         for e, p in embeddings for i in range(4))
             for label, model in paths.items() if label != "reference"}
    print(f"\nDecoder, prompt -> mask on a cached embedding, ms per prompt ({len(embeddings)} boxes x {repeats})")
    for label in paths:
        extra = "" if label == "reference" else (f"   ratio {ms['reference'] / ms[label]:.2f}x   min Dice with the "
                                                 f"reference decoder {agree[label]:.4f}")
        print(f"  {label:10s} {ms[label]:7.1f}{extra}")
    print("  fast path parts (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return {"decoder_ms_reference": ms["reference"], "decoder_ms_fast": ms["fast"],
            "decoder_ms_openvino": ms.get("openvino"), "decoder_peak_mib": peak, "decoder_parts_ms": parts,
            "decoder_parity_dice_min": agree["fast"], "decoder_openvino_parity_dice_min": agree.get("openvino")}


@torch.inference_mode()
def decode_parts(model: SamModel, embedding, prompt: Prompt, repeats: int) -> dict[str, float]:
    """Median ms of the parts of SamModel.decode_candidates (a prompt's four candidates) on the fast path, each
    timed alone."""
    pre = model.spec.preprocessing
    scale = pre.scale_xy(embedding.original_size, embedding.input_size)
    boxes = torch.as_tensor(prompt.box * np.tile(scale, 2), dtype=torch.float32)[None]
    net = model.network
    sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
    low_res, _ = model.fast_decoder.predict_outputs(embedding.features, sparse, dense, range(0, 4))
    logits = masks_to_original(pre, low_res, embedding.original_size, embedding.input_size)
    parts = {"prompt encoder": lambda: net.prompt_encoder(points=None, boxes=boxes, masks=None),
             "mask decoder": lambda: model.fast_decoder.predict_outputs(embedding.features, sparse, dense, range(0, 4)),
             "upsampling": lambda: masks_to_original(pre, low_res, embedding.original_size, embedding.input_size),
             "numpy": lambda: ((logits[0] > 0).cpu().numpy(), low_res[0].cpu().numpy())}
    return {k: statistics.median(v) for k, v in interleaved(parts, repeats).items()}


def propagation_section(models: dict[str, SamModel], emulated: set[str], slices: int) -> dict:
    """propagate() through ``slices`` axial MNI152 slices on a cold cache with every backend that is not
    emulated ("torch" with the reference decoder, the others with the fast decoder)."""
    volume, _ = load_sample("mni152")
    brain = load_sample("mni152_brain")[0] > 0
    seed = 80
    first = seed - slices // 2
    options = PropagationOptions(min_iou=None)
    out, masks = {}, {}
    print(f"\nPropagation, MNI152 brain, axis K, slices {first}..{first + slices - 1} from seed {seed}, cold cache")
    for name, model in models.items():
        if name in emulated:
            continue
        predictor = SlicePredictor(model, volume)
        with PeakMemory(model.device) as mem:
            result = propagate(predictor, 0, seed, seed_mask=brain[seed], direction="both",
                               slice_range=(first, first + slices - 1), options=options)
        predictor.close()
        rate = result.slices_visited / result.seconds
        masks[name] = result.mask
        out[name] = {"seconds": result.seconds, "slices_visited": result.slices_visited,
                     "encoder_calls": result.encoder_calls, "slices_per_second": rate, "peak_mib": mem.mib,
                     "dice_vs_reference": dice(masks["torch"], result.mask)}
        print(f"  {name:14s} {result.seconds:7.1f} s   {result.slices_visited} slices decoded, "
              f"{result.encoder_calls} encoded   {rate:5.2f} slices/s   ratio "
              f"{out['torch']['seconds'] / result.seconds:.2f}x   3D Dice with the reference "
              f"{out[name]['dice_vs_reference']:.4f}")
    return {"propagation": out}


def ground_truth_section(names: list[str], quick: bool) -> dict:
    """The ground-truth parity rule for each lower-precision backend of ``names`` against the float32 reference
    ("torch"); the float32 backends give the reference's masks (their mask parity, in the encoder stage)."""
    with tempfile.TemporaryDirectory() as folder:
        if quick:
            cases = ground_truth.write_case_set(folder, step=40, structures=("brain", "posterior_fossa"),
                                                axes=(0, 2))
        else:
            cases = ground_truth.write_case_set(folder)
        start = time.perf_counter()
        judged = [n for n in names if n in ground_truth_parity.LOWER_PRECISION]  # float32 ones: mask parity above
        verdicts, rows = ground_truth.run_rule(judged, cases, reference="torch",
                                               progress=lambda n: print(f"  ground truth: running {n} "
                                                                        f"({time.perf_counter() - start:.0f} s)",
                                                                        flush=True))
    reference = ground_truth_parity.judge("torch", *([[float(r["dice"]) for r in rows["torch"]]] * 2))
    verdicts = {"torch": reference, **verdicts}
    print(f"\nGround-truth parity rule ({'quick subset' if quick else 'full case set'}: {len(cases)} cases, "
          f"{reference.rows} boxes; mean within {ground_truth_parity.MEAN_TOLERANCE} and 5th percentile within "
          f"{ground_truth_parity.P5_TOLERANCE} of float32)")
    print(f"  {'backend':16s} {'mean Dice':>10s} {'delta':>8s} {'5th pct':>8s} {'delta':>8s}  verdict")
    for name, v in verdicts.items():
        print(f"  {name:16s} {v.mean:10.4f} {v.mean_delta:+8.4f} {v.p5:8.4f} {v.p5_delta:+8.4f}  "
              f"{'passes' if v.passed else 'fails'}")
    return {"ground_truth": {"quick": quick, "cases": len(cases), "rows": reference.rows,
                             "verdicts": {name: {"mean": v.mean, "p5": v.p5, "mean_delta": v.mean_delta,
                                                 "p5_delta": v.p5_delta, "passed": v.passed}
                                          for name, v in verdicts.items()}}}


def encoder_throughput(device: torch.device, dtypes: dict[str, torch.dtype], quick: bool,
                       vit_b: bool = True) -> list[dict]:
    """Batched image-encoder throughput on ``device``: LiteMedSAM (PyTorch network under autocast, and
    the fused encoder in the dtype itself) and SAM ViT-B with random weights (throughput only)."""
    from SAMSegmenterLib.models import segment_anything as _segment_anything
    from SAMSegmenterLib.models.fused_tiny_vit import fuse_tiny_vit

    lite = load_model("litemedsam", device=device, backend="torch").network.image_encoder
    setups = [("LiteMedSAM torch", lite, 256, (1, 8, 32)), ("LiteMedSAM fused", None, 256, (1, 8, 32))]
    if vit_b:
        net = _segment_anything.build_sam().sam_model_registry["vit_b"](checkpoint=None).image_encoder
        setups.append(("SAM ViT-B torch (random weights)", net.to(device).eval(), 1024, (1, 4, 8)))
    results = []
    print(f"  {'model':34s} {'dtype':>5s} {'batch':>5s} {'img/s':>8s} {'ms/batch':>9s} {'peak MiB':>9s}")
    for label, net, size, batches in setups:
        for dname, dtype in dtypes.items():
            run_net = net if net is not None else fuse_tiny_vit(lite, dtype)
            autocast = net is not None and dtype != torch.float32
            for batch in batches[:2] if quick else batches:
                x = torch.rand(batch, 3, size, size, device=device)

                def step() -> None:
                    with torch.inference_mode(), (torch.autocast(device.type, dtype=dtype) if autocast
                                                  else contextlib.nullcontext()):
                        run_net(x)

                for _ in range(2 if quick else 3):
                    step()
                iters = 2 if quick else (5 if size == 1024 else 20)
                with PeakMemory(device) as mem:
                    start = time.perf_counter()
                    for _ in range(iters):
                        step()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                ms = 1000.0 * (time.perf_counter() - start) / iters
                results.append({"model": label, "dtype": dname, "batch": batch, "images_per_second": batch * 1000 / ms,
                                "ms_per_batch": ms, "peak_mib": mem.mib})
                mib = "n/a" if mem.mib is None else f"{mem.mib:.0f}"
                print(f"  {label:34s} {dname:>5s} {batch:5d} {batch * 1000 / ms:8.1f} {ms:9.2f} {mib:>9s}")
    return results


def gpu_section(quick: bool) -> Optional[dict]:
    if not torch.cuda.is_available():
        print("\nGPU: no CUDA device: batched GPU throughput was not measured")
        return None
    device = torch.device("cuda")
    dtypes = {"fp32": torch.float32, "fp16": torch.float16}
    if torch.cuda.is_bf16_supported():
        dtypes["bf16"] = torch.bfloat16
    print(f"\nGPU: {torch.cuda.get_device_name(device)}, image encoder throughput (images/s); "
          "autocast for the PyTorch networks, the dtype itself for the fused encoder")
    return {"device": torch.cuda.get_device_name(device), "results": encoder_throughput(device, dtypes, quick)}


def _cell(value: Optional[float], fmt: str, missing: str = "") -> str:
    return missing if value is None else format(value, fmt)


def docs_tables(result: dict, missing: dict[str, str], emulated: set[str], slices: int) -> None:
    """Print the tables of docs/speed.md in Markdown from this run's ``result``."""
    fast = result["backend"]
    ms = result.get("encoder_ms_by_backend", {})
    peak = result.get("encoder_peak_mib", {})
    parity = result.get("parity_dice_by_backend", {})
    random_min = result.get("parity_random_dice_min_by_backend", {})
    random_low = result.get("parity_random_below_0_99_by_backend", {})
    truth = result.get("ground_truth", {}).get("verdicts", {})
    prop = result.get("propagation", {})
    eligible = backends.ground_truth_eligible()
    print(f"\n## Tables for docs/speed.md ({result['machine']['cpu']}, {result['machine']['threads']} threads)\n")
    print(f"| encoder backend | precision | ms per slice | vs torch | peak MiB | min Dice vs fp32, "
          f"{len(result.get('parity_dice_per_case', {}).get('torch', {}))} cases | min Dice, "
          f"{result.get('parity_random_cases', 0)} random | random < 0.99 | ground truth: mean Dice (vs fp32) | "
          f"5th percentile (vs fp32) | rule | propagation {slices} slices, s | auto |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in BACKENDS:
        if name in missing:
            print(f"| `{name}` | {PRECISION[name]} | not available here: {missing[name]} |" + " |" * 10)
            continue
        if name in emulated:
            timing = "emulated bf16 | | "
        else:
            speed = None if name not in ms else ms["torch"] / ms[name]
            timing = f"{_cell(ms.get(name), '.0f')} | {_cell(speed, '.2f')}x | {_cell(peak.get(name), '.0f')}"
        v = truth.get(name)
        rule = "" if v is None else ("reference" if name == "torch" else ("passes" if v["passed"] else "fails"))
        if name in ground_truth_parity.LOWER_PRECISION:
            pick = "eligible (rule passed in the record)" if name in eligible else "opt-in"
        else:
            pick = "candidate"
        if name == fast:
            pick = "**chosen here**"
        gt_mean = "" if v is None else f"{v['mean']:.4f} ({v['mean_delta']:+.4f})"
        gt_p5 = "" if v is None else f"{v['p5']:.4f} ({v['p5_delta']:+.4f})"
        seconds = prop.get(name, {}).get("seconds")
        print(f"| `{name}` | {PRECISION[name]} | {timing} | {_cell(parity.get(name), '.4f')} | "
              f"{_cell(random_min.get(name), '.4f')} | {_cell(random_low.get(name), 'd')} | {gt_mean} | {gt_p5} | "
              f"{rule} | {_cell(seconds, '.1f')} | {pick} |")
    if "decoder_ms_fast" in result:
        print("\n| prompt -> mask on a cached embedding | ms |\n| --- | --- |")
        print(f"| reference decoder (segment-anything) | {result['decoder_ms_reference']:.1f} |")
        print(f"| `fast_decoder` (used) | {result['decoder_ms_fast']:.1f} |")
        if result.get("decoder_ms_openvino") is not None:
            print(f"| `fast_decoder` compiled by OpenVINO (measured, not used) | {result['decoder_ms_openvino']:.1f} |")
        for part, value in result["decoder_parts_ms"].items():
            print(f"| of which {part} | {value:.2f} |")
    print("\n| target (2 cores) | this run |\n| --- | --- |")
    if fast in prop and slices == 100:
        best = min((n for n in prop), key=lambda n: prop[n]["seconds"])
        print(f"| 100-slice propagation <= 25 s | {prop[fast]['seconds']:.1f} s with `{fast}` (auto); fastest "
              f"`{best}` {prop[best]['seconds']:.1f} s: {'met' if prop[fast]['seconds'] <= 25 else 'not met'} |")
    if "decoder_ms_fast" in result:
        met = "met" if result["decoder_ms_fast"] <= 15 else "not met"
        print(f"| prompt on a cached embedding <= 15 ms | {result['decoder_ms_fast']:.1f} ms: {met} |")
    if fast in truth:
        v = truth[fast]
        print(f"| nothing less accurate against ground truth | `{fast}`: mean Dice {v['mean_delta']:+.4f}, 5th "
              f"percentile {v['p5_delta']:+.4f} vs fp32: {'met' if v['passed'] else 'not met'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases, rounds and slices; small rule subset")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--slices", type=int, default=None, help="propagation slices (default 100, quick 20)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    parser.add_argument("--emulate-bf16", action="store_true",
                        help="without native bf16, run the fused bf16 backends on generic kernels for accuracy only")
    parser.add_argument("--encoder-memory", metavar="BACKEND", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.encoder_memory:
        encoder_memory_child(args.encoder_memory)
        return
    if args.emulate_bf16 and not backends.bf16_native():
        os.environ[backends.EMULATE_BF16_ENV] = "1"  # read when the fused bf16 encoders are built
    slices = args.slices or (20 if args.quick else 100)
    stages = set(args.stages.split(","))
    if not stages <= set(STAGES):
        parser.error(f"unknown stage(s) {', '.join(sorted(stages - set(STAGES)))}; use {', '.join(STAGES)}")
    info = machine()
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    start = time.perf_counter()
    fast = load_model("litemedsam", device="cpu")
    choice = backends.choose_backend(fast)
    print(f"auto backend: {fast.backend} ({choice.reason}); chosen in {time.perf_counter() - start:.1f} s "
          "(measured once per machine, then read from the per-user cache)")
    models, missing, emulated = backend_models(fast)
    for name, why in missing.items():
        print(f"  {name}: not available here ({why})")
    cases = benchmark_cases(args.quick) if {"encoder", "decoder"} & stages else []
    extra = random_cases(6 if args.quick else 24) if "encoder" in stages else []
    result = {"machine": info, "backend": fast.backend, "backend_reason": choice.reason,
              "fast_decoder": fast.fast_decoder is not None, "unavailable": missing, "emulated": sorted(emulated)}
    started = time.perf_counter()
    if "encoder" in stages:
        result.update(encoder_section(models, emulated, fast.backend, cases, extra, rounds=2 if args.quick else 4))
    if "decoder" in stages:
        result.update(decoder_section(models["torch"], fast, cases, repeats=3 if args.quick else 10))
    if "propagation" in stages:
        result.update(propagation_section(models, emulated, slices))
    if "ground_truth" in stages:
        result.update(ground_truth_section(list(models), args.quick))
    if "gpu" in stages:
        result["gpu"] = gpu_section(args.quick)
    docs_tables(result, missing, emulated, slices)
    result["seconds"] = time.perf_counter() - started
    print(f"\nStages took {result['seconds']:.0f} s; load average at the end: {machine()['load_average']}")
    if args.json:
        print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
