"""A walk into an empty-looking region stops (``no_structure``), and only there.

On the MNI152 template a 3x3 box on the black background used to be propagated through every
slice of the range: LiteMedSAM returns a confident blob on a blank image, and no criterion fired.
"""

from __future__ import annotations

import numpy as np
import pytest

from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.models.registry import get_spec
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt
from SAMSegmenterLib.propagation import PropagationOptions, propagate, structure_stop


@pytest.fixture(scope="module")
def predictor(litemedsam, mni152):
    return SlicePredictor(litemedsam, mni152[0])


def test_box_on_the_empty_background_stops_at_once(predictor):
    """Before: 11 slices of blobs between 84 and 104 (the walk up stopped only on low IoU at 94 + 10)."""
    result = propagate(predictor, 0, 94, seed_prompt=Prompt(box=(10, 200, 12, 202)), slice_range=(84, 104))
    assert result.slices == [94]
    assert result.stop_reasons == {"up": "no_structure", "down": "no_structure"}
    assert result.stop_details["up"].startswith("slice 95: the box holds no image structure (intensity spread 0.0000")
    assert result.encoder_calls == 1 and result.slices_visited == 1  # the stopped slices were not even encoded
    off = propagate(predictor, 0, 94, seed_prompt=Prompt(box=(10, 200, 12, 202)), slice_range=(84, 104),
                    options=PropagationOptions(min_contrast=None))
    # without it, the model is run on the black slices and only the mask criteria can stop the walk
    assert off.slices_visited > 1 and "no_structure" not in off.stop_reasons.values()


def test_structure_test_passes_real_anatomy(predictor, mni152_masks):
    """Every slice of the brain mask, boxed: far above the threshold (the lowest measured on the benchmark's
    walks was 0.013, against 1/256 = 0.0039)."""
    brain = mni152_masks["brain"]
    options = PropagationOptions()
    for index in range(5, 180, 5):
        if brain[index].any():
            assert structure_stop(predictor.slice_image(0, index), brain[index], options) is None, index


def test_min_contrast_is_checked():
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(InputError, match="min_contrast"):
            PropagationOptions(min_contrast=bad).check(get_spec("litemedsam"))
    PropagationOptions(min_contrast=None).check(get_spec("litemedsam"))
    assert np.isclose(PropagationOptions().min_contrast, 1 / 256)
