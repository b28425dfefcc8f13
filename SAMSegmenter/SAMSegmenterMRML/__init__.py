"""Qt-free Slicer layer of SAMSegmenter: MRML geometry, prompts, segment writing and the scripting logic.

``from SAMSegmenterMRML import SAMSegmenterLogic`` imports the logic (and with it PyTorch) on
first use only, so the dependency check (``SAMSegmenterMRML.dependencies``) works without PyTorch.
"""


def __getattr__(name: str):
    if name == "SAMSegmenterLogic":
        from .logic import SAMSegmenterLogic

        return SAMSegmenterLogic
    raise AttributeError(f"module 'SAMSegmenterMRML' has no attribute {name!r}")
