"""numpy's BLAS on one thread in a process that runs models on the CPU.

numpy's OpenBLAS keeps its worker threads spinning for a while after each product, and a propagation runs
numpy between the model's calls (the mask features and cues of every slice: products of (256, n) feature
cells). On a 2-core Intel Xeon (Emerald Rapids, 2026-12-07) the spinning threads took the cores PyTorch's
threads needed: a walked slice's decode took 56-62 ms inside a propagation against 22-23 ms with numpy's BLAS
on one thread (MNI152, 100 slices, embeddings cached; docs/speed.md). numpy's products here are small, so one
thread costs them nothing. PyTorch's own BLAS (linked into it) is not affected.

Needs ``threadpoolctl`` (installed with the engine); without it (Slicer's Python, say) nothing changes here, but
the local inference service is started with ``OPENBLAS_NUM_THREADS=1`` (``service.client.LocalService``), which
numpy's OpenBLAS reads when it loads.
"""

from __future__ import annotations

import threading

_done = False
_lock = threading.Lock()


def one_blas_thread() -> bool:
    """Limit the BLAS libraries loaded in this process (numpy's OpenBLAS) to one thread (once); True if done."""
    global _done
    with _lock:
        if not _done:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                return False
            threadpool_limits(limits=1, user_api="blas")
            _done = True
        return True
