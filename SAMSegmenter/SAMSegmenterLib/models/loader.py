"""Loading a model and its encode/decode interface.

One loaded model is kept per (name, device, precision, checkpoint, backend) and
reused; :func:`unload_model` frees it. The image encoder runs on a backend chosen
per machine (see :mod:`backends`), the mask decoder through :mod:`fast_decoder`.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import threading
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..prompts import Prompt
from . import segment_anything
from .allocator import keep_freed_memory
from .backends import select_encoder
from .blas_threads import one_blas_thread
from .checkpoints import check_weights_file, resolve_checkpoint
from .devices import check_precision, resolve_device
from .embedding import Decoded, ImageEmbedding
from .fast_decoder import checked_fast_decoder
from .preprocess import image_tensor, masks_to_original
from .registry import ModelSpec, get_spec

Encoder = Callable[[torch.Tensor], torch.Tensor]


class LiteMedSAM(nn.Module):
    """TinyViT image encoder with SAM's prompt encoder and mask decoder (checkpoint key layout)."""

    def __init__(self) -> None:
        super().__init__()
        from .tiny_vit import TinyViT

        sam = segment_anything.modeling()
        self.image_encoder = TinyViT()
        self.prompt_encoder = sam.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                                input_image_size=(256, 256), mask_in_chans=16)
        self.mask_decoder = sam.MaskDecoder(
            num_multimask_outputs=3, transformer=sam.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                       num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)


def build_network(spec: ModelSpec) -> nn.Module:
    """The untrained network of ``spec`` (LiteMedSAM, or segment-anything's SAM ViT)."""
    if spec.architecture == "tiny_vit":
        return LiteMedSAM()
    return segment_anything.build_sam().sam_model_registry[spec.architecture](checkpoint=None)


def _misfit(network: nn.Module, state: dict) -> str:
    """Why ``state`` does not fit ``network``: missing or unexpected tensor names, or a tensor of another shape."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the model's {len(expected)} tensors are missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) the model does not have (e.g. {unexpected[0]})")
        return ", ".join(parts)
    for key, tensor in expected.items():
        given = state[key]
        if not isinstance(given, torch.Tensor):
            return f"{key} is a {type(given).__name__}, not a tensor"
        if tuple(given.shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(given.shape)}, the model's {tuple(tensor.shape)}"
    return "its tensors cannot be copied into the model"


def load_weights(network: nn.Module, path: Path) -> None:
    """Load a plain state dict (or ``{"model": state dict}``) into ``network``; CheckpointError says why not.

    Only tensors are unpickled (``weights_only=True``): a checkpoint that needs arbitrary
    code to load is refused, never executed.
    """
    check_weights_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: our message says what matters
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only refuses: code or classes other than tensors
        text = str(exc)
        reason = ("holds Python objects other than tensors, which are not loaded for safety"
                  if "Unsupported global" in text or "weights_only" in text else "is damaged (its pickled data)")
        raise CheckpointError(f"checkpoint {path} {reason}; a PyTorch weights file (state dict) is needed") from None
    except Exception as exc:  # truncated or damaged archive, anything else torch cannot read
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        first = first.split(". ")[0].rstrip(".")
        raise CheckpointError(f"checkpoint {path} is truncated or damaged ({first}); a complete PyTorch weights "
                              "file (state dict) is needed") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict of weights")
    try:
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError):
        raise CheckpointError(f"checkpoint {path} does not fit this model: {_misfit(network, state)}") from None


class SamModel:
    """A loaded SAM-family network on one device, with its preprocessing.

    Create with :func:`load_model`. ``encode`` and ``decode`` keep no state between
    calls, so one thread may encode while another decodes. ``encoder`` computes image
    embeddings (``backend`` names it, see :mod:`backends`); ``fast_decoder`` is the
    checked fast mask decoder, or None where the reference decoder is used.
    """

    def __init__(self, spec: ModelSpec, network: nn.Module, device: torch.device, precision: str,
                 checkpoint: Path):
        self.spec = spec
        self.network = network.eval().to(device)
        self.device = device
        self.precision = precision
        self.dtype = check_precision(precision, device)
        self.checkpoint = checkpoint
        self.encoder: Encoder = self.network.image_encoder
        self.backend = "torch"
        self.fast_decoder = checked_fast_decoder(self.network.prompt_encoder, self.network.mask_decoder)

    def with_encoder(self, encoder: Encoder, backend: str) -> SamModel:
        """The same network and decoder with another image encoder (named ``backend``)."""
        model = copy.copy(self)
        model.encoder, model.backend = encoder, backend
        return model

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity used by caches: (name, device, precision, checkpoint, backend)."""
        return (self.name, str(self.device), self.precision, str(self.checkpoint), self.backend)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this model's precision (none for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Embed one (H, W) = (rows, columns) slice windowed to [0, 1]."""
        x, input_size = image_tensor(self.spec.preprocessing, image, self.device)
        return self.embed(x, tuple(image.shape), input_size, self.encoder)

    @torch.inference_mode()
    def embed(self, x: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int],
              encoder: Encoder) -> ImageEmbedding:
        """Run ``encoder`` on a prepared (1, 3, S, S) input under this model's autocast."""
        with self.autocast():
            features = encoder(x)
        features = features.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        return ImageEmbedding(features, original_size, input_size)

    def decode(self, embedding: ImageEmbedding, prompt: Prompt, multimask: bool = False) -> Decoded:
        """Masks for ``prompt`` (slice pixel coordinates, x = column, y = row) on an embedded slice.

        Returns 1 mask (``multimask=False``, what LiteMedSAM and MedSAM were tuned
        for) or SAM's 3 candidate masks, each with its predicted IoU.
        """
        count = self.network.mask_decoder.num_mask_tokens
        return self._decode(embedding, prompt, range(1, count) if multimask else range(0, 1))

    def decode_candidates(self, embedding: ImageEmbedding, prompt: Prompt) -> Decoded:
        """All four outputs of one decoder pass: the single output (index 0), then SAM's three
        multimask outputs (1-3), each with its predicted IoU (see :mod:`selection`)."""
        return self._decode(embedding, prompt, range(0, self.network.mask_decoder.num_mask_tokens))

    @torch.inference_mode()
    def _decode(self, embedding: ImageEmbedding, prompt: Prompt, selected: range) -> Decoded:
        prompt.validate(embedding.original_size)
        if len(prompt.points):
            self.spec.require_points_support()
        pre = self.spec.preprocessing
        scale = np.asarray(pre.scale_xy(embedding.original_size, embedding.input_size))
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
        with self.autocast():
            sparse, dense = net.prompt_encoder(points=points, boxes=boxes, masks=masks)
            if self.fast_decoder is not None:
                low_res, iou = self.fast_decoder.predict_outputs(embedding.features, sparse, dense, selected)
            else:
                low_res, iou = net.mask_decoder.predict_masks(
                    image_embeddings=embedding.features, image_pe=net.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
                low_res, iou = low_res[:, selected.start:selected.stop], iou[:, selected.start:selected.stop]
        low_res = low_res.float()
        logits = masks_to_original(pre, low_res, embedding.original_size, embedding.input_size)
        return Decoded(masks=(logits[0] > 0).cpu().numpy(), scores=iou[0].float().cpu().numpy(),
                       low_res_logits=low_res[0].cpu().numpy())


_LOADED: dict[tuple[str, str, str, str, str], SamModel] = {}
_LOAD_LOCK = threading.Lock()


def load_model(name: str = "litemedsam", device: str | torch.device = "auto", precision: str = "fp32",
               checkpoint: str | Path | None = None, backend: str = "auto") -> SamModel:
    """Load (once) and return model ``name`` on ``device`` at ``precision``.

    Args:
        name: a registered model (:data:`registry.MODEL_NAMES`).
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32`` (default), ``fp16`` (CUDA/MPS) or ``bf16`` (CUDA/CPU), via autocast.
        checkpoint: a weights file to use instead of the embedded/cached one.
        backend: the image encoder's implementation: ``auto`` (the fastest one that gives
            the reference's masks on this machine, measured once and remembered), ``torch``
            (the reference network) or another name of :data:`registry.BACKENDS`.

    Returns:
        The loaded :class:`SamModel`; the same object for the same arguments. On the CPU the process
        then keeps the memory it frees for the next slice (:mod:`.allocator`).

    Raises:
        ModelError, CheckpointError, DeviceError: unknown model, missing or unreadable
        weights, unavailable device or precision, a backend that cannot run here.
    """
    spec = get_spec(name)
    dev = resolve_device(device)
    check_precision(precision, dev)
    path = resolve_checkpoint(name, checkpoint)
    if dev.type == "cpu":
        keep_freed_memory()
        one_blas_thread()
    key = (name, str(dev), precision, str(path.resolve()), backend)
    with _LOAD_LOCK:
        if key not in _LOADED:
            network = build_network(spec)
            load_weights(network, path)
            reference = SamModel(spec, network, dev, precision, path.resolve())
            encoder, chosen = select_encoder(reference, backend)
            _LOADED[key] = reference.with_encoder(encoder, chosen)
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
