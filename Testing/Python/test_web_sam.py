"""The SAM effect end to end in a real browser: the web app as a subprocess (MNI152 sample, its own local
inference service with the real LiteMedSAM on the CPU), Debian's Chromium driven by Playwright.

Every check reads what a user sees: the red view's pixels, the SAM panel (status, progress bar,
confidence strip, buttons) and the segments list (each segment's size in voxels and mL). The tests
share one app and one page and run in file order, as one user's session: box -> preview, Apply ->
voxels, Undo; Propagate -> Stop; Propagate -> strip; correct a slice -> only its range changes ->
Apply -> Undo. The page after the propagation is saved as ``screenshot_sam.png`` in pytest's base
temporary folder (the README's screenshot).
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from web_browser import (
    SEGMENT_ITEMS,
    VIEW_IMAGE,
    download,
    drag,
    launch_chromium,
    paint_stroke,
    segment_rgb,
    segment_sizes,
    shows_image,
    size_voxels,
    start_web_app,
    tinted,
    view_pixels,
    wait_for_pixels,
)

playwright_api = pytest.importorskip("playwright.sync_api")

SEED = 30  # an axial slice through both temporal poles, above the cerebellum
LIMIT = (SEED - 5, SEED + 5)  # the slices the propagation is limited to
CORRECTED = SEED + 3
COLOUR = (240, 80, 80)
PREVIEW_TIMEOUT_S = 20.0
SERVICE_TIMEOUT_S = 240.0  # the local service loads its model while the app starts (slow on loaded machines)


@pytest.fixture(scope="module")
def web_app(tmp_path_factory):
    app = start_web_app(tmp_path_factory.mktemp("web_sam"), ["--device", "cpu"])
    yield app
    assert app.stop() is not None


@pytest.fixture(scope="module")
def page(web_app):
    with playwright_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(web_app.url)
        page.wait_for_selector(VIEW_IMAGE, timeout=60_000)
        wait_for_pixels(page, shows_image)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def session() -> dict:
    """What one test leaves for the next (the box, sizes, the strip)."""
    return {}


def panel(page):
    return page.get_by_role("region", name="SAM effect")


def status(page) -> str:
    return panel(page).get_by_role("status").inner_text()


def wait_for_status(page, pattern: str, timeout_s: float = 60.0) -> re.Match:
    """Wait until the SAM panel's status matches ``pattern`` (a regular expression); return the match."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = status(page) if panel(page).get_by_role("status").count() else ""
        found = re.search(pattern, text)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"the SAM status did not match {pattern!r} within {timeout_s} s; it says {text!r}")
        time.sleep(0.1)


def segment_size(page) -> str:
    """The size line of the (only) segment in the segments list."""
    return page.locator(f"{SEGMENT_ITEMS} .segment-size").first.inner_text().strip()


def wait_for_size(page, predicate, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not predicate(text := segment_size(page)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the segment's size line stayed {text!r}")
        time.sleep(0.1)
    return text


def voxels(size: str) -> int:
    """The voxel count of a size line ("1,234 voxels · 1.23 mL"; "empty" is 0)."""
    if size == "empty":
        return 0
    found = re.fullmatch(r"([\d,]+) voxels? · ([\d.]+) mL", size)
    assert found, f"unexpected size line {size!r}"
    count = int(found.group(1).replace(",", ""))
    assert float(found.group(2)) == pytest.approx(count / 1000.0, rel=0.01, abs=0.01), "the MNI152 voxels are 1 mm^3"
    return count


def strip(page) -> dict[int, str]:
    """The confidence strip: slice index -> the bar's tooltip (score, IoU with its neighbour, key)."""
    titles = panel(page).locator("[aria-label='Confidence per slice'] [role=listitem]").evaluate_all(
        "bars => bars.map(b => b.title)"
    )
    return {int(re.match(r"slice (\d+)", title).group(1)): title for title in titles}


def recolour(page, rgb) -> None:
    """Give the first segment colour ``rgb`` with its colour dialog (click its dot)."""
    page.locator(f"{SEGMENT_ITEMS} .mdi-circle").first.click()
    for channel, value in zip(("Red", "Green", "Blue"), rgb):
        field = page.get_by_label(f"{channel} value")
        field.fill(str(value))
        field.press("Enter")
    page.get_by_role("dialog").get_by_role("button", name="Apply").click()
    page.wait_for_function(
        f"() => getComputedStyle(document.querySelector('{SEGMENT_ITEMS} .mdi-circle')).color === 'rgb{rgb}'"
    )


def go_to_slice(page, index: int) -> None:
    """Move the red view to axial slice ``index`` with its slider's keys (Home is slice 0, each arrow one slice)."""
    slider = page.locator(".v-main").get_by_role("slider").first
    slider.focus()
    slider.press("Home")
    low = float(slider.get_attribute("aria-valuemin"))
    for _ in range(index):
        slider.press("ArrowRight")
    page.wait_for_function(
        "([el, v]) => Math.abs(parseFloat(el.getAttribute('aria-valuenow')) - v) < 0.01",
        arg=[slider.element_handle(), low + index],
    )


def settled_pixels(page, timeout_s: float = 30.0) -> np.ndarray:
    """The red view's pixels once two captures 0.3 s apart agree (the last frame of a change has arrived)."""
    deadline = time.monotonic() + timeout_s
    previous = view_pixels(page)
    while True:
        time.sleep(0.3)
        pixels = view_pixels(page)
        if pixels.shape == previous.shape and np.abs(pixels.astype(int) - previous).mean() < 0.2:
            return pixels
        if time.monotonic() > deadline:
            raise AssertionError(f"the view kept changing for {timeout_s} s")
        previous = pixels


def structure_box(pixels: np.ndarray, margin: int = 30, side: str = "left") -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in view pixels: the box a user draws, with ``margin``, around the upper-left structure
    the view shows (on low axial slices the right temporal pole; the cerebellum lies below the poles), or the
    upper-right one with ``side="right"`` (the left temporal pole).

    The view's own widgets (reset button at the top, slice slider at the bottom) are left out."""
    from scipy import ndimage

    bright = pixels.mean(axis=2) > 40
    bright[:40] = bright[-60:] = False
    labels, count = ndimage.label(bright)
    sizes = ndimage.sum(np.ones_like(labels), labels, range(1, count + 1))
    large = [n + 1 for n in range(count) if sizes[n] > 0.005 * bright.size]
    assert large, "the view shows no structure"
    centres = ndimage.center_of_mass(bright, labels, large)
    sign = 1 if side == "left" else -1
    label = large[int(np.argmin([row + sign * col for row, col in centres]))]
    rows, cols = np.nonzero(labels == label)
    return (int(cols.min()) - margin, int(rows.min()) - margin, int(cols.max()) + margin, int(rows.max()) + margin)


def colour_inside(before: np.ndarray, after: np.ndarray, rgb, box) -> tuple[int, int, int]:
    """(pixels newly tinted in the segment's colour inside ``box``, outside it, the box's area)."""
    new = tinted(after, rgb) & ~tinted(before, rgb)
    x0, y0, x1, y1 = box
    inside = np.zeros(new.shape, dtype=bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = True
    ring = np.zeros(new.shape, dtype=bool)  # the box's yellow outline and corner handles, and their blur
    ring[max(0, y0 - 12) : y1 + 13, max(0, x0 - 12) : x1 + 13] = True
    return int((new & inside).sum()), int((new & ~ring).sum()), int(inside.sum())


def drag_box(page, box) -> None:
    view = page.locator(VIEW_IMAGE).first.bounding_box()
    x0, y0, x1, y1 = box
    drag(page, (view["x"] + x0, view["y"] + y0), (view["x"] + x1, view["y"] + y1))


def test_box_shows_the_preview_in_the_segment_colour(page, session):
    page.get_by_role("button", name="SAM", exact=True).click()
    # The service line names the server once it runs and has the volume (it loads the model at launch).
    panel(page).get_by_text(re.compile(r"local service http://127\.0\.0\.1:\d+")).wait_for(
        timeout=SERVICE_TIMEOUT_S * 1000
    )
    for structure in ("Tumour / compact", "Organ / anatomy"):  # the Structure toggle; propagations below: anatomy
        button = panel(page).get_by_role("button", name=structure)
        button.click()
        page.wait_for_function("el => el.classList.contains('v-btn--active')", arg=button.element_handle())
    recolour(page, COLOUR)  # new segments get random colours, some too grey to tell from the image
    rgb = segment_rgb(page)
    assert rgb == COLOUR
    go_to_slice(page, SEED)
    before = settled_pixels(page)
    box = structure_box(before)
    drag_box(page, box)
    released = time.monotonic()
    after = wait_for_pixels(
        page, lambda now: colour_inside(before, now, rgb, box)[0] > 500, timeout_s=PREVIEW_TIMEOUT_S, period_s=0.2
    )
    seconds = time.monotonic() - released
    inside, outside, area = colour_inside(before, after, rgb, box)
    print(f"preview visible {seconds:.1f} s after the release: {inside} px inside the box of {area}, {outside} outside")
    found = wait_for_status(page, rf"Slice K={SEED}: (\d+) pixels segmented")
    assert inside < 0.9 * area, "the mask follows the structure, not the box"
    assert outside < 0.02 * inside, "the mask stays in the box"
    assert int(found.group(1)) > 100, "the status counts the mask's voxels (the model's score is not shown)"
    assert segment_size(page) == "empty", "a preview writes nothing"
    session.update(box=box, rgb=rgb, before=before, preview_px=inside)


def test_apply_writes_the_voxels_and_undo_removes_them(page, session):
    from SAMSegmenterLib.io.sample_data import load_sample
    from SAMSegmenterLib.propagation.postprocess import largest_component

    panel(page).get_by_role("button", name="Apply", exact=True).click()
    wait_for_status(page, r"Applied to 1 slice\.")
    written = voxels(wait_for_size(page, lambda text: text != "empty"))
    # nilearn's brain mask on that slice, the right temporal pole (i > 98, j > 116: right, anterior): an
    # imperfect reference (from a probability map)
    brain = load_sample("mni152_brain")[0][SEED] > 0
    j, i = np.indices(brain.shape)
    reference = int(largest_component(brain & (i > 98) & (j > 116)).sum())
    print(f"applied {written} voxels; reference temporal pole {reference} voxels")
    assert 0.6 * reference < written < 1.4 * reference
    after = view_pixels(page)
    assert colour_inside(session["before"], after, session["rgb"], session["box"])[0] > 0.5 * session["preview_px"]
    page.get_by_role("button", name="Undo").click()
    wait_for_size(page, lambda text: text == "empty")
    wait_for_status(page, r"^Undone")  # the panel no longer says "Applied"
    wait_for_pixels(page, lambda now: colour_inside(session["before"], now, session["rgb"], session["box"])[0] < 50)
    session["single_slice"] = written


def test_degenerate_boxes_are_refused_with_a_reason(page, session):
    x0, y0, x1, y1 = session["box"]
    drag_box(page, (x0, y0, x1, y0))  # a zero-height drag
    wait_for_status(page, r"too thin to outline a structure")
    view = page.locator(VIEW_IMAGE).first.bounding_box()
    drag_box(page, (x0, y0, int(view["width"]) - 4, y1))  # dragged past the image, to the view's edge
    wait_for_status(page, r"voxels past the edge of slice K=\d+")
    assert not strip(page) and segment_size(page) == "empty"
    assert not panel(page).get_by_role("button", name="Apply", exact=True).is_enabled(), "nothing to apply"


def focus_view(page) -> None:
    """Give the red view the keyboard focus (its element with tabindex 0), as a click in it would."""
    page.locator(VIEW_IMAGE).first.locator("xpath=ancestor::*[@tabindex='0'][1]").focus()


def test_stop_keeps_the_propagated_slices_and_a_box_meanwhile_is_refused(page, session):
    drag_box(page, session["box"])  # the slice's embedding is cached now
    wait_for_status(page, rf"Slice K={SEED}: \d+ pixels segmented", timeout_s=PREVIEW_TIMEOUT_S)
    panel(page).get_by_role("button", name="Propagate").click()  # both ways, through the whole volume
    progress = panel(page).locator("[role=progressbar][aria-valuenow]")
    page.wait_for_function(
        "el => parseFloat(el.getAttribute('aria-valuenow')) > 0", arg=progress.element_handle(timeout=30_000)
    )
    assert status(page).startswith("Propagating")
    drag_box(page, session["box"])  # a box now would replace the job: refused, the job goes on
    wait_for_status(page, r"A propagation is running: wait for it, or Stop it")
    assert panel(page).get_by_role("button", name="Stop").is_enabled()
    page.wait_for_function(  # a few slices each way (189 in all)
        "el => parseFloat(el.getAttribute('aria-valuenow')) > 3", arg=progress.element_handle(), timeout=120_000
    )
    panel(page).get_by_role("button", name="Stop").click()
    found = wait_for_status(page, r"Stopped; slices (\d+)-(\d+) are kept in the preview\.")
    first, last = int(found.group(1)), int(found.group(2))
    assert first <= SEED <= last and last - first >= 2, "the slices propagated before Stop are kept"
    assert sorted(strip(page)) == list(range(first, last + 1))
    assert panel(page).get_by_role("button", name="Apply", exact=True).is_enabled()
    time.sleep(1.0)  # nothing else arrives
    assert status(page).startswith("Stopped")
    focus_view(page)
    page.keyboard.press("Escape")  # Escape cancels, as x does
    wait_for_status(page, r"Prompts cleared\.")
    assert not strip(page)


def test_key_p_propagates_within_the_slice_limit_and_shows_progress(page, session, tmp_path_factory):
    drag_box(page, session["box"])
    wait_for_status(page, rf"Slice K={SEED}: \d+ pixels segmented", timeout_s=PREVIEW_TIMEOUT_S)
    panel(page).get_by_label("Limit to slices").check()
    panel(page).get_by_label("first").fill(str(LIMIT[0]))
    panel(page).get_by_label("last").fill(str(LIMIT[1]))
    focus_view(page)
    page.keyboard.press("p")  # as the Propagate button: both ways, within the limit
    panel(page).get_by_role("progressbar").first.wait_for(timeout=30_000)
    seen = set()
    deadline = time.monotonic() + 180
    while not re.search(r"Propagated over slices", text := status(page)):
        seen.add(text)
        assert time.monotonic() < deadline, f"no propagation result; the panel said {sorted(seen)}"
        time.sleep(0.1)
    assert not [text for text in seen if "job is running" in text], "one key press, one job, no false message"
    found = wait_for_status(page, r"Propagated over slices (\d+)-(\d+)\.", timeout_s=180)
    first, last = int(found.group(1)), int(found.group(2))
    assert LIMIT[0] <= first < SEED < last <= LIMIT[1]
    bars = strip(page)
    assert sorted(bars) == list(range(first, last + 1)), "one bar per previewed slice"
    assert "(key)" in bars[SEED] and sum("(key)" in title for title in bars.values()) == 1
    assert not panel(page).get_by_role("progressbar").count()
    time.sleep(1.0)  # the panel's transitions end
    page.screenshot(path=str(tmp_path_factory.getbasetemp() / "screenshot_sam.png"))
    session.update(strip=bars, range=(first, last))


def test_correcting_a_slice_changes_only_its_range(page, session):
    first, last = session["range"]
    assert first < CORRECTED <= last
    bars = panel(page).locator("[aria-label='Confidence per slice'] [role=listitem]")
    bars.nth(CORRECTED - first).click()  # the strip shows that slice in the view
    slider = page.locator(".v-main").get_by_role("slider").first
    page.wait_for_function(
        "([el, v]) => Math.abs(parseFloat(el.getAttribute('aria-valuenow')) - v) < 0.01",
        arg=[slider.element_handle(), float(slider.get_attribute("aria-valuemin")) + CORRECTED],
    )
    x0, y0, x1, y1 = structure_box(settled_pixels(page))
    drag_box(page, (x0, y0, (x0 + x1) // 2, y1))  # a different box: the left half of the structure
    found = wait_for_status(page, r"Slices (\d+)-(\d+) propagated again\.", timeout_s=120)
    span = int(found.group(1)), int(found.group(2))
    assert span[0] == SEED and span[1] == last, "from the key slice below to the end of the range"
    after = strip(page)
    unchanged = [index for index in session["strip"] if not span[0] <= index <= span[1]]
    assert unchanged, "some previewed slices lie outside the corrected range"
    assert {i: after.get(i) for i in unchanged} == {i: session["strip"][i] for i in unchanged}
    assert "(key)" in after[CORRECTED] and "(key)" not in session["strip"][CORRECTED]
    assert after[SEED] == session["strip"][SEED], "the other key slice is kept"
    session["corrected_strip"] = after


def test_apply_writes_every_previewed_slice_and_undo_removes_them(page, session):
    count = len(session["corrected_strip"])
    panel(page).get_by_role("button", name="Apply", exact=True).click()
    wait_for_status(page, rf"Applied to {count} slices\.")
    written = voxels(wait_for_size(page, lambda text: text != "empty"))
    assert written > 3 * session["single_slice"], "more slices segmented"
    assert not strip(page), "the preview is gone once applied"
    page.get_by_role("button", name="Undo").click()
    wait_for_size(page, lambda text: text == "empty")


def test_two_structures_a_brush_touch_up_and_a_seg_nrrd_download(page, tmp_path):
    """The issue's user story: segment two structures with SAM, touch one up with the brush, download a
    .seg.nrrd, and read it with slicer-core on the same volume (same grid, the voxels the page counted)."""
    from web_export_check import read_seg_nrrd

    from SAMSegmenterLib.io.sample_data import write_sample

    go_to_slice(page, SEED)
    shown = settled_pixels(page)
    for side, index in (("left", 0), ("right", 1)):
        if index:
            page.get_by_role("button", name="Add segment").click()
            page.wait_for_function(f"document.querySelectorAll('{SEGMENT_ITEMS}').length === 2")
            wait_for_status(page, r"Drag a box")  # SAM now writes to the new segment
        drag_box(page, structure_box(shown, side=side))
        wait_for_status(page, rf"Slice K={SEED}: \d+ pixels segmented", timeout_s=PREVIEW_TIMEOUT_S)
        panel(page).get_by_role("button", name="Apply", exact=True).click()
        wait_for_status(page, r"Applied to 1 slice\.")
    sizes = [size_voxels(text) for text in segment_sizes(page)]
    assert all(n > 0 for n in sizes), sizes
    page.get_by_role("button", name="Paint", exact=True).click()  # touch up the second structure
    x0, y0, x1, y1 = structure_box(shown, side="right")
    view = page.locator(VIEW_IMAGE).first.bounding_box()
    paint_stroke(page, ((x0 - 20) / view["width"], (y0 + y1) / 2 / view["height"]),
                 ((x0 + x1) / 2 / view["width"], (y0 + y1) / 2 / view["height"]))
    deadline = time.monotonic() + 30
    while size_voxels(segment_sizes(page)[1]) <= sizes[1]:
        assert time.monotonic() < deadline, "the brush added nothing"
        time.sleep(0.1)
    sizes = [size_voxels(text) for text in segment_sizes(page)]
    print(f"two structures and a touch-up: {sizes} voxels")

    seg = download(page, "Download .seg.nrrd", tmp_path)
    masks = read_seg_nrrd(seg, write_sample("mni152", tmp_path / "mni152.nii.gz"))  # asserts the volume's grid
    assert [int(mask.sum()) for mask in masks.values()] == sizes, "the voxels the page counted"
    first, second = masks.values()
    assert not (first & second).any(), "two structures, no overlap"
    assert {int(k) for mask in masks.values() for k in np.unique(np.nonzero(mask)[0])} == {SEED}
