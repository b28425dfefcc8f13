"""What each slice view shows at its edges: orientation letters and the slice it cuts.

`view_annotations` turns a slice view's SliceToRAS matrix and the volume's geometry into the
labels the page draws over the view (trame state key ``web_view_info``, one entry per view):
the anatomical direction at each edge (R/L, A/P, S/I: the dominant world axis of the screen's
x and y directions) and "K = 30 (0-188)" for the volume slice shown (array index along the
axis perpendicular to the view, as in the SAM panel and *Limit to slices*), or "not a volume
slice" (an oblique plane, or one outside the volume).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from SAMSegmenterLib.errors import SAMSegmenterError
from SAMSegmenterMRML.geometry import view_slice

POSITIVE, NEGATIVE = "RAS", "LPI"


def direction_letter(vector: np.ndarray) -> str:
    """The letter of the world direction (3,) ``vector`` points to most (R, A, S positive; L, P, I negative)."""
    axis = int(np.argmax(np.abs(vector)))
    return POSITIVE[axis] if vector[axis] > 0 else NEGATIVE[axis]


def view_annotations(
    slice_to_ras: np.ndarray, ijk_to_world: Optional[np.ndarray], shape_kji: Optional[Sequence[int]]
) -> dict[str, str]:
    """{"left", "right", "top", "bottom", "slice"} labels of a slice view (see the module docstring).

    slice_to_ras: (4, 4) SliceToRAS of the view's slice node (columns: screen x, screen y, normal, origin).
    ijk_to_world, shape_kji: the volume's (4, 4) IJK-to-RAS matrix and [k, j, i] shape, or None (no volume).
    """
    matrix = np.asarray(slice_to_ras, dtype=float)
    x, y = matrix[:3, 0], matrix[:3, 1]
    labels = {
        "right": direction_letter(x),
        "left": direction_letter(-x),
        "top": direction_letter(y),
        "bottom": direction_letter(-y),
        "slice": "",
    }
    if ijk_to_world is not None and shape_kji is not None:
        try:
            ref = view_slice(matrix, ijk_to_world, shape_kji)
        except SAMSegmenterError:
            labels["slice"] = "not a volume slice"  # oblique, or outside the volume
        else:
            labels["slice"] = f"{ref.axis_name} = {ref.index} (0-{int(shape_kji[ref.axis]) - 1})"
    return labels
