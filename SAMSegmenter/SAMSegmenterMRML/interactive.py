"""State of the interactive SAM effect for one volume and segmentation, without Qt.

The effect forwards clicks and drags (already converted to world RAS by the slice view)
here. `InteractiveSession` decides which slice they belong to, keeps the prompt markups,
builds jobs that a background thread can run without touching MRML, accepts their results
on the main thread (ignoring stale ones), shows the preview, and produces the segment
editor edits that Apply performs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import slicer

from SAMSegmenterLib.errors import PromptError
from SAMSegmenterLib.models import get_spec
from SAMSegmenterLib.predictor import SlicePrediction, SlicePredictor
from SAMSegmenterLib.propagation import DIRECTIONS

from .geometry import SliceRef, choose_slice, view_slice, volume_ijk_to_world, volume_shape, world_to_ijk
from .labelmaps import LabelmapEdit, Slab, labelmap_edits, volume_ijk_to_segmentation
from .logic import SAMSegmenterLogic, slab_mask, visited_slab
from .markups import PromptMarkups
from .preview import PreviewSegmentation
from .slice_prompts import SlicePrompt


@dataclass
class PredictionJob:
    """One slice prediction; `run` touches no MRML, so a worker thread may call it.

    predictor: returns the volume's predictor (see SAMSegmenterLogic.predictor_source).
    """

    generation: int
    predictor: Callable[[], SlicePredictor]
    prompt: SlicePrompt
    selection: Optional[str] = None

    def run(self) -> SlicePrediction:
        return self.predictor().predict(
            self.prompt.ref.axis, self.prompt.ref.index, self.prompt.engine_prompt(), self.selection
        )


@dataclass
class PropagationJob:
    """Propagation from the previewed slice; `run` touches no MRML."""

    generation: int
    predictor: Callable[[], SlicePredictor]
    seed: SliceRef
    seed_mask: np.ndarray
    direction: str
    slice_range: Optional[tuple[int, int]]

    def run(self, progress=None, cancel=None):
        from SAMSegmenterLib.propagation import propagate

        return propagate(
            self.predictor(),
            self.seed.axis,
            self.seed.index,
            seed_mask=self.seed_mask,
            direction=self.direction,
            slice_range=self.slice_range,
            progress=progress,
            cancel=cancel,
        )


class InteractiveSession:
    """Prompts, preview and pending result of the SAM effect.

    logic: supplies the model and cached predictors; volume_node: the source volume;
    segmentation_node: the segmentation being edited (the preview follows its transform).
    """

    def __init__(
        self,
        logic: SAMSegmenterLogic,
        volume_node: slicer.vtkMRMLScalarVolumeNode,
        segmentation_node: slicer.vtkMRMLSegmentationNode,
        window: Optional[str] = None,
    ) -> None:
        self.logic = logic
        self.volume_node = volume_node
        self.segmentation_node = segmentation_node
        self.window = window
        scene = volume_node.GetScene()
        self.markups = PromptMarkups(scene)
        self.preview = PreviewSegmentation(scene)
        self.ref: Optional[SliceRef] = None
        self.generation = 0
        self.result: Optional[tuple[Slab, np.ndarray]] = None
        self.score: Optional[float] = None
        self.color = (0.9, 0.8, 0.2)

    @property
    def shape(self) -> tuple[int, int, int]:
        return volume_shape(self.volume_node)

    def view_slice(self, slice_to_ras: np.ndarray) -> SliceRef:
        """The volume slice a slice view shows; PromptError when the view is not aligned to the volume."""
        return view_slice(slice_to_ras, volume_ijk_to_world(self.volume_node), self.shape)

    def prefetch(self, slice_to_ras: np.ndarray) -> Callable[[], None]:
        """Work (for a worker thread) that starts embedding the slice a view shows; PromptError if none."""
        ref = self.view_slice(slice_to_ras)
        source = self.logic.predictor_source(self.volume_node, self.window)
        return lambda: source().prefetch(ref.axis, ref.index)

    def _slice_of(self, points_ras: np.ndarray, axis: int) -> SliceRef:
        return choose_slice(world_to_ijk(points_ras, volume_ijk_to_world(self.volume_node)), self.shape, axis)

    def _start_slice(self, ref: SliceRef) -> None:
        """Prompts on another slice start a new prompt set."""
        if self.ref is not None and ref != self.ref:
            self.clear()
        self.ref = ref

    def add_point(self, ras: np.ndarray, include: bool, slice_to_ras: np.ndarray) -> PredictionJob:
        """Add an include/exclude point clicked at world ``ras`` (3,) in a view with ``slice_to_ras``."""
        spec = get_spec(self.logic.model_name)
        if not spec.point_prompts:
            raise PromptError(
                f"{spec.title} was trained with box prompts only: drag a box "
                "(for include/exclude points choose a SAM ViT model)"
            )
        axis = self.view_slice(slice_to_ras).axis
        self._start_slice(self._slice_of(np.asarray(ras, dtype=float).reshape(1, 3), axis))
        self.markups.add_point(ras, include)
        return self._job()

    def set_box(self, corners_ras: np.ndarray, slice_to_ras: np.ndarray) -> PredictionJob:
        """Set the box from its (4, 3) world RAS corners dragged in a view with ``slice_to_ras``."""
        axis = self.view_slice(slice_to_ras).axis
        self._start_slice(self._slice_of(corners_ras, axis))
        self.markups.set_box(corners_ras)
        return self._job()

    def _job(self) -> PredictionJob:
        points, labels = self.markups.points()
        prompt = self.logic.slice_prompt(
            self.volume_node, points, labels, self.markups.box_corners(), "RAS", self.ref.axis
        )
        self.generation += 1
        return PredictionJob(self.generation, self.logic.predictor_source(self.volume_node, self.window), prompt)

    def accept(self, job: PredictionJob, prediction: SlicePrediction) -> bool:
        """Take a finished prediction (main thread); False (ignored) if prompts changed since."""
        if job.generation != self.generation:
            return False
        slab = Slab.of(job.prompt.ref)
        self.result = (slab, slab_mask(prediction.mask, slab, self.shape))
        self.score = prediction.score
        self.preview.show(self.volume_node, self.segmentation_node, self.result[1], slab, self.color)
        return True

    def propagation_job(self, direction: str, slice_range: Optional[tuple[int, int]] = None) -> PropagationJob:
        """Propagate the previewed slice's mask; PromptError when there is none."""
        if direction not in DIRECTIONS:
            raise PromptError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if self.result is None or self.ref is None:
            raise PromptError("segment a slice first: propagation starts from the previewed slice")
        slab, mask = self.result
        seed_mask = np.take(mask, self.ref.index - slab.first, axis=self.ref.axis)
        if not seed_mask.any():
            raise PromptError("the previewed slice is empty: nothing to propagate")
        self.generation += 1
        return PropagationJob(
            self.generation,
            self.logic.predictor_source(self.volume_node, self.window),
            self.ref,
            seed_mask,
            direction,
            slice_range,
        )

    def accept_propagation(self, job: PropagationJob, result) -> bool:
        """Take a finished propagation (main thread); cancelled or stale results are ignored."""
        if job.generation != self.generation or result.cancelled:
            return False
        slab = visited_slab(job.seed, result.scores)
        self.result = (slab, np.asarray(result.mask[slab.index()], dtype=bool))
        self.score = None
        self.preview.show(self.volume_node, self.segmentation_node, self.result[1], slab, self.color)
        return True

    def edits(
        self,
        reference: slicer.vtkOrientedImageData,
        current: Optional[slicer.vtkOrientedImageData],
        mode: str = "replace",
    ) -> list[LabelmapEdit]:
        """The segment editor edits that write the pending result (see labelmaps.labelmap_edits)."""
        if self.result is None:
            raise PromptError("nothing to apply: add prompts first")
        slab, mask = self.result
        return labelmap_edits(
            mask,
            slab,
            self.shape,
            volume_ijk_to_segmentation(self.volume_node, self.segmentation_node),
            reference,
            current,
            mode,
        )

    def clear(self) -> None:
        """Forget prompts and the pending result; running jobs become stale."""
        self.generation += 1
        self.markups.clear()
        self.preview.hide()
        self.result = None
        self.score = None
        self.ref = None

    def close(self) -> None:
        """Remove the markups and preview nodes."""
        self.clear()
        self.markups.remove()
        self.preview.remove()
