"""Browser-test helpers: the web app as a real subprocess, and Debian's Chromium driven by Playwright.

`start_web_app` runs ``python -m SAMSegmenterLib web --port 0`` (a free loopback port; the MNI152
sample unless told otherwise), waits for its ``SAMSEGMENTER_WEB_URL`` line and returns a
`WebProcess`; `WebProcess.stop` ends it with SIGTERM (SIGKILL after a grace period).
`launch_chromium` starts the system Chromium headless, or skips the test with one line when it
is missing, unless ``SAMSEGMENTER_REQUIRE_BROWSER=1`` (CI), which turns that into a failure.
Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
URL_LINE = "SAMSEGMENTER_WEB_URL"
VIEW_IMAGE = "img.image-display-area"


@dataclass
class WebProcess:
    """A running web app: its URL, process, the stdout lines it printed and where its stderr goes."""

    url: str
    process: subprocess.Popen
    stderr_path: Path
    lines: list[str] = field(default_factory=list)

    def stderr_tail(self, n: int = 30) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return "\n".join(text.splitlines()[-n:])

    def stop(self, grace_s: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``grace_s``; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_web_app(log_dir: Path, extra_args: Sequence[str] = (), timeout_s: float = 180.0) -> WebProcess:
    """Start the app on a free loopback port and wait until it prints its URL."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "SAMSegmenter"), os.environ.get("PYTHONPATH", "")]))
    stderr_path = log_dir / "web_app.stderr.txt"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "SAMSegmenterLib", "web", "--port", "0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=log_dir,
        )
    lines: "queue.Queue[str | None]" = queue.Queue()

    def read_stdout() -> None:
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read_stdout, daemon=True).start()
    app = WebProcess("", process, stderr_path)
    deadline = time.monotonic() + timeout_s
    while not app.url:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            app.stop()
            raise RuntimeError(f"the web app printed no URL within {timeout_s} s:\n{app.stderr_tail()}") from None
        if line is None:
            raise RuntimeError(f"the web app exited with {process.wait()}:\n{app.stderr_tail()}")
        app.lines.append(line)
        if line.startswith(URL_LINE + " "):
            app.url = line.split(" ", 1)[1]
    return app


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless; skip (or fail under SAMSEGMENTER_REQUIRE_BROWSER=1) when it is missing."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: install it (Debian/Ubuntu: apt-get install -y chromium) to run browser tests"
        if os.environ.get("SAMSEGMENTER_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def view_pixels(page: Any, index: int = 0) -> np.ndarray:
    """The pixels of the ``index``-th view as the browser shows them: (rows, columns, 3) uint8."""
    from io import BytesIO

    from PIL import Image

    png = page.locator(VIEW_IMAGE).nth(index).screenshot()
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


def wait_for_pixels(page: Any, predicate, timeout_s: float = 30.0, index: int = 0, period_s: float = 0.1) -> np.ndarray:
    """Poll the view's pixels until ``predicate(pixels)`` holds; return them (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        pixels = view_pixels(page, index)
        if predicate(pixels):
            return pixels
        if time.monotonic() > deadline:
            raise AssertionError(f"the view did not show what was expected within {timeout_s} s")
        time.sleep(period_s)


def shows_image(pixels: np.ndarray) -> bool:
    """True when a view shows image content: a sizeable bright, varied region (not a blank or loading view)."""
    grey = pixels.mean(axis=2)
    return bool((grey > 40).mean() > 0.1 and grey.std() > 20)


SEGMENT_ITEMS = "[aria-label=Segments] [role=option]"


def segment_rgb(page: Any, index: int = 0) -> tuple[int, int, int]:
    """The colour of the ``index``-th segment's dot in the segments list, as (r, g, b)."""
    css = page.locator(f"{SEGMENT_ITEMS} .mdi-circle").nth(index).evaluate("el => getComputedStyle(el).color")
    return tuple(int(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def tinted(pixels: np.ndarray, rgb: Sequence[int], min_chroma: float = 12.0, min_cosine: float = 0.9) -> np.ndarray:
    """Pixels tinted with colour ``rgb`` (a segment drawn translucent over a grey image): bool (rows, columns).

    Over grey, a blend a * rgb + (1 - a) * grey differs from its own grey level in the direction of
    ``rgb``'s chroma (rgb minus its mean); a pixel counts when its chroma points that way (cosine
    >= ``min_cosine``) and is large enough (>= ``min_chroma``, above JPEG noise). The SAM prompt box
    (yellow) is never counted.
    """
    p = pixels.astype(float)
    chroma = p - p.mean(axis=2, keepdims=True)
    colour = np.asarray(rgb, dtype=float)
    direction = colour - colour.mean()
    norm = np.linalg.norm(chroma, axis=2)
    cosine = chroma @ direction / (norm * np.linalg.norm(direction) + 1e-9)
    yellow = (p[..., 0] > 150) & (p[..., 1] > 150) & (p[..., 2] < 110)
    return (norm >= min_chroma) & (cosine >= min_cosine) & ~yellow


def drag(page: Any, start: tuple[float, float], end: tuple[float, float], steps: int = 6) -> None:
    """A left-button drag with the mouse from ``start`` to ``end`` (page pixels)."""
    page.mouse.move(*start)
    page.mouse.down()
    for n in range(1, steps + 1):
        page.mouse.move(start[0] + (end[0] - start[0]) * n / steps, start[1] + (end[1] - start[1]) * n / steps)
    page.mouse.up()


def segment_sizes(page) -> list[str]:
    """The size line of each segment in the segments list ("1,234 voxels · 1.23 mL", "empty")."""
    return page.locator(f"{SEGMENT_ITEMS} .segment-size").evaluate_all("lines => lines.map(l => l.innerText.trim())")


def size_voxels(size: str) -> int:
    """The voxel count of a size line (0 for "empty")."""
    return 0 if size in ("", "empty") else int(size.split(" ")[0].replace(",", ""))


def paint_stroke(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A brush stroke from ``start`` to ``end`` (fractions of the red view's width and height)."""
    view = page.locator(VIEW_IMAGE).first.bounding_box()
    at = lambda f: (view["x"] + f[0] * view["width"], view["y"] + f[1] * view["height"])  # noqa: E731
    drag(page, at(start), at(end), steps=12)


def wait_for_voxels(page, index: int, predicate, timeout_s: float = 30.0) -> int:
    """Wait until the voxel count of the ``index``-th segment satisfies ``predicate``; return it."""
    deadline = time.monotonic() + timeout_s
    while not predicate(count := size_voxels(segment_sizes(page)[index])):
        if time.monotonic() > deadline:
            raise AssertionError(f"segment {index} holds {count} voxels")
        time.sleep(0.1)
    return count


def download(page, label: str, tmp_path: Path) -> Path:
    """Click the download button ``label`` and return where Playwright saved the file the browser received."""
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name=label).first.click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    return path
