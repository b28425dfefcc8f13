"""Where model work runs for the MRML layer: the inference service (default) or this process (scripts).

Both engines open a volume ([k, j, i] voxels) with a model and intensity window and return an object
with the engine's predictor interface: ``predict``, ``prefetch``, ``propagate``, ``propagate_between``,
``num_slices``, ``slice_shape``, ``close`` (:class:`SAMSegmenterLib.service.client.RemoteVolume` or
:class:`SAMSegmenterLib.propagation.local_volume.LocalVolume`). Only the in-process engine imports
PyTorch, and only when it opens its first volume. Inside Slicer the effect always uses the service:
Slicer's embedded Python keeps the GIL on its idle main thread, so model work in a Python thread there
crawls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Optional, Sequence

import numpy as np

from SAMSegmenterLib.service.client import LocalService, ServiceClient


class ServiceEngine:
    """Model work in the inference service: a local server started on first use, or a remote one.

    client: an existing client; otherwise ``url`` with ``token_file`` (a remote server), or a local
    server started with ``server_args`` (``serve`` options: --model, --device, --precision, --backend...)
    by ``python`` (default: this interpreter; Slicer's PythonSlicer inside Slicer).
    """

    def __init__(self, client: Optional[ServiceClient] = None, url: Optional[str] = None,
                 token_file: Optional[str | Path] = None, server_args: Sequence[str] = (),
                 python: Optional[str] = None):
        if client is None:
            client = (ServiceClient.remote(url, token_file=token_file) if url
                      else ServiceClient(LocalService(python, server_args)))
        self.client = client

    @property
    def local(self) -> Optional[LocalService]:
        """The local server this engine runs, or None for a remote one."""
        endpoint = self.client.endpoint
        return endpoint if isinstance(endpoint, LocalService) else None

    def open(self, volume: np.ndarray, window: str, model: str, checkpoint: Optional[str],
             volume_id: Hashable) -> Any:
        """Upload ``volume`` and open it on the server (blocking; the controller uses the client's calls)."""
        return self.client.open_volume(volume, window, model, checkpoint)

    @property
    def starting(self) -> bool:
        """Whether a local server is still starting (loading its model)."""
        return self.local is not None and not self.local.ready

    def describe(self) -> str:
        local = self.local
        if local is not None:
            return f"local service {local.address()[0]}" if local.ready else "local service (starting)"
        return f"service {self.client.endpoint.address()[0]}"

    def close(self) -> None:
        """Stop a local server without waiting for it to exit (a remote one keeps running)."""
        self.client.close()
        if self.local is not None:
            self.local.stop(wait=False)


class InProcessEngine:
    """Model work in this process, for scripts (never inside Slicer's GUI: see the module docstring).

    device, precision, backend: as :func:`SAMSegmenterLib.models.load_model`; cache_bytes: the
    embedding cache shared by the volumes this engine opens.
    """

    def __init__(self, device: str = "auto", precision: str = "fp32", backend: str = "auto",
                 cache_bytes: Optional[int] = None):
        self.device, self.precision, self.backend = device, precision, backend
        self.cache_bytes = cache_bytes
        self._cache = None

    def open(self, volume: np.ndarray, window: str, model: str, checkpoint: Optional[str],
             volume_id: Hashable) -> Any:
        from SAMSegmenterLib.cache import DEFAULT_MAX_BYTES, EmbeddingCache
        from SAMSegmenterLib.models import load_model
        from SAMSegmenterLib.propagation.local_volume import LocalVolume

        if self._cache is None:
            self._cache = EmbeddingCache(self.cache_bytes if self.cache_bytes is not None else DEFAULT_MAX_BYTES)
        loaded = load_model(model, self.device, self.precision, checkpoint, self.backend)
        return LocalVolume(loaded, volume, window=window, cache=self._cache, volume_id=volume_id)

    def describe(self) -> str:
        return f"in this process ({self.device}, {self.precision})"

    def close(self) -> None:
        if self._cache is not None:
            self._cache.clear()
