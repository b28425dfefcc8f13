"""The two kinds of structure a propagation can be told it segments (``structure_options``), on a real tumour.

The tumour is pyradiomics' first glioblastoma (post-contrast T1 MR, 0.78 x 0.78 x 6.5 mm, a hand-drawn label on 7
slices; benchmarks/data/pyradiomics): a box on its middle slice, walked both ways without a range, as a user who
presses *Propagate both ways* does. Only the slices the walks reach are embedded (one cache for both runs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import dice

from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.io import read_volume
from SAMSegmenterLib.predictor import SlicePredictor
from SAMSegmenterLib.prompts import Prompt, box_from_mask
from SAMSegmenterLib.propagation import STRUCTURES, PropagationOptions, propagate, structure_options
from SAMSegmenterLib.propagation.postprocess import largest_component

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "pyradiomics"


@pytest.fixture(scope="module")
def tumour(litemedsam):
    """(predictor on the MR volume [k, j, i], the tumour's label, its middle slice)."""
    volume, _ = read_volume(DATA / "brain1_image.nrrd")
    label, _ = read_volume(DATA / "brain1_label.nrrd")
    target = largest_component(label > 0)
    occupied = np.flatnonzero(target.any(axis=(1, 2)))
    return SlicePredictor(litemedsam, volume.astype(np.float32)), target, int(occupied[len(occupied) // 2])


def test_structure_options():
    assert STRUCTURES == ("anatomy", "compact")
    assert structure_options() == structure_options("anatomy") == PropagationOptions()
    compact = structure_options("compact")
    assert (compact.box_margin, compact.shrink_fraction, compact.box_fraction) == (3.0, 0.0, 0.0)
    assert compact.max_intensity_shift == PropagationOptions().max_intensity_shift  # the same stops
    assert structure_options("compact", min_iou=None, box_margin=4).box_margin == 4
    with pytest.raises(InputError, match="structure must be one of anatomy, compact"):
        structure_options("tumor")
    with pytest.raises(InputError, match="unknown propagation option"):
        structure_options("compact", box_margn=2)


@pytest.mark.slow
def test_a_free_walk_on_a_tumour_stays_on_it_with_the_compact_structure(tumour):
    predictor, target, seed = tumour
    box = box_from_mask(target[seed])
    walks = {structure: propagate(predictor, 0, seed, seed_prompt=Prompt(box=box), options=structure_options(structure))
             for structure in STRUCTURES}
    scores = {structure: dice(result.mask, target) for structure, result in walks.items()}
    # measured (2026-12-07, Intel Xeon, fused-mixed, openvino and torch alike): anatomy 0.30 (its walk down ran on
    # through the brain to the volume's first slice), compact 0.76; the tight box keeps the mask off the
    # enhancing tissue around the tumour, and the walk stops near its ends
    assert scores["compact"] > scores["anatomy"] + 0.2, scores
    compact = walks["compact"]
    stops = set(compact.stop_reasons.values())
    assert stops <= {"low_iou", "appearance", "empty", "no_structure"}, compact.stop_details
    occupied = np.flatnonzero(target.any(axis=(1, 2)))
    assert occupied[0] - 3 <= min(compact.slices) and max(compact.slices) <= occupied[-1] + 3, compact.slices
