"""Page layout of the web app (Vuetify 3): app bar, side panel, and the view grid.

Side panel, top to bottom: open a volume file or a DICOM folder (and the message of the last
load), the segments list, saving the segmentation (downloads), the effect choice (None / SAM),
the SAM panel, the masking options.
App bar: the volume's name, the view layout switch, undo and redo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_server import Server
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.logic import connect_slice_view_slider_to_state
from trame_slicer.app.ui import (
    DynamicSelect,
    LoadVolumeButton,
    LoadVolumeState,
    SegmentEditUI,
    Slider,
)
from trame_slicer.views import SliceView

from .display import CUSTOM, DISPLAY_PRESETS
from .export import ALL_FORMATS
from .layouts import LAYOUT_TITLES
from .masking import OVERWRITE_ITEMS
from .panel import SAMPanel
from .segments import SizedSegmentList

if TYPE_CHECKING:
    from .app import SAMSegmenterWebApp

PANEL_WIDTH = 380
DISPLAY_NAMES = (*DISPLAY_PRESETS, CUSTOM)


LABEL_STYLE = "position: absolute; color: #ffd54f; font: 600 13px sans-serif; text-shadow: 0 0 3px black;"
EDGE_POSITIONS = {
    "left": "left: 6px; top: 50%;",
    "right": "right: 6px; top: 50%;",
    "top": "top: 6px; left: 50%;",
    "bottom": "bottom: 28px; left: 50%;",
}


def slice_view_gutter(server: Server, _view_id: str, view: SliceView) -> None:
    """Overlay of a slice view: a reset button at the top left, orientation letters at the edges, the slice
    shown at the top right (see annotations.py), the slice slider at the bottom."""
    info = f"(web_view_info['{view.get_singleton_tag()}'] || {{}})"
    for edge, position in EDGE_POSITIONS.items():
        html.Div(
            f"{{{{ {info}.{edge} }}}}",
            style=LABEL_STYLE + position + " pointer-events: none;",
            classes=f"orientation-{edge}",
            raw_attrs=[f'aria-label="Orientation {edge}"'],
        )
    html.Div(
        f"{{{{ {info}.slice }}}}",
        style=LABEL_STYLE + "top: 6px; right: 8px; pointer-events: none;",
        raw_attrs=['aria-label="Slice shown"'],
    )
    with html.Div(style="position: absolute; top: 4px; left: 4px;"):
        with v3.VBtn(
            size="small", variant="text", icon=True, click=view.reset_view, raw_attrs=['aria-label="Reset view"']
        ):
            v3.VIcon("mdi-fit-to-screen-outline", color="white")
    with html.Div(style="position: absolute; bottom: 0; left: 0; width: 100%;"):
        Slider(typed_state=connect_slice_view_slider_to_state(server, view), theme="dark", density="compact")


def build_ui(app: SAMSegmenterWebApp) -> VAppLayout:
    server = app.server
    with VAppLayout(server, theme="dark") as layout:
        client.Style("html { overflow-y: hidden; }")
        with v3.VAppBar(density="compact"):
            v3.VAppBarTitle("SAMSegmenter", style="flex: 0 0 auto;")
            html.Span("{{ web_volume_name }}", classes="text-body-2 text-medium-emphasis mx-4")
            html.Span("model service: {{ web_service }}", v_if="web_service", classes="text-caption mx-2")
            v3.VSpacer()
            with v3.VBtnToggle(
                v_model=("web_layout",),
                mandatory=True,
                density="compact",
                variant="outlined",
                raw_attrs=['aria-label="View layout"'],
            ):
                for layout_id, title in LAYOUT_TITLES.items():
                    v3.VBtn(title, value=layout_id, size="small")
            v3.VBtn(
                icon="mdi-crosshairs",
                click="web_crosshair = !web_crosshair",
                color=("web_crosshair ? 'primary' : ''",),
                title="Crosshair: Shift + mouse move places it and moves the other views there",
                raw_attrs=['aria-label="Crosshair"', ':aria-pressed="web_crosshair"'],
            )
            v3.VBtn(
                icon="mdi-undo", click=app.undo, disabled=("!web_can_undo",), raw_attrs=['aria-label="Undo"']
            )
            v3.VBtn(
                icon="mdi-redo", click=app.redo, disabled=("!web_can_redo",), raw_attrs=['aria-label="Redo"']
            )

        with v3.VNavigationDrawer(permanent=True, width=PANEL_WIDTH, location="left"):
            _volume_section(app)
            v3.VDivider()
            _segments_section(app)
            _save_section(app)
            v3.VDivider()
            _effect_section(app)
            v3.VDivider()
            _masking_section(app)

        _replace_dialog(app)
        with v3.VMain(), html.Div(style="height: calc(100vh - 48px); display: flex;"):
            app.layout_manager.initialize_layout_grid(layout)
    return layout


def _volume_section(app: SAMSegmenterWebApp) -> None:
    load_state = TypedState(app.state, LoadVolumeState, namespace="web_load")
    with html.Div(classes="pa-2"):
        with html.Div(classes="d-flex align-center ga-2"):
            html.Span("Open", classes="text-subtitle-2")
            files = LoadVolumeButton(
                name="Open volume file(s)",
                load_directory=False,
                icon="mdi-file-upload",
                typed_state=load_state.get_sub_state(load_state.name.file_button),
            )
            folder = LoadVolumeButton(
                name="Open DICOM folder",
                load_directory=True,
                icon="mdi-folder-upload",
                typed_state=load_state.get_sub_state(load_state.name.dir_button),
            )
        v3.VSelect(
            v_model=("web_display",),
            items=("web_display_items", [{"title": name.capitalize(), "value": name} for name in DISPLAY_NAMES]),
            label="Display window",
            density="compact",
            hide_details=True,
            disabled=("!web_volume_name",),
            classes="mt-2",
            raw_attrs=['aria-label="Display window"'],
        )
        v3.VAlert(
            v_if="web_message",
            text=("web_message.text",),
            type=("web_message.type",),
            density="compact",
            variant="tonal",
            closable=True,
            raw_attrs=[":role=\"web_message.type === 'error' ? 'alert' : 'status'\""],
            click_close="web_message = null",
            classes="mt-2",
        )
    files.on_load_volume.connect(app.load_uploads)
    folder.on_load_volume.connect(app.load_uploads)


def _segments_section(app: SAMSegmenterWebApp) -> None:
    edit_ui = SegmentEditUI()
    with html.Div(classes="pa-2"):
        with html.Div(classes="d-flex align-center"):
            html.Span("Segments", classes="text-subtitle-2")
            v3.VSpacer()
            v3.VBtn(
                "Add segment",
                prepend_icon="mdi-plus",
                click=app.segments.add,
                disabled=("!web_volume_name",),
                size="small",
                variant="tonal",
            )
        edit_ui._build_color_dialog()
        v3.VSlider(
            v_model=("web_segment_opacity",),
            min=0,
            max=1,
            step=0.05,
            label="Opacity",
            density="compact",
            hide_details=True,
            disabled=("!web_has_segments",),
            raw_attrs=['aria-label="Segment opacity"'],
        )
        segment_list = SizedSegmentList(
            typed_state=app.segments.list_state, edit_ui=edit_ui, density="compact", raw_attrs=['aria-label="Segments"']
        )
    app.segments.connect(segment_list)


BRUSH_BUTTONS = (("paint", "mdi-brush", "Paint"), ("erase", "mdi-eraser", "Erase"))
SAVE_LABELS = {"seg.nrrd": ".seg.nrrd", "nii.gz": "NIfTI", "dcm": "DICOM SEG"}


def download_click(app: SAMSegmenterWebApp, file_format: str) -> str:
    """JavaScript of a download button: ask the server for the file, then hand it to the browser as a download."""
    trigger = app.server.controller.trigger_name(app.export)
    return (
        f"trigger('{trigger}', ['{file_format}']).then(data => data &&"
        f" utils.download(web_export_names['{file_format}'], data, 'application/octet-stream'))"
    )


def _save_buttons(app: SAMSegmenterWebApp) -> None:
    for file_format, title in ALL_FORMATS.items():
        v3.VBtn(
            SAVE_LABELS[file_format],
            v_if=f"web_export_names['{file_format}']",
            prepend_icon="mdi-download",
            click=download_click(app, file_format),
            disabled=("!web_has_segments",),
            size="small",
            variant="tonal",
            title=f"Download the segmentation as a {title} file on the volume's grid",
            raw_attrs=[f'aria-label="Download {SAVE_LABELS[file_format]}"'],
        )


def _save_section(app: SAMSegmenterWebApp) -> None:
    with html.Div(classes="d-flex align-center flex-wrap ga-2 px-2 pb-2"):
        html.Span("Save", classes="text-subtitle-2")
        _save_buttons(app)


def _replace_dialog(app: SAMSegmenterWebApp) -> None:
    """Asks before a new volume discards a segmentation that holds voxels; offers to download it first."""
    with v3.VDialog(model_value=("!!web_replace",), persistent=True, max_width=460):
        with v3.VCard(v_if="web_replace", raw_attrs=['aria-label="Replace the volume?"']):
            v3.VCardTitle("Replace the volume?")
            v3.VCardText(
                "Loading {{ web_replace.files }} closes {{ web_replace.volume }} and discards its segmentation"
                " ({{ web_replace.segments }} segment{{ web_replace.segments === 1 ? '' : 's' }}): this cannot be"
                " undone. Download it first to keep it."
            )
            with v3.VCardActions(classes="flex-wrap ga-1"):
                _save_buttons(app)
                v3.VSpacer()
                v3.VBtn("Keep working", click=app.cancel_replace, size="small")
                v3.VBtn("Discard and load", click=app.confirm_replace, color="error", size="small")


def _effect_section(app: SAMSegmenterWebApp) -> None:
    with html.Div(classes="pa-2"):
        with html.Div(classes="d-flex flex-column ga-1"):
            html.Span("Effect", classes="text-subtitle-2")
            with v3.VBtnToggle(v_model=("web_effect",), mandatory=True, density="compact", divided=True):
                v3.VBtn(
                    "None",
                    value="none",
                    prepend_icon="mdi-cursor-default",
                    size="small",
                    raw_attrs=['aria-label="No effect"'],
                )
                v3.VBtn(
                    "SAM",
                    value="sam",
                    prepend_icon="mdi-auto-fix",
                    size="small",
                    raw_attrs=['aria-label="SAM"'],
                    title="Segment Anything: box and point prompts in the slice views",
                    disabled=("!web_volume_name",),
                )
                for value, icon, title in BRUSH_BUTTONS:
                    v3.VBtn(
                        title,
                        prepend_icon=icon,
                        value=value,
                        size="small",
                        raw_attrs=[f'aria-label="{title}"'],
                        title=f"{title}: drag in a slice view to {value} the selected segment with the brush",
                        disabled=("!web_volume_name",),
                    )
        with html.Div(v_if="web_effect === 'paint' || web_effect === 'erase'", classes="d-flex flex-column ga-1 pt-2"):
            v3.VSlider(
                v_model=("web_brush_mm",),
                min=1,
                max=60,
                step=1,
                label="Brush",
                density="compact",
                hide_details=True,
                thumb_label=True,
                raw_attrs=['aria-label="Brush diameter (mm)"'],
            )
            html.Div(
                "{{ web_effect === 'paint' ? 'Paint' : 'Erase' }} with a {{ web_brush_mm }} mm brush: drag in a"
                " slice view. Undo reverts a stroke.",
                classes="text-caption text-medium-emphasis",
                raw_attrs=['role="status"'],
            )
        SAMPanel(
            apply=app.sam_apply,
            cancel=app.sam_cancel,
            propagate=app.sam_propagate,
            stop=app.sam_stop,
            jump_to=app.sam_jump_to,
            v_if="web_effect === 'sam'",
        )


def _masking_section(app: SAMSegmenterWebApp) -> None:
    with v3.VExpansionPanels(variant="accordion", flat=True), v3.VExpansionPanel(title="Masking options"):
        with v3.VExpansionPanelText(), html.Div(classes="d-flex flex-column ga-3"):
            DynamicSelect(label="Editable area", state=app.masking.area_state)
            with html.Div():
                v3.VSwitch(
                    v_model=("web_mask_intensity",),
                    label="Editable intensity range",
                    density="compact",
                    hide_details=True,
                    color="primary",
                )
                v3.VRangeSlider(
                    v_model=("web_mask_range",),
                    min=("web_mask_limits[0]",),
                    max=("web_mask_limits[1]",),
                    disabled=("!web_mask_intensity",),
                    thumb_label=True,
                    density="compact",
                    hide_details=True,
                    raw_attrs=['aria-label="Editable intensity range"'],
                )
            v3.VSelect(
                v_model=("web_mask_overwrite",),
                items=("web_mask_overwrite_items", OVERWRITE_ITEMS),
                label="Modify other segments",
                density="compact",
                hide_details=True,
            )
