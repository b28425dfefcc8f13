"""SAMSegmenterLogic: segment volumes in an MRML scene with a SAM model (no Qt).

Console use (in Slicer's Python console, or on slicer-core)::

    from SAMSegmenterMRML import SAMSegmenterLogic
    logic = SAMSegmenterLogic()                      # LiteMedSAM, best device
    volume = slicer.util.getNode("MRHead")
    segmentation = slicer.util.getNode("Segmentation")
    # prompts in world RAS (as markups give them): a box from two opposite corners
    logic.segment(volume, segmentation, "Segment_1", box=[(-20, 10, 5), (15, 40, 5)])
    # or in voxel indices (i, j, k), on slice k = 60
    logic.segment(volume, segmentation, "Segment_1", box=[(80, 90, 60), (140, 150, 60)], coordinates="IJK")
    logic.propagate(volume, segmentation, "Segment_1", axis="K", seed_index=60, direction="both")
    logic.undo(segmentation)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Optional, Sequence

import numpy as np
import slicer

from SAMSegmenterLib.cache import DEFAULT_MAX_BYTES, EmbeddingCache
from SAMSegmenterLib.errors import InputError, PromptError
from SAMSegmenterLib.models import SamModel, load_model
from SAMSegmenterLib.predictor import SlicePrediction, SlicePredictor
from SAMSegmenterLib.volume import take_slice

from .editor import SegmentEditorSession
from .geometry import Axis, SliceRef, axis_number, volume_ijk_to_world, volume_shape
from .labelmaps import LabelmapEdit, Slab, labelmap_edits, volume_ijk_to_segmentation
from .slice_prompts import SlicePrompt, build_slice_prompt

MAX_CACHED_VOLUMES = 2


@dataclass
class SegmentResult:
    """What `SAMSegmenterLogic.segment` wrote: the slice, the 2D mask (rows, columns) and its predicted IoU."""

    ref: SliceRef
    mask: np.ndarray
    score: float


def volume_array(volume_node: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """A copy of the volume's voxels as [k, j, i] (first component of multi-component volumes)."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("the volume node has no image data")
    array = slicer.util.arrayFromVolume(volume_node)
    if array.ndim == 4:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"expected a 3D scalar volume, got an array of shape {array.shape}")
    return np.array(array, copy=True)


def volume_state(volume_node: slicer.vtkMRMLScalarVolumeNode) -> tuple[str, int]:
    """Identity of a volume's voxel contents: (node ID, modification time of its voxels)."""
    image = volume_node.GetImageData()
    scalars = image.GetPointData().GetScalars() if image is not None else None
    stamp = max(image.GetMTime(), scalars.GetMTime() if scalars is not None else 0) if image is not None else 0
    return volume_node.GetID(), int(stamp)


class SAMSegmenterLogic:
    """Prompted segmentation of Slicer volumes into segments, with undo.

    model: an already loaded SamModel; otherwise ``model_name`` is loaded on first use on
    ``device`` ("auto", "cpu", "cuda", "cuda:N", "mps") at ``precision`` ("fp32", "fp16",
    "bf16"), from ``checkpoint`` if given. window: intensity window for the model input
    ("auto", a CT preset or "LOW,HIGH"). cache_bytes: memory bound of the embedding cache.
    Predictors (and their embeddings) are kept per (volume node, voxel modification time,
    window), so repeated prompts on a slice cost one decoder pass.
    """

    def __init__(
        self,
        model: Optional[SamModel] = None,
        model_name: str = "litemedsam",
        device: str = "auto",
        precision: str = "fp32",
        checkpoint: Optional[str | Path] = None,
        window: str = "auto",
        cache_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._model = model
        self.model_name = model.name if model is not None else model_name
        self.device = device
        self.precision = precision
        self.checkpoint = checkpoint
        self.window = window
        self.cache = EmbeddingCache(cache_bytes)
        self._predictors: OrderedDict[Hashable, SlicePredictor] = OrderedDict()
        self._building: dict[Hashable, Callable[[], SlicePredictor]] = {}  # sources not run to the end yet
        self._lock = threading.RLock()
        self._editors: dict[str, SegmentEditorSession] = {}

    # model and predictors -------------------------------------------------------------------

    @property
    def model(self) -> SamModel:
        """The model, loaded on first use (from any thread)."""
        with self._lock:
            if self._model is None:
                self._model = load_model(self.model_name, self.device, self.precision, self.checkpoint)
            return self._model

    def configure(
        self,
        model_name: Optional[str] = None,
        device: Optional[str] = None,
        precision: Optional[str] = None,
        checkpoint: Optional[str | Path] = None,
        cache_bytes: Optional[int] = None,
        load: bool = True,
    ) -> None:
        """Change model, device, precision or embedding cache size (None keeps the current value).

        load=True loads the new model at once, raising the engine's ModelError, DeviceError
        or CheckpointError (and keeping the previous configuration) if it cannot be used;
        load=False only records the choice and the model is loaded on next use.
        """
        name = model_name or self.model_name
        new_device = device or self.device
        new_precision = precision or self.precision
        new_checkpoint = (
            checkpoint if checkpoint is not None else (self.checkpoint if name == self.model_name else None)
        )
        if (name, new_device, new_precision, new_checkpoint) != (
            self.model_name,
            self.device,
            self.precision,
            self.checkpoint,
        ):
            model = load_model(name, new_device, new_precision, new_checkpoint) if load else None
            self.model_name, self.device, self.precision, self.checkpoint = (
                name,
                new_device,
                new_precision,
                new_checkpoint,
            )
            self._model = model
            self.release_predictors()
        elif load and self._model is None:
            self._model = load_model(self.model_name, self.device, self.precision, self.checkpoint)
        if cache_bytes is not None and cache_bytes != self.cache.max_bytes:
            self.cache = EmbeddingCache(cache_bytes)
            self.release_predictors()

    def predictor_source(
        self, volume_node: slicer.vtkMRMLScalarVolumeNode, window: Optional[str] = None
    ) -> Callable[[], SlicePredictor]:
        """A function returning the predictor of the volume's current voxels.

        Call this on the main thread (it reads the node); the returned function may run in a
        worker thread, where the slow parts happen: loading the model, computing the window,
        building the predictor. Predictors are cached (at most MAX_CACHED_VOLUMES); until one
        is built, every call for it returns the same function, so the voxels are copied and
        the predictor built once however many prompts and prefetches arrive meanwhile.
        """
        spec = window or self.window
        key = (volume_state(volume_node), self.model_name, self.device, self.precision, str(self.checkpoint), spec)
        with self._lock:
            cached = self._predictors.get(key)
            if cached is not None:
                self._predictors.move_to_end(key)
                return lambda: cached
            if key in self._building:
                return self._building[key]
        voxels = volume_array(volume_node)
        build_lock = threading.Lock()

        def build() -> SlicePredictor:
            with build_lock:  # a second caller waits for the first build, then finds it cached
                with self._lock:
                    existing = self._predictors.get(key)
                if existing is not None:
                    return existing
                try:
                    predictor = SlicePredictor(self.model, voxels, spec, cache=self.cache, volume_id=key[0])
                except BaseException:
                    with self._lock:
                        self._building.pop(key, None)
                    raise
                with self._lock:
                    self._building.pop(key, None)
                    self._predictors[key] = predictor
                    while len(self._predictors) > MAX_CACHED_VOLUMES:
                        self._predictors.popitem(last=False)[1].close()
                return predictor

        with self._lock:
            return self._building.setdefault(key, build)

    def predictor(self, volume_node: slicer.vtkMRMLScalarVolumeNode, window: Optional[str] = None) -> SlicePredictor:
        """The (cached) predictor of the volume's current voxels, built now if needed."""
        return self.predictor_source(volume_node, window)()

    def release_predictors(self) -> None:
        """Forget all predictors and cached embeddings."""
        with self._lock:
            predictors = list(self._predictors.values())
            self._predictors.clear()
            self._building.clear()
        for predictor in predictors:
            predictor.close()
        self.cache.clear()

    # prompts and prediction ---------------------------------------------------------------------

    def slice_prompt(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        points: Optional[Sequence[Sequence[float]]] = None,
        labels: Optional[Sequence[int]] = None,
        box: Optional[Sequence[Sequence[float]]] = None,
        coordinates: str = "RAS",
        axis: Optional[Axis] = None,
    ) -> SlicePrompt:
        """Prompts on ``volume_node`` as a SlicePrompt (see slice_prompts.build_slice_prompt for the arguments)."""
        shape = volume_shape(volume_node)
        return build_slice_prompt(shape, volume_ijk_to_world(volume_node), points, labels, box, coordinates, axis)

    def predict(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        prompt: SlicePrompt,
        window: Optional[str] = None,
        selection: Optional[str] = None,
    ) -> SlicePrediction:
        """Run the model on the prompt's slice; the mask is (rows, columns) of that slice.

        selection: which decoder output to keep (SAMSegmenterLib.selection.SELECTIONS); None: the
        default for the prompt (box_fit for a box).
        """
        return self.predictor(volume_node, window).predict(
            prompt.ref.axis, prompt.ref.index, prompt.engine_prompt(), selection
        )

    # writing ------------------------------------------------------------------------------------

    def editor(
        self,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None,
    ) -> SegmentEditorSession:
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

    def write(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        segment_id: str,
        slab_mask: np.ndarray,
        slab: Slab,
        mode: str = "replace",
        editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None,
    ) -> None:
        """Write ``slab_mask`` (bool [k, j, i] of ``slab`` of the volume) into a segment, saving undo first.

        mode: "replace" (the slab of the segment becomes the mask), "add" or "remove"; the
        editor node's editable area, intensity range and "modify other segments" apply.
        """
        session = self.editor(segmentation_node, volume_node, editor_node)
        session.apply(
            segment_id, self.edits(volume_node, segmentation_node, segment_id, slab_mask, slab, mode, session)
        )

    def edits(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        segment_id: str,
        slab_mask: np.ndarray,
        slab: Slab,
        mode: str,
        session: SegmentEditorSession,
    ) -> list[LabelmapEdit]:
        shape = volume_shape(volume_node)
        if tuple(slab_mask.shape) != slab.shape(shape):
            raise InputError(f"mask shape {slab_mask.shape} does not match the slab {slab.shape(shape)}")
        current = session.segment_labelmap(segment_id) if mode == "replace" else None
        return labelmap_edits(
            slab_mask,
            slab,
            shape,
            volume_ijk_to_segmentation(volume_node, segmentation_node),
            session.reference_geometry(),
            current,
            mode,
        )

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

    # console API -------------------------------------------------------------------------------

    def segment(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        segment_id: str,
        points: Optional[Sequence[Sequence[float]]] = None,
        labels: Optional[Sequence[int]] = None,
        box: Optional[Sequence[Sequence[float]]] = None,
        coordinates: str = "RAS",
        axis: Optional[Axis] = None,
        window: Optional[str] = None,
        selection: Optional[str] = None,
        mode: str = "replace",
        editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None,
    ) -> SegmentResult:
        """Segment one slice from prompts and write the mask into ``segment_id``.

        points: (N, 3) prompt points; labels: 1 include / 0 exclude per point (default 1).
        box: two (or more) opposite corners of a box on the slice.
        coordinates: "RAS" (world coordinates, as markups and the slice views give them) or
        "IJK" (voxel indices i, j, k of ``volume_node``). All prompts must lie on one slice;
        ``axis`` ("K", "J", "I") names its axis, otherwise it is the one axis along which
        all prompts share the same voxel index. The slice is written with ``mode``
        ("replace", "add", "remove"), following ``editor_node``'s masking and overwrite
        settings; `undo` restores the segmentation. ``selection``: as in `predict`.
        """
        prompt = self.slice_prompt(volume_node, points, labels, box, coordinates, axis)
        prediction = self.predict(volume_node, prompt, window, selection)
        shape = volume_shape(volume_node)
        slab = Slab.of(prompt.ref)
        self.write(
            volume_node, segmentation_node, segment_id, slab_mask(prediction.mask, slab, shape), slab, mode, editor_node
        )
        return SegmentResult(prompt.ref, prediction.mask, prediction.score)

    def segment_mask(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        segment_id: str,
        ref: SliceRef,
    ) -> np.ndarray:
        """The segment on one slice of the volume's grid, as (rows, columns) bool."""
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)
        return take_slice(array, ref.axis, ref.index) > 0

    def propagate(
        self,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        segment_id: str,
        points: Optional[Sequence[Sequence[float]]] = None,
        labels: Optional[Sequence[int]] = None,
        box: Optional[Sequence[Sequence[float]]] = None,
        coordinates: str = "RAS",
        axis: Optional[Axis] = None,
        seed_index: Optional[int] = None,
        direction: str = "both",
        slice_range: Optional[tuple[int, int]] = None,
        options=None,
        window: Optional[str] = None,
        mode: str = "replace",
        editor_node: Optional[slicer.vtkMRMLSegmentEditorNode] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        cancel: Optional[Callable[[], bool]] = None,
    ):
        """Propagate a segmentation slice by slice and write every visited slice.

        The seed is either prompts (points/box/coordinates/axis as for `segment`) or, without
        prompts, the segment's present mask on slice ``seed_index`` of ``axis``.
        direction: "up" (increasing index), "down" or "both"; slice_range: inclusive (first,
        last) limit. options: a PropagationOptions. Returns the engine's PropagationResult;
        nothing is written when it was cancelled.
        """
        from SAMSegmenterLib.propagation import PropagationOptions
        from SAMSegmenterLib.propagation import propagate as run_propagation

        seed_mask = seed_prompt = None
        if points is not None or box is not None:
            prompt = self.slice_prompt(volume_node, points, labels, box, coordinates, axis)
            if seed_index is not None and seed_index != prompt.ref.index:
                raise PromptError(f"the prompts lie on slice {prompt.ref.index}, not on seed_index {seed_index}")
            ref, seed_prompt = prompt.ref, prompt.engine_prompt()
        else:
            if axis is None or seed_index is None:
                raise PromptError("give prompts, or axis and seed_index of a slice where the segment is drawn")
            ref = SliceRef(axis_number(axis), int(seed_index))
            seed_mask = self.segment_mask(volume_node, segmentation_node, segment_id, ref)
            if not seed_mask.any():
                raise PromptError(f"segment {segment_id!r} is empty on slice {ref.axis_name}={ref.index}")
        result = run_propagation(
            self.predictor(volume_node, window),
            ref.axis,
            ref.index,
            seed_mask=seed_mask,
            seed_prompt=seed_prompt,
            direction=direction,
            slice_range=slice_range,
            options=options or PropagationOptions(),
            progress=progress,
            cancel=cancel,
        )
        if not result.cancelled:
            slab = visited_slab(ref, result.scores)
            self.write(volume_node, segmentation_node, segment_id, result.mask[slab.index()], slab, mode, editor_node)
        return result

    def close(self) -> None:
        """Release predictors, embeddings and editing sessions."""
        self.release_predictors()
        for session in self._editors.values():
            session.close()
        self._editors.clear()


def slab_mask(mask_2d: np.ndarray, slab: Slab, shape_kji: tuple[int, int, int]) -> np.ndarray:
    """A (rows, columns) slice mask as the [k, j, i] array of a one-slice slab."""
    return np.expand_dims(np.asarray(mask_2d, dtype=bool), slab.axis).reshape(slab.shape(shape_kji))


def visited_slab(seed: SliceRef, scores: dict[int, float]) -> Slab:
    """The slab from the lowest to the highest slice a propagation visited (the seed included)."""
    indices = [seed.index, *scores.keys()]
    return Slab(seed.axis, int(min(indices)), int(max(indices)))


_SHARED: Optional[SAMSegmenterLogic] = None


def shared_logic() -> SAMSegmenterLogic:
    """The process-wide logic shared by the SAMSegmenter module panel and the Segment Editor effect."""
    global _SHARED
    if _SHARED is None:
        _SHARED = SAMSegmenterLogic()
    return _SHARED
