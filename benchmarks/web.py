"""Web app latency in Chromium: the SAM effect (--sam: drag release -> mask visible) or rendering alone.

SAM (--sam). The app (SAMSegmenterWeb, MNI152 sample, axial layout) runs in this process with the real
interaction controller; the inference service runs as its own process (``serve``, as the app starts
it, with LiteMedSAM on --device), its predictor's work timed into a file; Chromium drives the page.
Each trial moves the red view to a new axial slice and drags a box over the middle of the brain's
cross-section, either at once ("fresh": the slice was never embedded; the drag ends before the
view has rested long enough for a prefetch) or once the slice's prefetch has finished ("cached"),
and measures, from the release of the mouse button:

  input        the release reaching the controller (browser -> websocket -> the view's event)
  submit       the controller's work until the predict request is made
  to_server    the request's way to the model (first poll, HTTP, the server's dispatch)
  encoder      the slice's embedding (the image encoder on a fresh slice; the cache otherwise)
  decoder      the rest of the model's work (prompt encoder, mask decoder, mask)
  from_server  the answer's way back until poll() takes it (JSON, HTTP, the wait for the poll)
  scene        the preview shown (segmentation node) and the panel's state
  wait .. arrive, to_frame, to_visible: as below, for the render that showed the preview
  head_start   on a fresh slice, how long before the release its prefetch began (0: none)
  renders      renders of the red view from the release to the one that showed the preview

Variants (interleaved trial by trial, so they share the machine's load) are how the app's host
polls the controller: "before" (the first poll after 50 ms, then every 50 ms: the wiring as it
was) and "app" (at once, then every 10 ms: the app now).

Rendering (default). A segment written on the server -> the change visible in Chromium.

The app (SAMSegmenterWeb, MNI152 sample, axial layout unless told otherwise) runs in this process
on a free loopback port, and Playwright drives Debian's /usr/bin/chromium (headless) on the same
asyncio loop. Each trial scrolls the red view to another axial slice, waits until nothing renders,
then writes a mask (nilearn's brain mask on that slice, inside a box) into a segment through the
app's SegmentWriter, as the SAM effect's Apply does, and measures:

  write      write_slab (as the controller writes): the edits, then SegmentWriter.write: segment editor
             logic + undo state (scene update)
  wait       from the end of the write to the start of the first render of the red view
  render     that VTK render (llvmpipe) of the red view
  grab       from the end of that render to the start of its JPEG encode (frame capture, queue)
  encode     the JPEG encode (trame-rca, thread pool)
  send       from the end of the encode to the frame handed to the websocket
  arrive     from the websocket hand-off to the browser's <img> load event (transport + decode)
  to_frame   write start -> the browser loaded the first frame of the change (its <img> load event)
  to_visible write start -> a screenshot of the middle of the view, taken after each new frame,
             shows the change (includes the screenshot itself: an upper bound of the time to screen)
  kbytes     size of that JPEG frame; mpixels: the pixels the red view rendered (millions)

Variants (the first is trame-slicer's default) are interleaved trial by trial in one run, so
they see the same machine load. The mouse rests over the red view (as after a drag). Times are
wall-clock (time.time() here, Date.now() in the page: the same clock, one machine).

    python benchmarks/web.py [--trials N] [--variants NAME ...] [--json]
    python benchmarks/web.py --sam [--trials N] [--sam-variants NAME ...] [--device cpu] [--backend auto] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

MODULE_DIR = Path(__file__).resolve().parents[1] / "SAMSegmenter"
sys.path.insert(0, str(MODULE_DIR))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]
VIEW_IMAGE = "img.image-display-area"
STAGES = ("write", "wait", "render", "grab", "encode", "send", "arrive", "to_frame", "to_visible")
COLUMNS = (*STAGES, "kbytes", "mpixels")  # the frame that showed the change: JPEG size, rendered pixels


@dataclass(frozen=True)
class Variant:
    """Settings of the red view: MSAA samples, frame rate cap, JPEG quality of the first and of the settled
    frame (equal: one render per change), cap on the rendered pixels (0: the view's size in the page), layout."""

    name: str
    multisamples: int = 0
    fps: float = 30.0
    interactive_quality: int = 80
    still_quality: int = 80
    max_pixels: int = 1_000_000
    layout: str = "axial"


VARIANTS = {
    v.name: v
    for v in (
        Variant("trame_default", multisamples=8, interactive_quality=50, still_quality=90, max_pixels=0),
        Variant("no_msaa_2_frames", interactive_quality=50, still_quality=90),
        Variant("app_default"),
        Variant("quality_60", interactive_quality=60, still_quality=60),
        Variant("half_pixels", max_pixels=430_000),
        Variant("no_pixel_cap", max_pixels=0),
        Variant("fps_60", fps=60.0),
        Variant("three_slices", layout="slices"),
    )
}


class Timeline:
    """Time stamps (time.time(), seconds) of renders, encodes and websocket hand-offs, per view."""

    def __init__(self) -> None:
        self.renders: list[tuple[str, float, float]] = []
        self.encodes: list[tuple[float, float, tuple[int, int]]] = []
        self.pushes: list[tuple[str, float, int]] = []
        self._render_start: dict[str, float] = {}

    def watch_render_window(self, name: str, window: Any) -> None:
        window.AddObserver("StartEvent", lambda *_: self._render_start.__setitem__(name, time.time()))
        window.AddObserver("EndEvent", lambda *_: self.renders.append((name, self._render_start[name], time.time())))


def instrument_encoder(timeline: Timeline) -> None:
    """Time trame-rca's JPEG encoder (Pillow here: PyTurboJPEG is not installed)."""
    from trame_rca.encoders import image_encoder

    encode = image_encoder.encode_turbo

    def timed_encode(np_image: Any, img_format: str, cols: int, rows: int, *args: Any) -> Any:
        start = time.time()
        result = encode(np_image, img_format, cols, rows, *args)
        timeline.encodes.append((start, time.time(), (cols, rows)))
        return result

    image_encoder.encode_turbo = image_encoder.encode_pil = timed_encode


def hook_views(app: Any, timeline: Timeline, hooked: set[str]) -> None:
    """Time the renders of the slice views created so far and the frames they hand to the websocket."""
    for tag in ("Red", "Green", "Yellow"):
        rca_view = app.slice_view_factory.get_factory_view(tag)
        if rca_view is None or tag in hooked:
            continue
        hooked.add(tag)
        timeline.watch_render_window(tag, rca_view.slicer_view.render_window())
        streamer = rca_view.view_adapter.streamer
        if streamer is not None and not getattr(streamer, "timed_by_benchmark", False):
            push = streamer.push_content

            def timed_push(area_name: str, meta: dict, content: bytes, _push: Any = push) -> Any:
                timeline.pushes.append((area_name, time.time(), len(content)))
                return _push(area_name, meta, content)

            streamer.push_content = timed_push
            streamer.timed_by_benchmark = True


def apply_variant(app: Any, variant: Variant) -> None:
    app.state.web_layout = variant.layout
    app.state.flush()
    rca_view = app.slice_view_factory.get_factory_view("Red")
    rca_view.slicer_view.render_window().SetMultiSamples(variant.multisamples)
    adapter = rca_view.view_adapter
    adapter.target_fps = variant.fps
    adapter.update_quality(variant.interactive_quality, variant.still_quality)
    adapter.max_pixel_count = variant.max_pixels


async def pixels(page: Any) -> np.ndarray:
    """Grey levels of the middle of the red view (where the trials write) as the browser shows it."""
    from PIL import Image

    box = await page.locator(VIEW_IMAGE).first.bounding_box()
    clip = {"x": box["x"] + box["width"] / 4, "y": box["y"] + box["height"] / 4,
            "width": box["width"] / 2, "height": box["height"] / 2}
    png = await page.screenshot(clip=clip)
    return np.asarray(Image.open(BytesIO(png)).convert("L"), dtype=np.int16)


async def wait_idle(timeline: Timeline, quiet_s: float = 0.6, timeout_s: float = 20.0) -> None:
    """Wait until no view has rendered and no frame was sent for ``quiet_s``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        last = max([r[2] for r in timeline.renders[-3:]] + [p[1] for p in timeline.pushes[-3:]] + [0.0])
        if time.time() - last > quiet_s:
            return
        await asyncio.sleep(0.1)


def frame_stages(render: tuple, encode: tuple, push: tuple, arrived: float) -> dict[str, float]:
    """Seconds of a frame's way from the render of the red view to the browser: render, grab, encode, send,
    arrive (timeline records: render (view, start, end), encode (start, end, size), push (view, time, bytes))."""
    return {"render": render[2] - render[1], "grab": encode[0] - render[2], "encode": encode[1] - encode[0],
            "send": push[1] - encode[1], "arrive": arrived - push[1]}


async def trial(app: Any, page: Any, timeline: Timeline, writer: Any, segment_id: str, brain: np.ndarray,
                index: int) -> dict[str, float]:
    """Write the mask on slice ``index`` of the red view and time its way to the browser."""
    from SAMSegmenterMRML.labelmaps import Slab, write_slab

    view = app.slicer.view_manager.get_view("Red")
    ijk_to_ras = np.zeros((4, 4))
    matrix = __import__("vtk").vtkMatrix4x4()
    app.volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    view.set_slice_value(float((ijk_to_ras @ [0, 0, index, 1])[2]))
    app.state.flush()
    await wait_idle(timeline)
    before = await pixels(page)
    mask = np.zeros_like(brain[index])
    rows, cols = np.nonzero(brain[index])
    box = (slice(int(np.percentile(rows, 30)), int(np.percentile(rows, 70))),
           slice(int(np.percentile(cols, 20)), int(np.percentile(cols, 60))))
    mask[box] = brain[index][box]
    frames_before = await page.evaluate("window.__frames.length")
    start = time.time()
    write_slab(writer, app.volume_node, segment_id, mask[None], Slab(0, index, index), "replace")
    written = time.time()
    visible = None
    seen = frames_before
    while visible is None and time.time() - start < 20:
        # Wait for the next frame of the red view (the page checks on every animation frame), then look.
        await page.wait_for_function("n => window.__frames.length > n", arg=seen, polling="raf", timeout=20_000)
        seen = await page.evaluate("window.__frames.length")
        now = await pixels(page)
        if now.shape == before.shape and np.abs(now - before).mean() > 0.5:
            visible = time.time()
    frames = await page.evaluate(f"window.__frames.slice({frames_before})")
    size = tuple(view.render_window().GetSize())
    render = next(r for r in timeline.renders if r[0] == "Red" and r[1] >= written)
    encode = next(e for e in timeline.encodes if e[0] >= render[2] and sorted(e[2]) == sorted(size))
    push = next(p for p in timeline.pushes if p[1] >= encode[1] and p[0].endswith("Red"))
    arrived = next((f / 1000.0 for f in frames if f / 1000.0 >= push[1] - 0.002), float("nan"))
    app.segments.undo()
    app.state.flush()
    seconds = {
        "write": written - start,
        "wait": render[1] - written,
        **frame_stages(render, encode, push, arrived),
        "to_frame": arrived - start,
        "to_visible": (visible - start) if visible else float("nan"),
    }
    return {**{k: round(1000.0 * v, 1) for k, v in seconds.items()}, "kbytes": round(push[2] / 1000.0, 1),
            "mpixels": round(size[0] * size[1] / 1e6, 2)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from SAMSegmenterWeb.rendering import configure_headless

    window = configure_headless()
    from playwright.async_api import async_playwright

    from SAMSegmenterLib.io.sample_data import load_sample, write_sample
    from SAMSegmenterWeb.app import SAMSegmenterWebApp
    from SAMSegmenterWeb.writer import SegmentWriter

    app = SAMSegmenterWebApp()
    with tempfile.TemporaryDirectory() as tmp:
        app.load([write_sample("mni152", Path(tmp) / "mni152.nii.gz")])
    brain = load_sample("mni152_brain")[0] > 0
    segment_id = app.segments.add()
    writer = SegmentWriter(app.editor, app.segmentation_node)
    timeline = Timeline()
    instrument_encoder(timeline)
    sys.argv = sys.argv[:1]
    app.server.start(port=0, host="127.0.0.1", exec_mode="task", open_browser=False, show_connection_info=False,
                     timeout=0, disable_logging=True)
    await app.server.ready
    url = f"http://127.0.0.1:{app.server.port}/"
    variants = [VARIANTS[name] for name in args.variants]
    results: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    hooked: set[str] = set()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": args.width, "height": args.height},
                                      device_scale_factor=args.pixel_ratio)
        await page.goto(url)
        await page.wait_for_selector(VIEW_IMAGE, timeout=60_000)
        slices = np.nonzero(brain.any(axis=(1, 2)))[0]
        indices = np.linspace(slices[len(slices) // 4], slices[3 * len(slices) // 4], args.trials).astype(int)
        for number, index in enumerate(indices):
            for variant in variants:
                apply_variant(app, variant)
                await asyncio.sleep(0.5)
                hook_views(app, timeline, hooked)
                await page.evaluate(
                    "() => { window.__frames = window.__frames || []; const img = document.querySelector"
                    f"('{VIEW_IMAGE}'); if (!img.__timed) {{ img.__timed = true; img.addEventListener('load',"
                    " () => window.__frames.push(Date.now())); } }")
                box = await page.locator(VIEW_IMAGE).first.bounding_box()
                await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                row = await trial(app, page, timeline, writer, segment_id, brain, int(index))
                results[variant.name].append(row)
                print(f"trial {number + 1}/{len(indices)} {variant.name:15s} " +
                      " ".join(f"{k}={v:.0f}" for k, v in row.items()), file=sys.stderr, flush=True)
        await browser.close()
    await app.server.stop()
    return {"window": window, "results": results}


# --- SAM latency: drag release -> mask visible, with the real controller and inference service -------------

SAM_STAGES = ("input", "submit", "to_server", "encoder", "decoder", "from_server", "scene", "wait", "render", "grab",
              "encode", "send", "arrive", "to_frame", "to_visible")
SAM_COLUMNS = (*SAM_STAGES, "head_start", "renders")
SEGMENT_RGB = (0.94, 0.31, 0.31)


@dataclass(frozen=True)
class SamVariant:
    """How the app's ControllerHost polls the controller while it has work: the period (seconds), and whether
    the first poll comes at once (the app now) or after one period (the wiring before, kept here to compare)."""

    name: str
    poll_period: float
    poll_first: bool


SAM_VARIANTS = {v.name: v for v in (SamVariant("before", 0.05, False), SamVariant("app", 0.01, True))}


def use_sam_variant(variant: SamVariant) -> None:
    from SAMSegmenterWeb import controller_host

    controller_host.POLL_PERIOD_S = variant.poll_period
    if not hasattr(controller_host.ControllerHost, "app_poll"):
        controller_host.ControllerHost.app_poll = controller_host.ControllerHost._poll

    async def sleep_first(host: Any) -> None:  # ControllerHost._poll as it was
        while True:
            await asyncio.sleep(controller_host.POLL_PERIOD_S)
            if host.controller is None or not host._call(host.controller.poll):
                return

    host_class = controller_host.ControllerHost
    host_class._poll = host_class.app_poll if variant.poll_first else sleep_first


def run_timed_server(timings_path: str, argv: list[str]) -> int:
    """``python -m SAMSegmenterLib`` with ``argv`` (a ``serve`` command line), the predictor's work timed.

    Appends one JSON line per call to ``timings_path``: predict (the whole request's model work), embedding
    (getting the slice's embedding: from the cache, computed, or waited for while a prefetch computes it)
    and encode (the image encoder itself), each with axis, index, start and end (time.time())."""
    import threading

    from SAMSegmenterLib.cli import main as cli_main
    from SAMSegmenterLib.predictor import SlicePredictor

    log = open(timings_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (open while the server runs)
    lock = threading.Lock()

    def timed(what: str, method: Any) -> Any:
        def wrapper(self: Any, axis: Any, index: int, *args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return method(self, axis, index, *args, **kwargs)
            finally:
                line = json.dumps({"what": what, "axis": str(axis), "index": int(index), "start": start,
                                   "end": time.time()})
                with lock:
                    log.write(line + "\n")
        return wrapper

    SlicePredictor.predict = timed("predict", SlicePredictor.predict)
    SlicePredictor.embedding = timed("embedding", SlicePredictor.embedding)
    SlicePredictor._compute = timed("encode", SlicePredictor._compute)
    return cli_main(argv)


class TimedService:
    """The inference service in its own process (``serve``, as the web app starts it), with its model work
    timed by run_timed_server; the app reaches it as a service on this machine."""

    def __init__(self, folder: Path, serve_args: list[str]) -> None:
        import subprocess

        self.timings = folder / "timings.jsonl"
        self.token_file, ready = folder / "token", folder / "ready"
        path = os.pathsep.join(filter(None, [str(MODULE_DIR), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        self.log = open(folder / "server.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--timed-server", str(self.timings), "serve", "--port", "0", "--token-file",
             str(self.token_file), "--ready-file", str(ready), "--watch-stdin", *serve_args],
            stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 600
        while not ready.exists():
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the service did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.url = json.loads(ready.read_text().split(" ", 1)[1])["url"]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.timings.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(20)
        except Exception:
            self.process.kill()
        self.log.close()


class SamTimeline(Timeline):
    """Timeline plus the app side of a SAM prompt: the release event reaching the controller, the predict
    request submitted, its answer taken by poll() (preview shown), and the end of that poll (panel state)."""

    def __init__(self) -> None:
        super().__init__()
        self.releases: list[float] = []
        self.submits: list[tuple[int, float]] = []
        self.answers: list[tuple[float, float]] = []  # (_show_prediction start, end of the poll() that ran it)

    def instrument(self, app: Any) -> None:
        from SAMSegmenterLib.service.client import RemoteVolume
        from SAMSegmenterMRML.controller import InteractionController

        host = app.host
        pointer = host.pointer

        def timed_pointer(fields: dict) -> bool:
            if fields["kind"] == "release":
                self.releases.append(time.time())
            return pointer(fields)

        host.pointer = timed_pointer
        submit = RemoteVolume.submit_predict

        def timed_submit(volume: Any, axis: Any, index: int, *args: Any, **kwargs: Any) -> Any:
            self.submits.append((int(index), time.time()))
            return submit(volume, axis, index, *args, **kwargs)

        RemoteVolume.submit_predict = timed_submit
        show, poll = InteractionController._show_prediction, InteractionController.poll
        shown: list[float] = []

        def timed_show(controller: Any, *args: Any) -> None:
            shown.append(time.time())
            show(controller, *args)

        def timed_poll(controller: Any) -> bool:
            shown.clear()
            result = poll(controller)
            if shown:
                self.answers.append((shown[0], time.time()))
            return result

        InteractionController._show_prediction = timed_show
        InteractionController.poll = timed_poll


def view_geometry(app: Any) -> tuple[Any, np.ndarray, tuple[int, int]]:
    """The red view, its RAS -> XY matrix (XY: render window pixels, origin bottom-left) and its render size."""
    view = app.slicer.view_manager.get_view("Red")
    matrix = view.get_view_node().GetXYToRAS()
    xy_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return view, np.linalg.inv(xy_to_ras), tuple(view.render_window().GetSize())


def ijk_to_ras(app: Any) -> np.ndarray:
    matrix = __import__("vtk").vtkMatrix4x4()
    app.volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


async def page_box(app: Any, page: Any, brain: np.ndarray, index: int) -> dict[str, float]:
    """The box a trial drags on axial slice ``index``, in page pixels: the middle of the brain's cross-section
    (rows 30-70 %, columns 20-60 % of its extent, as the rendering trials write)."""
    rows, cols = np.nonzero(brain[index])
    j0, j1 = np.percentile(rows, 30), np.percentile(rows, 70)
    i0, i1 = np.percentile(cols, 20), np.percentile(cols, 60)
    _, ras_to_xy, (width, height) = view_geometry(app)
    img = await page.locator(VIEW_IMAGE).first.bounding_box()
    points = []
    for i, j in ((i0, j0), (i1, j1)):
        xy = ras_to_xy @ ijk_to_ras(app) @ [i, j, index, 1.0]
        points.append((img["x"] + xy[0] * img["width"] / width, img["y"] + (height - xy[1]) * img["height"] / height))
    (x0, y0), (x1, y1) = points
    return {"x0": min(x0, x1), "y0": min(y0, y1), "x1": max(x0, x1), "y1": max(y0, y1)}


def tinted_count(png: bytes) -> int:
    """Pixels of a screenshot tinted with the segment's colour (the preview), the yellow prompt box left out."""
    from PIL import Image

    pixels = np.asarray(Image.open(BytesIO(png)).convert("RGB"), dtype=float)
    chroma = pixels - pixels.mean(axis=2, keepdims=True)
    colour = np.asarray(SEGMENT_RGB) - np.mean(SEGMENT_RGB)
    norm = np.linalg.norm(chroma, axis=2)
    cosine = chroma @ colour / (norm * np.linalg.norm(colour) + 1e-9)
    return int(((norm > 12) & (cosine > 0.9)).sum())


async def wait_encoded(service: TimedService, index: int, timeout_s: float = 60.0) -> None:
    """Wait until the service has embedded axial slice ``index`` (the view rested there: a prefetch)."""
    deadline = time.time() + timeout_s
    while not any(r["what"] == "encode" and r["index"] == index for r in service.records()):
        if time.time() > deadline:
            raise RuntimeError(f"slice {index} was not prefetched within {timeout_s} s")
        await asyncio.sleep(0.1)


async def sam_trial(app: Any, page: Any, timeline: SamTimeline, service: TimedService, brain: np.ndarray,
                    index: int, cached: bool) -> dict[str, float]:
    """Drag a box on axial slice ``index`` (embedded ahead of time if ``cached``) and time the mask's way to the
    browser."""
    view = app.slicer.view_manager.get_view("Red")
    await wait_idle(timeline)
    box = await page_box(app, page, brain, index)
    await page.mouse.move(box["x0"], box["y0"])
    view.set_slice_value(float((ijk_to_ras(app) @ [0, 0, index, 1])[2]))
    app.state.flush()
    if cached:
        await wait_encoded(service, index)
        await wait_idle(timeline)
    clip = {"x": box["x0"], "y": box["y0"], "width": box["x1"] - box["x0"], "height": box["y1"] - box["y0"]}
    frames_before = await page.evaluate("window.__frames.length")
    await page.mouse.down()
    await page.mouse.move((box["x0"] + box["x1"]) / 2, (box["y0"] + box["y1"]) / 2)
    await page.mouse.move(box["x1"], box["y1"])
    released = time.time()
    await page.mouse.up()
    visible, seen = None, frames_before
    while visible is None and time.time() - released < 60:
        await page.wait_for_function("n => window.__frames.length > n", arg=seen, polling="raf", timeout=60_000)
        seen = await page.evaluate("window.__frames.length")
        answered = any(shown >= released for shown, _ in timeline.answers)  # not a frame from before the answer
        if answered and tinted_count(await page.screenshot(clip=clip)) > 50:
            visible = time.time()
    frames = [f / 1000.0 for f in await page.evaluate(f"window.__frames.slice({frames_before})")]
    event = next(t for t in timeline.releases if t >= released)
    submit = next(t for i, t in timeline.submits if i == index and t >= event)
    answer, scene = next(a for a in timeline.answers if a[0] >= submit)
    records = service.records()
    predict = next(r for r in records if r["what"] == "predict" and r["index"] == index and r["start"] >= submit)
    embedding = next(r for r in records if r["what"] == "embedding" and r["start"] >= predict["start"])
    head = [r for r in records if r["what"] == "encode" and r["index"] == index and r["start"] < released]
    render = next(r for r in timeline.renders if r[0] == "Red" and r[1] >= scene)
    size = tuple(view.render_window().GetSize())
    encode = next(e for e in timeline.encodes if e[0] >= render[2] and sorted(e[2]) == sorted(size))
    push = next(p for p in timeline.pushes if p[1] >= encode[1] and p[0].endswith("Red"))
    arrived = next((f for f in frames if f >= push[1] - 0.002), float("nan"))
    app.sam_cancel()
    app.state.flush()
    seconds = {
        "input": event - released,
        "submit": submit - event,
        "to_server": predict["start"] - submit,
        "encoder": embedding["end"] - embedding["start"],
        "decoder": predict["end"] - embedding["end"],
        "from_server": answer - predict["end"],
        "scene": scene - answer,
        "wait": render[1] - scene,
        **frame_stages(render, encode, push, arrived),
        "to_frame": arrived - released,
        "to_visible": (visible - released) if visible else float("nan"),
        # a fresh slice whose prefetch had started before the release (the view rested >= 0.4 s): its lead
        "head_start": (released - head[0]["start"]) if head and not cached else 0.0,
    }
    renders = sum(1 for r in timeline.renders if r[0] == "Red" and released <= r[1] <= render[1])
    return {**{k: round(1000.0 * v, 1) for k, v in seconds.items()}, "renders": renders}


async def run_sam(args: argparse.Namespace) -> dict[str, Any]:
    from SAMSegmenterWeb.rendering import configure_headless

    window = configure_headless()
    from SAMSegmenterLib.io.sample_data import load_sample, write_sample
    from SAMSegmenterLib.service.client import ServiceClient
    from SAMSegmenterMRML.engines import ServiceEngine
    from SAMSegmenterWeb.app import SAMSegmenterWebApp
    from SAMSegmenterWeb.controller_host import service_support

    with tempfile.TemporaryDirectory() as tmp:
        service = TimedService(Path(tmp), ["--device", args.device, "--backend", args.backend])
        try:
            engine = ServiceEngine(ServiceClient.remote(service.url, token_file=service.token_file))
            app = SAMSegmenterWebApp(controller_support=service_support(engine, "litemedsam", None))
            app.load([write_sample("mni152", Path(tmp) / "mni152.nii.gz")])
            brain = load_sample("mni152_brain")[0] > 0
            timeline = SamTimeline()
            instrument_encoder(timeline)
            timeline.instrument(app)
            sys.argv = sys.argv[:1]
            app.server.start(port=0, host="127.0.0.1", exec_mode="task", open_browser=False,
                             show_connection_info=False, timeout=0, disable_logging=True)
            await app.server.ready
            return {"window": window, "service": engine.client.status(),
                    "results": await sam_trials(app, service, timeline, brain, args)}
        finally:
            service.stop()


async def sam_trials(app: Any, service: TimedService, timeline: SamTimeline, brain: np.ndarray,
                     args: argparse.Namespace) -> dict[str, dict[str, list]]:
    """Fresh and cached trials of each variant, interleaved: every variant sees the same machine load."""
    from playwright.async_api import async_playwright

    url = f"http://127.0.0.1:{app.server.port}/"
    variants = [SAM_VARIANTS[name] for name in args.sam_variants]
    results: dict[str, dict[str, list]] = {v.name: {"fresh": [], "cached": []} for v in variants}
    # distinct axial slices through the cerebrum, none visited twice: every fresh slice is new to the service
    slices = iter(range(40, 150, 2))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": args.width, "height": args.height})
        await page.goto(url)
        await page.wait_for_selector(VIEW_IMAGE, timeout=60_000)
        app.state.web_effect = "sam"
        app.state.flush()
        segment_id = app.editor.get_active_segment_id()
        app.segmentation_node.GetSegmentation().GetSegment(segment_id).SetColor(*SEGMENT_RGB)
        while app.host.controller is None or app.host.controller._remote is None:  # the volume's upload
            await asyncio.sleep(0.1)
        hook_views(app, timeline, set())
        await page.evaluate(
            "() => { window.__frames = []; const img = document.querySelector"
            f"('{VIEW_IMAGE}'); img.addEventListener('load', () => window.__frames.push(Date.now())); }}")
        await sam_trial(app, page, timeline, service, brain, next(slices), cached=False)  # warm-up, not counted
        for number in range(args.trials):
            for variant in variants:
                use_sam_variant(variant)
                for kind in ("fresh", "cached"):
                    row = await sam_trial(app, page, timeline, service, brain, next(slices), kind == "cached")
                    results[variant.name][kind].append(row)
                    print(f"trial {number + 1}/{args.trials} {variant.name:10s} {kind:6s} " +
                          " ".join(f"{k}={v:.0f}" for k, v in row.items()), file=sys.stderr, flush=True)
        await browser.close()
    await app.server.stop()
    return results


def median(rows: list[dict[str, float]], key: str) -> float:
    values = [row[key] for row in rows if not np.isnan(row[key])]
    return statistics.median(values) if values else float("nan")


def print_sam(args: argparse.Namespace, outcome: dict[str, Any]) -> dict[str, Any]:
    status = outcome["service"]
    print(f"SAM latency, drag release -> mask visible in Chromium, median of {args.trials} slices (ms); "
          f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {outcome['window']}, "
          f"axial layout, LiteMedSAM on {status['device']} ({status['precision']}, backend {status['backend']})")
    print(f"{'variant':20s} " + " ".join(f"{c:>11s}" for c in SAM_COLUMNS))
    summary = {}
    for name, kinds in outcome["results"].items():
        for kind, rows in kinds.items():
            row = summary[f"{name} {kind}"] = {column: round(median(rows, column), 1) for column in SAM_COLUMNS}
            print(f"{name + ' ' + kind:20s} " + " ".join(f"{row[c]:11.{1 if c == 'renders' else 0}f}"
                                                           for c in SAM_COLUMNS))
    return summary


def main() -> None:
    if sys.argv[1:2] == ["--timed-server"]:  # the service process of --sam (see TimedService)
        sys.exit(run_timed_server(sys.argv[2], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sam", action="store_true",
                        help="measure the SAM effect (drag release -> mask visible) instead of rendering alone")
    parser.add_argument("--trials", type=int, default=8, help="slices per variant (and kind of slice; default 8)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="rendering variants")
    parser.add_argument("--sam-variants", nargs="+", default=list(SAM_VARIANTS), choices=list(SAM_VARIANTS),
                        help="with --sam: the host's poll period")
    parser.add_argument("--device", default="cpu", help="with --sam: the service's device (default cpu)")
    parser.add_argument("--backend", default="auto", help="with --sam: the service's encoder backend (default auto)")
    parser.add_argument("--width", type=int, default=1400, help="browser viewport width (default 1400)")
    parser.add_argument("--height", type=int, default=900, help="browser viewport height (default 900)")
    parser.add_argument("--pixel-ratio", type=float, default=1.0,
                        help="the browser's device pixel ratio (2: a HiDPI screen; default 1)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = parser.parse_args()
    if args.sam:
        outcome = asyncio.run(run_sam(args))
        summary = print_sam(args, outcome)
        if args.json:
            print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "window": outcome["window"],
                              "service": outcome["service"], "trials": args.trials, "median": summary,
                              "trials_ms": outcome["results"]}))
        return
    outcome = asyncio.run(run(args))
    print(f"Web rendering latency, median of {args.trials} slices per variant (ms); {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {outcome['window']}, viewport {args.width}x{args.height} at pixel ratio "
          f"{args.pixel_ratio:g}")
    print(f"{'variant':16s} " + " ".join(f"{c:>10s}" for c in COLUMNS))
    summary = {}
    for name, rows in outcome["results"].items():
        summary[name] = {column: round(median(rows, column), 1) for column in COLUMNS}
        print(f"{name:16s} " + " ".join(f"{summary[name][c]:10.{2 if c == 'mpixels' else 0}f}" for c in COLUMNS))
    if args.json:
        print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "window": outcome["window"],
                          "viewport": [args.width, args.height], "pixel_ratio": args.pixel_ratio,
                          "trials": args.trials, "median": summary, "trials_ms": outcome["results"]}))


if __name__ == "__main__":
    main()
