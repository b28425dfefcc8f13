"""The "SAM" Segment Editor effect: prompts in slice views, preview, Apply, propagation.

This file only wires Slicer events and widgets; what the prompts mean, which slice they
belong to, what is previewed and what Apply writes is decided by
SAMSegmenterMRML.interactive.InteractiveSession (tested without Qt). Model work runs in a
background thread (SAMSegmenterMRML.jobs.BackgroundRunner); a QTimer polls it and applies
results on the main thread.
"""

import logging
import os
import time

import numpy as np
import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

DRAG_PIXELS = 4
POLL_MSEC = 50
PREFETCH_DELAY_MSEC = 400
WRITE_MODES = (("Replace slice", "replace"), ("Add", "add"), ("Remove", "remove"))
DIRECTIONS = (("Both", "both"), ("Up (increasing index)", "up"), ("Down (decreasing index)", "down"))
WINDOWS = ("auto", "soft_tissue", "lung", "bone", "brain")
KEY_HELP = (
    ("Left click", "include point"),
    ("Ctrl + left click, right click", "exclude point"),
    ("Left drag", "box"),
    ("a, Enter", "apply"),
    ("x", "clear prompts and preview"),
    ("p / u / d", "propagate both ways / up / down"),
)


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Segment Anything prompts: include/exclude points and boxes in any slice view aligned to the volume."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "SAM"  # not translated: modules select effects by name
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.session = None
        self.runner = None
        self.prefetchRunner = None
        self.jobs = {}
        self.drag = None
        self.prefetchView = None
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_MSEC)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.prefetchTimer = qt.QTimer()
        self.prefetchTimer.setSingleShot(True)
        self.prefetchTimer.setInterval(PREFETCH_DELAY_MSEC)
        self.prefetchTimer.connect("timeout()", self.onPrefetch)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SegmentEditorSAM.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        keys = "".join(f"<li><b>{key}</b>: {action}</li>" for key, action in KEY_HELP)
        return (
            "<html>Segment Anything: prompt the model in a slice view and preview its mask.<p>"
            "<ul style='margin: 0'>"
            f"{keys}"
            "</ul><p>"
            "Prompts belong to one slice; prompting another slice starts over. LiteMedSAM and MedSAM "
            "were trained with boxes only: draw a box. Oblique volumes work when the view shows volume "
            "slices (slice view menu: <i>Rotate to volume plane</i>). <b>Apply</b> writes the preview into "
            "the selected segment, following <i>Editable area</i>, <i>Editable intensity range</i> and "
            "<i>Modify other segments</i>; undo restores. <b>Propagate</b> segments neighbouring slices "
            "from the previewed one. Model, device and packages: <i>SAM Segmenter</i> module.</html>"
        )

    def cleanup(self):
        self.pollTimer.disconnect("timeout()", self.onPoll)
        self.prefetchTimer.disconnect("timeout()", self.onPrefetch)

    # options panel ------------------------------------------------------------------------------

    def setupOptionsFrame(self):
        self.statusLabel = qt.QLabel()
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.windowSelector = qt.QComboBox()
        self.windowSelector.addItems(list(WINDOWS))
        self.windowSelector.toolTip = (
            "Intensity window that maps the volume to the model's input (auto: 0.5-99.5 percentiles)."
        )
        self.scriptedEffect.addLabeledOptionsWidget("Intensity window:", self.windowSelector)

        self.modeSelector = qt.QComboBox()
        for title, mode in WRITE_MODES:
            self.modeSelector.addItem(title, mode)
        self.modeSelector.toolTip = (
            "Replace: the segment on the previewed slices becomes the preview. Add / Remove: union / erase."
        )
        self.scriptedEffect.addLabeledOptionsWidget("Apply as:", self.modeSelector)

        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.toolTip = "Write the preview into the selected segment (a, Enter)."
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.toolTip = "Clear prompts and preview (x)."
        row = qt.QHBoxLayout()
        row.addWidget(self.cancelButton)
        row.addWidget(self.applyButton)
        self.scriptedEffect.addOptionsWidget(row)

        self.directionSelector = qt.QComboBox()
        for title, direction in DIRECTIONS:
            self.directionSelector.addItem(title, direction)
        self.scriptedEffect.addLabeledOptionsWidget("Propagate:", self.directionSelector)
        self.rangeCheckBox = qt.QCheckBox("Limit to slices")
        self.rangeFirst = qt.QSpinBox()
        self.rangeLast = qt.QSpinBox()
        for spinBox in (self.rangeFirst, self.rangeLast):
            spinBox.setRange(0, 9999)
        rangeRow = qt.QHBoxLayout()
        rangeRow.addWidget(self.rangeCheckBox)
        rangeRow.addWidget(self.rangeFirst)
        rangeRow.addWidget(qt.QLabel("to"))
        rangeRow.addWidget(self.rangeLast)
        self.scriptedEffect.addOptionsWidget(rangeRow)
        self.propagateButton = qt.QPushButton("Propagate")
        self.propagateButton.toolTip = "Segment neighbouring slices from the previewed slice (p / u / d)."
        self.stopButton = qt.QPushButton("Stop")
        self.progressBar = qt.QProgressBar()
        self.progressBar.visible = False
        propagateRow = qt.QHBoxLayout()
        propagateRow.addWidget(self.propagateButton)
        propagateRow.addWidget(self.progressBar)
        propagateRow.addWidget(self.stopButton)
        self.scriptedEffect.addOptionsWidget(propagateRow)

        self.applyButton.connect("clicked()", self.apply)
        self.cancelButton.connect("clicked()", self.clearPrompts)
        self.propagateButton.connect("clicked()", self.onPropagate)
        self.stopButton.connect("clicked()", self.stop)
        for widget in (self.windowSelector, self.modeSelector, self.directionSelector):
            widget.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        self.rangeCheckBox.connect("toggled(bool)", self.updateMRMLFromGUI)
        for spinBox in (self.rangeFirst, self.rangeLast):
            spinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)

    def setMRMLDefaults(self):
        self.scriptedEffect.setParameterDefault("Window", "auto")
        self.scriptedEffect.setParameterDefault("WriteMode", "replace")
        self.scriptedEffect.setParameterDefault("Direction", "both")
        self.scriptedEffect.setParameterDefault("UseRange", 0)
        self.scriptedEffect.setParameterDefault("RangeFirst", 0)
        self.scriptedEffect.setParameterDefault("RangeLast", 0)

    def updateGUIFromMRML(self):
        widgets = (
            self.windowSelector,
            self.modeSelector,
            self.directionSelector,
            self.rangeCheckBox,
            self.rangeFirst,
            self.rangeLast,
        )
        blocked = [widget.blockSignals(True) for widget in widgets]
        self.windowSelector.setCurrentIndex(
            max(self.windowSelector.findText(self.scriptedEffect.parameter("Window")), 0)
        )
        self.modeSelector.setCurrentIndex(
            max(self.modeSelector.findData(self.scriptedEffect.parameter("WriteMode")), 0)
        )
        self.directionSelector.setCurrentIndex(
            max(self.directionSelector.findData(self.scriptedEffect.parameter("Direction")), 0)
        )
        self.rangeCheckBox.checked = self.scriptedEffect.integerParameter("UseRange") != 0
        self.rangeFirst.value = self.scriptedEffect.integerParameter("RangeFirst")
        self.rangeLast.value = self.scriptedEffect.integerParameter("RangeLast")
        for widget, wasBlocked in zip(widgets, blocked):
            widget.blockSignals(wasBlocked)
        self.updateButtons()

    def updateMRMLFromGUI(self, *args):
        self.scriptedEffect.setParameter("Window", self.windowSelector.currentText)
        self.scriptedEffect.setParameter("WriteMode", self.modeSelector.currentData)
        self.scriptedEffect.setParameter("Direction", self.directionSelector.currentData)
        self.scriptedEffect.setParameter("UseRange", 1 if self.rangeCheckBox.checked else 0)
        self.scriptedEffect.setParameter("RangeFirst", self.rangeFirst.value)
        self.scriptedEffect.setParameter("RangeLast", self.rangeLast.value)
        if self.session is not None and self.session.window != self.windowSelector.currentText:
            self.clearPrompts()
            self.session.window = self.windowSelector.currentText

    def updateButtons(self):
        busy = self.runner is not None and self.runner.busy
        hasResult = self.session is not None and self.session.result is not None
        self.applyButton.enabled = hasResult and not busy
        self.cancelButton.enabled = self.session is not None and (hasResult or not self.session.markups.is_empty())
        self.propagateButton.enabled = hasResult and not busy
        self.stopButton.enabled = busy
        self.rangeFirst.enabled = self.rangeLast.enabled = self.rangeCheckBox.checked

    def setStatus(self, text):
        self.statusLabel.text = text

    # lifecycle -----------------------------------------------------------------------------------

    def activate(self):
        import SAMSegmenter

        if not SAMSegmenter.dependenciesReady():
            self.setStatus(self.notReadyMessage())
            return
        logic = SAMSegmenter.sharedLogic()
        self.setStatus(f"{logic.model_name} on {logic.device}: drag a box or click in a slice view.")
        self.updateButtons()

    def notReadyMessage(self):
        import SAMSegmenter

        if not SAMSegmenter.slicerSupported():
            return SAMSegmenter.UNSUPPORTED_SLICER
        return "Python packages are missing: install them in the <b>SAM Segmenter</b> module."

    def deactivate(self):
        self.closeSession()

    def closeSession(self):
        self.prefetchTimer.stop()
        if self.runner is not None:
            self.runner.cancel()
        self.jobs = {}
        if self.session is not None:
            self.session.close()
            self.session = None
        self.drag = None
        self.updateButtons()

    def sourceVolumeNodeChanged(self):
        self.closeSession()

    def referenceGeometryChanged(self):
        self.closeSession()

    def currentSession(self):
        """The session for the editor's source volume and segmentation (created on first use), or None."""
        import SAMSegmenter

        if not SAMSegmenter.dependenciesReady():
            self.setStatus(self.notReadyMessage())
            return None
        parameterNode = self.scriptedEffect.parameterSetNode()
        volumeNode = parameterNode.GetSourceVolumeNode()
        segmentationNode = parameterNode.GetSegmentationNode()
        if volumeNode is None or segmentationNode is None:
            self.setStatus("Select a segmentation and a source volume.")
            return None
        if self.session is not None and (
            self.session.volume_node is not volumeNode or self.session.segmentation_node is not segmentationNode
        ):
            self.closeSession()
        if self.session is None:
            from SAMSegmenterMRML.interactive import InteractiveSession
            from SAMSegmenterMRML.jobs import BackgroundRunner

            self.session = InteractiveSession(
                SAMSegmenter.sharedLogic(), volumeNode, segmentationNode, self.windowSelector.currentText
            )
            if self.runner is None:
                self.runner = BackgroundRunner()
                self.prefetchRunner = BackgroundRunner()
        segmentId = parameterNode.GetSelectedSegmentID()
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentId else None
        if segment is not None:
            self.session.color = tuple(segment.GetColor())
        return self.session

    # scripting API (used by the view interaction below and by tests) ---------------------------------

    def promptPoint(self, ras, include, sliceNode):
        """Add an include (or exclude) point at world ``ras`` on the slice shown by ``sliceNode``."""
        self._prompt(
            lambda session: session.add_point(np.asarray(ras, dtype=float), include, self._sliceToRas(sliceNode))
        )

    def promptBox(self, cornersRas, sliceNode):
        """Set the box from its (4, 3) world RAS corners, drawn in the view of ``sliceNode``."""
        self._prompt(lambda session: session.set_box(np.asarray(cornersRas, dtype=float), self._sliceToRas(sliceNode)))

    def propagate(self, direction=None, sliceRange=None):
        """Propagate the previewed slice ("up", "down", "both"); sliceRange: (first, last) inclusive or None."""
        from SAMSegmenterLib.errors import SAMSegmenterError

        if self.session is None:
            self.setStatus("Segment a slice first.")
            return
        direction = direction or self.directionSelector.currentData
        if sliceRange is None and self.rangeCheckBox.checked:
            sliceRange = (
                min(self.rangeFirst.value, self.rangeLast.value),
                max(self.rangeFirst.value, self.rangeLast.value),
            )
        try:
            job = self.session.propagation_job(direction, sliceRange)
        except SAMSegmenterError as error:
            self.setStatus(str(error))
            return
        runner = self.runner
        self._submit(("propagate", job.generation), job, lambda: job.run(runner.report, runner.cancel_requested))
        self.progressBar.visible = True
        self.progressBar.setRange(0, 0)
        self.setStatus(f"Propagating {direction}...")

    def apply(self):
        """Write the preview into the selected segment (undo is saved first)."""
        if self.session is None or self.session.result is None or (self.runner is not None and self.runner.busy):
            return
        if not self.scriptedEffect.confirmCurrentSegmentVisible():
            return
        from SAMSegmenterLib.errors import SAMSegmenterError

        mode = self.modeSelector.currentData
        current = self.scriptedEffect.selectedSegmentLabelmap() if mode == "replace" else None
        try:
            edits = self.session.edits(self.scriptedEffect.referenceGeometryImage(), current, mode)
        except SAMSegmenterError as error:
            self.setStatus(str(error))
            return
        modes = {
            "set": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet,
            "add": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd,
            "remove": slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove,
        }
        self.scriptedEffect.saveStateForUndo()
        for edit in edits:
            self.scriptedEffect.modifySelectedSegmentByLabelmap(edit.labelmap, modes[edit.operation], list(edit.extent))
        self.session.clear()
        self.setStatus("Applied. Undo restores the segment.")
        self.updateButtons()

    def clearPrompts(self):
        if self.session is not None:
            self.session.clear()
        self.setStatus("Prompts cleared.")
        self.updateButtons()

    def stop(self):
        if self.runner is not None:
            self.runner.cancel()

    def waitForResult(self, timeoutSeconds=300):
        """Process events until the running job's result is applied (for scripts and tests); False on timeout."""
        deadline = time.monotonic() + timeoutSeconds
        while self.runner is not None and (self.runner.busy or self.jobs):
            slicer.app.processEvents()
            self.onPoll()
            if time.monotonic() > deadline:
                return False
        return True

    def _sliceToRas(self, sliceNode):
        return slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())

    def _prompt(self, makeJob):
        from SAMSegmenterLib.errors import SAMSegmenterError

        session = self.currentSession()
        if session is None:
            return
        try:
            job = makeJob(session)
        except SAMSegmenterError as error:
            self.setStatus(str(error))
            return
        self._submit(("predict", job.generation), job, job.run)
        self.setStatus(f"Segmenting slice {job.prompt.ref.axis_name}={job.prompt.ref.index}...")

    def _submit(self, tag, job, work):
        self.jobs[tag] = job
        self.runner.submit(tag, work)
        self.pollTimer.start()
        self.updateButtons()

    def onPoll(self):
        if self.runner is None:
            self.pollTimer.stop()
            return
        busy = self.runner.busy
        for finished in self.runner.poll():
            job = self.jobs.pop(finished.tag, None)
            if job is None or self.session is None:
                continue
            if finished.error is not None:
                self.setStatus(f"SAM failed: {finished.error}")
                logging.error("SAM effect job failed: %s", finished.error)
            elif finished.tag[0] == "predict":
                if self.session.accept(job, finished.value):
                    self.setStatus(
                        f"Slice {self.session.ref.axis_name}={self.session.ref.index}: predicted IoU "
                        f"{self.session.score:.2f}. Apply, add prompts or propagate."
                    )
            elif self.session.accept_propagation(job, finished.value):
                result = finished.value
                slab = self.session.result[0]
                reasons = ", ".join(f"{walk}: {reason}" for walk, reason in result.stop_reasons.items())
                self.setStatus(f"Propagated over slices {slab.first}-{slab.last} ({reasons}). Apply to keep.")
            else:
                self.setStatus("Propagation stopped; nothing changed.")
        progress = self.runner.progress
        if progress is not None and progress[1] > 0:
            self.progressBar.setRange(0, progress[1])
            self.progressBar.value = progress[0]
        if not busy:
            self.pollTimer.stop()
            self.progressBar.visible = False
            self.jobs = {}  # jobs still listed were replaced by newer ones before they started
        self.updateButtons()

    # slice view interaction --------------------------------------------------------------------

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        sliceNode = viewWidget.sliceLogic().GetSliceNode()
        if eventId == vtk.vtkCommand.KeyPressEvent:
            return self.onKey(callerInteractor.GetKeySym())
        xy = callerInteractor.GetEventPosition()
        if callerInteractor.GetShiftKey() or callerInteractor.GetAltKey():
            return False  # Shift and Alt keep their slice view meanings (crosshair, window/level)
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            self.drag = {
                "start": xy,
                "sliceNode": sliceNode,
                "box": False,
                "include": not callerInteractor.GetControlKey(),
            }
            return True
        if eventId == vtk.vtkCommand.RightButtonPressEvent:
            self.drag = {"start": xy, "sliceNode": sliceNode, "box": False, "include": False}
            return True
        if self.drag is None or self.drag["sliceNode"] is not sliceNode:
            return False
        if eventId == vtk.vtkCommand.MouseMoveEvent:
            start = self.drag["start"]
            if self.drag["include"] and max(abs(xy[0] - start[0]), abs(xy[1] - start[1])) >= DRAG_PIXELS:
                self.drag["box"] = True
                session = self.currentSession()
                if session is not None:
                    session.markups.set_box(self.boxCorners(start, xy, viewWidget))
            return self.drag["box"]
        if eventId in (vtk.vtkCommand.LeftButtonReleaseEvent, vtk.vtkCommand.RightButtonReleaseEvent):
            drag, self.drag = self.drag, None
            if drag["box"]:
                self.promptBox(self.boxCorners(drag["start"], xy, viewWidget), sliceNode)
            else:
                self.promptPoint(self.xyToRas(drag["start"], viewWidget), drag["include"], sliceNode)
            return True
        return False

    def boxCorners(self, start, end, viewWidget):
        """World RAS of the four corners of the rectangle dragged from ``start`` to ``end`` (view pixels)."""
        corners = ((start[0], start[1]), (end[0], start[1]), (end[0], end[1]), (start[0], end[1]))
        return [self.xyToRas(corner, viewWidget) for corner in corners]

    def onKey(self, key):
        actions = {
            "a": self.apply,
            "Return": self.apply,
            "x": self.clearPrompts,
            "p": lambda: self.propagate("both"),
            "u": lambda: self.propagate("up"),
            "d": lambda: self.propagate("down"),
        }
        action = actions.get(key)
        if action is None:
            return False
        action()
        return True

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        if callerViewNode is not None and callerViewNode.IsA("vtkMRMLSliceNode"):
            self.prefetchView = callerViewNode
            self.prefetchTimer.start()

    def onPrefetch(self):
        """Embed the slice the user stopped on, so the first prompt there is fast."""
        from SAMSegmenterLib.errors import SAMSegmenterError

        if self.session is None or self.prefetchView is None:
            return
        try:
            work = self.session.prefetch(self._sliceToRas(self.prefetchView))
        except SAMSegmenterError:
            return  # the view does not show a volume slice (oblique or outside): nothing to prefetch
        self.prefetchRunner.submit("prefetch", work)
