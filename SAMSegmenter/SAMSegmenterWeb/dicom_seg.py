"""DICOM SEG export for a volume read from DICOM files (highdicom), on the source images' own pixel grid.

The web app keeps the headers of the DICOM files its volume was read from (`read_headers`). The
segmentation is exported as a labelmap on the volume's grid (as the NIfTI download is) and each
source image's frame is sampled from it: the position of every pixel (row r, column c) of that image,
``ImagePositionPatient + c * PixelSpacing[1] * row direction + r * PixelSpacing[0] * column direction``
in LPS millimetres, is mapped to the volume's IJK and the voxel there is read. The result is a
binary DICOM Segmentation (one segment per segment of the list, named as in the list) referencing
the source series, written by highdicom.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from SAMSegmenterLib.errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def read_headers(files: Sequence[str]) -> list:
    """pydicom headers (no pixel data) of the DICOM files among ``files`` that hold images of the most common series."""
    import pydicom

    from SAMSegmenterLib.io.dicom import is_dicom_file

    headers = []
    for name in files:
        if not is_dicom_file(Path(name)):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                header = pydicom.dcmread(name, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - an unreadable file was skipped by the volume reader too
                continue
        if "ImagePositionPatient" in header and "ImageOrientationPatient" in header and "PixelSpacing" in header:
            headers.append(header)
    if not headers:
        return []
    series = [str(h.get("SeriesInstanceUID", "")) for h in headers]
    common = max(set(series), key=series.count)
    return [h for h, uid in zip(headers, series) if uid == common]


def frame_from_volume(header, labels_kji: np.ndarray, ras_to_ijk: np.ndarray) -> np.ndarray:
    """The (rows, columns) labels of the source image ``header`` sampled from ``labels_kji`` (0 outside)."""
    rows, cols = int(header.Rows), int(header.Columns)
    origin = np.asarray(header.ImagePositionPatient, dtype=float)
    orientation = np.asarray(header.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in header.PixelSpacing)
    r, c = np.mgrid[0:rows, 0:cols]
    lps = origin + c[..., None] * col_spacing * orientation[:3] + r[..., None] * row_spacing * orientation[3:]
    ras = lps @ LPS_TO_RAS.T
    ijk = ras @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]
    i, j, k = (np.floor(ijk[..., n] + 0.5).astype(int) for n in range(3))
    nk, nj, ni = labels_kji.shape
    inside = (i >= 0) & (i < ni) & (j >= 0) & (j < nj) & (k >= 0) & (k < nk)
    frame = np.zeros((rows, cols), dtype=labels_kji.dtype)
    frame[inside] = labels_kji[k[inside], j[inside], i[inside]]
    return frame


def dicom_seg_bytes(labels_kji: np.ndarray, ijk_to_ras: np.ndarray, names: Sequence[str], headers: Sequence) -> bytes:
    """A DICOM SEG file: segment n (named ``names[n - 1]``) is where ``labels_kji`` == n, on the source images.

    labels_kji: [k, j, i] labels on the volume's grid; ijk_to_ras: (4, 4) of that grid.
    Raises InputError when there are no source images or no segment holds voxels.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not headers:
        raise InputError("DICOM SEG needs a volume read from DICOM files")
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    frames = np.stack([frame_from_volume(h, labels_kji, ras_to_ijk) for h in headers])
    present = [n for n in range(1, len(names) + 1) if (frames == n).any()]
    if not present:
        raise InputError("nothing to save as DICOM SEG: no segment holds voxels on the source images")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=names[n - 1],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="SAMSegmenter", version="1", family=codes.cid7162.ArtificialIntelligence
            ),
        )
        for number, n in enumerate(present, start=1)
    ]
    renumbered = np.zeros(frames.shape, dtype=np.uint8)
    for number, n in enumerate(present, start=1):
        renumbered[frames == n] = number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=list(headers),
            pixel_array=renumbered,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="SAMSegmenter",
            manufacturer_model_name="SAMSegmenter Web",
            software_versions="1",
            device_serial_number="0",
        )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()
