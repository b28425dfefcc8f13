"""SAM/MedSAM ViT models from a user's checkpoint, and their preprocessing.

The official weights (375 MB to 2.5 GB) cannot be downloaded here, so the
checkpoint is segment-anything's own ViT-B with its initial weights, saved as a
user would save a fine-tuned model: the loading, 1024-pixel preprocessing and
point prompts all run for real; mask quality is not what is tested.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SAMSegmenterLib.models import MODEL_SPECS, load_model, unload_model
from SAMSegmenterLib.models import segment_anything as _segment_anything
from SAMSegmenterLib.models.preprocess import image_tensor
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt


def test_preprocessing_of_each_family():
    sam = MODEL_SPECS["sam_vit_b"].preprocessing
    medsam = MODEL_SPECS["medsam_vit_b"].preprocessing
    lite = MODEL_SPECS["litemedsam"].preprocessing
    assert sam.input_size((300, 400)) == (768, 1024)
    assert lite.input_size((300, 400)) == (192, 256)
    assert medsam.input_size((300, 400)) == (1024, 1024)  # MedSAM stretches
    np.testing.assert_allclose(medsam.scale_xy((300, 400), (1024, 1024)), [1024 / 400, 1024 / 300])
    image = np.linspace(0, 1, 300 * 400, dtype=np.float32).reshape(300, 400)
    x, size = image_tensor(sam, image, torch.device("cpu"))
    assert x.shape == (1, 3, 1024, 1024) and size == (768, 1024)
    assert float(x[0, 0, 800:].abs().max()) == 0.0  # padded rows at the bottom
    x, _ = image_tensor(lite, image * 5 + 3, torch.device("cpu"))
    assert float(x.min()) == 0.0 and float(x.max()) == pytest.approx(1.0)


@pytest.mark.slow
def test_sam_vit_b_from_user_checkpoint(tmp_path):
    torch.manual_seed(0)
    network = _segment_anything.build_sam().sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path / "my_sam_vit_b.pth"
    torch.save(network.state_dict(), path)
    del network
    model = load_model("sam_vit_b", device="cpu", checkpoint=path)
    try:
        assert model.spec.preprocessing.size == 1024
        volume = np.random.default_rng(0).random((1, 90, 120)).astype(np.float32)
        predictor = SlicePredictor(model, volume)
        result = predictor.predict(0, 0, Prompt(points=[(60, 45), (5, 5)], labels=[1, 0]))
        assert result.masks.shape == (4, 90, 120) and np.isfinite(result.scores).all()
        assert (result.selection, result.index) == ("single", 0)  # several points: SAM's single output
        result = predictor.predict(0, 0, Prompt(points=[(60, 45)]))
        assert result.selection == "best_score" and result.index in (1, 2, 3)  # one point is ambiguous
    finally:
        unload_model(model)
