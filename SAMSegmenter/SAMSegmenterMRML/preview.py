"""The preview of a SAM result: a separate segmentation node with one segment.

The node is hidden from node selectors and not saved with the scene. It lives under the
same parent transform as the edited segmentation, so it overlays it exactly.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import slicer

from .geometry import volume_shape
from .labelmaps import Slab, oriented_labelmap, volume_ijk_to_segmentation

PREVIEW_SEGMENT_ID = "SAMPreview"


class PreviewSegmentation:
    """Shows a mask computed on a volume's grid over the segmentation being edited."""

    def __init__(self, scene: slicer.vtkMRMLScene, opacity: float = 0.6) -> None:
        self.scene = scene
        self.opacity = opacity
        self.node: Optional[slicer.vtkMRMLSegmentationNode] = None

    def _ensure_node(self, segmentation_node: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLSegmentationNode:
        if self.node is None or self.node.GetScene() is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "SAM preview")
            node.SetHideFromEditors(True)
            node.SetSaveWithScene(False)
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetVisibility2DOutline(True)
            node.GetDisplayNode().SetVisibility3D(False)
            node.GetSegmentation().AddEmptySegment(PREVIEW_SEGMENT_ID)
            self.node = node
        parent = segmentation_node.GetParentTransformNode()
        self.node.SetAndObserveTransformNodeID(parent.GetID() if parent is not None else None)
        return self.node

    def show(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        slab_mask: np.ndarray,
        slab: Slab,
        color: tuple[float, float, float],
    ) -> None:
        """Display ``slab_mask`` (bool [k, j, i] of the slab of ``volume_node``) in ``color``."""
        node = self._ensure_node(segmentation_node)
        shape = volume_shape(volume_node)
        labelmap = oriented_labelmap(
            np.asarray(slab_mask, dtype=bool),
            slab.extent(shape),
            volume_ijk_to_segmentation(volume_node, segmentation_node),
        )
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            labelmap, node, PREVIEW_SEGMENT_ID, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
        )
        node.GetSegmentation().GetSegment(PREVIEW_SEGMENT_ID).SetColor(*color)
        node.GetDisplayNode().SetOpacity(self.opacity)
        node.GetDisplayNode().SetVisibility(True)

    def hide(self) -> None:
        if self.node is not None and self.node.GetScene() is not None:
            self.node.GetDisplayNode().SetVisibility(False)

    def remove(self) -> None:
        """Remove the preview node from the scene."""
        if self.node is not None and self.node.GetScene() is not None:
            self.scene.RemoveNode(self.node)
        self.node = None
