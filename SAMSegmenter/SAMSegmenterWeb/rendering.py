"""Headless OpenGL for the web app: which VTK render window class to use when there is no display.

VTK picks its default window (X11 on Linux) unless ``VTK_DEFAULT_OPENGL_WINDOW`` names another.
On a server without a display the X window fails, so the app chooses EGL (Mesa's llvmpipe works
with no GPU) and falls back to OSMesa when no EGL display can be made. This must run before VTK
creates its first render window.
"""

from __future__ import annotations

import os
from typing import MutableMapping

WINDOW_VARIABLE = "VTK_DEFAULT_OPENGL_WINDOW"
EGL_WINDOW = "vtkEGLRenderWindow"
OSMESA_WINDOW = "vtkOSOpenGLRenderWindow"


def has_display(environ: MutableMapping[str, str]) -> bool:
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def egl_works() -> bool:
    """True when VTK can make an off-screen OpenGL 3.2 context through EGL here."""
    from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow

    window = vtkEGLRenderWindow()
    window.SetOffScreenRendering(1)
    return bool(window.SupportsOpenGL())


def choose_window(environ: MutableMapping[str, str]) -> str | None:
    """The render window class to put in ``VTK_DEFAULT_OPENGL_WINDOW``, or None to keep VTK's choice.

    A value the user set is kept; with a display VTK's default is kept; otherwise EGL when it
    works, else OSMesa.
    """
    if environ.get(WINDOW_VARIABLE) or has_display(environ):
        return None
    return EGL_WINDOW if egl_works() else OSMESA_WINDOW


def configure_headless(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set ``VTK_DEFAULT_OPENGL_WINDOW`` in ``environ`` when needed; return the window class VTK will use."""
    choice = choose_window(environ)
    if choice is not None:
        environ[WINDOW_VARIABLE] = choice
    return environ.get(WINDOW_VARIABLE, "VTK default (display)")
