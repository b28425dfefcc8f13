"""Reading an uploaded volume into its array: sizes checked before reading, inflated within bounds, off the event
loop.

The declared shape and voxel type give the volume's size (Python integers: no overflow) before a byte of
the body is read; the array is allocated once at that size and the body is copied (or inflated, a bounded
step at a time) straight into it, so a request never holds more than its declared, limited size plus one
inflate step. Inflating runs in a worker thread (zlib releases the GIL), in batches, so other clients'
requests are answered meanwhile. The volume's fingerprint (which keys its cached embeddings) is hashed on a
thread of its own as the voxels arrive, so it is ready, or nearly, when the last byte is.
"""

from __future__ import annotations

import asyncio
import math
import sys
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import AsyncIterator, Optional

import numpy as np
from fastapi.concurrency import run_in_threadpool

from ..errors import InputError
from ..predictor import fingerprint_digest
from .protocol import INFLATE_STEP, VOLUME_DTYPES
from .sessions import TooLarge

BATCH = 4 << 20
"""Compressed bytes gathered before they are handed to a worker thread to inflate."""
HASH_STEP = 8 << 20
"""Voxel bytes gathered before they are handed to the hashing thread (blake2b releases the GIL)."""
ENCODINGS = {"": None, "identity": None, "deflate": 15, "gzip": 31}


def declared_volume(shape: str, dtype: str, encoding: str) -> tuple[tuple[int, int, int], np.dtype, int]:
    """((K, J, I), voxel type, bytes) of an upload from its query and headers; InputError when malformed."""
    try:
        dims = tuple(int(n) for n in shape.split(",", 3))
    except ValueError:
        raise InputError(f"shape must be K,J,I (three whole numbers), got {shape[:80]!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"shape must be three positive sizes K,J,I, got {shape[:80]!r}")
    if dtype not in VOLUME_DTYPES:
        raise InputError(f"voxel type {dtype[:40]!r} is not accepted; use one of {', '.join(VOLUME_DTYPES)}")
    if encoding not in ENCODINGS:
        raise InputError(f"content encoding {encoding[:40]!r} is not accepted; use deflate, gzip or none")
    kind = np.dtype(dtype)
    return dims, kind, math.prod(dims) * kind.itemsize  # type: ignore[return-value]


class VolumeReader:
    """Fills a new ``[k, j, i]`` array of ``dtype`` from an upload's body pieces.

    max_wire_bytes: most body bytes accepted (TooLarge beyond); encoding: ``deflate``, ``gzip`` or none.
    fingerprint: after :meth:`read`, the volume's :func:`predictor.volume_fingerprint` (None on a big-endian
    machine, where the array is byte-swapped after reading).
    """

    def __init__(self, dims: tuple[int, int, int], dtype: np.dtype, encoding: str, max_wire_bytes: int):
        self.dims = dims
        self.dtype = dtype
        self.array = np.empty(dims, dtype=dtype.newbyteorder("<"))
        self.view = memoryview(self.array.reshape(-1).view(np.uint8))
        self.size = len(self.view)
        self.filled = 0
        self.wire = 0
        self.max_wire_bytes = max_wire_bytes
        wbits = ENCODINGS[encoding]
        self.inflater = None if wbits is None else zlib.decompressobj(wbits)
        self.encoding = encoding
        self.fingerprint: Optional[str] = None
        self._digest = fingerprint_digest(dims, dtype) if sys.byteorder == "little" else None
        self._hashed = 0
        self._hashing: Optional[Future] = None
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-upload-hash")

    async def read(self, body: AsyncIterator[bytes]) -> np.ndarray:
        """The volume, once ``body`` is read; InputError when its bytes do not match the declared shape."""
        try:
            array = await self._read(body)
            self._hash(final=True)
            if self._hashing is not None:
                await asyncio.wrap_future(self._hashing)  # one thread, in order: the last update ends the hash
            if self._digest is not None:
                self.fingerprint = self._digest.hexdigest()
            return array
        finally:
            self._hasher.shutdown(wait=False, cancel_futures=True)

    async def _read(self, body: AsyncIterator[bytes]) -> np.ndarray:
        pending: list[bytes] = []
        waiting = 0
        async for piece in body:
            self.wire += len(piece)
            if self.wire > self.max_wire_bytes:
                raise TooLarge(f"the request is larger than this server's limit of "
                               f"{self.max_wire_bytes / 2**20:.0f} MiB")
            if self.inflater is None:
                self._store(piece)
                continue
            pending.append(piece)
            waiting += len(piece)
            if waiting >= BATCH:
                await run_in_threadpool(self._inflate, b"".join(pending))
                pending, waiting = [], 0
        if pending:
            await run_in_threadpool(self._inflate, b"".join(pending))
        if self.filled != self.size:
            raise InputError(f"{self.filled} bytes of voxels do not match shape {self.dims} of {self.dtype} "
                             f"({self.size} bytes)")
        array = self.array if sys.byteorder == "little" else self.array.byteswap().view(self.dtype)
        return array.view(self.dtype)

    def _store(self, data: bytes) -> None:
        end = self.filled + len(data)
        if end > self.size:  # a body (without Content-Length: chunked) larger than it declared
            raise TooLarge(f"the request has more than the {self.size} bytes of voxels that shape {self.dims} of "
                           f"{self.dtype} declares")
        self.view[self.filled:end] = data
        self.filled = end
        self._hash()

    def _hash(self, final: bool = False) -> None:
        """Hand the voxels stored since the last hand-over to the hashing thread (at least HASH_STEP of them)."""
        if self._digest is not None and self.filled - self._hashed >= (1 if final else HASH_STEP):
            self._hashing = self._hasher.submit(self._digest.update, self.view[self._hashed:self.filled])
            self._hashed = self.filled

    def _inflate(self, data: bytes) -> None:
        """Inflate ``data`` into the array, at most INFLATE_STEP bytes at a time, refusing anything beyond it."""
        try:
            while data and not self.inflater.eof:
                room = self.size - self.filled
                self._store_checked(self.inflater.decompress(data, min(room, INFLATE_STEP) + 1))
                data = self.inflater.unconsumed_tail
        except zlib.error as exc:
            raise InputError(f"the volume is not valid {self.encoding} data ({exc})") from None

    def _store_checked(self, part: bytes) -> None:
        if self.filled + len(part) > self.size:
            raise InputError(f"the {self.encoding} data inflate to more than the {self.size} bytes of voxels "
                             f"that shape {self.dims} of {self.dtype} declares")
        self._store(part)
