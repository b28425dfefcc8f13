"""The case set of the ground-truth parity rule, and running the rule with :func:`evaluate.evaluate_case`.

The rule itself (tolerances, verdicts, recorded runs) is in
:mod:`models.ground_truth_parity`. The case set is built from the real sample data
(:mod:`io.sample_data`) into a folder of NIfTI files:

- MNI152 2009 T1 template (nilearn, 1 mm) with five structures from nilearn's masks
  (thresholded probability maps: an imperfect ground truth): the brain, grey-matter and
  white-matter masks (large, ambiguous boxes) and two compact structures, the posterior
  fossa (largest component of the brain at k <= 32, j <= 115) and one temporal pole
  (k <= 40, j > 105, i < 98); each along the K, J and I axes, on every
  ``step``-th slice of the volume grid (indices divisible by ``step``, so that all
  structures share the slices and their embeddings) where it covers at least
  :data:`MIN_PIXELS` pixels;
- pydicom's CT_small slice (128 x 128, HU, bone window) with three structures derived
  by thresholds (:func:`ct_structures`): the vertebral body, the vertebral arch and the
  spinal canal.

Each case is evaluated with the ``box`` and ``box_jitter`` protocols (seed 0), single
output, once per backend, so every backend sees the same slices and prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..io.sample_data import load_sample, write_sample
from ..io.volumes import Geometry, read_volume, write_labels
from ..models.ground_truth_parity import PROTOCOLS, SELECTION, Verdict, judge
from ..propagation.postprocess import fill_holes, label_components, largest_component
from ..volume import put_slice, take_slice
from .evaluate import Case, EvalConfig, Row, evaluate_case

SLICE_STEP = 10
MIN_PIXELS = 50
MNI_STRUCTURES = ("brain", "grey_matter", "white_matter", "posterior_fossa", "temporal_pole")
AXES = (0, 1, 2)
CT_STRUCTURES = {1: "vertebral body", 2: "vertebral arch", 3: "spinal canal"}


@dataclass(frozen=True)
class RuleCase:
    """One evaluate case of the rule: a case, the axis its slices are taken along, and the window."""

    case: Case
    axis: int
    window: str


def mni152_structures() -> tuple[np.ndarray, Geometry, dict[str, np.ndarray]]:
    """(template [k, j, i], geometry, {structure: bool [k, j, i]}) for :data:`MNI_STRUCTURES`."""
    image, geometry = load_sample("mni152")
    brain, gm, wm = (load_sample(f"mni152_{name}")[0] > 0 for name in ("brain", "gm", "wm"))
    k, j, i = np.indices(brain.shape, sparse=True)
    return image, geometry, {
        "brain": brain, "grey_matter": gm, "white_matter": wm,
        "posterior_fossa": largest_component(brain & (k <= 32) & (j <= 115)),
        "temporal_pole": largest_component(brain & (k <= 40) & (j > 105) & (i < 98)),
    }


def ct_structures(slice_hu: np.ndarray) -> np.ndarray:
    """Label map (rows, columns) of :data:`CT_STRUCTURES` on pydicom's CT_small slice (HU), by thresholds.

    Bone is > 200 HU. The vertebral body is the largest bone piece in the upper 45 rows, holes
    filled; the arch the largest bone piece in the lower half; the spinal canal the soft (< 150 HU)
    region, opened with a 4-pixel radius (it cuts the canal from the tissue beside the arch), at the
    point midway between the body's lowest and the arch's highest row, below the body's centre.
    """
    bone = slice_hu > 200
    rows = np.arange(slice_hu.shape[0])[:, None]
    body = fill_holes(largest_component(bone & (rows < 45)))
    arch = largest_component(bone & (rows >= slice_hu.shape[0] // 2))
    soft = sitk.GetImageFromArray(((slice_hu < 150) & ~body & ~arch).astype(np.uint8))
    components, _ = label_components(sitk.GetArrayFromImage(sitk.BinaryMorphologicalOpening(soft, [4, 4])) > 0)
    body_rows, body_cols = np.nonzero(body)
    middle = ((body_rows.max() + np.nonzero(arch)[0].min()) // 2, int(body_cols.mean()))
    labels = np.zeros(slice_hu.shape, np.uint8)
    labels[body], labels[arch] = 1, 2
    if components[middle]:
        labels[components == components[middle]] = 3
    return labels


def _sampled(mask: np.ndarray, axis: int, step: int) -> np.ndarray:
    """``mask`` kept on the slices along ``axis`` whose index is a multiple of ``step`` and that hold
    at least MIN_PIXELS pixels of it; empty elsewhere."""
    out = np.zeros(mask.shape, np.uint8)
    for index in range(0, mask.shape[axis], step):
        section = take_slice(mask, axis, index)
        if section.sum() >= MIN_PIXELS:
            put_slice(out, axis, index, section)
    return out


def write_case_set(folder: str | Path, step: int = SLICE_STEP, structures: Sequence[str] = MNI_STRUCTURES,
                   axes: Sequence[int] = AXES, ct: bool = True) -> list[RuleCase]:
    """Write the rule's image and label files into ``folder`` and return its cases (see the module docstring).

    A smaller set (fewer structures or axes, a larger ``step``, no CT) runs the same rule faster.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[RuleCase] = []
    if structures and axes:
        _, geometry, masks = mni152_structures()
        image = write_sample("mni152", folder / "mni152.nii.gz")
        for name in structures:
            for axis in axes:
                sampled = _sampled(masks[name], axis, step)
                if not sampled.any():  # a small structure between the sampled slices
                    continue
                label = write_labels(folder / f"mni152_{name}_{'KJI'[axis]}.nii.gz", sampled, geometry)
                cases.append(RuleCase(Case(f"mni152 {name} {'KJI'[axis]}", image, label), axis, "auto"))
    if ct:
        image = write_sample("ct_small", folder / "ct_small.nii.gz")
        volume, geometry = read_volume(image)
        label = write_labels(folder / "ct_small_labels.nii.gz", ct_structures(volume[0])[None], geometry)
        cases.append(RuleCase(Case("ct_small", image, label), 0, "bone"))
    return cases


def rule_rows(cases: Sequence[RuleCase], backend: str, device: str = "cpu") -> list[Row]:
    """The rule's rows (protocols ``box`` and ``box_jitter``, single output) of ``backend``, in case order."""
    rows: list[Row] = []
    for rule_case in cases:
        config = EvalConfig(protocols=PROTOCOLS, axis=rule_case.axis, window=rule_case.window, device=device,
                            backend=backend)
        rows += [r for r in evaluate_case(rule_case.case, config) if r["selection"] == SELECTION]
    return rows


def _key(row: Row) -> tuple:
    return row["case"], row["label"], row["axis"], row["slice"], row["protocol"]


def paired_dice(reference: list[Row], candidate: list[Row]) -> tuple[list[float], list[float]]:
    """Dice of the same (case, label, axis, slice, protocol) rows in both runs; ValueError if the rows differ."""
    ref = {_key(r): float(r["dice"]) for r in reference}
    cand = {_key(r): float(r["dice"]) for r in candidate}
    if ref.keys() != cand.keys():
        raise ValueError("the two runs did not evaluate the same slices and prompts")
    keys = sorted(ref)
    return [ref[k] for k in keys], [cand[k] for k in keys]


def run_rule(candidates: Sequence[str], cases: Sequence[RuleCase], reference: str = "torch",
             device: str = "cpu", progress: Optional[Callable[[str], None]] = None
             ) -> tuple[dict[str, Verdict], dict[str, list[Row]]]:
    """Run the rule for each of ``candidates`` against the float32 ``reference`` backend.

    Returns ({backend: Verdict}, {backend: rows}); the reference's rows are included, its
    own verdict is not. ``progress(backend)`` is called before each backend's run. A backend
    that cannot run here raises (callers skip it beforehand).
    """
    rows: dict[str, list[Row]] = {}
    for name in [reference, *[c for c in candidates if c != reference]]:
        if progress:
            progress(name)
        rows[name] = rule_rows(cases, name, device)
    verdicts = {name: judge(name, *paired_dice(rows[reference], rows[name]))
                for name in candidates if name != reference}
    return verdicts, rows
