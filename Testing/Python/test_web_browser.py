"""The web app in a real browser: ``python -m SAMSegmenterLib web`` as a subprocess, Debian's Chromium.

One app (the MNI152 sample) serves the whole module; the tests run in file order and the last
ones replace its volume by uploads. A screenshot of the app is saved in the module's temporary
folder (``screenshot_app.png``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
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
    wait_for_voxels,
)

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def web_app(tmp_path_factory):
    app = start_web_app(tmp_path_factory.mktemp("web_app"))
    yield app
    assert app.stop() is not None


@pytest.fixture(scope="module")
def chromium():
    with playwright_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def mni152_file(tmp_path_factory) -> Path:
    """The volume the app shows, written as the app writes it (the MNI152 sample)."""
    from SAMSegmenterLib.io.sample_data import write_sample

    return write_sample("mni152", tmp_path_factory.mktemp("volume") / "mni152.nii.gz")


@pytest.fixture
def page(web_app, chromium):
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    page.goto(web_app.url)
    page.wait_for_selector(VIEW_IMAGE, timeout=60_000)
    yield page
    page.close()


def segment_names(page) -> list[str]:
    """Names in the segments list (each is the value of a text field)."""
    return page.locator(f"{SEGMENT_ITEMS} input").evaluate_all("fields => fields.map(f => f.value)")


def wait_for_segment_count(page, count: int) -> None:
    page.wait_for_function(f"n => document.querySelectorAll('{SEGMENT_ITEMS}').length === n", arg=count)


def test_url_line_and_loopback(web_app):
    assert web_app.url.startswith("http://127.0.0.1:")
    (line,) = [line for line in web_app.lines if line.startswith("SAMSegmenter web app")]
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        assert "vtkEGLRenderWindow" in line or "vtkOSOpenGLRenderWindow" in line, line


def test_the_started_process_is_the_app(web_app):
    """``python -m SAMSegmenterLib web`` hands its process over to the app (exec), so the process a user or a
    service manager stops is the app itself and no orphaned app keeps serving (it did while the engine's
    command waited for a child)."""
    if sys.platform != "linux":
        pytest.skip("reads /proc")
    cmdline = Path(f"/proc/{web_app.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"SAMSegmenterWeb" in cmdline and b"SAMSegmenterLib" not in cmdline


def test_page_load_has_no_failed_requests(web_app, chromium):
    """trame's page first asks a launcher for its websocket; the app answers instead of a 405 error."""
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    failed = []
    page.on("response", lambda response: response.status >= 400 and failed.append((response.status, response.url)))
    page.goto(web_app.url)
    page.wait_for_selector(VIEW_IMAGE, timeout=60_000)
    wait_for_pixels(page, shows_image)
    page.close()
    assert failed == []


def test_red_view_shows_the_volume(web_app, chromium, tmp_path_factory):
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    page.goto(web_app.url, wait_until="commit")
    for attempt in range(3):  # a loaded machine's Chromium sometimes cannot capture a page still committing
        try:
            loading = np.asarray(Image.open(BytesIO(page.screenshot())).convert("RGB"))
            break
        except playwright_api.Error:
            if attempt == 2:
                raise
            time.sleep(0.2)
    page.wait_for_selector(VIEW_IMAGE, timeout=60_000)
    pixels = wait_for_pixels(page, shows_image)
    box = page.locator(VIEW_IMAGE).bounding_box()
    x, y = int(box["x"]), int(box["y"])
    loading_view = loading[y : y + pixels.shape[0], x : x + pixels.shape[1]]
    assert not shows_image(loading_view), "before the websocket delivers a frame the view area is blank"
    assert page.get_by_text("mni152", exact=True).is_visible()
    path = tmp_path_factory.getbasetemp() / "screenshot_app.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    page.close()


def test_layout_switch_shows_three_slice_views(page):
    page.get_by_role("button", name="3 slices", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{VIEW_IMAGE}').length === 3", timeout=30_000)
    for index in range(3):
        wait_for_pixels(page, shows_image, index=index)
    page.get_by_role("button", name="Axial", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{VIEW_IMAGE}').length === 1", timeout=30_000)


def focus_view(page, index: int = 0) -> None:
    """Give a view the keyboard focus (its element with tabindex 0), as a click in it would."""
    page.locator(VIEW_IMAGE).nth(index).locator("xpath=ancestor::*[@tabindex='0'][1]").focus()


def test_orientation_letters_slice_number_and_slice_keys(page):
    shown = page.get_by_label("Slice shown").first
    page.wait_for_function("el => /^K = \\d+ \\(0-188\\)$/.test(el.innerText.trim())", arg=shown.element_handle())
    letters = {edge: page.get_by_label(f"Orientation {edge}").first.inner_text().strip()
               for edge in ("left", "right", "top", "bottom")}
    assert letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}, "radiological axial view"
    start = int(re.match(r"K = (\d+)", shown.inner_text().strip()).group(1))
    focus_view(page)
    for key, expected in (("ArrowUp", start + 1), ("ArrowUp", start + 2), ("PageDown", start + 1),
                          ("ArrowLeft", start), ("PageUp", start + 1)):
        page.keyboard.press(key)
        page.wait_for_function("([el, text]) => el.innerText.trim().startsWith(text)",
                               arg=[shown.element_handle(), f"K = {expected} "])


def test_display_window_presets_and_drag_change_the_view(page):
    auto = settled_pixels(page)
    display = page.locator(".v-select").filter(has_text="Display window").first
    display.click()
    page.get_by_role("option", name="Bone").click()
    bone = wait_for_pixels(page, lambda now: now.shape == auto.shape and now.mean() < 0.6 * auto.mean())
    print(f"mean grey: auto {auto.mean():.0f}, bone window {bone.mean():.0f}")
    display.click()
    page.get_by_role("option", name="Auto").click()
    wait_for_pixels(page, lambda now: now.shape == auto.shape and abs(now.mean() - auto.mean()) < 2)
    box = page.locator(VIEW_IMAGE).first.bounding_box()  # no effect active: a left drag sets window/level
    drag(page, (box["x"] + 0.3 * box["width"], box["y"] + 0.5 * box["height"]),
         (box["x"] + 0.9 * box["width"], box["y"] + 0.5 * box["height"]), steps=10)
    wider = wait_for_pixels(page, lambda now: now.shape == auto.shape and now.std() < 0.8 * auto.std())
    print(f"grey spread: auto {auto.std():.0f}, after a drag to the right (wider window) {wider.std():.0f}")
    assert display.get_by_text("Custom").is_visible()
    display.click()
    page.get_by_role("option", name="Auto").click()
    wait_for_pixels(page, lambda now: now.shape == auto.shape and abs(now.mean() - auto.mean()) < 2)


def test_crosshair_with_shift_moves_the_other_views(page):
    page.get_by_role("button", name="3 slices", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{VIEW_IMAGE}').length === 3", timeout=30_000)
    page.get_by_role("button", name="Crosshair").click()
    page.wait_for_function(
        "() => document.querySelector('[aria-label=Crosshair]').getAttribute('aria-pressed') === 'true'"
    )
    coronal = page.get_by_label("Slice shown").nth(1)
    before = coronal.inner_text().strip()
    assert before.startswith("J = "), before
    box = page.locator(VIEW_IMAGE).first.bounding_box()
    page.keyboard.down("Shift")
    for fraction in (0.35, 0.4):  # Shift + move over the axial view, in front of its centre
        page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + fraction * box["height"])
    page.keyboard.up("Shift")
    page.wait_for_function("([el, text]) => el.innerText.trim() !== text", arg=[coronal.element_handle(), before])
    print(f"coronal view: {before} -> {coronal.inner_text().strip()}")
    shown = settled_pixels(page)
    page.get_by_role("button", name="Crosshair").click()  # off: its lines leave the axial view
    hidden = wait_for_pixels(page, lambda now: now.shape == shown.shape and (np.abs(
        now.astype(int) - shown).max(axis=2) > 60).sum() > 200)
    print(f"{(np.abs(hidden.astype(int) - shown).max(axis=2) > 60).sum()} px changed when the crosshair was hidden")
    page.get_by_role("button", name="Axial", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{VIEW_IMAGE}').length === 1", timeout=30_000)


def test_add_segment_undo_redo(page):
    before = segment_names(page)
    page.get_by_role("button", name="Add segment").click()
    wait_for_segment_count(page, len(before) + 1)
    added = segment_names(page)
    assert added[: len(before)] == before and added[-1].startswith("Segment_")
    page.get_by_role("button", name="Undo").click()
    wait_for_segment_count(page, len(before))
    page.get_by_role("button", name="Redo").click()
    wait_for_segment_count(page, len(before) + 1)


def test_segments_can_be_selected_recoloured_and_deleted(page):
    for _ in range(2):
        count = page.locator(SEGMENT_ITEMS).count()
        page.get_by_role("button", name="Add segment").click()
        wait_for_segment_count(page, count + 1)
    items = page.locator(SEGMENT_ITEMS)
    count = items.count()
    items.nth(0).locator(".v-list-item__content").click()
    page.wait_for_function(f"() => document.querySelector('{SEGMENT_ITEMS}').classList.contains('v-list-item--active')")
    items.nth(0).locator(".mdi-circle").click()
    for channel, value in (("Red", "255"), ("Green", "0"), ("Blue", "0")):
        field = page.get_by_label(f"{channel} value")
        field.fill(value)
        field.press("Enter")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_function(
        f"() => getComputedStyle(document.querySelector('{SEGMENT_ITEMS} .mdi-circle')).color === 'rgb(255, 0, 0)'"
    )
    name = segment_names(page)[0]
    items.nth(0).locator(".mdi-delete-outline").click()
    wait_for_segment_count(page, count - 1)
    assert name not in segment_names(page)


def test_sam_button_selects_the_effect(page):
    sam = page.get_by_role("button", name="SAM", exact=True)
    assert sam.count() == 1
    sam.click()
    page.wait_for_function("() => document.querySelector('button[value=sam]').classList.contains('v-btn--active')")
    assert segment_names(page), "choosing SAM gives it a segment to write to"
    page.get_by_role("button", name="No effect").click()
    page.wait_for_function("() => document.querySelector('button[value=none]').classList.contains('v-btn--active')")


def test_paint_and_erase_with_the_brush_then_download_seg_nrrd_and_nifti(page, tmp_path, mni152_file):
    from web_export_check import read_nifti_labelmap, read_seg_nrrd

    while count := len(segment_names(page)):  # earlier tests left empty segments: start with none
        page.locator(SEGMENT_ITEMS).first.locator(".mdi-delete-outline").click()
        wait_for_segment_count(page, count - 1)
    page.get_by_role("button", name="Paint", exact=True).click()
    wait_for_segment_count(page, 1)
    page.get_by_label("Brush diameter (mm)").wait_for()
    before = wait_for_pixels(page, shows_image)
    paint_stroke(page, (0.35, 0.45), (0.65, 0.45))
    painted = wait_for_voxels(page, 0, lambda n: n > 0)
    rgb = segment_rgb(page)
    wait_for_pixels(page, lambda now: (tinted(now, rgb) & ~tinted(before, rgb)).sum() > 100)
    page.get_by_role("button", name="Erase", exact=True).click()
    page.get_by_text("Erase with a 5 mm brush").wait_for()
    for attempt in range(3):  # the effect switch reaches the view pipelines through the server: a stroke made
        paint_stroke(page, (0.5, 0.35), (0.5, 0.55))  # before it lands does nothing; the erase must then work
        try:
            left = wait_for_voxels(page, 0, lambda n: 0 < n < painted, timeout_s=10.0)
            break
        except AssertionError:
            if attempt == 2:
                raise
    print(f"painted {painted} voxels; {left} after an erase stroke across them")
    stats = page.locator(f"{SEGMENT_ITEMS} .segment-stats").first.inner_text().strip()
    found = re.fullmatch(r"max diameter ([\d.]+) mm · mean ([\d.]+)", stats)
    assert found, stats
    # the stroke spans 30 % of the view's width, about 85 mm of the MNI152 slice (233 mm fill the view's height)
    assert 40 < float(found.group(1)) < 120, "the painted band's length"
    name = segment_names(page)[0]

    seg = download(page, "Download .seg.nrrd", tmp_path)
    assert seg.name == "mni152_segmentation.seg.nrrd"
    masks = read_seg_nrrd(seg, mni152_file)  # asserts the volume's grid
    assert list(masks) == [name] and int(masks[name].sum()) == left, "the voxels the page counted"
    ks = np.unique(np.nonzero(masks[name])[0])
    assert len(ks) == 1, "painted in the slice the red view shows"

    nifti = download(page, "Download NIfTI", tmp_path)
    assert nifti.name == "mni152_segmentation.nii.gz"
    labels = read_nifti_labelmap(nifti, mni152_file)  # asserts the grid to NIfTI's single precision
    assert np.array_equal(labels > 0, masks[name]) and set(np.unique(labels)) == {0, 1}


def settled_pixels(page, index: int = 0, timeout_s: float = 30.0) -> np.ndarray:
    """A view's pixels once it shows the image and two captures 0.3 s apart agree (size and content)."""
    deadline = time.monotonic() + timeout_s
    previous = wait_for_pixels(page, shows_image, index=index)
    while True:
        time.sleep(0.3)
        pixels = view_pixels(page, index)
        if pixels.shape == previous.shape and np.abs(pixels.astype(int) - previous).mean() < 0.2:
            return pixels
        assert time.monotonic() < deadline, "the view kept changing"
        previous = pixels


def test_the_brush_works_in_views_a_layout_switch_creates(page):
    """Effects get a pipeline in each view a layout switch shows (the coronal and sagittal views of "3 slices"),
    and segments there are translucent over the anatomy as in the axial view."""
    page.get_by_role("button", name="Paint", exact=True).click()
    before = wait_for_voxels(page, 0, lambda n: n > 0)
    rgb = segment_rgb(page)
    slider = page.get_by_role("slider", name="Brush diameter (mm)")
    slider.focus()
    slider.press("End")  # the largest brush: a region, not a line
    page.get_by_text("Paint with a 60 mm brush").wait_for()
    page.get_by_role("button", name="3 slices", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{VIEW_IMAGE}').length === 3", timeout=30_000)
    coronal = page.locator(VIEW_IMAGE).nth(1)
    unpainted = settled_pixels(page, index=1)
    box = coronal.bounding_box()
    drag(page, (box["x"] + 0.4 * box["width"], box["y"] + 0.6 * box["height"]),
         (box["x"] + 0.6 * box["width"], box["y"] + 0.6 * box["height"]), steps=12)
    after = wait_for_voxels(page, 0, lambda n: n > before)
    print(f"a stroke in the coronal view painted {after - before} voxels")
    page.mouse.move(box["x"] + 5, box["y"] + 5)  # the brush outline follows the mouse: move it off the segment
    painted = wait_for_pixels(page, lambda now: (tinted(now, rgb) & ~tinted(unpainted, rgb)).sum() > 2000, index=1)
    region = tinted(painted, rgb) & ~tinted(unpainted, rgb)
    under = unpainted.mean(axis=2)[region]
    shown = painted.mean(axis=2)[region]
    correlation = float(np.corrcoef(under, shown)[0, 1])
    print(f"coronal: {region.sum()} px tinted, correlation with the anatomy under them {correlation:.2f}")
    assert correlation > 0.5, "the anatomy shows through the segment (translucent, not an opaque fill)"
    page.get_by_role("button", name="Axial", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{VIEW_IMAGE}').length === 1", timeout=30_000)
    slider.focus()
    slider.press("Home")


def test_a_long_confidence_strip_scrolls_inside_the_panel(page):
    """189 bars (a propagation through every axial slice of MNI152) stay inside the side panel.

    The strip's content is the controller's state for a whole-volume propagation, set in the page's
    state (a real one would take minutes of model time here); the layout is what is tested.
    """
    page.get_by_role("button", name="SAM", exact=True).click()
    panel = page.get_by_role("region", name="SAM effect")
    panel.get_by_text(re.compile(r"local service http://127\.0\.0\.1:\d+")).wait_for(timeout=240_000)
    page.evaluate(
        """() => {
            const sam = {...window.trame.state.get('sam')};
            sam.confidence = Array.from({length: 189}, (_, i) => ({index: i, score: 0.9, iou: 0.8, key: i === 30,
                                                                   confidence: i === 30 ? null : 0.8, unsure: false}));
            sam.axis = 'K';
            sam.preview_range = [0, 188];
            window.trame.state.set('sam', sam);
        }"""
    )
    bars = panel.locator("[aria-label='Confidence per slice'] [role=listitem]")
    page.wait_for_function(
        "n => document.querySelectorAll(\"[aria-label='Confidence per slice'] [role=listitem]\").length === n", arg=189
    )
    drawer = page.locator(".v-navigation-drawer__content")
    strip = panel.locator("[aria-label='Confidence per slice']")
    assert strip.bounding_box()["width"] <= drawer.bounding_box()["width"]
    bars.nth(188).click()
    assert drawer.evaluate("el => el.scrollLeft") == 0, "the side panel did not scroll sideways"
    assert strip.evaluate("el => el.scrollWidth > el.clientWidth && el.scrollLeft > 0"), "the strip scrolled"
    page.get_by_role("button", name="No effect").click()


def test_bad_upload_gives_a_message_and_the_app_keeps_working(page, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")
    page.locator("input[type=file]:not([webkitdirectory])").set_input_files(str(bad))
    alert = page.get_by_role("alert")
    alert.wait_for(timeout=30_000)
    assert "cannot load notes.txt" in alert.inner_text()
    assert page.get_by_text("mni152", exact=True).is_visible()
    wait_for_pixels(page, shows_image)
    before = len(segment_names(page))
    page.get_by_role("button", name="Add segment").click()  # the app still responds
    wait_for_segment_count(page, before + 1)


def test_a_new_volume_asks_before_it_discards_the_segmentation(page, mni152_file):
    """The segmentation holds voxels: loading a file opens a dialog (download, keep working, discard)."""
    names = segment_names(page)
    assert size_voxels(segment_sizes(page)[0]) > 0
    upload = page.locator("input[type=file]:not([webkitdirectory])")
    upload.set_input_files(str(mni152_file))
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("discards its segmentation").wait_for(timeout=60_000)
    assert dialog.get_by_role("button", name="Download .seg.nrrd").is_enabled()
    dialog.get_by_role("button", name="Keep working").click()
    page.get_by_text("Kept mni152 and its segmentation").wait_for()
    assert segment_names(page) == names and size_voxels(segment_sizes(page)[0]) > 0
    upload.set_input_files(str(mni152_file))
    page.get_by_role("dialog").get_by_role("button", name="Discard and load").click()
    page.get_by_text("Loaded mni152.nii.gz").wait_for(timeout=60_000)
    page.wait_for_function(f"document.querySelectorAll('{SEGMENT_ITEMS}').length === 0")
    assert page.get_by_text("mni152", exact=True).is_visible(), "the same file again: no '_1' suffix"


def test_limit_to_slices_shows_the_full_range_and_resets_with_a_new_volume(page, mni152_file):
    page.get_by_role("button", name="SAM", exact=True).click()
    panel = page.get_by_role("region", name="SAM effect")
    first, last = panel.get_by_label("first"), panel.get_by_label("last")
    first.wait_for(timeout=60_000)
    assert (first.input_value(), last.input_value()) == ("0", "188"), "every axial slice of MNI152 (189)"
    assert panel.locator("[title*=look-alike]").count() == 1, "the checkbox says why and when to limit"
    panel.get_by_label("Limit to slices").check()
    first.fill("20")
    last.fill("55")
    page.get_by_role("button", name="No effect").click()
    shown = page.locator("[role=status] .v-alert__close button, [role=alert] .v-alert__close button")
    if shown.count():  # the first load's "Loaded mni152.nii.gz", which would answer the wait below at once
        shown.first.click()
    page.locator("input[type=file]:not([webkitdirectory])").set_input_files(str(mni152_file))
    page.get_by_text("Loaded mni152.nii.gz").wait_for(timeout=60_000)
    page.get_by_role("button", name="SAM", exact=True).click()
    first.wait_for(timeout=60_000)
    assert (first.input_value(), last.input_value()) == ("0", "188")
    assert not panel.get_by_label("Limit to slices").is_checked()
    page.get_by_role("button", name="No effect").click()


def test_a_4d_file_loads_its_first_volume_with_a_notice(page, tmp_path):
    import nibabel

    frames = np.zeros((40, 50, 30, 3), dtype=np.float32)
    frames[10:30, 10:40, 5:25] = np.arange(1, 4, dtype=np.float32) * 100
    path = tmp_path / "perfusion.nii.gz"
    nibabel.save(nibabel.Nifti1Image(frames, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    page.locator("input[type=file]:not([webkitdirectory])").set_input_files(str(path))
    notice = page.get_by_text("perfusion.nii.gz holds 3 volumes")
    notice.wait_for(timeout=60_000)
    assert "only the first is shown" in notice.inner_text()
    assert page.get_by_text("perfusion", exact=True).is_visible()


def test_dicom_folder_upload_shows_the_new_volume(page, tmp_path):
    from pydicom.data import get_testdata_file

    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "IM0001.dcm")
    (folder / "README.txt").write_text("a file that is not DICOM is skipped\n")
    before = wait_for_pixels(page, shows_image)
    page.locator("input[type=file][webkitdirectory]").set_input_files(str(folder))
    page.get_by_text("Loaded IM0001.dcm").wait_for(timeout=60_000)
    assert page.get_by_text("CT series 1", exact=True).is_visible(), "titled from the DICOM header"
    after = wait_for_pixels(
        page, lambda pixels: shows_image(pixels) and np.abs(pixels.astype(int) - before.astype(int)).mean() > 10
    )
    assert after.shape == before.shape
    assert not segment_names(page), "a new volume starts with an empty segmentation"


def test_dicom_seg_download_references_the_source_images(page, tmp_path):
    """After a DICOM upload (the previous test) a DICOM SEG download is offered: a painted stroke saved on the
    source image's grid, referencing it."""
    import pydicom
    from pydicom.data import get_testdata_file

    page.get_by_role("button", name="Paint", exact=True).click()
    wait_for_segment_count(page, 1)
    paint_stroke(page, (0.4, 0.5), (0.6, 0.5))
    painted = wait_for_voxels(page, 0, lambda n: n > 0)
    path = download(page, "Download DICOM SEG", tmp_path)
    seg = pydicom.dcmread(path)
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert seg.Modality == "SEG" and seg.NumberOfFrames == 1
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == source.SOPInstanceUID and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == segment_names(page)[0]
    assert int(np.count_nonzero(seg.pixel_array)) == painted, "the voxels the page counted"
