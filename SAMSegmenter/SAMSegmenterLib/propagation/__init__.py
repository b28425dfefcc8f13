"""3D propagation: from prompted slices to a volume (docs/propagation.md).

- :mod:`.plan`: options, results, directions, slice ranges and which key slices an edit affects
  (no torch: the service client and the MRML layer use it).
- :mod:`.walk`: the walks themselves (:func:`~.walk.propagate`, :func:`~.walk.propagate_between`),
  per-slice prompts and stop criteria.
- :mod:`.postprocess`: connected components and hole filling (SimpleITK).

Every public name of :mod:`.plan` and :mod:`.walk` is importable from here
(``from SAMSegmenterLib.propagation import propagate, PropagationOptions``), imported on first
use (PEP 562) so that importing :mod:`.plan` alone stays light.
"""

import importlib


def __getattr__(name: str):
    if not name.startswith("_"):
        for module in (".plan", ".walk"):
            found = getattr(importlib.import_module(module, __name__), name, None)
            if found is not None:
                globals()[name] = found
                return found
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
