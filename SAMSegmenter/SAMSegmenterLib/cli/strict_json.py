"""One JSON object per line that any strict parser accepts: NaN and infinities become ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON; every summary the command
line prints or writes goes through :func:`dumps`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import numpy as np


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (also inside dicts, lists and tuples) replaced by None,
    and numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, indent: Optional[int] = None) -> str:
    """Strict JSON text of ``value`` (see :func:`finite`)."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)
