"""Speed of SAMSegmenter's engine: the reference PyTorch path and the fast path, side by side.

Stages, each measured for both paths in the same run (timings interleaved, so that
load from other processes hits both alike):

  encoder      LiteMedSAM image encoder per slice (preprocessing included), CPU.
               reference: the PyTorch fp32 network (backend "torch");
               fast: what load_model(backend="auto") picked on this machine.
               Every encoder backend is also timed, with its mask parity (Dice with
               the reference mask for each benchmark case).
  decoder      prompt -> mask on a cached embedding (SamModel.decode: prompt encoder,
               mask decoder, upsampling to the slice, numpy): reference decoder vs
               fast_decoder, with the fast path's parts.
  propagation  propagation.propagate through 100 axial slices of the MNI152 brain
               on a cold embedding cache; slices per second.
  GPU          batched encoder throughput of LiteMedSAM and SAM ViT-B (random weights)
               in fp32/fp16/bf16 on CUDA, when a CUDA device is present.

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

    python benchmarks/speed.py [--quick] [--json] [--threads N] [--slices 100]
                               [--stages encoder,decoder,propagation,gpu]
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))

from SAMSegmenterLib.models import (  # noqa: E402
    SamModel,
    backends,  # noqa: E402
    load_model,
)
from SAMSegmenterLib.postprocess import largest_component  # noqa: E402
from SAMSegmenterLib.predictor import SlicePredictor  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.propagation import PropagationOptions, propagate  # noqa: E402
from SAMSegmenterLib.sample_data import load_sample  # noqa: E402
from SAMSegmenterLib.volume import take_slice  # noqa: E402

STAGES = {"encoder", "decoder", "propagation", "gpu"}
OPT_IN = ("fused-mixed", "fused-bf16")  # measured for information; auto does not pick them for fp32 models
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
            "onnxruntime": backends.onnxruntime_version(), "bf16_native": backends.bf16_native(),
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


def _parity(ref_label: str, models: dict[str, SamModel], cases: list[Case]) -> dict[str, list[float]]:
    """Per model, the Dice of its mask with the ``ref_label`` model's mask for each case."""
    masks = {label: [model.decode(model.encode(c.image), Prompt(box=c.box)).masks[0] for c in cases]
             for label, model in models.items()}
    return {label: [dice(a, b) for a, b in zip(masks[ref_label], ms)] for label, ms in masks.items()}


def encoder_section(ref: SamModel, fast: SamModel, cases: list[Case], extra: list[Case], rounds: int) -> dict:
    ref_label, fast_label = "reference (torch fp32)", f"fast ({fast.backend})"
    models = {ref_label: ref, fast_label: fast}
    for name in ("fused", "onnxruntime", *OPT_IN):
        if name != fast.backend:
            try:
                models[name] = with_encoder(fast, name)
            except backends.BackendError as exc:
                print(f"  {name}: not available ({exc})")
    parity, random_parity = _parity(ref_label, models, cases), _parity(ref_label, models, extra)
    peak = {label: encoder_peak_mib(model.backend) for label, model in models.items()}
    images = [c.image for c in cases[:3]]
    times = interleaved({label: (lambda m=model: [m.encode(im) for im in images]) for label, model in models.items()},
                        rounds)
    per_slice = {label: [t / len(images) for t in ts] for label, ts in times.items()}
    print(f"\nEncoder, LiteMedSAM on the CPU, ms per slice ({len(images)} slices x {rounds} rounds; parity on "
          f"{len(cases)} cases)")
    print(f"  {'backend':28s} {'median':>8s} {'best':>8s} {'ratio':>7s} {'peak MiB':>9s} {'min Dice':>9s} "
          f"{'random: min Dice, n < 0.99':>27s}")
    for label, ts in per_slice.items():
        ratio = statistics.median(per_slice[ref_label]) / statistics.median(ts)
        note = "  (opt-in: not picked by auto for fp32 models)" if label in OPT_IN else ""
        mib = "n/a" if peak[label] is None else f"{peak[label]:.0f}"
        low = sum(d < backends.PARITY_DICE for d in random_parity[label])
        print(f"  {label:28s} {statistics.median(ts):8.1f} {min(ts):8.1f} {ratio:6.2f}x {mib:>9s} "
              f"{min(parity[label]):9.4f} {min(random_parity[label]):12.4f} {low:4d} of {len(extra):<4d}{note}")
    print("\n  Mask parity per case (Dice with the reference mask):")
    print("  " + f"{'case':40s}" + "".join(f"{label[:16]:>18s}" for label in models if label != ref_label))
    for i, case in enumerate(cases):
        print("  " + f"{case.name:40s}" + "".join(f"{parity[label][i]:18.4f}" for label in models
                                                   if label != ref_label))
    return {"encoder_ms_reference": statistics.median(per_slice[ref_label]),
            "encoder_ms_fast": statistics.median(per_slice[fast_label]),
            "encoder_ms_by_backend": {k: statistics.median(v) for k, v in per_slice.items()},
            "encoder_peak_mib": peak, "parity_dice_min": min(parity[fast_label]),
            "parity_dice_by_backend": {k: min(v) for k, v in parity.items()},
            "parity_random_cases": len(extra),
            "parity_random_dice_min_by_backend": {k: min(v) for k, v in random_parity.items()},
            "parity_random_below_0_99_by_backend": {k: sum(d < backends.PARITY_DICE for d in v)
                                                    for k, v in random_parity.items()},
            "parity_dice_per_case": {k: dict(zip([c.name for c in cases], v)) for k, v in parity.items()}}


def decoder_section(ref: SamModel, fast: SamModel, cases: list[Case], repeats: int) -> dict:
    embeddings = [(fast.encode(c.image), Prompt(box=c.box)) for c in cases]
    fns = {"reference": lambda: [ref.decode(e, p) for e, p in embeddings],
           "fast": lambda: [fast.decode(e, p) for e, p in embeddings]}
    times = {k: [t / len(embeddings) for t in v] for k, v in interleaved(fns, repeats).items()}
    peak = {}
    for label, model in (("reference", ref), ("fast", fast)):
        with PeakMemory(model.device) as mem:
            model.decode(*embeddings[0])
        peak[label] = mem.mib
    parts = decode_parts(fast, *embeddings[0], repeats * len(embeddings))
    masks_equal = min(dice(ref.decode(e, p).masks[0], fast.decode(e, p).masks[0]) for e, p in embeddings)
    print(f"\nDecoder, prompt -> mask on a cached embedding, ms per prompt ({len(embeddings)} boxes x {repeats})")
    ratio = statistics.median(times["reference"]) / statistics.median(times["fast"])
    print(f"  reference {statistics.median(times['reference']):7.1f}   fast {statistics.median(times['fast']):7.1f}"
          f"   ratio {ratio:.2f}x   min Dice fast vs reference decoder {masks_equal:.4f}")
    print("  fast path parts (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return {"decoder_ms_reference": statistics.median(times["reference"]),
            "decoder_ms_fast": statistics.median(times["fast"]), "decoder_peak_mib": peak,
            "decoder_parts_ms": parts, "decoder_parity_dice_min": masks_equal}


@torch.inference_mode()
def decode_parts(model: SamModel, embedding, prompt: Prompt, repeats: int) -> dict[str, float]:
    """Median ms of the parts of SamModel.decode on the fast path, each timed alone."""
    pre = model.spec.preprocessing
    scale = pre.scale_xy(embedding.original_size, embedding.input_size)
    boxes = torch.as_tensor(prompt.box * np.tile(scale, 2), dtype=torch.float32)[None]
    net = model.network
    sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
    low_res, _ = model.fast_decoder(embedding.features, sparse, dense, False)
    logits = pre.masks_to_original(low_res, embedding.original_size, embedding.input_size)
    parts = {"prompt encoder": lambda: net.prompt_encoder(points=None, boxes=boxes, masks=None),
             "mask decoder": lambda: model.fast_decoder(embedding.features, sparse, dense, False),
             "upsampling": lambda: pre.masks_to_original(low_res, embedding.original_size, embedding.input_size),
             "numpy": lambda: ((logits[0] > 0).cpu().numpy(), low_res[0].cpu().numpy())}
    return {k: statistics.median(v) for k, v in interleaved(parts, repeats).items()}


def propagation_section(ref: SamModel, fast: SamModel, slices: int) -> dict:
    volume, _ = load_sample("mni152")
    brain = load_sample("mni152_brain")[0] > 0
    seed = 80
    first = seed - slices // 2
    options = PropagationOptions(min_iou=None)
    out = {}
    paths = {"reference": ref, "fast": fast}
    try:
        paths["fused-mixed"] = with_encoder(fast, "fused-mixed")  # opt-in: how far it gets toward the target
    except backends.BackendError as exc:
        print(f"  fused-mixed: not available ({exc})")
    print(f"\nPropagation, MNI152 brain, axis K, slices {first}..{first + slices - 1} from seed {seed}, cold cache")
    masks = {}
    for label, model in paths.items():
        predictor = SlicePredictor(model, volume)
        with PeakMemory(model.device) as mem:
            result = propagate(predictor, 0, seed, seed_mask=brain[seed], direction="both",
                               slice_range=(first, first + slices - 1), options=options)
        predictor.close()
        rate = result.slices_visited / result.seconds
        out[label] = {"seconds": result.seconds, "slices_visited": result.slices_visited,
                      "encoder_calls": result.encoder_calls, "slices_per_second": rate, "peak_mib": mem.mib}
        masks[label] = result.mask
        print(f"  {label:12s} {result.seconds:7.1f} s   {result.slices_visited} slices decoded, "
              f"{result.encoder_calls} encoded   {rate:5.2f} slices/s   stops {result.stop_reasons}")
    agree = {label: dice(masks["reference"], mask) for label, mask in masks.items() if label != "reference"}
    for label, value in agree.items():
        print(f"  {label}: ratio {out['reference']['seconds'] / out[label]['seconds']:.2f}x   "
              f"3D Dice with the reference {value:.4f}")
    return {"propagation": out, "propagation_dice_fast_vs_reference": agree["fast"],
            "propagation_dice_vs_reference": agree}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases, rounds and slices")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--slices", type=int, default=None, help="propagation slices (default 100, quick 20)")
    parser.add_argument("--stages", default="encoder,decoder,propagation,gpu",
                        help="comma-separated subset of encoder,decoder,propagation,gpu (default: all)")
    parser.add_argument("--encoder-memory", metavar="BACKEND", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.encoder_memory:
        encoder_memory_child(args.encoder_memory)
        return
    slices = args.slices or (20 if args.quick else 100)
    stages = set(args.stages.split(","))
    if not stages <= STAGES:
        parser.error(f"unknown stage(s) {', '.join(sorted(stages - STAGES))}; use {', '.join(sorted(STAGES))}")
    info = machine()
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    start = time.perf_counter()
    fast = load_model("litemedsam", device="cpu")
    choice = backends.choose_backend(fast)
    print(f"auto backend: {fast.backend} ({choice.reason}); chosen in {time.perf_counter() - start:.1f} s "
          "(measured once per machine, then read from the per-user cache)")
    ref = reference_model()
    cases = benchmark_cases(args.quick) if {"encoder", "decoder"} & stages else []
    extra = random_cases(6 if args.quick else 24) if "encoder" in stages else []
    result = {"machine": info, "backend": fast.backend, "backend_reason": choice.reason,
              "fast_decoder": fast.fast_decoder is not None}
    rows = []
    if "encoder" in stages:
        result.update(encoder_section(ref, fast, cases, extra, rounds=2 if args.quick else 4))
        rows.append(("encoder, ms per slice", result["encoder_ms_reference"], result["encoder_ms_fast"]))
    if "decoder" in stages:
        result.update(decoder_section(ref, fast, cases, repeats=3 if args.quick else 10))
        rows.append(("prompt -> mask, ms", result["decoder_ms_reference"], result["decoder_ms_fast"]))
    if "propagation" in stages:
        result.update(propagation_section(ref, fast, slices))
        prop = result["propagation"]
        rows.append((f"propagation {slices} slices, s", prop["reference"]["seconds"], prop["fast"]["seconds"]))
    if "gpu" in stages:
        result["gpu"] = gpu_section(args.quick)
    print(f"\nSummary ({info['cpu']}, {info['threads']} threads; fast = backend {fast.backend} + fast decoder)")
    print(f"  {'stage':34s} {'reference':>10s} {'fast':>10s} {'ratio':>7s}")
    for label, a, b in rows:
        print(f"  {label:34s} {a:10.1f} {b:10.1f} {a / b:6.2f}x")
    if "propagation" in stages:
        print(f"  slices per second: reference {prop['reference']['slices_per_second']:.2f}, "
              f"fast {prop['fast']['slices_per_second']:.2f}")
    if "encoder" in stages:
        print(f"  mask parity, fast vs reference: min Dice {result['parity_dice_min']:.4f} over {len(cases)} cases, "
              f"{result['parity_random_dice_min_by_backend'][f'fast ({fast.backend})']:.4f} over {len(extra)} "
              "random cases")
    print(f"  load average at the end: {machine()['load_average']}")
    if args.json:
        print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
