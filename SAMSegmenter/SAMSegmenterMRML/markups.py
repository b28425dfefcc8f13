"""Markups nodes that show the prompts of one slice: include points, exclude points and a box.

The nodes are locked (display only: the effect owns the interaction), hidden from node
selectors and not saved with the scene. Positions are world RAS.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import numpy as np
import slicer

INCLUDE_COLOR = (0.2, 0.9, 0.3)
EXCLUDE_COLOR = (0.95, 0.2, 0.2)
BOX_COLOR = (1.0, 0.85, 0.1)


@contextlib.contextmanager
def _active_place_node_kept(scene: slicer.vtkMRMLScene) -> Iterator[None]:
    """Restore the selection node's active place node (and its class) after adding markups nodes.

    vtkSlicerMarkupsLogic::OnMRMLSceneNodeAdded calls SetActiveList on every markups node added outside
    batch processing, so the toolbar's place tool would target our hidden, locked prompt nodes.
    """
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    if selection is None:
        yield
        return
    node_id, class_name = selection.GetActivePlaceNodeID(), selection.GetActivePlaceNodeClassName()
    try:
        yield
    finally:
        if selection.GetActivePlaceNodeClassName() != class_name:
            selection.SetReferenceActivePlaceNodeClassName(class_name)
        if selection.GetActivePlaceNodeID() != node_id:
            selection.SetActivePlaceNodeID(node_id)


def _display_only(node: slicer.vtkMRMLMarkupsNode, color: tuple[float, float, float]) -> None:
    node.CreateDefaultDisplayNodes()
    node.SetLocked(True)
    node.SetHideFromEditors(True)
    node.SetSaveWithScene(False)
    display = node.GetDisplayNode()
    display.SetColor(*color)
    display.SetSelectedColor(*color)
    display.SetPointLabelsVisibility(False)
    display.SetPropertiesLabelVisibility(False)


class PromptMarkups:
    """Include/exclude point lists and a box outline (closed linear curve) in a scene."""

    def __init__(self, scene: slicer.vtkMRMLScene) -> None:
        self.scene = scene
        with _active_place_node_kept(scene):  # the Markups logic makes every added markups node the active one
            self.include = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "SAM include")
            self.exclude = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "SAM exclude")
            self.box = scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", "SAM box")
        self.box.SetCurveTypeToLinear()
        for node, color in ((self.include, INCLUDE_COLOR), (self.exclude, EXCLUDE_COLOR), (self.box, BOX_COLOR)):
            _display_only(node, color)
        self._order: list[tuple[bool, int]] = []  # (include?, index in its node), in the order added

    def add_point(self, ras: np.ndarray, include: bool) -> None:
        """Add a point at world RAS ``ras`` (3,)."""
        node = self.include if include else self.exclude
        index = node.AddControlPointWorld(*[float(v) for v in ras])
        self._order.append((include, index))

    def set_box(self, corners_ras: np.ndarray) -> None:
        """Show the box through its (4, 3) world RAS corners, in drawing order."""
        self.box.RemoveAllControlPoints()
        for corner in np.asarray(corners_ras, dtype=float).reshape(-1, 3):
            self.box.AddControlPointWorld(*corner)

    def points(self) -> tuple[np.ndarray, list[int]]:
        """(N, 3) world RAS of the points in the order added, and their labels (1 include, 0 exclude)."""
        positions = []
        for include, index in self._order:
            node = self.include if include else self.exclude
            position = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(index, position)
            positions.append(position)
        return np.asarray(positions, dtype=float).reshape(-1, 3), [int(include) for include, _ in self._order]

    def box_corners(self) -> Optional[np.ndarray]:
        """(M, 3) world RAS corners of the box, or None."""
        if self.box.GetNumberOfControlPoints() == 0:
            return None
        return slicer.util.arrayFromMarkupsControlPoints(self.box, world=True).copy()

    def is_empty(self) -> bool:
        return not self._order and self.box.GetNumberOfControlPoints() == 0

    def clear(self) -> None:
        for node in (self.include, self.exclude, self.box):
            node.RemoveAllControlPoints()
        self._order = []

    def remove(self) -> None:
        """Remove the nodes from the scene."""
        for node in (self.include, self.exclude, self.box):
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self._order = []
