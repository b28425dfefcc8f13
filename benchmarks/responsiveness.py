"""How long the GUI's timer can be held by the SAM effect: the longest single ``InteractionController.poll()``.

A real MRML scene (slicer-core), the real controller, a box prompt, then the controller's poll loop driven like
a GUI timer (a poll, then 1 ms for the event loop, or the controller's own interval) until it wants no more
polls, under each fault: a normal local service, a 250 MiB volume upload, an unresolvable host name, an
unreachable host (a loopback listener whose accept queue is full), a server that never answers, a slow server,
a local server killed mid-propagation, an expired session, and closing the controller. Also the time the
250 MiB upload took (sent, and answered: the server also reads the volume and chooses its window).
Target: the longest poll <= 20 ms in every row.

    python benchmarks/responsiveness.py [--json] [--upload-mib 250] [--skip-model]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "SAMSegmenter"), str(ROOT / "Testing" / "Python")]

import slicer  # noqa: E402
from faulty_servers import UNRESOLVABLE_URL, FullBacklog, Silent, Slow  # noqa: E402
from mrml_scene import make_scene, volume_from_array  # noqa: E402

from SAMSegmenterLib.io.sample_data import load_sample  # noqa: E402
from SAMSegmenterLib.service.client import LocalService, ServiceClient  # noqa: E402
from SAMSegmenterMRML.controller import InteractionController, PointerEvent  # noqa: E402
from SAMSegmenterMRML.editor import SegmentEditorSession  # noqa: E402
from SAMSegmenterMRML.engines import ServiceEngine  # noqa: E402
from SAMSegmenterMRML.geometry import ijk_to_world  # noqa: E402

BUSY = {"error": {"type": "ServiceError", "message": "the server is busy"}}
SLICE = 90
BOX = (50, 60, 150, 170)  # x0, y0, x1, y1 on axial MNI152 slices


class Scene:
    """A scene with one volume, a segmentation with segment "S", a writer and an axial view on SLICE."""

    def __init__(self, array: np.ndarray):
        self.scene = make_scene()
        self.ijk_to_ras = np.diag([1.0, 1.0, 1.0, 1.0])
        self.volume = volume_from_array(self.scene, array, self.ijk_to_ras, "volume")
        self.segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
        self.segmentation.SetReferenceImageGeometryParameterFromVolumeNode(self.volume)
        self.segmentation.GetSegmentation().AddEmptySegment("S")
        self.writer = SegmentEditorSession(self.segmentation, self.volume)
        self.view = self.scene.AddNewNodeByClass("vtkMRMLSliceNode")
        self.view.SetOrientation("Axial")
        self.view.RotateToVolumePlane(self.volume)
        centre = np.array(array.shape[::-1], dtype=float) / 2
        centre[2] = min(SLICE, array.shape[0] - 1)
        self.view.JumpSliceByOffsetting(*ijk_to_world(centre, self.ijk_to_ras)[0])

    def ras(self, x: float, y: float) -> tuple:
        return tuple(ijk_to_world([(x, y, min(SLICE, self.volume.GetImageData().GetDimensions()[2] - 1))],
                                  self.ijk_to_ras)[0])

    def controller(self, engine: ServiceEngine) -> InteractionController:
        return InteractionController(engine, self.volume, self.segmentation, "S", self.writer)

    def drag(self, controller: InteractionController) -> None:
        x0, y0, x1, y1 = BOX
        controller.pointer(PointerEvent("press", "left", (10, 10), self.ras(x0, y0), self.view))
        controller.pointer(PointerEvent("move", "none", (40, 40), self.ras(x1, y1), self.view))
        controller.pointer(PointerEvent("release", "left", (60, 60), self.ras(x1, y1), self.view))


def drive(controller: InteractionController, limit: float, until=None, idle_ms: float = 1.0) -> dict:
    """Poll like a GUI timer until the controller wants no polls (or ``until()`` is true, or ``limit`` s)."""
    polls, longest, cpu, started = 0, 0.0, 0.0, time.perf_counter()
    while time.perf_counter() - started < limit:
        t0, c0 = time.perf_counter(), time.thread_time()
        more = controller.poll()
        longest, polls = max(longest, time.perf_counter() - t0), polls + 1
        cpu = max(cpu, time.thread_time() - c0)
        if not more or (until is not None and until()):
            break
        time.sleep(max(idle_ms, controller.poll_interval_ms) / 1000)
    state = controller.state
    return {"longest_poll_ms": round(1000 * longest, 2), "longest_poll_cpu_ms": round(1000 * cpu, 2), "polls": polls,
            "seconds": round(time.perf_counter() - started, 2), "outcome": state.status[:110],
            "error": state.error, "still_polling": controller.wants_poll}


def remote_engine(url: str, **kwargs) -> ServiceEngine:
    return ServiceEngine(client=ServiceClient.remote(url, token="benchmark", **kwargs))


def slow_peer() -> Slow:
    return Slow(2.0, 1.0, BUSY, "503 Service Unavailable")


def fault_rows(scene: Scene) -> list[dict]:
    rows = []
    for name, make, kwargs in (("unresolvable host name", lambda: None, {}),
                               ("unreachable host (full accept queue)", FullBacklog, {"connect_timeout": 5}),
                               ("server that never answers", Silent, {"timeout": 5}),
                               ("slow server (2 s, then a dripped 503)", slow_peer, {})):
        peer = make()
        try:
            controller = scene.controller(remote_engine(peer.url if peer else UNRESOLVABLE_URL, **kwargs))
            scene.drag(controller)
            row = drive(controller, 60)
            controller.close()
        finally:
            if peer is not None:
                peer.close()
        rows.append({"case": name, **row})
    return rows


def local_rows(scene: Scene, big: Scene | None) -> list[dict]:
    rows = []
    service = LocalService(args=["--device", "cpu", "--session-idle", "3"])
    engine = ServiceEngine(client=ServiceClient(service))
    try:
        controller = scene.controller(engine)
        scene.drag(controller)
        rows.append({"case": "local service: start, upload, first prompt", **drive(controller, 600)})
        scene.drag(controller)
        rows.append({"case": "local service: prompt on a cached slice", **drive(controller, 60)})
        if big is not None:
            rows.append(upload_row(big, engine))
        deadline = time.monotonic() + 30
        while engine.client.status()["sessions"] and time.monotonic() < deadline:
            time.sleep(0.5)  # the server's sweep closes the idle session (--session-idle 3)
        scene.drag(controller)
        rows.append({"case": "expired session: re-opened, then the prompt", **drive(controller, 120)})
        controller.propagate("up")
        drive(controller, 120, until=lambda: bool(controller.state.progress and controller.state.progress[0] >= 1))
        os.kill(service.process.pid, signal.SIGKILL)
        rows.append({"case": "local server killed mid-propagation", **drive(controller, 60)})
        started = time.perf_counter()
        controller.close()
        rows.append({"case": "closing the controller (server dead)", "longest_poll_cpu_ms": None,
                     "longest_poll_ms": round(1000 * (time.perf_counter() - started), 2), "polls": 1,
                     "seconds": 0, "outcome": f"restarts left {service.restarts_left}, running {service.running}",
                     "error": False, "still_polling": engine.client.pending})
    finally:
        service.stop()
    return rows


def upload_row(big: Scene, engine: ServiceEngine) -> dict:
    """A large volume: time until the last byte is sent and until the server answered, longest poll."""
    controller = big.controller(engine)
    opening = controller._opening
    sent_at, polls, longest, cpu, started = None, 0, 0.0, 0.0, time.perf_counter()
    while controller.wants_poll and time.perf_counter() - started < 300:
        t0, c0 = time.perf_counter(), time.thread_time()
        controller.poll()
        longest, polls = max(longest, time.perf_counter() - t0), polls + 1
        cpu = max(cpu, time.thread_time() - c0)
        request = opening._exchange.request
        if sent_at is None and (opening.done or request is not None and request.sent_body):
            sent_at = time.perf_counter() - started
        time.sleep(max(1.0, controller.poll_interval_ms) / 1000)
    answered = time.perf_counter() - started
    size = big.volume.GetImageData().GetPointData().GetScalars().GetNumberOfValues() * 2 / 2**20
    row = {"case": f"upload of a {size:.0f} MiB volume (sent / answered)", "longest_poll_ms":
           round(1000 * longest, 2), "longest_poll_cpu_ms": round(1000 * cpu, 2), "polls": polls,
           "seconds": f"{sent_at or answered:.2f} / {answered:.2f}",
           "outcome": controller.state.status[:110], "error": controller.state.error, "still_polling": False}
    controller.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--upload-mib", type=int, default=250, help="size of the upload row's volume (0: none)")
    parser.add_argument("--skip-model", action="store_true", help="only the faults that need no model")
    args = parser.parse_args()
    mni = (load_sample("mni152")[0] * 1000).astype(np.int16)
    scene = Scene(mni)
    big = None
    if args.upload_mib and not args.skip_model:
        slices = max(1, (args.upload_mib << 20) // (512 * 512 * 2))
        big = Scene(np.resize(np.pad(mni, ((0, 0), (0, 512 - mni.shape[1]), (0, 512 - mni.shape[2]))),
                              (slices, 512, 512)))
    rows = fault_rows(scene)
    if not args.skip_model:
        rows += local_rows(scene, big)
    slicer.mrmlScene = None
    if args.json:
        print(json.dumps({"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "rows": rows}, indent=1))
        return
    print(f"{'case':<52} {'longest poll':>13} {'(CPU)':>9} {'polls':>6} {'seconds':>14}  outcome")
    for row in rows:
        cpu = f"{row['longest_poll_cpu_ms']:.1f} ms" if row["longest_poll_cpu_ms"] is not None else "-"
        print(f"{row['case']:<52} {row['longest_poll_ms']:>10.1f} ms {cpu:>9} {row['polls']:>6} "
              f"{str(row['seconds']):>14}  {'ERROR ' if row['error'] else ''}{row['outcome']}")
    print("target: longest poll <= 20 ms in every row (wall clock; CPU: the poll's own work, without time the OS "
          "gave other processes)")


if __name__ == "__main__":
    main()
