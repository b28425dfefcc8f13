"""SAMSegmenter engine: Segment Anything models on 3D medical volumes (numpy + torch, no Slicer).

Typical use::

    from SAMSegmenterLib import load_model, SlicePredictor, Prompt
    model = load_model("litemedsam")                 # embedded weights, auto device
    predictor = SlicePredictor(model, volume)       # volume: array [k, j, i]
    result = predictor.predict(0, 40, Prompt(box=(30, 20, 90, 75)))   # x = column, y = row
    result.mask, result.score
"""

from .cache import EmbeddingCache
from .errors import (Cancelled, CheckpointError, DeviceError, InputError, ModelError, PromptError,
                     SAMSegmenterError)
from .models import MODEL_SPECS, SamModel, load_model, unload_model
from .predictor import SlicePrediction, SlicePredictor
from .prompts import Prompt, box_from_mask
from .windowing import Window

__all__ = [
    "Cancelled", "CheckpointError", "DeviceError", "EmbeddingCache", "InputError", "MODEL_SPECS", "ModelError",
    "Prompt", "PromptError", "SAMSegmenterError", "SamModel", "SlicePrediction", "SlicePredictor", "Window",
    "box_from_mask", "load_model", "unload_model",
]
