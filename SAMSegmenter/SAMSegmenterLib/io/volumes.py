"""Reading volumes (NIfTI, NRRD, MetaImage, DICOM) and writing label volumes (SimpleITK), with exact geometry.

Arrays are indexed ``[k, j, i]`` (SimpleITK's ``GetArrayFromImage`` order, and
Slicer's ``arrayFromVolume``). Geometry is kept in ITK's LPS convention and
copied unchanged to outputs, so a label file overlays its source in any viewer.

Inputs are refused with an InputError, before the voxels are read where the header allows,
when they cannot be right: empty, truncated or damaged files (ITK itself reads a cut NIfTI as
zeros), headers declaring more voxels than the machine's memory, 4D or multi-component images.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from .dicom import choose_series, is_dicom_file, read_series
from .native_output import Captured, captured_stderr
from .nifti import check_nifti_complete
from .outputs import StagedOutputs, check_output_file

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume: spacing and origin in (i, j, k) order, direction 3x3 row-major (LPS)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def spacing_kji(self) -> tuple[float, float, float]:
        """Spacing in array axis order (k, j, i), for metrics on ``[k, j, i]`` arrays."""
        return tuple(reversed(self.spacing))  # type: ignore[return-value]


def _suffix(path: Path, choices: Sequence[str]) -> str | None:
    name = path.name.lower()
    return next((s for s in choices if name.endswith(s)), None)


# MetaImage suffixes, which ITK recognises in lower case only (NIfTI and NRRD in lower or upper case)
_LOWER_CASE_ONLY = (".mha", ".mhd")


def _readable_case(path: Path, suffix: str) -> bool:
    """Whether ITK's readers (Slicer's included) recognise ``path``'s ``suffix`` as written: NIfTI and NRRD in lower
    or upper case, MetaImage in lower case only, nothing in mixed case."""
    written = path.name[-len(suffix):]
    return written == suffix or (written == suffix.upper() and suffix not in _LOWER_CASE_ONLY)


def label_suffix(path: str | Path) -> str:
    """The suffix of :data:`LABEL_SUFFIXES` that ``path`` ends with, in lower case; OutputError when there is none,
    or when it is written in a case that ITK-based readers would not recognise (see :func:`_readable_case`)."""
    path = Path(path)
    suffix = _suffix(path, LABEL_SUFFIXES)
    if suffix is None:
        raise OutputError(f"output {path} must end with one of {', '.join(LABEL_SUFFIXES)}")
    if not _readable_case(path, suffix):
        raise OutputError(f"output {path}: write its suffix as {suffix} (ITK-based readers, Slicer's included, do "
                          f"not recognise {path.name[-len(suffix):]})")
    return suffix


_BYTES = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2, sitk.sitkUInt32: 4,
          sitk.sitkInt32: 4, sitk.sitkFloat32: 4}


def _memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _failure(path: Path, exc: RuntimeError, captured: Captured) -> str:
    """One line saying why ITK could not read ``path``, from its exception and what it printed."""
    text = str(exc)
    if "Unable to determine ImageIO reader" in text:
        if is_dicom_file(path):
            return (f"{path} is a DICOM file without readable image data (truncated, or not an image such as a "
                    "report or RT plan)")
        return f"cannot read {path}: not an image volume in a format SimpleITK knows"
    if "Failed to allocate memory" in text:
        return f"cannot read {path}: not enough memory for its voxels"
    lines = captured.lines() or [line.strip() for line in text.splitlines() if line.strip()] or ["unknown error"]
    details = [line.replace("[nrrd] ", "") for line in lines
               if not line.startswith(("Exception thrown", "/")) and not line.endswith(":")]
    return f"cannot read {path}: {'; '.join(details[-2:]) or lines[-1]}"


def _header(path: Path, scalar: bool = True) -> sitk.ImageFileReader:
    """A reader of ``path`` with its header read and checked: refuses what cannot be right before reading voxels
    (with ``scalar``, also what is not one grey level per voxel in at most 3 dimensions)."""
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {os.strerror(exc.errno).lower() if exc.errno else exc}") from None
    if empty:
        raise InputError(f"{path} is empty (0 bytes)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    suffix = _suffix(path, VOLUME_SUFFIXES)
    if suffix is not None and not _readable_case(path, suffix):
        if suffix not in _LOWER_CASE_ONLY:
            raise InputError(f"cannot read {path}: ITK reads {suffix} files only with the suffix in lower or upper "
                             f"case; rename it to end with {suffix}")
        reader.SetImageIO("MetaImageIO")  # ITK finds MetaImage files by a lower-case suffix only
    try:
        with captured_stderr() as captured:
            reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(_failure(path, exc, captured)) from None
    size, components = reader.GetSize(), reader.GetNumberOfComponents()
    if scalar and components != 1:
        raise InputError(f"{path} has {components} components per voxel; a scalar (grey-level) volume is needed")
    if scalar and len(size) > 3 and math.prod(size[3:]) > 1:
        raise InputError(f"{path} is {len(size)}D ({' x '.join(map(str, size))}); a 3D volume is needed")
    declared, memory = math.prod(size) * _BYTES.get(reader.GetPixelID(), 8) * components, _memory_bytes()
    if memory is not None and declared > memory:
        raise InputError(f"{path} declares {' x '.join(map(str, size))} voxels ({declared / 1e9:.3g} GB), more than "
                         f"this machine's memory ({memory / 1e9:.3g} GB): a damaged header?")
    return reader


def _read_file(path: Path, scalar: bool = True) -> sitk.Image:
    """Read one image file, header first (see :func:`_header`), then check a NIfTI file is complete."""
    reader = _header(path, scalar)
    if not is_dicom_file(path):
        check_nifti_complete(path)
    try:
        with captured_stderr() as captured:
            return reader.Execute()
    except RuntimeError as exc:
        raise InputError(_failure(path, exc, captured)) from None


def check_volume(path: str | Path, series: str | None = None) -> None:
    """The quick part of :func:`read_volume`: the input exists, and its header (or the folder's DICOM series)
    is readable and describes a scalar 3D volume. Reads no voxels; raises as :func:`read_volume` does."""
    path = Path(path)
    if path.is_dir():
        choose_series(path, series)
    else:
        _check_file_input(path, series)
        _header(path)


def _check_file_input(path: Path, series: str | None) -> None:
    """InputError for an input that is not a folder: missing, or given a DICOM series UID (folders only)."""
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if series is not None:
        raise InputError(f"a DICOM series UID applies to a folder of DICOM files; {path} is a file")


def _as_volume(path: Path, image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        raise InputError(f"{path} has {components} components per voxel; a scalar (grey-level) volume is needed")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]  # a 3D volume stored with a fourth dimension of size 1
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        size = " x ".join(map(str, image.GetSize()))
        raise InputError(f"{path} is {image.GetDimension()}D ({size}); a 3D volume is needed")
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def read_volume(path: str | Path, series: str | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a scalar volume.

    Args:
        path: a NIfTI, NRRD or MetaImage file, a DICOM file, or a folder holding a DICOM series.
        series: the SeriesInstanceUID to read when the folder holds several (see :mod:`dicom`).

    Returns:
        (array, geometry): the voxels indexed [k, j, i] (a 2D image becomes one slice) and the grid
        (spacing and origin in (i, j, k) order, direction; ITK's LPS convention).

    Raises:
        InputError: a missing, empty, unreadable, truncated, multi-component or 4D input
        (SeriesChoiceError, a subclass, when a folder's series is ambiguous).
    """
    path = Path(path)
    if path.is_dir():
        image = read_series(path, series)
    else:
        _check_file_input(path, series)
        image = _read_file(path)
    return _as_volume(path, image)


def _seg_nrrd_metadata(image: sitk.Image, labels: dict[int, str]) -> None:
    """Slicer segmentation fields (one shared labelmap layer) on a label image."""
    size = image.GetSize()
    extent = f"0 {size[0] - 1} 0 {size[1] - 1} 0 {size[2] - 1}"
    image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    palette = [(0.5, 0.68, 0.5), (0.95, 0.84, 0.57), (0.69, 0.48, 0.4), (0.44, 0.72, 0.82), (0.98, 0.5, 0.45)]
    for n, (value, name) in enumerate(sorted(labels.items())):
        r, g, b = palette[n % len(palette)]
        fields = {"ID": f"Segment_{value}", "Name": name, "NameAutoGenerated": "0", "Color": f"{r} {g} {b}",
                  "ColorAutoGenerated": "0", "LabelValue": str(value), "Layer": "0", "Extent": extent,
                  "Tags": "Segmentation.Status:inprogress|"}
        for key, text in fields.items():
            image.SetMetaData(f"Segment{n}_{key}", text)


def _label_values(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint8, or InputError when casting would change a value (fractions, negatives, above 255)."""
    labels = np.asarray(labels)
    if labels.dtype in (np.uint8, bool):
        return labels.astype(np.uint8, copy=False)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise InputError(f"labels must be whole numbers 0..255, got dtype {labels.dtype}")
    low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
    fractions = np.issubdtype(labels.dtype, np.floating) and not np.array_equal(labels, np.round(labels))
    if fractions or not 0 <= low <= high <= 255:
        raise InputError(f"labels must be whole numbers 0..255 (a label file holds one byte per voxel), got values "
                         f"{low:g}..{high:g}{' with fractions' if fractions else ''}")
    return labels.astype(np.uint8)


def write_labels(path: str | Path, labels: np.ndarray, geometry: Geometry, names: dict[int, str] | None = None,
                 staging: StagedOutputs | None = None) -> Path:
    """Write a label array with the grid of its source volume; the format follows the extension.

    Args:
        path: ``.seg.nrrd`` (a Slicer segmentation, one segment per label value), or ``.nii.gz``,
            ``.nii``, ``.nrrd``, ``.mha`` (a plain label volume).
        labels: [k, j, i] integer array, 0 = background.
        geometry: the source volume's grid (from :func:`read_volume`), copied exactly.
        names: segment names per label value (``.seg.nrrd``).
        staging: when given, the file is only staged there and appears when the caller commits it
            (with the run's other outputs).

    Returns:
        ``path``. The file appears atomically, with the user's umask: a failed write leaves nothing.

    Raises:
        OutputError: a full disk, a read-only or missing folder, a wrong extension. InputError: labels that are not
            whole numbers 0..255 (bool is 0/1), which a label file cannot hold as given.
    """
    path = Path(path)
    suffix = label_suffix(path)
    labels = _label_values(labels)
    if staging is None:
        check_output_file(path)
        with StagedOutputs() as staged:
            write_labels(path, labels, geometry, names, staged)
            staged.commit()
        return path
    image = geometry.apply(sitk.GetImageFromArray(labels))
    if suffix == ".seg.nrrd":
        values = [int(v) for v in np.unique(labels) if v != 0] or [1]
        _seg_nrrd_metadata(image, {v: (names or {}).get(v, f"Segment_{v}") for v in values})

    staging.write(path, lambda temporary: write_image(image, temporary))
    return path


def write_image(image: sitk.Image, path: Path) -> None:
    """``sitk.WriteImage`` (compressed where the format allows), then :func:`verify_written`."""
    with captured_stderr():
        sitk.WriteImage(image, str(path), True)
    verify_written(path)


def verify_written(path: Path) -> None:
    """Read a just-written image file back: ITK's writers report a full disk only on stderr, or not at all,
    and leave a cut or empty file. RuntimeError when the file is not whole."""
    try:
        if _suffix(path, (".nii.gz", ".nii")):
            check_nifti_complete(path, written=True)
        _read_file(path, scalar=False)
    except InputError as exc:
        raise RuntimeError(str(exc)) from None
