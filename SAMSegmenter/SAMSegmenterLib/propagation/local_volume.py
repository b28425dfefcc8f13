"""A volume in this process with the interface the service client's ``RemoteVolume`` has.

``predict`` and ``prefetch`` come from :class:`~SAMSegmenterLib.predictor.SlicePredictor`;
``propagate`` and ``propagate_between`` run the walks of :mod:`.walk` on it. Front ends and
commands that may work in this process or through the service hold one of the two and call
the same methods. The walk is built on the predictor, not the other way round: the predictor
itself knows nothing of propagation.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..predictor import SlicePredictor
from .plan import PropagationResult
from .walk import propagate, propagate_between


class LocalVolume(SlicePredictor):
    """A :class:`SlicePredictor` that also propagates (same arguments as :func:`.walk.propagate` and
    :func:`.walk.propagate_between`, without the predictor)."""

    def propagate(self, axis: int | str, seed_index: int, **kwargs: Any) -> PropagationResult:
        return propagate(self, axis, seed_index, **kwargs)

    def propagate_between(self, axis: int | str, key_masks: Mapping[int, np.ndarray],
                          **kwargs: Any) -> PropagationResult:
        return propagate_between(self, axis, key_masks, **kwargs)
