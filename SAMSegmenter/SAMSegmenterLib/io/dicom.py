"""DICOM input: one file, or a folder holding one series (SimpleITK's GDCM readers), geometry kept.

A series is read in slice-position order (GDCM sorts the files by their position along the
slice normal, whatever their names or instance numbers), with spacing, origin and direction
from the files. A folder holding several series is refused with a list of them (UID,
description, number of files) so the caller can choose one; slices that are not evenly spaced
(a missing, unreadable or duplicated file) are refused too, since one spacing would misplace them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .native_output import captured_stderr

DICOM_MAGIC_OFFSET = 128  # "DICM" follows a 128-byte preamble in DICOM part-10 files


class SeriesChoiceError(InputError):
    """A folder holds several DICOM series, or not the one asked for: ``series`` lists what it holds."""

    def __init__(self, message: str, series: list["SeriesInfo"]):
        super().__init__(message)
        self.series = series


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series of a folder: its SeriesInstanceUID, SeriesDescription and files (slice order)."""

    uid: str
    description: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        description = f" {self.description!r}" if self.description else ""
        return f"{self.uid}{description} ({len(self.files)} files)"


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` starts like a DICOM part-10 file (128-byte preamble, then ``DICM``)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _description(first_file: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(first_file)
    try:
        with captured_stderr():
            reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else ""


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The DICOM series in ``folder`` (not its subfolders), each with its files in slice order."""
    folder = str(folder)
    with captured_stderr():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        files = {uid: tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid)) for uid in uids}
    return [SeriesInfo(uid, _description(files[uid][0]), files[uid]) for uid in uids if files[uid]]


def choose_series(folder: Path, series: Optional[str] = None) -> SeriesInfo:
    """The series of ``folder`` to read: the only one, or the one whose SeriesInstanceUID is ``series``.

    Reads file headers only. Raises InputError (no readable series) or SeriesChoiceError.
    """
    found = list_series(folder)
    if not found:
        dicom_files = [p.name for p in sorted(folder.iterdir()) if p.is_file() and is_dicom_file(p)]
        if dicom_files:
            raise InputError(f"{folder} holds {len(dicom_files)} DICOM file(s) but no readable image series "
                             f"(e.g. {dicom_files[0]}: truncated, or not an image such as a report or RT plan)")
        raise InputError(f"{folder} holds no DICOM series (subfolders are not searched)")
    _warn_skipped(folder, found)
    listing = "; ".join(str(s) for s in found)
    if series is None:
        if len(found) == 1:
            return found[0]
        raise SeriesChoiceError(f"{folder} holds {len(found)} DICOM series: {listing}; choose one by its UID",
                                found)
    chosen = [s for s in found if s.uid == series.strip()]
    if not chosen:
        raise SeriesChoiceError(f"{folder} holds no DICOM series {series}; it holds {listing}", found)
    return chosen[0]


def _warn_skipped(folder: Path, found: list[SeriesInfo]) -> None:
    """Warn about DICOM files of ``folder`` that no series took (truncated or unreadable files, non-images)."""
    taken = {Path(f).name for s in found for f in s.files}
    skipped = [p.name for p in sorted(folder.iterdir()) if p.name not in taken and p.is_file() and is_dicom_file(p)]
    if skipped:
        warnings.warn(f"{len(skipped)} DICOM file(s) in {folder} belong to no readable image series and were left "
                      f"out (e.g. {skipped[0]}: truncated, unreadable, or not an image)", stacklevel=3)


def _positions(reader: sitk.ImageSeriesReader, count: int) -> Optional[np.ndarray]:
    """Each slice's position along the slice normal (mm), from ImagePositionPatient/ImageOrientationPatient."""
    try:
        orientation = np.array(reader.GetMetaData(0, "0020|0037").split("\\"), dtype=np.float64)
        positions = np.array([reader.GetMetaData(n, "0020|0032").split("\\") for n in range(count)],
                             dtype=np.float64)
    except (RuntimeError, ValueError):
        return None  # no position tags (e.g. secondary capture): nothing to check
    if orientation.shape != (6,) or positions.shape != (count, 3):
        return None
    return positions @ np.cross(orientation[:3], orientation[3:])


def _check_spacing(folder: Path, info: SeriesInfo, reader: sitk.ImageSeriesReader) -> None:
    """InputError unless the slices are in position order, one per position, evenly spaced."""
    count = len(info.files)
    along = _positions(reader, count)
    if along is None or count < 2:
        return
    gaps = np.diff(along)
    if np.any(np.abs(gaps) < 1e-3) or np.any(np.abs(np.diff(np.sort(along))) < 1e-3):
        raise InputError(f"DICOM series {info.uid} in {folder} has several images at one slice position "
                         "(a time series, multi-echo or repeated acquisition), not one 3D volume")
    if not (np.all(gaps > 0) or np.all(gaps < 0)):
        raise InputError(f"DICOM series {info.uid} in {folder}: its files could not be put in slice order")
    gaps = np.abs(gaps)
    step = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - step)))
    if abs(gaps[worst] - step) > max(0.01 * step, 1e-3):
        raise InputError(f"DICOM series {info.uid} in {folder} is not evenly spaced: {gaps[worst]:.3g} mm between "
                         f"{Path(info.files[worst]).name} and {Path(info.files[worst + 1]).name}, {step:.3g} mm "
                         "elsewhere (a missing, unreadable or duplicated slice?)")


def _diagnose(info: SeriesInfo, exc: RuntimeError) -> str:
    """Why a series could not be read: slices of different sizes, or the reader's own first line."""
    sizes = {}
    for name in info.files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            with captured_stderr():
                reader.ReadImageInformation()
            sizes[name] = tuple(reader.GetSize()[:2])
        except RuntimeError:
            return f"{Path(name).name} cannot be read"
    common = max(set(sizes.values()), key=list(sizes.values()).count)
    odd = [name for name, size in sizes.items() if size != common]
    if odd:
        return (f"its slices differ in size: {Path(odd[0]).name} is {' x '.join(map(str, sizes[odd[0]]))}, "
                f"{len(sizes) - len(odd)} others {' x '.join(map(str, common))}")
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return lines[0] if lines else "unknown error"


def read_series(folder: str | Path, series: Optional[str] = None) -> sitk.Image:
    """Read one DICOM series of ``folder`` (the only one, or the one whose SeriesInstanceUID is ``series``).

    Raises InputError when the folder holds no readable series, SeriesChoiceError when it holds
    several and ``series`` is None (or names none of them), and InputError for unevenly spaced slices.
    """
    folder = Path(folder)
    info = choose_series(folder, series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(info.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with captured_stderr():
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series {info.uid} in {folder}: {_diagnose(info, exc)}") from None
    _check_spacing(folder, info, reader)
    return image
