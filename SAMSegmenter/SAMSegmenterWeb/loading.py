"""Loading volumes into the web app's scene: files Slicer reads, and folders of DICOM files.

Reading goes through trame-slicer's IO manager (Slicer's volume archetype readers; DICOM series
are split and sorted by its DICOM reader). The volume is named after its file, or its DICOM series'
description; a 4D file gets a notice (`frames_notice`). A file or folder that yields no grey-level volume
raises InputError with one line naming it, and leaves the scene as it was.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLScene
from trame.app.file_upload import ClientFile
from trame_slicer.core import IOManager

from SAMSegmenterLib.errors import InputError
from SAMSegmenterLib.io.dicom import is_dicom_file

FORMATS = "NIfTI, NRRD, MetaImage, or DICOM files"
NAME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def write_uploads(files: Sequence[dict], folder: Path) -> list[Path]:
    """Write files received from the browser under ``folder``, each in its own subfolder (names may repeat).

    Only the base name of each file is kept, so a name cannot point outside ``folder``.
    """
    paths = []
    for number, entry in enumerate(files):
        upload = ClientFile(entry)
        name = Path(upload.name or "").name or "upload"
        path = folder / str(number) / name
        path.parent.mkdir(parents=True)
        path.write_bytes(upload.content or b"")
        paths.append(path)
    return paths


def volume_files(paths: Sequence[Path]) -> list[str]:
    """The files to read: each file, and every file under each folder (sorted, hidden files skipped)."""
    files: list[str] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files += sorted(
                str(p) for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts)
            )
        elif path.is_file():
            files.append(str(path))
        else:
            raise InputError(f"{path} does not exist")
    return files


def describe(paths: Sequence[Path]) -> str:
    names = [Path(p).name for p in paths]
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"


def load_volume(io_manager: IOManager, scene: vtkMRMLScene, paths: Sequence[Path]) -> vtkMRMLScalarVolumeNode:
    """Read ``paths`` (files and/or folders) and return the largest grey-level volume they hold.

    Other volumes read from the same files are removed from the scene. Raises InputError when
    nothing readable is found.
    """
    files = volume_files(paths)
    if not files:
        raise InputError(f"{describe(paths)} holds no files")
    nodes = [node for node in io_manager.load_volumes(files) if node is not None]
    scalar = [
        node
        for node in nodes
        if isinstance(node, vtkMRMLScalarVolumeNode)
        and node.GetImageData() is not None
        and node.GetImageData().GetNumberOfScalarComponents() == 1
        and node.GetImageData().GetNumberOfPoints() > 0
    ]
    chosen = max(scalar, key=lambda node: node.GetImageData().GetNumberOfPoints(), default=None)
    for node in nodes:
        if node is not chosen:
            scene.RemoveNode(node)
    if chosen is None:
        what = "no grey-level volume" if nodes else f"no volume ({FORMATS})"
        raise InputError(f"cannot load {describe(paths)}: it holds {what}")
    chosen.SetName(display_name(files, chosen.GetName()))
    return chosen


def display_name(files: Sequence[str], node_name: str) -> str:
    """The volume's name in the page: a single file's name without its suffix, a DICOM series' description.

    Slicer's own names are not used as they are: a name already in the scene gets "_1" (or
    "file.nii.gz_1"), and its DICOM reader titles a series "<number>: <description>", which reads
    "None: Unnamed Series" for files without them.
    """
    dicom = [Path(f) for f in files if is_dicom_file(Path(f))]
    if dicom:
        return dicom_title(dicom[0]) or volume_name(node_name)
    if len(files) == 1:
        return volume_name(Path(files[0]).name)
    return volume_name(node_name)


def dicom_title(path: Path) -> str:
    """"<modality> <series description>" of a DICOM file ("<modality> series <number>" without a description;
    "" when the header cannot be read)."""
    try:
        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings on odd files: the title is all we read
            header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any unreadable header: fall back to Slicer's name
        return ""
    modality = str(header.get("Modality", "") or "").strip()
    description = str(header.get("SeriesDescription", "") or "").strip()
    number = str(header.get("SeriesNumber", "") or "").strip()
    title = description or " ".join(part for part in ("series", number) if part)
    return " ".join(part for part in (modality, title) if part)


def frames_notice(files: Sequence[str]) -> str:
    """A sentence for the page when a file holds several volumes (a 4D NIfTI): only its first is shown; else ""."""
    for name in files:
        if not name.lower().endswith((".nii", ".nii.gz")):
            continue
        try:
            import nibabel

            shape = nibabel.load(name).shape
        except Exception:  # noqa: BLE001 - Slicer read it; the notice is only a courtesy
            continue
        frames = int(np.prod(shape[3:])) if len(shape) > 3 else 1
        if frames > 1:
            return (f"{Path(name).name} holds {frames} volumes (4D, {' x '.join(map(str, shape))}): "
                    "only the first is shown and segmented.")
    return ""


def volume_name(file_name: str) -> str:
    """A node name without the volume file suffix Slicer leaves on it ("mni152.nii.gz" -> "mni152")."""
    suffix = next((s for s in NAME_SUFFIXES if file_name.lower().endswith(s)), "")
    return file_name[: len(file_name) - len(suffix)] or file_name
