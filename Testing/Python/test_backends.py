"""Encoder backends and the fast mask decoder: parity with the reference on real slices, clean fallbacks.

No timing is asserted here (see benchmarks/speed.py); these tests check that the
fast paths give the reference's masks and that the automatic choice falls back
when a backend is missing or broken.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import types
from importlib import metadata

import numpy as np
import pytest
import torch
from conftest import MODULE_DIR, dice

from SAMSegmenterLib.errors import Cancelled
from SAMSegmenterLib.models import backend_trials, backends, ground_truth_parity, load_model
from SAMSegmenterLib.models.backends import BackendChoice, BackendError, Trial
from SAMSegmenterLib.models.download import cached_sha256
from SAMSegmenterLib.models.fast_decoder import FastMaskDecoder
from SAMSegmenterLib.models.fused_tiny_vit import fuse_tiny_vit, onednn_available
from SAMSegmenterLib.models.preprocess import image_tensor
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt, box_from_mask
from SAMSegmenterLib.volume import take_slice

# (axis, index, mask): MNI152 slices along each axis with box prompts from nilearn's masks
MNI_CASES = [(0, 60, "wm"), (0, 90, "brain"), (1, 120, "gm"), (2, 70, "wm")]


@pytest.fixture(scope="module")
def reference():
    """LiteMedSAM on the CPU with the reference PyTorch encoder."""
    return load_model("litemedsam", device="cpu", backend="torch")


@pytest.fixture(scope="module")
def cases(mni152, mni152_masks, ct_small):
    """(slice image in [0, 1], box prompt) pairs: four MNI152 slices and pydicom's CT (vertebra box)."""
    volume, _ = mni152
    predictor = SlicePredictor(load_model("litemedsam", device="cpu", backend="torch"), volume)
    out = [(predictor.slice_image(axis, index), box_from_mask(take_slice(mni152_masks[name], axis, index)))
           for axis, index, name in MNI_CASES]
    ct, _ = ct_small
    bone = ct[0] > 200
    bone[: ct.shape[1] // 2] = False  # the vertebral body lies in the lower half
    out.append((SlicePredictor(predictor.model, ct, window="bone").slice_image(0, 0), box_from_mask(bone)))
    return out


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """Per-user cache in a temporary folder, no decision remembered by this process, and the
    candidates measured in this process (the tests using it replace parts of ``measure``; the
    child process that ``choose_backend`` normally measures in is tested on its own below)."""
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    monkeypatch.setattr(backends, "_DECISIONS", {})
    monkeypatch.setattr(backends, "measure_in_child", lambda model, names: backends.measure(model, names))
    return tmp_path / "backends"


@pytest.mark.slow
def test_a_backend_crashing_in_native_code_fails_only_itself(reference, tmp_path, monkeypatch):
    """auto measures the candidates in a child process: one that dies of SIGSEGV there (injected with
    SAMSEGMENTER_CRASH_BACKEND, a real segfault in native code) is marked failed with the signal's name,
    the others are measured in a new child, the choice is made and stored, and this process lives on."""
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    monkeypatch.setenv(backend_trials.CRASH_ENV, "onnxruntime")
    monkeypatch.setattr(backends, "_DECISIONS", {})
    monkeypatch.setattr(backends, "candidates", lambda model: ["onnxruntime", "fused"])
    choice = backends.choose_backend(reference)
    trials = {t.backend: t for t in choice.trials}
    assert list(trials) == ["torch", "onnxruntime", "fused"]
    assert trials["onnxruntime"].error.startswith("crashed in native code (SIGSEGV)")
    assert trials["onnxruntime"].ms is None
    assert trials["fused"].error is None and trials["fused"].parity_dice >= backends.PARITY_DICE
    assert trials["torch"].ms > 0 and trials["fused"].ms > 0
    assert choice.backend in ("fused", "torch")  # whichever was faster here; never the crashed one
    stored = json.loads((tmp_path / "backends" / "choices.json").read_text())
    assert [c["backend"] for c in stored.values()] == [choice.backend]


def test_a_crash_outside_every_candidate_is_an_error(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    monkeypatch.setenv(backend_trials.CRASH_ENV, "torch")
    with pytest.raises(BackendError, match=r"before any candidate: crashed in native code \(SIGSEGV\)"):
        backend_trials.measure_in_child(reference, ["fused"], rounds=1)


def test_a_second_process_waits_for_the_first_decision(reference, tmp_path, monkeypatch):
    """Two processes choosing at once (a CLI run and the SAM service) take turns on a per-user lock: the one
    that waits reads the decision the first stored instead of measuring again, so both use one backend."""
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); torch.set_num_threads(2);"
            "from SAMSegmenterLib.models import backends, load_model;"
            "model = load_model('litemedsam', device='cpu', backend='torch');"
            "print(backends.decision_key(model), flush=True); choice = backends.choose_backend(model);"
            "print(choice.backend, '|', choice.reason, flush=True)")
    env = {**os.environ, "SAMSEGMENTER_CACHE": str(tmp_path)}
    with backends._machine_lock():
        child = subprocess.Popen([sys.executable, "-c", code, str(MODULE_DIR)], stdout=subprocess.PIPE, text=True,
                                 env=env)
        key = child.stdout.readline().strip()
        time.sleep(2.0)  # the child now waits on the lock (unlocked, it would be measuring)
        choices = {key: {"backend": "fused", "reason": "stored by the first process", "trials": []}}
        (tmp_path / "backends" / "choices.json").write_text(json.dumps(choices))
    out, _ = child.communicate(timeout=600)
    assert child.returncode == 0 and out.strip() == "fused | stored by the first process"


def test_openvino_f32_and_bf16_in_one_process(reference, tmp_path, monkeypatch):
    """OpenVINO 2026.4 gives both precisions one compiled-blob cache key; sharing one cache folder made the
    bf16 compilation import the f32 blob and segfault on CPUs with native bf16 (AMX). Each precision now
    has its own folder: both encoders run, in either order, in one process, and each gives its own numbers."""
    pytest.importorskip("openvino")
    if not backends.bf16_native():
        pytest.skip("openvino-bf16 needs a CPU with native bf16")
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    f32 = backends.build_encoder(reference, "openvino")
    first = f32(x)
    bf16 = backends.build_encoder(reference, "openvino-bf16")
    low = bf16(x)
    again = backends.build_encoder(reference, "openvino")(x)  # now compiled from its own cached blob
    assert torch.equal(first, again) and not torch.equal(first, low)
    assert sorted(p.name for p in (tmp_path / "backends" / "openvino").iterdir()) == ["bf16", "f32"]


def _masks(model, encoder, cases) -> list[np.ndarray]:
    """Single-output masks of every case, with ``encoder`` computing the embeddings."""
    out = []
    for image, box in cases:
        x, input_size = image_tensor(model.spec.preprocessing, image, model.device)
        embedding = model.embed(x, image.shape, input_size, encoder)
        out.append(model.decode(embedding, Prompt(box=box)).masks[0])
    return out


@pytest.fixture(scope="module")
def reference_masks(reference, cases):
    return _masks(reference, reference.network.image_encoder, cases)


@pytest.mark.parametrize("name", ["fused", "onnxruntime", "openvino"])
def test_backend_masks_match_reference_on_real_slices(name, reference, cases, reference_masks, tmp_path,
                                                      monkeypatch):
    """The float32 backends ``auto`` may pick give the reference's masks, also on ambiguous boxes
    (whole-brain and white-matter boxes, where a one-pixel box shift changes the mask by 1-2%)."""
    if name != "fused":
        pytest.importorskip(name)
        monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    encoder = backends.build_encoder(reference, name)
    for (image, box), ref, fast in zip(cases, reference_masks, _masks(reference, encoder, cases)):
        assert ref.sum() > 100, "the reference mask should not be trivial"
        assert dice(fast, ref) >= 0.99, (name, box, dice(fast, ref))
    if name != "fused":  # exported into the per-user cache, keyed by checkpoint digest, not into the repo
        exported = list((tmp_path / "backends" / "onnx").glob("*.onnx"))
        assert [p.name for p in exported] == [backends.onnx_path(reference).name]
        assert cached_sha256(reference.checkpoint)[:16] in exported[0].name
    if name == "openvino":  # OpenVINO's compiled blob, in the per-user cache too, in the precision's folder
        assert any((tmp_path / "backends" / "openvino" / "f32").iterdir())


def test_openvino_bf16_runs_only_with_native_bf16(reference, tmp_path, monkeypatch):
    """OpenVINO silently computes float32 for a bf16 hint on CPUs without bf16: refused, not mislabelled."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    if not backends.bf16_native():
        with pytest.raises(BackendError, match="no native bf16"):
            backends.build_encoder(reference, "openvino-bf16")
        return
    encoder = backends.build_encoder(reference, "openvino-bf16")
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref = reference.network.image_encoder(x)
    out = encoder(x)
    assert out.shape == ref.shape and 0 < (out - ref).abs().max().item() < 0.2 * ref.abs().max().item()


def test_openvino_encode_can_be_cancelled(reference, tmp_path, monkeypatch):
    """cancel() makes the running encode raise Cancelled well before a whole encode's time; the encoder
    then gives the same embedding again, and cancel() with nothing running does nothing."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("SAMSEGMENTER_CACHE", str(tmp_path))
    encoder = backends.build_encoder(reference, "openvino")
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    assert encoder.cancel() is False
    start = time.perf_counter()
    expected = encoder(x)
    whole = time.perf_counter() - start
    outcome = {}

    def run() -> None:
        try:
            outcome["embedding"] = encoder(x)
        except Cancelled:
            outcome["cancelled_at"] = time.perf_counter()

    thread = threading.Thread(target=run)
    thread.start()
    while not encoder.cancel():  # True once it stopped a running encode
        assert thread.is_alive() or "embedding" not in outcome, "the encode ended before cancel() reached it"
        time.sleep(0.001)
    asked = time.perf_counter()
    thread.join(60)
    assert "embedding" not in outcome and outcome["cancelled_at"] - asked < whole, (outcome, whole)
    assert torch.equal(encoder(x), expected)


def test_fast_decoder_masks_match_reference_decoder(reference, cases, reference_masks, monkeypatch):
    assert reference.fast_decoder is not None
    monkeypatch.setattr(reference, "fast_decoder", None)
    slow = _masks(reference, reference.network.image_encoder, cases)
    for ref, fast in zip(slow, reference_masks):
        assert dice(fast, ref) >= 0.999


def test_fused_fp32_embedding_equals_reference(reference):
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    fused = fuse_tiny_vit(reference.network.image_encoder, onednn=onednn_available(), tile_rows=32)
    plain = fuse_tiny_vit(reference.network.image_encoder)
    with torch.inference_mode():
        ref = reference.network.image_encoder(x)
        for net in (fused, plain):
            assert (net(x) - ref).abs().max().item() < 1e-4
        assert reference.network.image_encoder.layers[1].blocks[0].mlp.fc1.weight.dtype == torch.float32


def test_bands_equal_whole_images(reference):
    """Bands with halo rows give the whole-image result (expansions, strided merges, MLPs), also when
    the height is not a multiple of the band, and for a batch."""
    encoder = reference.network.image_encoder
    banded, whole = fuse_tiny_vit(encoder, tile_rows=13), fuse_tiny_vit(encoder)
    block = banded.stages[0][0]
    x = torch.randn(2, 64, 40, 36).contiguous(memory_format=torch.channels_last)
    image = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        part = block(x)
        block.tile_rows = None
        assert torch.allclose(part, block(x), atol=1e-5)
        block.tile_rows = 13
        assert (banded(image) - whole(image)).abs().max().item() < 1e-4


@pytest.mark.parametrize("multimask", [False, True])
def test_fast_decoder_logits_match_reference(reference, multimask):
    """Points, box and mask input together; more prompt tokens than the folded attention pays for, too."""
    net = reference.network
    decoder = FastMaskDecoder(net.prompt_encoder, net.mask_decoder)
    generator = torch.Generator().manual_seed(2)
    image = torch.randn(1, 256, 64, 64, generator=generator)
    mask_input = torch.randn(1, 1, 256, 256, generator=generator)
    for count in (2, 20):
        points = (torch.rand(1, count, 2, generator=generator) * 255, torch.randint(0, 2, (1, count)))
        with torch.inference_mode():
            sparse, dense = net.prompt_encoder(points=points, boxes=torch.tensor([[30.0, 40.0, 200.0, 180.0]]),
                                               masks=mask_input)
            ref = net.mask_decoder(image_embeddings=image, image_pe=net.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=multimask)
            fast = decoder(image.contiguous(memory_format=torch.channels_last), sparse, dense, multimask)
        assert fast[0].shape == ref[0].shape and fast[1].shape == ref[1].shape
        assert torch.allclose(fast[0], ref[0], atol=1e-3, rtol=1e-4)
        assert torch.allclose(fast[1], ref[1], atol=1e-4)


def test_onnxruntime_absent_is_skipped_with_its_reason(reference, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(BackendError, match="onnxruntime is not installed"):
        backends.build_encoder(reference, "onnxruntime")
    monkeypatch.setattr(backends, "_Probe", _FakeProbe)
    trials = {t.backend: t for t in backends.measure(reference, ["onnxruntime", "fused"])}
    assert "not installed" in trials["onnxruntime"].error and trials["onnxruntime"].ms is None
    assert trials["fused"].error is None and trials["fused"].ms is not None


def test_openvino_absent_is_skipped_and_auto_falls_back(reference, cache_dir, monkeypatch):
    """Without openvino the backend says so, the decision key records it, and auto picks among the rest."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(BackendError, match="openvino is not installed"):
        backends.build_encoder(reference, "openvino")
    monkeypatch.setattr(backends, "_Probe", _FakeProbe)
    monkeypatch.setattr(backends, "candidates", lambda model: ["openvino", "fused"])
    real_build = backends.build_encoder  # openvino's real build; a fake fused (5 ms) and torch (10 ms)
    monkeypatch.setattr(backends, "build_encoder", lambda model, name: real_build(model, name) if name == "openvino"
                        else _fake_builder(set())(model, name))
    choice = backends.choose_backend(reference)
    trials = {t.backend: t for t in choice.trials}
    assert choice.backend == "fused" and "not installed" in trials["openvino"].error and trials["openvino"].ms is None


def test_openvino_is_not_imported_to_read_its_version():
    """The decision key names the OpenVINO version; reading it must not import the package (1 s, 129 modules)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from SAMSegmenterLib.models import openvino_backend as ob;"
            "print(ob.openvino_version(), 'openvino' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, timeout=300)
    version, imported = done.stdout.split()
    assert done.returncode == 0 and imported == "False", done.stderr
    assert version == (metadata.version("openvino") if importlib.util.find_spec("openvino") else "absent")


def test_engine_imports_without_onnxruntime_or_openvino():
    code = ("import sys; sys.modules['onnxruntime'] = sys.modules['openvino'] = None; sys.path.insert(0, sys.argv[1]);"
            "import SAMSegmenterLib, SAMSegmenterLib.models.backends, SAMSegmenterLib.models; print('ok')")
    done = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


class _FakeProbe:
    """Stands in for backends._Probe: runs nothing heavy, every encoder gives the same masks in 1 ms."""

    def __init__(self, model):
        self.model = model

    def run(self, encoder):
        return encoder(torch.zeros(1, 3, 8, 8)) if isinstance(encoder, _Broken) else torch.zeros(1)

    def masks(self, features):
        return [np.ones((4, 4), bool)]

    def time_ms(self, encoder):
        return {"torch": 10.0, "fused": 5.0}.get(getattr(encoder, "name", ""), 7.0)


class _Broken:
    """An encoder that raises at warm-up, as a backend with a missing operator would."""

    name = "broken"

    def __call__(self, x):
        raise RuntimeError("operator mkldnn::_convolution_pointwise is not available")


def _fake_builder(broken: set[str]):
    def build(model, name):
        if name in broken:
            return _Broken()
        encoder = lambda x: x  # noqa: E731
        encoder.name = name
        return encoder
    return build


def test_backend_failing_at_warm_up_is_not_chosen(reference, cache_dir, monkeypatch):
    monkeypatch.setattr(backends, "_Probe", _FakeProbe)
    monkeypatch.setattr(backends, "candidates", lambda model: ["onnxruntime", "fused"])
    monkeypatch.setattr(backends, "build_encoder", _fake_builder({"onnxruntime"}))
    choice = backends.choose_backend(reference)
    assert choice.backend == "fused"
    trials = {t.backend: t for t in choice.trials}
    assert "not available" in trials["onnxruntime"].error
    assert trials["torch"].ms == 10.0 and trials["fused"].ms == 5.0


def test_no_faster_candidate_keeps_reference(reference, cache_dir, monkeypatch):
    monkeypatch.setattr(backends, "_Probe", _FakeProbe)
    monkeypatch.setattr(backends, "build_encoder", _fake_builder({"fused"}))
    monkeypatch.setattr(backends, "candidates", lambda model: ["fused"])
    choice = backends.choose_backend(reference)
    assert choice.backend == "torch" and "no candidate" in choice.reason


def test_decision_is_remembered_per_user(reference, cache_dir, monkeypatch):
    calls = []

    def fake_measure(model, names):
        calls.append(names)
        return [Trial("torch", 10.0, 1.0), Trial("fused", 4.0, 0.999)]

    monkeypatch.setattr(backends, "measure", fake_measure)
    monkeypatch.setattr(backends, "candidates", lambda model: ["fused"])
    assert backends.choose_backend(reference).backend == "fused"
    assert (cache_dir / "choices.json").is_file()
    monkeypatch.setattr(backends, "_DECISIONS", {})  # a new process
    again = backends.choose_backend(reference)
    assert again.backend == "fused" and again.trials[1].ms == 4.0
    assert len(calls) == 1


def test_cached_choice_that_fails_is_measured_again(reference, cache_dir, monkeypatch):
    """A remembered backend that no longer warms up (say onnxruntime was uninstalled) is replaced."""
    monkeypatch.setitem(backends._DECISIONS, backends.decision_key(reference),
                        BackendChoice("onnxruntime", "cached"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(backends, "_Probe", _FakeProbe)
    monkeypatch.setattr(backends, "candidates", lambda model: ["onnxruntime", "fused"])
    real_build = backends.build_encoder
    monkeypatch.setattr(backends, "build_encoder",
                        lambda model, name: _fake_builder(set())(model, name) if name == "fused"
                        else real_build(model, name))
    encoder, name = backends.select_encoder(reference, "auto")
    assert name == "fused" and encoder.name == "fused"
    choice = backends._DECISIONS[backends.decision_key(reference)]
    assert choice.backend == "fused"
    assert "not installed" in {t.backend: t for t in choice.trials}["onnxruntime"].error


def _record(backend: str, passes: bool, machine: str = "test CPU") -> ground_truth_parity.Recorded:
    drop = 0.001 if passes else 0.02
    verdict = ground_truth_parity.Verdict(backend, 300, 0.80 - drop, 0.40 - drop, 0.80, 0.40)
    return ground_truth_parity.Recorded(verdict, "2026-11-29", machine)


@pytest.mark.parametrize("native", [False, True])
def test_lower_precision_is_a_candidate_only_after_passing_the_ground_truth_rule(reference, native, monkeypatch):
    """For float32 models, a bf16 backend is measured by auto only when every recorded ground-truth run
    passed (openvino-bf16 failed on one of its two CPUs) and the CPU has native bf16; bf16 models get the
    bf16 backends on such CPUs."""
    monkeypatch.setattr(backends, "bf16_native", lambda: native)
    monkeypatch.setattr(ground_truth_parity, "RECORDED", {"fused-mixed": (_record("fused-mixed", True),),
                                                          "fused-bf16": (_record("fused-bf16", False),),
                                                          "openvino-bf16": (_record("openvino-bf16", True),
                                                                            _record("openvino-bf16", False))})
    assert backends.candidates(reference) == ["fused", "onnxruntime", "openvino", *(["fused-mixed"] if native else [])]
    bf16_model = types.SimpleNamespace(spec=reference.spec, device=torch.device("cpu"), precision="bf16")
    assert backends.candidates(bf16_model) == (["fused-bf16", "openvino-bf16"] if native else [])
    assert "ground truth: fused-mixed" in backends.decision_key(reference)
    assert ("| native bf16 |" if native else "| no native bf16 |") in backends.decision_key(reference)


def test_choice_of_a_lower_precision_backend_says_it_passed_the_rule(reference, cache_dir, monkeypatch):
    monkeypatch.setattr(ground_truth_parity, "RECORDED", {"fused-mixed": (_record("fused-mixed", True),
                                                                          _record("fused-mixed", True, "other CPU"))})
    monkeypatch.setattr(backends, "candidates", lambda model: ["fused", "fused-mixed"])
    monkeypatch.setattr(backends, "measure", lambda model, names: [Trial("torch", 10.0, 1.0), Trial("fused", 5.0, 1.0),
                                                                   Trial("fused-mixed", 4.0, 0.995)])
    choice = backends.choose_backend(reference)
    assert choice.backend == "fused-mixed"
    assert "passes the ground-truth rule on 300 boxes" in choice.reason and "2026-11-29" in choice.reason
    assert "test CPU" in choice.reason and "other CPU" in choice.reason


def test_bf16_backends_need_native_bf16_unless_emulated(reference, monkeypatch):
    """Without native bf16 the fused bf16 backends are refused; SAMSEGMENTER_EMULATE_BF16=1 (accuracy runs)
    builds them on PyTorch's generic kernels, with the same bf16 weights."""
    monkeypatch.setattr(backends, "bf16_native", lambda: False)
    monkeypatch.delenv(backends.EMULATE_BF16_ENV, raising=False)
    with pytest.raises(BackendError, match="native bf16"):
        backends.build_encoder(reference, "fused-bf16")
    monkeypatch.setenv(backends.EMULATE_BF16_ENV, "1")
    encoder = backends.build_encoder(reference, "fused-bf16")
    assert not encoder.onednn and all(p.dtype == torch.bfloat16 for p in encoder.parameters())


def test_mixed_precision_is_between_fp32_and_bf16_on_real_slices(reference, cases, reference_masks):
    """fused-mixed (bf16 matrix products, float32 residual stream) stays within Dice 0.975 of the
    reference masks (0.980 measured on these cases), closer than all-bf16 (0.939), on the ambiguous boxes
    too; it needs native bf16."""
    if not backends.bf16_native():
        with pytest.raises(BackendError, match="native bf16"):
            backends.build_encoder(reference, "fused-mixed")
        return
    mixed = backends.build_encoder(reference, "fused-mixed")
    low = {id(p) for layer in mixed.mixed_precision_layers() for p in layer.parameters()}
    assert low and all((p.dtype == torch.bfloat16) == (id(p) in low) for p in mixed.parameters())
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert mixed(x).dtype == torch.float32
    worst = {}
    for name, encoder in (("fused-mixed", mixed), ("fused-bf16", backends.build_encoder(reference, "fused-bf16"))):
        worst[name] = min(dice(a, b) for a, b in zip(_masks(reference, encoder, cases), reference_masks))
    assert worst["fused-mixed"] >= 0.975 and worst["fused-mixed"] > worst["fused-bf16"], worst


def test_explicit_backends_and_devices(reference):
    with pytest.raises(BackendError, match="unknown backend"):
        backends.select_encoder(reference, "tensorrt")
    gpu = types.SimpleNamespace(spec=reference.spec, device=torch.device("cuda"))
    assert backends.candidates(gpu) == []  # CUDA/MPS: auto keeps torch with the model's autocast
    vit = types.SimpleNamespace(spec=types.SimpleNamespace(architecture="vit_b"), device=torch.device("cpu"))
    assert backends.candidates(vit) == []
    assert backends.choose_backend(gpu).backend == "torch"
    with pytest.raises(BackendError, match="CPU only"):
        backends.build_encoder(gpu, "onnxruntime")


def test_auto_model_is_a_distinct_cached_model(litemedsam, reference):
    assert load_model("litemedsam", device="cpu", backend="torch") is reference
    assert reference.backend == "torch" and reference.key[-1] == "torch"
    assert litemedsam.backend in backends.BACKENDS and litemedsam is not reference
