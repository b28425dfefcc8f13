"""SAMSegmenterLogic: segment volumes in an MRML scene with a SAM model, for scripts (no Qt).

Console use (Slicer's Python console, or slicer-core)::

    from SAMSegmenterMRML import SAMSegmenterLogic
    logic = SAMSegmenterLogic()                                   # LiteMedSAM, in the inference service
    volume = slicer.util.getNode("MRHead")
    r = logic.segment(volume, box=[(-20, 10, 5), (15, 40, 5)], segment="tumour")   # RAS corners
    r = logic.propagate(volume, box=slicer.util.getNode("R"), segment="tumour")    # a markups ROI
    print(r.slices, r.stop_reasons)
    logic.undo(r.segmentation)

Everything after the volume node is a keyword. ``segmentation`` is created (and shown) when omitted;
``segment`` is a segment ID or name, created when missing. Model work runs in the inference service
(a local server started on first use) unless ``in_process=True`` (or another engine) is chosen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Optional, Sequence

import numpy as np
import slicer

from SAMSegmenterLib.errors import InputError, PromptError
from SAMSegmenterLib.models.registry import DEFAULT_MODEL, get_spec
from SAMSegmenterLib.predictor import SlicePrediction
from SAMSegmenterLib.propagation.plan import (
    PropagationOptions,
    PropagationResult,
    replace_options,
    structure_options,
)
from SAMSegmenterLib.volume import take_slice

from .editor import SegmentEditorSession
from .engines import InProcessEngine, ServiceEngine
from .geometry import Axis, SliceRef, axis_number, round_index, volume_ijk_to_world, volume_shape, world_to_ijk
from .labelmaps import Slab, labelmap_on_volume, segment_labelmap, write_slab
from .slice_prompts import SlicePrompt, build_slice_prompt

MAX_OPEN_VOLUMES = 2
EXCLUDE_DESCRIPTION = "exclude"
"""A fiducial control point whose description starts with this word (any case) is an exclude point."""


@dataclass
class SegmentResult:
    """What :meth:`SAMSegmenterLogic.segment` wrote: the slice, the 2D mask (rows, columns), its predicted IoU,
    and where it went (segmentation node, segment ID)."""

    ref: SliceRef
    mask: np.ndarray
    score: float
    segmentation: slicer.vtkMRMLSegmentationNode
    segment_id: str


def volume_array(volume_node: slicer.vtkMRMLScalarVolumeNode, copy: bool = True) -> np.ndarray:
    """The volume's voxels as [k, j, i] (first component of multi-component volumes): a copy, or with
    ``copy=False`` a view of the node's memory where possible (the service client then copies it piece by
    piece while uploading, so no event handler spends a whole-volume copy)."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("the volume node has no image data")
    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim == 4:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"expected a 3D scalar volume, got an array of shape {array.shape}")
    return np.array(array, copy=True) if copy else array


def volume_state(volume_node: slicer.vtkMRMLScalarVolumeNode) -> tuple[str, int]:
    """Identity of a volume's voxel contents: (node ID, modification time of its voxels)."""
    image = volume_node.GetImageData()
    scalars = image.GetPointData().GetScalars() if image is not None else None
    stamp = max(image.GetMTime(), scalars.GetMTime() if scalars is not None else 0) if image is not None else 0
    return volume_node.GetID(), int(stamp)


def slab_mask(mask_2d: np.ndarray, slab: Slab, shape_kji: tuple[int, int, int]) -> np.ndarray:
    """A (rows, columns) slice mask as the [k, j, i] array of a one-slice slab."""
    return np.expand_dims(np.asarray(mask_2d, dtype=bool), slab.axis).reshape(slab.shape(shape_kji))


def visited_slab(seed: SliceRef, scores: dict[int, float]) -> Slab:
    """The slab from the lowest to the highest slice a propagation visited (the seed included)."""
    indices = [seed.index, *scores.keys()]
    return Slab(seed.axis, int(min(indices)), int(max(indices)))


def roi_corners(roi: slicer.vtkMRMLMarkupsROINode) -> np.ndarray:
    """The 8 corners (8, 3) of a markups ROI in world RAS (rotated ROIs included)."""
    center, size = [0.0] * 3, [0.0] * 3
    roi.GetCenterWorld(center)
    roi.GetSizeWorld(size)
    axes = []
    for getter in (roi.GetXAxisWorld, roi.GetYAxisWorld, roi.GetZAxisWorld):
        axis = [0.0] * 3
        getter(axis)
        axes.append(np.asarray(axis) / max(np.linalg.norm(axis), 1e-12))
    signs = np.array([(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    return np.asarray(center) + (signs * np.asarray(size)) @ np.vstack(axes)


def fiducial_points(node: slicer.vtkMRMLMarkupsNode) -> tuple[np.ndarray, list[int]]:
    """(N, 3) world RAS of a point list's placed control points and their labels: 0 (exclude) when the
    point's description starts with "exclude", 1 (include) otherwise. Selection states are ignored."""
    points, labels = [], []
    for n in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(n) != slicer.vtkMRMLMarkupsNode.PositionDefined:
            continue
        position = [0.0] * 3
        node.GetNthControlPointPositionWorld(n, position)
        points.append(position)
        description = (node.GetNthControlPointDescription(n) or "").strip().lower()
        labels.append(0 if description.startswith(EXCLUDE_DESCRIPTION) else 1)
    if not points:
        raise PromptError(f"point list '{node.GetName()}' has no placed control point")
    return np.asarray(points, dtype=float), labels


class SAMSegmenterLogic:
    """Prompted segmentation of Slicer volumes into segments, with undo.

    model, checkpoint: the model (see ``SAMSegmenterLib.models.MODEL_NAMES``) and optionally its weights
    file; window: intensity window for the model input ("auto", a CT preset or "LOW,HIGH").
    engine: where model work runs: by default the inference service (``server`` URL with its
    ``token_file``, or a local server started on first use with ``device``, ``precision`` and
    ``backend``); ``in_process=True`` runs it in this process instead (scripts only; never in
    Slicer's GUI). Opened volumes are kept per (volume node, voxel modification time, window, model),
    so repeated prompts on a slice cost one decoder pass.
    """

    def __init__(self, *, model: str = DEFAULT_MODEL, checkpoint: Optional[str | Path] = None,
                 window: str = "auto", engine: Any = None, in_process: bool = False, device: str = "auto",
                 precision: str = "fp32", backend: str = "auto", server: Optional[str] = None,
                 token_file: Optional[str | Path] = None) -> None:
        get_spec(model)
        self.model_name = model
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.window = window
        if engine is None:
            engine = (InProcessEngine(device, precision, backend) if in_process else
                      ServiceEngine(url=server, token_file=token_file,
                                    server_args=["--device", device, "--precision", precision, "--backend",
                                                 backend, "--model", model]))
        self.engine = engine
        self._volumes: OrderedDict[Hashable, Any] = OrderedDict()
        self._editors: dict[str, SegmentEditorSession] = {}

    def configure(self, *, model: Optional[str] = None, checkpoint: Optional[str | Path] = None,
                  window: Optional[str] = None) -> None:
        """Change the model (and its weights file) or the window; opened volumes are released."""
        if model is not None:
            get_spec(model)
            if model != self.model_name:
                self.checkpoint = None
            self.model_name = model
        if checkpoint is not None:
            self.checkpoint = str(checkpoint)
        if window is not None:
            self.window = window
        self.release_volumes()

    # volumes and prompts ------------------------------------------------------------------------

    def volume(self, volume_node: slicer.vtkMRMLScalarVolumeNode, window: Optional[str] = None) -> Any:
        """The volume's voxels opened on the engine (cached per voxel state, window and model)."""
        spec = window or self.window
        key = (volume_state(volume_node), spec, self.model_name, self.checkpoint)
        opened = self._volumes.get(key)
        if opened is None:
            opened = self.engine.open(volume_array(volume_node), spec, self.model_name, self.checkpoint, key[0])
            self._volumes[key] = opened
            while len(self._volumes) > MAX_OPEN_VOLUMES:
                self._volumes.popitem(last=False)[1].close()
        self._volumes.move_to_end(key)
        return opened

    def release_volumes(self) -> None:
        """Close every opened volume (and its embeddings)."""
        for opened in self._volumes.values():
            opened.close()
        self._volumes.clear()

    def slice_prompt(self, volume_node: slicer.vtkMRMLScalarVolumeNode, *, points: Any = None,
                     labels: Optional[Sequence[int]] = None, box: Any = None, coordinates: str = "RAS",
                     axis: Optional[Axis] = None) -> SlicePrompt:
        """Prompts on one slice of ``volume_node`` (see :func:`slice_prompts.build_slice_prompt`).

        points: (N, 3) positions or a markups point list (world RAS; labels from the points'
        descriptions, see :func:`fiducial_points`); box: two or more corners, or a markups ROI, whose
        centre slice along ``axis`` (default K for an ROI) is prompted with the ROI's extent on it.
        """
        if isinstance(points, slicer.vtkMRMLMarkupsNode):
            points, node_labels = fiducial_points(points)
            labels = node_labels if labels is None else labels
        if isinstance(box, slicer.vtkMRMLMarkupsROINode):
            if coordinates.upper() != "RAS":
                raise PromptError("a markups ROI is in world coordinates: use coordinates='RAS'")
            box, coordinates, axis = self._roi_box(volume_node, box, axis)
            if points is not None and len(points):
                points = world_to_ijk(points, volume_ijk_to_world(volume_node))
        return build_slice_prompt(volume_shape(volume_node), volume_ijk_to_world(volume_node), points, labels, box,
                                  coordinates, axis)

    def _roi_box(self, volume_node: slicer.vtkMRMLScalarVolumeNode, roi: slicer.vtkMRMLMarkupsROINode,
                 axis: Optional[Axis]) -> tuple[np.ndarray, str, int]:
        """Two IJK corners of the ROI's extent on its centre slice along ``axis`` (default K)."""
        chosen = axis_number("K" if axis is None else axis)
        corners = world_to_ijk(roi_corners(roi), volume_ijk_to_world(volume_node))
        component = 2 - chosen
        centre = int(round_index(corners[:, component].mean()))
        low, high = corners.min(axis=0), corners.max(axis=0)
        low[component] = high[component] = centre
        return np.vstack([low, high]), "IJK", chosen

    def roi_range(self, volume_node: slicer.vtkMRMLScalarVolumeNode, roi: slicer.vtkMRMLMarkupsROINode,
                  axis: Optional[Axis] = None) -> tuple[int, int]:
        """The slices (first, last) along ``axis`` (default K) that a markups ROI spans, clipped to the volume."""
        chosen = axis_number("K" if axis is None else axis)
        along = world_to_ijk(roi_corners(roi), volume_ijk_to_world(volume_node))[:, 2 - chosen]
        count = volume_shape(volume_node)[chosen]
        first, last = max(0, int(np.ceil(along.min() - 0.5))), min(count - 1, int(np.floor(along.max() + 0.5)))
        if first > last:
            raise PromptError(f"the ROI '{roi.GetName()}' does not overlap the volume")
        return first, last

    def predict(self, volume_node: slicer.vtkMRMLScalarVolumeNode, prompt: SlicePrompt,
                window: Optional[str] = None, selection: Optional[str] = None) -> SlicePrediction:
        """Run the model on the prompt's slice; the mask is (rows, columns) of that slice."""
        return self.volume(volume_node, window).predict(prompt.ref.axis, prompt.ref.index, prompt.engine_prompt(),
                                                        selection=selection)

    # where results go ---------------------------------------------------------------------------

    def target(self, volume_node: slicer.vtkMRMLScalarVolumeNode,
               segmentation: Optional[slicer.vtkMRMLSegmentationNode] = None,
               segment: Optional[str] = None) -> tuple[slicer.vtkMRMLSegmentationNode, str]:
        """The segmentation (created and shown for ``volume_node`` when None) and the ID of ``segment`` (an ID or
        a name; created when no segment has it; the first segment, or a new one, when None)."""
        if segmentation is None:
            segmentation = volume_node.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                   f"{volume_node.GetName()} segmentation")
            segmentation.CreateDefaultDisplayNodes()
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segments = segmentation.GetSegmentation()
        if segment is not None and segments.GetSegment(segment) is not None:
            return segmentation, segment
        if segment is not None:
            found = segments.GetSegmentIdBySegmentName(segment)
            return segmentation, found or segments.AddEmptySegment("", segment)
        if segments.GetNumberOfSegments():
            return segmentation, segments.GetNthSegmentID(0)
        return segmentation, segments.AddEmptySegment("", "Segment_1")

    def editor(self, segmentation_node: slicer.vtkMRMLSegmentationNode, volume_node: slicer.vtkMRMLScalarVolumeNode,
               editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None) -> SegmentEditorSession:
        """The editing session (undo history) of a segmentation; created on first use.

        editor_node: a vtkMRMLSegmentEditorNode whose masking/overwrite settings to follow
        (e.g. the Segment Editor module's); a private one with Slicer's defaults otherwise.
        """
        key = segmentation_node.GetID()
        session = self._editors.get(key)
        if session is not None and editor_node is not None and session.editor_node is not editor_node:
            session.close()
            session = None
        if session is None:
            session = SegmentEditorSession(segmentation_node, volume_node, editor_node)
            self._editors[key] = session
        session.bind(volume_node)
        return session

    def write(self, volume_node: slicer.vtkMRMLScalarVolumeNode, segmentation_node: slicer.vtkMRMLSegmentationNode,
              segment_id: str, mask: np.ndarray, slab: Slab, mode: str = "replace",
              editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None) -> None:
        """Write ``mask`` (bool [k, j, i] of ``slab`` of the volume) into a segment, saving undo first.

        mode: "replace" (on the slab the segment becomes the mask), "add" or "remove"; the editor
        node's editable area, intensity range and "modify other segments" apply.
        """
        write_slab(self.editor(segmentation_node, volume_node, editor_node), volume_node, segment_id, mask, slab, mode)

    def undo(self, segmentation_node: slicer.vtkMRMLSegmentationNode) -> None:
        """Undo the last write to ``segmentation_node`` made through this logic."""
        session = self._editors.get(segmentation_node.GetID())
        if session is None:
            raise InputError(f"nothing to undo in '{segmentation_node.GetName()}'")
        session.undo()

    def redo(self, segmentation_node: slicer.vtkMRMLSegmentationNode) -> None:
        session = self._editors.get(segmentation_node.GetID())
        if session is None:
            raise InputError(f"nothing to redo in '{segmentation_node.GetName()}'")
        session.redo()

    # console API --------------------------------------------------------------------------------

    def segment(self, volume_node: slicer.vtkMRMLScalarVolumeNode, *,
                segmentation: Optional[slicer.vtkMRMLSegmentationNode] = None, segment: Optional[str] = None,
                points: Any = None, labels: Optional[Sequence[int]] = None, box: Any = None,
                coordinates: str = "RAS", axis: Optional[Axis] = None, window: Optional[str] = None,
                selection: Optional[str] = None, mode: str = "replace",
                editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None) -> SegmentResult:
        """Segment one slice from prompts and write the mask into a segment (undo restores).

        points: (N, 3) prompt points or a markups point list; labels: 1 include / 0 exclude per point.
        box: two (or more) opposite corners of a box on the slice, or a markups ROI.
        coordinates: "RAS" (world, as markups and slice views give them) or "IJK" (voxel i, j, k).
        All prompts lie on one slice; ``axis`` ("K", "J", "I") names its axis, otherwise it is the axis
        along which all prompts share one voxel index. mode: "replace", "add" or "remove", with
        ``editor_node``'s masking and overwrite settings.
        """
        prompt = self.slice_prompt(volume_node, points=points, labels=labels, box=box, coordinates=coordinates,
                                   axis=axis)
        segmentation, segment_id = self.target(volume_node, segmentation, segment)
        prediction = self.predict(volume_node, prompt, window, selection)
        slab = Slab.of(prompt.ref)
        self.write(volume_node, segmentation, segment_id, slab_mask(prediction.mask, slab, volume_shape(volume_node)),
                   slab, mode, editor_node)
        return SegmentResult(prompt.ref, prediction.mask, prediction.score, segmentation, segment_id)

    def propagate(self, volume_node: slicer.vtkMRMLScalarVolumeNode, *,
                  segmentation: Optional[slicer.vtkMRMLSegmentationNode] = None, segment: Optional[str] = None,
                  points: Any = None, labels: Optional[Sequence[int]] = None, box: Any = None,
                  coordinates: str = "RAS", axis: Optional[Axis] = None, seed_index: Optional[int] = None,
                  direction: str = "both", slice_range: Optional[tuple[int, int]] = None,
                  window: Optional[str] = None, mode: str = "replace",
                  editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None,
                  progress: Optional[Callable[[int, int], None]] = None,
                  cancel: Optional[Callable[[], bool]] = None, options: Optional[PropagationOptions] = None,
                  structure: str = "anatomy", **option_fields: Any) -> PropagationResult:
        """Propagate a segmentation slice by slice and write every visited slice (undo restores all of them).

        The seed is prompts (as for :meth:`segment`; a markups ROI also gives the slice range, its extent
        along ``axis``) or, without prompts, the segment's present mask on slice ``seed_index`` of ``axis``.
        direction: "up" (increasing index), "down" or "both"; slice_range: inclusive (first, last).
        options: a PropagationOptions (default: those of ``structure``: ``anatomy``, organs and brain structures,
        or ``compact``, tumours, lesions and round organs, with tighter boxes; see ``structure_options``), its
        fields given as keywords replacing its values (``box_fraction=0.2, min_iou=None``...).
        Returns the engine's PropagationResult (``slices``, ``stop_reasons``...); nothing is written when
        it was cancelled.
        """
        options = replace_options(options or structure_options(structure), **option_fields)
        if isinstance(box, slicer.vtkMRMLMarkupsROINode) and slice_range is None:
            slice_range = self.roi_range(volume_node, box, axis)
        segmentation, segment_id = self.target(volume_node, segmentation, segment)
        seed_mask = seed_prompt = None
        if points is not None or box is not None:
            prompt = self.slice_prompt(volume_node, points=points, labels=labels, box=box, coordinates=coordinates,
                                       axis=axis)
            if seed_index is not None and seed_index != prompt.ref.index:
                raise PromptError(f"the prompts lie on slice {prompt.ref.index}, not on seed_index {seed_index}")
            ref, seed_prompt = prompt.ref, prompt.engine_prompt()
        else:
            if axis is None or seed_index is None:
                raise PromptError("give prompts, or axis and seed_index of a slice where the segment is drawn")
            ref = SliceRef(axis_number(axis), int(seed_index))
            seed_mask = self.segment_mask(volume_node, segmentation, segment_id, ref)
            if not seed_mask.any():
                raise PromptError(f"segment {segment_id!r} is empty on slice {ref.axis_name}={ref.index}")
        result = self.volume(volume_node, window).propagate(
            ref.axis, ref.index, seed_mask=seed_mask, seed_prompt=seed_prompt, direction=direction,
            slice_range=slice_range, options=options, progress=progress, cancel=cancel)
        if not result.cancelled:
            slab = visited_slab(ref, result.scores)
            self.write(volume_node, segmentation, segment_id, result.mask[slab.index()], slab, mode, editor_node)
        return result

    def segment_mask(self, volume_node: slicer.vtkMRMLScalarVolumeNode,
                     segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str, ref: SliceRef) -> np.ndarray:
        """The segment on one slice of the volume's grid, as (rows, columns) bool (through the node's own
        scene: no module globals, so it works in any application that holds the scene)."""
        labelmap = labelmap_on_volume(segment_labelmap(segmentation_node, segment_id), volume_node, segmentation_node)
        return take_slice(labelmap, ref.axis, ref.index)

    def close(self) -> None:
        """Release opened volumes, editing sessions, and the engine (a local server stops)."""
        self.release_volumes()
        for session in self._editors.values():
            session.close()
        self._editors.clear()
        self.engine.close()


_SHARED: Optional[SAMSegmenterLogic] = None


def shared_logic() -> SAMSegmenterLogic:
    """The process-wide logic of the SAMSegmenter module panel and the Segment Editor effect (service engine)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = SAMSegmenterLogic()
    return _SHARED


def replace_shared_logic(logic: SAMSegmenterLogic) -> None:
    """Make ``logic`` the shared one (the panel applies new settings); the previous one is closed."""
    global _SHARED
    if _SHARED is not None and _SHARED is not logic:
        _SHARED.close()
    _SHARED = logic
