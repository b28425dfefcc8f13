"""Evaluate a model on labelled volumes with the prompt protocols of :mod:`protocols`.

The unit of work is a *case*: one image volume and its label volume. :func:`evaluate_case`
is a pure function of ``(case, config)`` returning plain rows (dicts of str/int/float), so it
can run in any process: :func:`run_evaluation` hands the cases to any
``concurrent.futures.Executor`` (a ``ProcessPoolExecutor`` from :func:`local_executor`, or
``dask.distributed.Client(...).get_executor()`` on a cluster). Each worker process loads the
model once: :func:`models.load_model` caches it per process.

Volumes are arrays ``[k, j, i]``; ``axis`` 0/1/2 (K/J/I) picks the slices as in :mod:`volume`.
Each row is one (case, label, slice, protocol, selection) for the 2D protocols, scored on that
slice with the slice's in-plane spacing; or one (case, label, protocol) for ``propagate3d``,
scored on the whole 3D object with the volume spacing (``scope`` = ``object``, ``slice`` = the
seed slice). Mask selections on 2D protocols, all among the same four candidates of one decoder
pass (see :mod:`selection`):

* ``single``: the model's single-mask output, what LiteMedSAM and MedSAM were trained for;
* ``best_score``: of SAM's three multimask outputs, the one with the highest predicted IoU;
* ``box_fit``: the candidate whose bounding box best matches the prompt box (prompts with a box);
* ``oracle``: of the four candidates, the one with the highest Dice against the reference (an
  upper bound a user picking by eye could reach, not a fair automatic result).

``score`` is the model's predicted IoU of the chosen mask (for ``propagate3d``, the mean over
the propagated slices).
"""

from __future__ import annotations

import csv
import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ..cache import EmbeddingCache
from ..errors import InputError, PromptError
from ..io.volumes import VOLUME_SUFFIXES, Geometry, read_volume
from ..metrics import Metrics, compute_metrics, dice, slice_spacing
from ..models import get_spec
from ..predictor import SlicePredictor
from ..prompts import Prompt
from ..propagation.walk import PropagationOptions, propagate
from ..selection import SELECTIONS as MASK_SELECTIONS
from ..selection import select
from ..volume import occupied_slices, take_slice
from .protocols import (
    POINT_PROTOCOLS,
    PROTOCOLS,
    SLICE_PROTOCOLS,
    VOLUME_PROTOCOLS,
    make_prompt,
    protocol_rng,
    tight_box,
)
from .report import Overlay

SELECTIONS = (*MASK_SELECTIONS, "oracle")
SLICE_MODES = ("all", "largest")
COLUMNS = ("case", "label", "axis", "slice", "scope", "protocol", "selection", "dice", "iou", "hd95", "nsd",
           "score", "ref_voxels", "pred_voxels")
Row = dict[str, object]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Case:
    """One image volume and its label volume (same voxel grid); ``name`` identifies it in the rows.

    ``image`` may be a folder holding DICOM series; ``series`` picks one by its UID (see :func:`io.read_volume`).
    """

    name: str
    image: Path
    label: Path
    series: Optional[str] = None


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    protocols: names from :data:`protocols.PROTOCOLS` (None: every 2D protocol the model
    accepts; box-only models such as LiteMedSAM refuse :data:`protocols.POINT_PROTOCOLS`);
    labels: label values to evaluate (None: every non-zero value present); axis: 0/1/2 (K/J/I);
    slices: ``all`` slices containing the label, or the ``largest`` one (most labelled pixels;
    the first of equals); every: keep every Nth of the slices containing the label, starting
    with the first; seed: seeds every random protocol (with the case, label, axis, slice and
    protocol); jitter_px: ``box_jitter`` range; tolerance_mm: NSD tolerance; window: intensity
    window spec; model/checkpoint/device/precision/backend: as :func:`models.load_model`;
    torch_threads: CPU threads per worker, set while a case runs (None: as they are); propagation: options of
    ``propagate3d`` (default: :class:`propagation.PropagationOptions`).
    """

    protocols: Optional[tuple[str, ...]] = None
    labels: Optional[tuple[int, ...]] = None
    axis: int = 0
    slices: str = "all"
    every: int = 1
    seed: int = 0
    jitter_px: int = 20
    tolerance_mm: float = 2.0
    window: str = "auto"
    model: str = "litemedsam"
    checkpoint: Optional[str] = None
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "auto"
    torch_threads: Optional[int] = None
    propagation: PropagationOptions = field(default_factory=PropagationOptions)

    def __post_init__(self) -> None:
        spec = get_spec(self.model)
        if self.protocols is None:
            accepted = tuple(p for p in SLICE_PROTOCOLS if spec.point_prompts or p not in POINT_PROTOCOLS)
            object.__setattr__(self, "protocols", accepted)
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise InputError(f"unknown or no protocol {unknown}; choose from {', '.join(PROTOCOLS)}")
        refused = [p for p in self.protocols if p in POINT_PROTOCOLS]
        if refused:
            try:
                spec.require_points_support("use the box, box_jitter or propagate3d protocols")
            except PromptError as exc:
                raise InputError(f"{self.model} cannot run the point protocol(s) {', '.join(refused)}: {exc}") from None
        if self.axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2 (K, J, I), got {self.axis!r}")
        if self.slices not in SLICE_MODES:
            raise InputError(f"slices must be one of {', '.join(SLICE_MODES)}, got {self.slices!r}")
        if self.every < 1:
            raise InputError(f"every must be at least 1 (every Nth labelled slice), got {self.every}")
        if not 0 <= self.tolerance_mm < float("inf"):
            raise InputError(f"NSD tolerance must be a number >= 0 mm, got {self.tolerance_mm}")
        if self.jitter_px < 0:
            raise InputError(f"the box_jitter range must be >= 0 pixels, got {self.jitter_px}")


def volume_stem(path: Path) -> str:
    """File name without its volume suffix (``ct_01.nii.gz`` -> ``ct_01``)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _check_geometry(case: Case, image: np.ndarray, image_geo: Geometry, label: np.ndarray,
                    label_geo: Geometry) -> None:
    problems = []
    if image.shape != label.shape:
        problems.append(f"size {image.shape[::-1]} vs {label.shape[::-1]} (i, j, k)")
    if not np.allclose(image_geo.spacing, label_geo.spacing, rtol=1e-4, atol=1e-6):
        problems.append(f"spacing {image_geo.spacing} vs {label_geo.spacing}")
    if not np.allclose(image_geo.origin, label_geo.origin, atol=1e-3):
        problems.append(f"origin {image_geo.origin} vs {label_geo.origin}")
    if not np.allclose(image_geo.direction, label_geo.direction, atol=1e-4):
        problems.append(f"direction {image_geo.direction} vs {label_geo.direction}")
    if problems:
        raise InputError(f"{case.name}: image {case.image.name} and label {case.label.name} are not on the same "
                         f"voxel grid: {'; '.join(problems)}")


def _label_values(case: Case, label: np.ndarray, wanted: Optional[tuple[int, ...]]) -> list[int]:
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.isfinite(label)) or not np.array_equal(label, np.round(label)):
            raise InputError(f"{case.name}: label volume {case.label.name} has non-integer values; "
                             "a label map of whole numbers is needed")
    present = [int(v) for v in np.unique(label) if v != 0]
    if wanted is None:
        if not present:
            raise InputError(f"{case.name}: label volume {case.label.name} has no non-zero voxel")
        return present
    missing = [v for v in wanted if v not in present]
    if missing:
        raise InputError(f"{case.name}: label value(s) {', '.join(map(str, missing))} not found in "
                         f"{case.label.name} (values present: {', '.join(map(str, present)) or 'none'})")
    return list(wanted)


def _chosen_slices(binary: np.ndarray, axis: int, config: EvalConfig) -> list[int]:
    """Indices along ``axis`` where ``binary`` (3D bool) has voxels, filtered by ``config``."""
    other = tuple(a for a in range(3) if a != axis)
    areas = binary.sum(axis=other)
    if config.slices == "largest":
        return [int(np.argmax(areas))]
    return [int(i) for i in np.flatnonzero(areas)[:: config.every]]


def predict_selections(predictor: SlicePredictor, axis: int, index: int, prompt: Prompt,
                       reference: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """``{selection: (mask (rows, cols) bool, predicted IoU)}`` for every name in :data:`SELECTIONS`
    that applies to ``prompt`` (``box_fit`` needs a box), all chosen among the same four candidates.

    ``reference`` is the slice's true mask, used only to pick the ``oracle`` candidate.
    """
    candidates = predictor.predict(axis, index, prompt, selection="single")
    masks, scores = candidates.masks, candidates.scores
    chosen = {rule: select(masks, scores, rule, prompt.box).index for rule in MASK_SELECTIONS
              if rule != "box_fit" or prompt.box is not None}
    chosen["oracle"] = max(range(len(masks)), key=lambda m: (dice(masks[m], reference), -m))
    return {rule: (masks[m], float(scores[m])) for rule, m in chosen.items()}


def _row(case: Case, value: int, axis: int, index: int, scope: str, protocol: str, selection: str,
         metrics: Metrics, score: float, ref: np.ndarray, pred: np.ndarray) -> Row:
    return {"case": case.name, "label": value, "axis": "KJI"[axis], "slice": index, "scope": scope,
            "protocol": protocol, "selection": selection, "dice": metrics.dice, "iou": metrics.iou,
            "hd95": metrics.hd95, "nsd": metrics.nsd, "score": score, "ref_voxels": int(ref.sum()),
            "pred_voxels": int(pred.sum())}


def seed_slice(binary: np.ndarray, axis: int) -> int:
    """The labelled slice nearest the middle of the object's extent along ``axis`` (3D bool input)."""
    present = occupied_slices(binary, axis)
    middle = (present[0] + present[-1]) / 2.0
    return int(present[np.argmin(np.abs(present - middle))])


def load_case(case: Case) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """(image [k, j, i], label [k, j, i], geometry) of a case, checked to share one voxel grid."""
    image, image_geo = read_volume(case.image, case.series)
    label, label_geo = read_volume(case.label)
    _check_geometry(case, image, image_geo, label, label_geo)
    return image, label, image_geo


# One embedding cache per process (bounded in bytes), so the overlays drawn after an in-process
# run reuse the slices the evaluation encoded; keys hold the model, volume content and window.
_EMBEDDINGS = EmbeddingCache()


@contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run the block with ``count`` PyTorch CPU threads (None: as they are), the caller's count restored after."""
    if not count:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_predictor(image: np.ndarray, config: EvalConfig) -> SlicePredictor:
    """A predictor on ``image`` with the configured model (loaded once per process) and window."""
    from ..models import load_model  # imports PyTorch: here, so the command line checks its inputs first

    model = load_model(config.model, device=config.device, precision=config.precision,
                       checkpoint=config.checkpoint, backend=config.backend)
    return SlicePredictor(model, image, window=config.window, cache=_EMBEDDINGS)


def _propagate_object(predictor: SlicePredictor, axis: int, seed: int, reference: np.ndarray,
                      config: EvalConfig) -> tuple[np.ndarray, float]:
    """(3D bool mask, mean score of its slices) propagated from the tight box on slice ``seed``.

    When the model returns nothing on the seed slice the prediction is empty (a result to
    score, not an error).
    """
    prompt = Prompt(box=tight_box(take_slice(reference, axis, seed)))
    try:
        result = propagate(predictor, axis, seed, seed_prompt=prompt, direction="both", options=config.propagation)
    except PromptError:
        seed_prediction = predictor.predict(axis, seed, prompt)
        if seed_prediction.mask.any():
            raise
        return np.zeros(reference.shape, dtype=bool), seed_prediction.score
    return result.mask, float(np.mean(list(result.scores.values())))


def evaluate_case(case: Case, config: EvalConfig, progress: Optional[Progress] = None) -> list[Row]:
    """Every row (see :data:`COLUMNS`) for one case. ``progress(done, total)`` counts slice/label units.

    Raises InputError for unreadable files, image and label on different voxel grids, or label
    values that are asked for but absent.
    """
    image, label, geometry = load_case(case)
    values = _label_values(case, label, config.labels)
    axis = config.axis
    slice_protocols = [p for p in config.protocols if p in SLICE_PROTOCOLS]
    volume_protocols = [p for p in config.protocols if p in VOLUME_PROTOCOLS]
    # Visit slice by slice so every label on a slice shares one cached embedding.
    units = sorted((index, value) for value in values
                   for index in (_chosen_slices(label == value, axis, config) if slice_protocols else []))
    total = len(units) + len(values) * len(volume_protocols)
    spacing2d = slice_spacing(geometry.spacing_kji, axis)
    rows: list[Row] = []
    with torch_threads(config.torch_threads):  # the caller's thread count is restored after
        predictor = make_predictor(image, config)
        try:
            for done, (index, value) in enumerate(units, 1):
                reference = take_slice(label, axis, index) == value
                for protocol in slice_protocols:
                    rng = protocol_rng(config.seed, case.name, value, axis, index, protocol)
                    prompt = make_prompt(protocol, reference, rng, config.jitter_px)
                    for selection, (mask, score) in predict_selections(predictor, axis, index, prompt,
                                                                       reference).items():
                        metrics = compute_metrics(mask, reference, spacing2d, config.tolerance_mm)
                        rows.append(_row(case, value, axis, index, "slice", protocol, selection, metrics, score,
                                         reference, mask))
                if progress:
                    progress(done, total)
            done = len(units)
            for value in values:
                for protocol in volume_protocols:  # only propagate3d today
                    reference = label == value
                    seed = seed_slice(reference, axis)
                    mask, score = _propagate_object(predictor, axis, seed, reference, config)
                    metrics = compute_metrics(mask, reference, geometry.spacing_kji, config.tolerance_mm)
                    rows.append(_row(case, value, axis, seed, "object", protocol, "single", metrics, score,
                                     reference, mask))
                    done += 1
                    if progress:
                        progress(done, total)
        finally:
            predictor.close()
    return rows


def run_evaluation(cases: list[Case], config: EvalConfig, executor: Optional[Executor] = None,
                   progress: Optional[Callable[[int, int, str], None]] = None) -> list[Row]:
    """Rows of every case, in case order.

    executor None runs the cases one after another here, reporting ``progress(done, total, name)``
    per slice unit; with an executor the cases run as its tasks and progress counts finished cases.
    The first failing case cancels the ones not yet started and its error is raised.
    """
    if executor is None:
        rows: list[Row] = []
        for n, case in enumerate(cases, 1):
            report = None
            if progress is not None:
                def report(done: int, total: int, name: str = f"{case.name} ({n}/{len(cases)})") -> None:
                    progress(done, total, name)
            rows.extend(evaluate_case(case, config, report))
        return rows
    futures: dict[Future, int] = {executor.submit(evaluate_case, case, config): n for n, case in enumerate(cases)}
    results: dict[int, list[Row]] = {}
    try:
        for finished, future in enumerate(as_completed(futures), 1):
            results[futures[future]] = future.result()
            if progress:
                progress(finished, len(cases), cases[futures[future]].name)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return [row for n in range(len(cases)) for row in results[n]]


def overlay_examples(rows: list[Row], cases: list[Case], config: EvalConfig, count: int = 3) -> list[Overlay]:
    """The ``count`` worst and ``count`` best 2D rows by Dice (worst first), predicted again to be drawn.

    Prompts are regenerated from the seed, so the pictures show the evaluated predictions (up to
    floating-point differences between machines). Returns an empty list without 2D rows.
    """
    ordered = sorted((r for r in rows if r["scope"] == "slice"), key=lambda r: float(r["dice"]))
    worst = ordered[:count]
    best = list(reversed(ordered[len(worst):]))[:count]
    picked = [(f"worst {n}", row) for n, row in enumerate(worst, 1)] + \
             [(f"best {n}", row) for n, row in enumerate(best, 1)]
    drawn: dict[int, Overlay] = {}
    axis = config.axis
    for case in cases:
        mine = [(n, tag, row) for n, (tag, row) in enumerate(picked) if row["case"] == case.name]
        if not mine:
            continue
        image, label, geometry = load_case(case)
        with torch_threads(config.torch_threads):
            predictor = make_predictor(image, config)
            try:
                for n, tag, row in mine:
                    index, value, protocol = int(row["slice"]), int(row["label"]), str(row["protocol"])
                    reference = take_slice(label, axis, index) == value
                    rng = protocol_rng(config.seed, case.name, value, axis, index, protocol)
                    prompt = make_prompt(protocol, reference, rng, config.jitter_px)
                    mask = predict_selections(predictor, axis, index, prompt, reference)[str(row["selection"])][0]
                    title = (f"{tag}: {case.name} label {value} {'KJI'[axis]}={index}\n"
                             f"{protocol} / {row['selection']}: Dice {dice(mask, reference):.3f}")
                    drawn[n] = Overlay(title, predictor.slice_image(axis, index), reference, mask, prompt,
                                       slice_spacing(geometry.spacing_kji, axis))
            finally:
                predictor.close()
    return [drawn[n] for n in sorted(drawn)]


def local_executor(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started with ``spawn`` (safe with torch's threads)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _pair_by_name(images: list[Path], labels: list[Path], where: Path) -> list[Case]:
    def key(path: Path, strip: str) -> str:
        stem = volume_stem(path)
        return stem[: -len(strip)] if strip and stem.endswith(strip) else stem

    label_by_key = {key(p, "_label"): p for p in labels}
    cases, unmatched = [], []
    for image in images:
        name = key(image, "_image")
        name = name[:-5] if name not in label_by_key and name.endswith("_0000") else name  # nnU-Net channel
        if name in label_by_key:
            cases.append(Case(name, image, label_by_key[name]))
        else:
            unmatched.append(image.name)
    if unmatched:
        raise InputError(f"no label volume found in {where} for image(s): {', '.join(unmatched)}")
    if not cases:
        raise InputError(f"no image/label pairs found in {where}")
    return cases


def _volumes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))


def _csv_cases(path: Path) -> list[Case]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "label"} <= set(reader.fieldnames):
                raise InputError(f"{path} needs a header with 'image' and 'label' columns (and optionally 'case')")
            cases = []
            for line, entry in enumerate(reader, 2):
                if not entry["image"] or not entry["label"]:
                    raise InputError(f"{path} line {line}: empty image or label path")
                image, label = (path.parent / entry[c].strip() for c in ("image", "label"))
                cases.append(Case((entry.get("case") or "").strip() or volume_stem(image), image, label,
                                  (entry.get("series") or "").strip() or None))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV text file ({exc})") from None
    return cases


def find_cases(path: str | Path) -> list[Case]:
    """Cases listed by a CSV file or found in a folder.

    CSV: a header with ``image`` and ``label`` columns (and optionally ``case``, and ``series``: the
    DICOM SeriesInstanceUID to read when an image is a folder holding several); relative paths
    are relative to the CSV's folder. Folder: ``images/`` + ``labels/`` (or nnU-Net's
    ``imagesTr``/``labelsTr``, ``imagesTs``/``labelsTs``) matched by file name (an image's
    ``_0000`` channel suffix is ignored), or files named ``NAME_image.nii.gz`` + ``NAME_label.nii.gz``.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        cases = _csv_cases(path)
    elif path.is_dir():
        pairs = [(path / a, path / b) for a, b in (("images", "labels"), ("imagesTr", "labelsTr"),
                                                   ("imagesTs", "labelsTs")) if (path / a).is_dir()]
        if pairs:
            cases = [c for images, labels in pairs
                     for c in _pair_by_name(_volumes(images), _volumes(labels) if labels.is_dir() else [], images)]
        else:
            files = _volumes(path)
            cases = _pair_by_name([p for p in files if volume_stem(p).endswith("_image")],
                                  [p for p in files if volume_stem(p).endswith("_label")], path)
    else:
        raise InputError(f"{path} is neither a CSV file of image/label pairs nor a folder")
    if not cases:
        raise InputError(f"{path} lists no cases")
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"case names must be unique; repeated: {', '.join(duplicates)}")
    return cases
