"""Evaluation cases for benchmarks/propagation.py: the 1 mm template, thick-slice versions, real CT and MR.

A case is one target (bool label ``[k, j, i]``) in one volume, walked along one axis, with the
slice range a free walk may use. Sets:

  iso    MNI152 2009 T1 template (nilearn), 1 mm; targets cut from nilearn's brain / white-matter
         masks (as before this set existed; see benchmarks/propagation.py).
  thick  the same template averaged along the walking axis over 3, 5 and 7 mm slabs (partial
         volume, as a scanner makes thick slices; SAMSegmenterLib.evaluation.thick_slices), labels
         resampled the same way (a thick voxel is inside where >= half its thin voxels are);
         large and small targets along each axis.
  ct     TotalSegmentator's example CT (3 mm isotropic abdomen, 30 axial slices) with its example
         segmentation; axial walks. Also the same CT averaged into 6 mm slices (``ct6``).
  mr     TotalSegmentator's example MR (3 mm, 20 axial slices) with its example segmentation,
         and 6 mm slabs of it (``mr6``). Looked at when the appearance stop was chosen.

Held out (no rule, threshold or weight was chosen on them; added 2026-12-07 after the defaults):

  ct_other  other structures of the same CT and its 6 mm slabs, none used for tuning: stomach,
            pancreas, duodenum, L2 and T12 vertebrae, inferior vena cava, right paraspinal muscle
            (organs against organs of similar density).
  mr_other  other structures of the same MR: gallbladder, pancreas, duodenum, aorta, inferior
            vena cava, right paraspinal muscle.
  lesion    pyradiomics' test cases: two glioblastomas on post-contrast T1 MR (6.5 mm slices) and a
            breast lesion on MR (2.1 mm), labels drawn by hand; other patients, other scanners.
  brats     six BraTS 2013 glioma patients (the example data of the DeepMedic repository; expert
            labels), averaged into 5 mm slabs: the whole tumour on FLAIR and the tumour core on
            post-contrast T1. Not in this repository (CC BY-NC-SA 3.0): pass the folder
            ``examples/dataForExamples/brats2015TrainingData`` of github.com/deepmedic/deepmedic
            (commit e10ba7c3570d06194f5dadca91d99d5e7bba7de5) as ``brats_dir``.
  fresh     held out from every choice so far, the last round's diagnostic included: deep grey
            structures, a ventricle, the brainstem and the cerebellar cortex of VoxelMorph's test
            brain (FreeSurfer labels) in 5 mm slabs, and the Spinal Cord Toolbox's cervical cord
            (manual masks: the cord on T1 at 1 mm, the cord and its grey matter on T2* at 7.5 mm).
  itksnap   ITK-SNAP's test volume MRIcrop (a cropped T1 brain at 1 mm with 8 labelled structures,
            unnamed in the source), at 1 mm and in 5 mm slabs; added after the seed cue of
            docs/propagation.md was tried, to check it on a volume nothing had seen. Not in this
            repository (GPL-3.0): pass the folder ``Testing/TestData`` of github.com/pyushkevich/itksnap
            (commit b107ab0) as ``itksnap_dir``.

The CT and MR files are in benchmarks/data/totalsegmentator (see the README there: source,
licence; their labels are TotalSegmentator's own output, not manual contours); the lesion cases
in benchmarks/data/pyradiomics (BSD-3-Clause).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from SAMSegmenterLib.evaluation.thick_slices import thick_labels, thick_slices, thick_spacing
from SAMSegmenterLib.io import read_volume
from SAMSegmenterLib.io.sample_data import load_sample
from SAMSegmenterLib.propagation.postprocess import largest_component

BENCHMARK_DATA = Path(__file__).resolve().parent / "data"
DATA = BENCHMARK_DATA / "totalsegmentator"
TUNE_SETS = ("thick", "ct", "mr")
HELD_OUT_SETS = ("ct_other", "mr_other", "lesion", "brats", "fresh", "itksnap")
SETS = ("iso", "thick", "ct", "mr", "ct_other", "mr_other", "lesion", "brats", "fresh", "itksnap")
EXTERNAL_SETS = ("brats", "itksnap")  # their data is not in the repository: a folder is passed
DEFAULT_SETS = tuple(name for name in SETS if name not in EXTERNAL_SETS)

Masks = dict[str, np.ndarray]

MNI_TARGETS: dict[str, Callable[[Masks, tuple[np.ndarray, ...]], np.ndarray]] = {
    "cerebellum": lambda m, kji: largest_component(m["brain"] & (kji[0] <= 32) & (kji[1] <= 115)),
    "cerebellar_hemisphere": lambda m, kji: largest_component(m["brain"] & (kji[0] <= 32) & (kji[1] <= 115)
                                                              & (kji[2] < 98)),
    "temporal_pole": lambda m, kji: largest_component(m["brain"] & (kji[0] <= 40) & (kji[1] > 105) & (kji[2] < 98)),
    "vertex": lambda m, kji: m["brain"] & (kji[0] >= 125),
    "wm_upper": lambda m, kji: largest_component(m["wm"] & (kji[2] < 98) & (kji[0] >= 100)),
    "hemisphere": lambda m, kji: largest_component(m["brain"] & (kji[2] < 98)),
}
# Run "target:axis" -> the end of the target along the axis that is the structure's own ("up"/"down"; the
# other end is a cut of the bounding region or the volume's edge). A free walk is unlimited on that side only.
ISO_RUNS = {"cerebellum:K": "down", "temporal_pole:K": "down", "vertex:K": "up", "wm_upper:K": "up",
            "temporal_pole:J": "up", "hemisphere:I": "down"}
THICK_RUNS = {"cerebellum:K": "down", "cerebellar_hemisphere:K": "down", "temporal_pole:K": "down",
              "temporal_pole:J": "up", "hemisphere:I": "down"}
THICK_MM = (3, 5, 7)
# TotalSegmentator label values (its "total" and "total_mr" tasks) of the targets used here.
CT_LABELS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "vertebrae_L1": 31,
             "aorta": 52}
MR_LABELS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "stomach": 6, "autochthon_left": 46}
# Left out: the portal/splenic vein and the lung lobes, which no box prompts (a tight box around them on
# every slice gives 3D Dice 0.09-0.32 with this model).
CT_OTHER_LABELS = {"stomach": 6, "pancreas": 7, "duodenum": 19, "vertebrae_L2": 30, "vertebrae_T12": 32,
                   "inferior_vena_cava": 63, "autochthon_right": 87}
MR_OTHER_LABELS = {"gallbladder": 4, "pancreas": 7, "duodenum": 14, "aorta": 23, "inferior_vena_cava": 24,
                   "autochthon_right": 47}
LESIONS = ("brain1", "brain2", "breast1")  # pyradiomics' <name>_image.nrrd / <name>_label.nrrd
# BraTS labels: 1 necrosis, 2 oedema, 3 non-enhancing tumour, 4 enhancing tumour; target -> (image, labels).
BRATS_TARGETS = {"whole_tumour": ("Flair", (1, 2, 3, 4)), "tumour_core": ("T1c", (1, 3, 4))}
BRATS_MM = 5
# FreeSurfer aseg values of VoxelMorph's test scan used as targets.
BRAIN_LABELS = {"thalamus_left": 10, "caudate_left": 11, "putamen_left": 12, "hippocampus_left": 17,
                "lateral_ventricle_left": 4, "brainstem": 16, "cerebellar_cortex_left": 8}
# Spinal Cord Toolbox cases: (name, image, label) in benchmarks/data/sct.
CORD_CASES = (("cord_t1", "t1w.nii.gz", "t1w_seg-manual.nii.gz"), ("cord_t2s", "t2s.nii.gz", "t2s_seg.nii.gz"),
              ("cord_grey_matter_t2s", "t2s.nii.gz", "t2s_gmseg_manual.nii.gz"))
ITKSNAP_MM = (1, 5)  # slab thicknesses of the itksnap set


@dataclass
class Case:
    """One target walked along ``axis`` (0, 1, 2 = K, J, I) of ``volume`` [k, j, i].

    free: the inclusive slice range a walk without a range may use (the whole axis, or up to
    a cut of the bounding region); spacing_kji in mm.
    """

    set: str
    name: str
    volume_id: str
    volume: np.ndarray
    spacing_kji: tuple[float, float, float]
    target: np.ndarray
    axis: int
    free: tuple[int, int]


def _extent(mask: np.ndarray, axis: int) -> tuple[int, int]:
    other = tuple(a for a in range(3) if a != axis)
    indices = np.flatnonzero(mask.any(axis=other))
    return int(indices[0]), int(indices[-1])


def _free(target: np.ndarray, axis: int, own_end: str) -> tuple[int, int]:
    first, last = _extent(target, axis)
    return (0 if own_end == "down" else first, target.shape[axis] - 1 if own_end == "up" else last)


def _mni() -> tuple[np.ndarray, tuple[float, float, float], Masks]:
    volume, geometry = load_sample("mni152")
    masks = {name: load_sample(f"mni152_{name}")[0] > 0 for name in ("brain", "wm")}
    return volume, geometry.spacing_kji, masks


def iso_cases(runs: tuple[str, ...] = tuple(ISO_RUNS)) -> Iterator[Case]:
    volume, spacing, masks = _mni()
    kji = np.indices(volume.shape, sparse=True)
    for run in runs:
        own_end = ISO_RUNS[run]
        name, _, letter = run.partition(":")
        axis = "KJI".index(letter)
        target = MNI_TARGETS[name](masks, kji)
        yield Case("iso", f"{name}:{letter}", "mni152", volume, spacing, target, axis, _free(target, axis, own_end))


def thick_cases(thicknesses: tuple[int, ...] = THICK_MM) -> Iterator[Case]:
    volume, spacing, masks = _mni()
    kji = np.indices(volume.shape, sparse=True)
    for mm in thicknesses:
        made: dict[int, np.ndarray] = {}
        for run, own_end in THICK_RUNS.items():
            name, _, letter = run.partition(":")
            axis = "KJI".index(letter)
            factor = int(round(mm / spacing[axis]))
            if axis not in made:
                made[axis] = thick_slices(volume, axis, factor)
            target = largest_component(thick_labels(MNI_TARGETS[name](masks, kji), axis, factor))
            yield Case("thick", f"{name}:{letter}@{mm}mm", f"mni152_{letter}{mm}", made[axis],
                       thick_spacing(spacing, axis, factor), target, axis, _free(target, axis, own_end))


def _real(set_name: str, image: str, labels_file: str, labels: dict[str, int],
          factors: tuple[int, ...] = (1, 2)) -> Iterator[Case]:
    volume, geometry = read_volume(DATA / image)
    label_map, _ = read_volume(DATA / labels_file)
    for factor in factors:
        vol = volume.astype(np.float32) if factor == 1 else thick_slices(volume, 0, factor)
        spacing = thick_spacing(geometry.spacing_kji, 0, factor)
        mm = int(round(spacing[0]))
        for name, value in labels.items():
            label = label_map == value
            target = label if factor == 1 else thick_labels(label, 0, factor)
            target = largest_component(target)
            if target.sum() == 0:
                continue
            yield Case(set_name, f"{name}@{mm}mm", f"{set_name}{mm}", vol, spacing, target, 0,
                       (0, vol.shape[0] - 1))


def ct_cases() -> Iterator[Case]:
    yield from _real("ct", "example_ct_sm.nii.gz", "example_seg.nii.gz", CT_LABELS)


def mr_cases() -> Iterator[Case]:
    yield from _real("mr", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", MR_LABELS)


def ct_other_cases() -> Iterator[Case]:
    yield from _real("ct_other", "example_ct_sm.nii.gz", "example_seg.nii.gz", CT_OTHER_LABELS)


def mr_other_cases() -> Iterator[Case]:
    yield from _real("mr_other", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", MR_OTHER_LABELS)


def _labelled_file(set_name: str, name: str, image: Path, label_file: Path) -> Case:
    """The largest component of a label file's non-zero voxels in its image, walked along K (the
    acquisition's slice axis) over the whole axis; the image file names the volume."""
    volume, geometry = read_volume(image)
    label, _ = read_volume(label_file)
    mm = geometry.spacing_kji[0]
    return Case(set_name, f"{name}@{mm:.1f}mm", str(image), volume.astype(np.float32), geometry.spacing_kji,
                largest_component(label > 0), 0, (0, volume.shape[0] - 1))


def lesion_cases() -> Iterator[Case]:
    folder = BENCHMARK_DATA / "pyradiomics"
    for name in LESIONS:
        yield _labelled_file("lesion", name, folder / f"{name}_image.nrrd", folder / f"{name}_label.nrrd")


def brats_cases(root: Path) -> Iterator[Case]:
    """Each patient folder under ``root`` (``*/brats_2013_pat*``): the targets of :data:`BRATS_TARGETS`,
    their 1 mm volumes averaged into :data:`BRATS_MM` mm slabs along K (the walking axis)."""
    folders = sorted(root.glob("*/brats_2013_pat*"), key=lambda f: f.name)
    if not folders:
        raise SystemExit(f"no brats_2013_pat* folders under {root} (see propagation_cases.py: brats)")
    for folder in folders:
        labels, geometry = read_volume(folder / "OTMultiClass.nii.gz")
        factor = int(round(BRATS_MM / geometry.spacing_kji[0]))
        spacing = thick_spacing(geometry.spacing_kji, 0, factor)
        patient = folder.name.removeprefix("brats_2013_").removesuffix("_1")
        for name, (image, values) in BRATS_TARGETS.items():
            volume, _ = read_volume(folder / f"{image}_subtrMeanDivStd.nii.gz")
            target = largest_component(thick_labels(np.isin(labels, values), 0, factor))
            yield Case("brats", f"{patient}:{name}@{BRATS_MM}mm", f"{patient}_{image}{BRATS_MM}",
                       thick_slices(volume, 0, factor), spacing, target, 0, (0, target.shape[0] - 1))


def fresh_cases() -> Iterator[Case]:
    """VoxelMorph's brain (array [i, k, j] stored as left-right, superior-inferior, posterior-anterior;
    walked axially in 5 mm slabs) and the Spinal Cord Toolbox's cord masks (walked along K)."""
    scan = np.load(BENCHMARK_DATA / "voxelmorph" / "test_scan.npz")
    volume = np.ascontiguousarray(scan["vol"].transpose(1, 2, 0), dtype=np.float32)
    labels = scan["seg"].transpose(1, 2, 0)
    thick = thick_slices(volume, 0, 5)
    for name, value in BRAIN_LABELS.items():
        target = largest_component(thick_labels(labels == value, 0, 5))
        yield Case("fresh", f"{name}@5mm", "voxelmorph5", thick, (5.0, 1.0, 1.0), target, 0, (0, thick.shape[0] - 1))
    for name, image, label_file in CORD_CASES:
        yield _labelled_file("fresh", name, BENCHMARK_DATA / "sct" / image, BENCHMARK_DATA / "sct" / label_file)


def itksnap_cases(root: Path) -> Iterator[Case]:
    """ITK-SNAP's MRIcrop under ``root``: each of its 8 labels (largest component) walked along K, at 1 mm
    and averaged into 5 mm slabs."""
    image, label_file = root / "MRIcrop-orig.gipl.gz", root / "MRIcrop-seg.gipl.gz"
    if not (image.is_file() and label_file.is_file()):
        raise SystemExit(f"no MRIcrop-orig.gipl.gz / MRIcrop-seg.gipl.gz in {root} (see propagation_cases.py: itksnap)")
    volume, geometry = read_volume(image)
    volume = volume.astype(np.float32)
    labels, _ = read_volume(label_file)
    for mm in ITKSNAP_MM:
        factor = int(round(mm / geometry.spacing_kji[0]))
        thick = thick_slices(volume, 0, factor)
        for value in range(1, int(labels.max()) + 1):
            target = largest_component(thick_labels(labels == value, 0, factor))
            yield Case("itksnap", f"label{value}@{mm}mm", f"mricrop{mm}", thick,
                       thick_spacing(geometry.spacing_kji, 0, factor), target, 0, (0, thick.shape[0] - 1))


def cases(sets: tuple[str, ...] = SETS, iso_runs: tuple[str, ...] = tuple(ISO_RUNS),
          thick_mm: tuple[int, ...] = THICK_MM, brats_dir: Path | None = None,
          itksnap_dir: Path | None = None) -> Iterator[Case]:
    """The cases of ``sets``; ``brats`` needs ``brats_dir`` and ``itksnap`` ``itksnap_dir`` (see the module
    docstring)."""
    for name, folder in (("brats", brats_dir), ("itksnap", itksnap_dir)):
        if name in sets and folder is None:
            raise SystemExit(f"the {name} set needs --{name} DIR (see benchmarks/propagation_cases.py)")
    makers = {"iso": lambda: iso_cases(iso_runs), "thick": lambda: thick_cases(thick_mm), "ct": ct_cases,
              "mr": mr_cases, "ct_other": ct_other_cases, "mr_other": mr_other_cases, "lesion": lesion_cases,
              "brats": lambda: brats_cases(brats_dir), "fresh": fresh_cases,
              "itksnap": lambda: itksnap_cases(itksnap_dir)}
    for name in sets:
        yield from makers[name]()
