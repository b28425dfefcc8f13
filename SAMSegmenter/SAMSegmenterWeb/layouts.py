"""View layouts of the web app: 2D by default, the 3D view only when the user asks for it.

On a CPU-only server (Mesa llvmpipe) the 3D view renders at about 2 s a frame and blocks the
event loop, so it is created only when a layout that contains it is chosen (trame-slicer
creates views lazily, per layout).
"""

from __future__ import annotations

from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

DEFAULT_LAYOUT = "axial"
SLICES_LAYOUT = "slices"  # the three slice views (made at start, see SAMSegmenterWebApp)


def layouts() -> dict[str, Layout]:
    """Layout id -> layout; ids are also the values of the layout switch in the UI."""
    axial = ViewLayoutDefinition.axial_view()
    coronal = ViewLayoutDefinition.coronal_view()
    sagittal = ViewLayoutDefinition.sagittal_view()
    threed = ViewLayoutDefinition.threed_view()
    return {
        "axial": Layout(LayoutDirection.Vertical, [axial]),
        "slices": Layout(
            LayoutDirection.Horizontal,
            [axial, Layout(LayoutDirection.Vertical, [coronal, sagittal])],
            flex_sizes=["2", "1"],
        ),
        "slices_3d": Layout(
            LayoutDirection.Horizontal,
            [Layout(LayoutDirection.Vertical, [axial, coronal]), Layout(LayoutDirection.Vertical, [sagittal, threed])],
        ),
    }


LAYOUT_TITLES = {"axial": "Axial", "slices": "3 slices", "slices_3d": "3 slices + 3D"}
