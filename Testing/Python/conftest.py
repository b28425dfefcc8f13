"""Shared fixtures: the real LiteMedSAM model and real sample volumes, loaded once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "SAMSegmenter"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

torch = pytest.importorskip("torch")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def litemedsam():
    """The embedded LiteMedSAM on the CPU (fp32)."""
    from SAMSegmenterLib.models import load_model

    return load_model("litemedsam", device="cpu")


@pytest.fixture(scope="session")
def mni152():
    """MNI152 T1 template as (array [k, j, i] float32, Geometry)."""
    from SAMSegmenterLib.io.sample_data import load_sample

    return load_sample("mni152")


@pytest.fixture(scope="session")
def mni152_masks():
    """nilearn's brain, grey- and white-matter masks on the template grid, as bool [k, j, i] arrays.

    They come from tissue probability maps, so as ground truth they are imperfect.
    """
    from SAMSegmenterLib.io.sample_data import load_sample

    return {name: load_sample(f"mni152_{name}")[0] > 0 for name in ("brain", "gm", "wm")}


@pytest.fixture(scope="session")
def ct_small():
    """pydicom's real CT slice (128 x 128, HU) as a one-slice volume [1, 128, 128] and its geometry."""
    from SAMSegmenterLib.io.sample_data import load_sample

    return load_sample("ct_small")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)
