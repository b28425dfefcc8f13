"""Segment Editor effect "SAM" (registered by the SAMSegmenter module)."""

from .SegmentEditorEffect import SegmentEditorEffect

__all__ = ["SegmentEditorEffect"]
