"""Is a NIfTI file complete? ITK reads a truncated ``.nii`` or ``.nii.gz`` as a full-size volume padded
with zeros, without an error, and writes one silently when the disk fills up: check the file itself.

Only the header is parsed (NIfTI-1 or NIfTI-2, either byte order); a gzip-compressed file is
decompressed as a stream (nothing kept in memory), which also checks its CRC.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Optional

from ..errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def _data_end(header: bytes) -> Optional[int]:
    """Byte offset where the voxel data of a single-file NIfTI-1/2 header ends, or None if not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            if header[344:347] != b"n+1":
                return None  # a .hdr/.img pair: the data lives in another file
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            if header[4:7] != b"n+2":
                return None
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    voxels = math.prod(max(1, int(d)) for d in dims[1:ndim + 1])
    return max(offset, 352) + voxels * bitpix // 8


def _gzip_length(path: Path) -> int:
    """Uncompressed length of a gzip file, read as a stream; InputError if the stream is cut or damaged."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while True:
                block = stream.read(_CHUNK)
                if not block:
                    return total
                total += len(block)
    except EOFError:
        raise InputError(f"{path} is truncated: its compressed data stops before the end of the stream") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; CRC and length errors too
        raise InputError(f"{path} is damaged: its compressed data cannot be read ({exc})") from None


def check_nifti_complete(path: str | Path, written: bool = False) -> None:
    """Raise InputError unless the NIfTI file at ``path`` holds all the voxel data its header declares.

    Files that are not single-file NIfTI (no recognisable header) are left to the image reader,
    unless ``written``: a NIfTI file just written must have its header.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
    if compressed:
        try:
            with gzip.open(path, "rb") as stream:
                header = stream.read(540)
        except (EOFError, OSError, zlib.error):
            header = b""
        end = _data_end(header)
        length = _gzip_length(path)  # a cut or damaged stream is refused even without a NIfTI header
    else:
        with open(path, "rb") as handle:
            header = handle.read(540)
        end = _data_end(header)
        length = path.stat().st_size
    if end is None:
        if written:
            raise InputError(f"{path} holds no complete NIfTI header ({length} bytes)")
        return
    if length < end:
        raise InputError(f"{path} is truncated: its header declares {end} bytes of header and voxel data, "
                         f"the file holds {length}")
