"""Inference service against the in-process engine, in one run on this machine (loopback).

Rows: a prompt on a cached embedding (decoder only), the first prompt on a new slice (encoder + decoder),
uploading a 256 x 256 x 200 int16 volume, a 100-slice propagation (MNI152 brain, axial slices 40-139, stop
criteria off so every slice is segmented), and the throughput of 8 clients on 8 volumes at once. The service
is a real server process started like the Slicer effect starts it (``LocalService``); the in-process
numbers use the same model, backend and threads. Reported: medians; "added" is service minus in-process.

Big uploads (also alone, with --uploads-only): a 250 MiB and a 512 MiB volume sent over a plain socket
(the server's side of an upload, whatever the client's speed), raw and deflate-compressed, while another
client asks for /v1/status every 20 ms: the slowest of those answers says whether the upload held up
the server's event loop (target: under 100 ms).

    python benchmarks/service.py [--rounds N] [--threads N] [--json] [--uploads-only] [--upload-mb 250,512]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import threading
import time
import urllib.parse
import zlib
from datetime import date
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SAMSegmenter"))

import torch  # noqa: E402

from SAMSegmenterLib.io.sample_data import load_sample  # noqa: E402
from SAMSegmenterLib.models import load_model  # noqa: E402
from SAMSegmenterLib.models.backends import cpu_name  # noqa: E402
from SAMSegmenterLib.predictor import SlicePredictor  # noqa: E402
from SAMSegmenterLib.prompts import Prompt, box_from_mask  # noqa: E402
from SAMSegmenterLib.propagation.local_volume import LocalVolume  # noqa: E402
from SAMSegmenterLib.propagation.plan import PropagationOptions  # noqa: E402
from SAMSegmenterLib.service.client import LocalService, ServiceClient  # noqa: E402

BOX = (50, 60, 150, 170)  # on axial MNI152 slices


def median_ms(samples: list[float]) -> float:
    return round(1000.0 * statistics.median(samples), 2)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def prompts(local: SlicePredictor, remote, rounds: int) -> dict:
    """Cached-slice and new-slice prompts, alternating in-process and service calls."""
    cached_local, cached_remote, new_local, new_remote = [], [], [], []
    local.predict(0, 90, Prompt(box=BOX))
    remote.predict(0, 90, Prompt(box=BOX))
    for n in range(rounds):
        cached_local.append(timed(lambda: local.predict(0, 90, Prompt(box=BOX))))
        cached_remote.append(timed(lambda: remote.predict(0, 90, Prompt(box=BOX))))
    for index in range(100, 100 + min(rounds, 6)):
        new_local.append(timed(lambda: local.predict(0, index, Prompt(box=BOX))))
        new_remote.append(timed(lambda: remote.predict(0, index + 20, Prompt(box=BOX))))
    return {"cached_ms": {"in_process": median_ms(cached_local), "service": median_ms(cached_remote),
                          "added": round(median_ms(cached_remote) - median_ms(cached_local), 2)},
            "new_slice_ms": {"in_process": median_ms(new_local), "service": median_ms(new_remote),
                             "added": round(median_ms(new_remote) - median_ms(new_local), 2)}}


def upload(client: ServiceClient, rounds: int) -> dict:
    volume = np.random.default_rng(0).integers(-1000, 2000, size=(200, 256, 256), dtype=np.int16)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        opened = client.open_volume(volume)
        seconds.append(time.perf_counter() - start)
        opened.close()
    return {"volume": "256 x 256 x 200 int16 (25 MiB)", "median_s": round(statistics.median(seconds), 3)}


def smooth_volume(megabytes: int) -> np.ndarray:
    """An int16 volume of about ``megabytes`` MiB that compresses like a scan: the MNI152 template, tiled."""
    template = load_sample("mni152")[0].astype(np.int16)  # 189 x 233 x 197
    slices = max(1, (megabytes << 20) // (template.shape[1] * template.shape[2] * 2))
    return np.resize(template, (slices, *template.shape[1:]))


def post_volume(url: str, token: str, volume: np.ndarray, body: bytes, encoding: str) -> dict:
    """Open ``volume`` by sending ``body`` over a plain socket (no client library); the server's answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    if encoding:
        headers["Content-Encoding"] = encoding
    shape = ",".join(map(str, volume.shape))
    conn.request("POST", f"/v1/sessions?shape={shape}&dtype={volume.dtype.name}", body=body, headers=headers)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"upload refused: HTTP {response.status} {answer}")
    return answer


def status_while(service: LocalService, work) -> tuple[float, list[float]]:
    """(seconds ``work()`` took, latencies of the /v1/status requests another client made every 20 ms)."""
    client = ServiceClient(service)
    client.status()
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            latencies.append(timed(client.status))
            stop.wait(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        seconds = timed(work)
    finally:
        stop.set()
        poller.join()
    return seconds, latencies


def server_peak(pid: int, reset: bool = False) -> Optional[int]:
    """Peak resident memory (VmHWM, bytes) of process ``pid``; reset it to the current size first if ``reset``
    (Linux only; None elsewhere)."""
    try:
        if reset:
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def big_uploads(service: LocalService, sizes: list[int]) -> dict:
    """Upload time (session ready) and other clients' status latency during 250/512 MiB uploads."""
    url, token = service.wait_ready()
    closer = ServiceClient(service)
    out = {}
    for megabytes in sizes:
        volume = smooth_volume(megabytes)
        raw = volume.tobytes()
        deflated = zlib.compress(raw, 1)
        for encoding, body in (("", raw), ("deflate", deflated)):
            answers = []
            base = server_peak(service.process.pid, reset=True)
            seconds, latencies = status_while(service, lambda: answers.append(
                post_volume(url, token, volume, body, encoding)))
            peak = server_peak(service.process.pid) - base
            closer.request("DELETE", f"/v1/sessions/{answers[0]['session']}")
            out[f"{megabytes}_mib_{encoding or 'raw'}"] = {
                "volume_mib": round(volume.nbytes / 2**20, 1), "body_mib": round(len(body) / 2**20, 1),
                "seconds": round(seconds, 2), "status_requests": len(latencies),
                "server_peak_rise_mib": None if peak is None else round(peak / 2**20),
                "status_max_ms": round(1000 * max(latencies), 1) if latencies else None,
                "status_median_ms": median_ms(latencies) if latencies else None}
    return out


def print_uploads(rows: dict) -> None:
    print(f"{'upload over a plain socket':24s} {'body MiB':>9s} {'seconds':>8s} {'status max ms':>14s} "
          f"{'median ms':>10s} {'server peak +MiB':>17s}")
    for name, row in rows.items():
        print(f"{name:24s} {row['body_mib']:9.1f} {row['seconds']:8.2f} {row['status_max_ms']:14.1f} "
              f"{row['status_median_ms']:10.1f} {str(row['server_peak_rise_mib']):>17s}")


def propagation(local: LocalVolume, remote, brain: np.ndarray) -> dict:
    seed = 90
    prompt = Prompt(box=box_from_mask(brain[seed]))
    options = PropagationOptions(min_iou=None)
    out = {}
    for name, engine in (("in_process", local), ("service", remote)):
        start = time.perf_counter()
        result = engine.propagate(0, seed, seed_prompt=prompt, slice_range=(40, 139), options=options)
        out[name] = {"seconds": round(time.perf_counter() - start, 2), "slices": len(result.slices)}
    return out


def clients(service: LocalService, volume: np.ndarray, count: int, per_client: int) -> dict:
    """Prompts per second with ``count`` clients at once, each on its own volume (new and cached slices)."""
    def work(n: int, done: list) -> None:
        client = ServiceClient(service)
        remote = client.open_volume(volume[20 + n: 60 + n])
        for m in range(per_client):
            remote.predict(0, 10 + m % 4, Prompt(box=BOX))  # 4 distinct slices: encoder, then decoder only
        done.append(n)
        remote.close()

    out = {}
    for threads in (1, count):
        done: list = []
        start = time.perf_counter()
        workers = [threading.Thread(target=work, args=(n, done)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        seconds = time.perf_counter() - start
        out[f"{threads}_clients"] = {"prompts": threads * per_client, "seconds": round(seconds, 2),
                                     "prompts_per_s": round(threads * per_client / seconds, 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="prompts per median (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, both sides (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--uploads-only", action="store_true", help="only the big uploads (no in-process model)")
    parser.add_argument("--upload-mb", default="250,512", help="sizes of the big uploads in MiB (default 250,512)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.upload_mb.split(",") if n]
    if args.uploads_only:
        service = LocalService(args=["--device", "cpu"])
        try:
            rows = big_uploads(service, sizes)
        finally:
            service.stop()
        print_uploads(rows)
        print(cpu_name(), file=sys.stderr)
        if args.json:
            print(json.dumps({"date": date.today().isoformat(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
                              "big_uploads": rows}))
        return 0
    torch.set_num_threads(args.threads)
    volume, _ = load_sample("mni152")
    brain = load_sample("mni152_brain")[0] > 0
    model = load_model("litemedsam", device="cpu")
    local = LocalVolume(model, volume)
    service = LocalService(args=["--device", "cpu", "--backend", model.backend])
    started = time.perf_counter()
    service.wait_ready()
    startup = round(time.perf_counter() - started, 1)
    client = ServiceClient(service)
    try:
        remote = client.open_volume(volume)
        results = {"server_startup_s": startup, "prompts": prompts(local, remote, args.rounds),
                   "upload": upload(client, 3), "propagation_100_slices": propagation(local, remote, brain),
                   "throughput": clients(service, volume, 8, 8), "big_uploads": big_uploads(service, sizes)}
    finally:
        service.stop()
    p, u, g, t = results["prompts"], results["upload"], results["propagation_100_slices"], results["throughput"]
    print(f"{'':34s} {'in-process':>11s} {'service':>9s} {'added':>7s}")
    for label, key in (("prompt, cached embedding (ms)", "cached_ms"), ("first prompt on a new slice (ms)",
                                                                        "new_slice_ms")):
        row = p[key]
        print(f"{label:34s} {row['in_process']:11.1f} {row['service']:9.1f} {row['added']:7.1f}")
    print(f"{'100-slice propagation (s)':34s} {g['in_process']['seconds']:11.1f} {g['service']['seconds']:9.1f}")
    print(f"upload {u['volume']}: {u['median_s']} s; server start {startup} s")
    print(f"throughput: 1 client {t['1_clients']['prompts_per_s']} prompts/s, "
          f"8 clients {t['8_clients']['prompts_per_s']} prompts/s")
    print_uploads(results["big_uploads"])
    print(f"{cpu_name()}, {args.threads} torch threads, backend {model.backend}", file=sys.stderr)
    if args.json:
        print(json.dumps({"date": date.today().isoformat(), "cpu": cpu_name(), "machine": platform.machine(),
                          "cpu_count": os.cpu_count(), "threads": args.threads, "backend": model.backend,
                          **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
