"""Window/level by dragging in a slice view, as in 3D Slicer: with no effect active, a left drag to the
right widens the window (less contrast), to the left narrows it; up raises the level (darker), down
lowers it. The change is proportional to the drag over the view's size times the volume's scalar range.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from vtkmodules.vtkCommonCore import vtkCommand

PRIORITY = 50.0  # before the view's own interaction (which does nothing with a plain left drag)


class WindowLevelDrag:
    """Observes one slice view's interactor; ``display_node()`` gives the volume's display node (or None),
    ``enabled()`` says whether a drag should change it (no effect active), ``changed()`` is called after."""

    def __init__(
        self,
        view: Any,
        display_node: Callable[[], Optional[Any]],
        enabled: Callable[[], bool],
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.view = view
        self.display_node = display_node
        self.enabled = enabled
        self.changed = changed
        self._start: Optional[tuple[tuple[int, int], float, float, float]] = None
        interactor = view.interactor()
        interactor.AddObserver(vtkCommand.LeftButtonPressEvent, self._press, PRIORITY)
        interactor.AddObserver(vtkCommand.MouseMoveEvent, self._move, PRIORITY)
        interactor.AddObserver(vtkCommand.LeftButtonReleaseEvent, self._release, PRIORITY)

    def _press(self, interactor: Any, _event: str) -> None:
        display = self.display_node() if self.enabled() else None
        if display is None or interactor.GetShiftKey() or interactor.GetControlKey():
            return
        volume = display.GetDisplayableNode()
        image = volume.GetImageData() if volume is not None else None
        if image is None:
            return
        low, high = image.GetScalarRange()
        self._start = (tuple(interactor.GetEventPosition()), display.GetWindow(), display.GetLevel(),
                       max(float(high - low), 1e-6))

    def _move(self, interactor: Any, _event: str) -> None:
        display = self.display_node()
        if self._start is None or display is None:
            return
        (x0, y0), window, level, scalar_range = self._start
        x, y = interactor.GetEventPosition()
        width, height = (max(n, 1) for n in interactor.GetSize())
        display.SetAutoWindowLevel(0)
        display.SetWindowLevel(max(window + (x - x0) / width * scalar_range, scalar_range * 1e-3),
                               level + (y - y0) / height * scalar_range)
        self.view.schedule_render()

    def _release(self, _interactor: Any, _event: str) -> None:
        if self._start is not None:
            self._start = None
            self.changed()
