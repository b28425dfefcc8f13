"""Qt-free Slicer layer of SAMSegmenter: MRML geometry, prompts, segment writing and the scripting logic."""
