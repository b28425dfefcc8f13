"""The "SAM" Segment Editor effect: Qt widgets, scriptedEffect calls and event translation only. Every decision is
made by SAMSegmenterMRML.controller.InteractionController (no Qt); model work runs in the SAM service (polled)."""

import os

import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from slicer.i18n import tr as _

import SAMSegmenter
from SAMSegmenterLib.errors import SAMSegmenterError
from SAMSegmenterMRML.controller import InteractionController, PointerEvent
from SAMSegmenterMRML.editor import ScriptedEffectWriter

WINDOWS, RED, BLUE = ("auto", "soft_tissue", "lung", "bone", "brain"), "#c00000", "#aac8ff"
POINTER_EVENTS = {getattr(vtk.vtkCommand, f"{button.title()}Button{kind.title()}Event"): (kind, button)
                  for button in ("left", "right", "middle") for kind in ("press", "release")}
POINTER_EVENTS[vtk.vtkCommand.MouseMoveEvent] = ("move", "none")


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Segment Anything in slice views: a box (points too for SAM ViTs), preview, Apply, propagate, correct."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "SAM"  # no tr: modules select effects by name
        scriptedEffect.title = _("SAM")
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        modes = slicer.qSlicerSegmentEditorAbstractEffect
        self.writer = ScriptedEffectWriter(scriptedEffect, modes.ModificationModeAdd, modes.ModificationModeRemove)
        self.controller = self.observation = self.lastSliceNode = self.closing = None  # closing: a client's DELETEs
        self.stripSlices, self.pollTimer = [], qt.QTimer()
        self.pollTimer.connect("timeout()", self.onPoll)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects
        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        return qt.QIcon(os.path.join(os.path.dirname(__file__), "..", "Resources", "Icons", "SegmentEditorSAM.png"))

    def helpText(self):
        return _("""<html><b>Drag a box</b> around a structure in a slice view (SAM ViTs: click to include,
Ctrl+click or right click to exclude). <b>a</b>/<b>Enter</b>: apply, <b>x</b>: cancel, <b>p</b>/<b>u</b>/<b>d</b>:
propagate both ways/up/down. A box on a propagated slice corrects it and re-propagates up to the next key slices.
Click the confidence strip (red: the weakest slice) to show a slice. Settings: <i>SAM Segmenter</i> module.</html>""")

    def cleanup(self):
        self.deactivate()
        self.closeController()  # also a preview deactivate() kept
        self.pollTimer.stop()
        self.pollTimer.disconnect("timeout()", self.onPoll)

    def setupOptionsFrame(self):
        self.statusLabel, self.serviceLabel, self.axisLabel = qt.QLabel(), qt.QLabel(), qt.QLabel()
        self.rangeFirst, self.rangeLast, self.progressBar = qt.QSpinBox(), qt.QSpinBox(), qt.QProgressBar()
        self.statusLabel.wordWrap = self.serviceLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)
        self.combos = {}  # effect parameter -> combo box whose item data is its value
        for parameter, label, toolTip, items in (
                ("Window", _("Intensity window:"), _("Model input: auto (0.5-99.5 percentiles) or a CT window."),
                 [(window, window) for window in WINDOWS]),
                ("WriteMode", _("Apply as:"), _("Replace: on the previewed slices the segment becomes the preview."),
                 [(_("Replace"), "replace"), (_("Add"), "add"), (_("Remove"), "remove")]),
                ("Direction", _("Propagate:"), "", [(_("Both ways"), "both"), (_("Up (increasing index)"), "up"),
                                                    (_("Down (decreasing index)"), "down")]),
                ("Structure", _("Structure:"), _("Compact: tighter boxes on each slice (tumours, lesions, kidneys)."),
                 [(_("Organ or anatomy"), "anatomy"), (_("Tumour, lesion or compact organ"), "compact")])):
            combo = self.combos[parameter] = qt.QComboBox()
            for title, value in items:
                combo.addItem(title, value)
            combo.toolTip = toolTip
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
            self.scriptedEffect.addLabeledOptionsWidget(label, combo)
        self.applyButton = self.button(_("Apply"), _("Write the preview into the selected segment (a, Enter)."),
                                       lambda c: c.apply(self.combos["WriteMode"].currentData))
        self.cancelButton = self.button(_("Cancel"), _("Clear prompts and preview (x)."), lambda c: c.cancel())
        self.addRow(self.cancelButton, self.applyButton)
        self.rangeCheckBox = qt.QCheckBox(_("Limit to slices"))
        self.rangeCheckBox.toolTip = _("Give a range next to a look-alike structure: a walk can run on into it.")
        self.addRow(self.rangeCheckBox, self.rangeFirst, qt.QLabel(_("to")), self.rangeLast, self.axisLabel)
        self.propagateButton = self.button(_("Propagate"), _("Segment the neighbouring slices (p, u, d)."), lambda c: (
            c.propagate(self.combos["Direction"].currentData, self.sliceRange())))
        self.stopButton = self.button(_("Stop"), _("Stop the running job."), lambda c: c.stop())
        self.addRow(self.propagateButton, self.progressBar, self.stopButton)
        self.strip = qt.QTableWidget(1, 0)
        self.strip.verticalHeader().hide()
        self.strip.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.strip.horizontalHeader().setDefaultSectionSize(40)
        self.strip.setMaximumHeight(64)
        self.strip.connect("cellClicked(int,int)", self.onStripClicked)
        self.stripHelp = _("Confidence of each propagated slice (0-1). Blue: key slices; red: unsure slices and the "
                           "weakest. Click a slice to show it. Where each walk stopped:")
        self.scriptedEffect.addLabeledOptionsWidget(_("Confidence:"), self.strip)
        self.scriptedEffect.addOptionsWidget(self.serviceLabel)
        self.showState(None)

    def addRow(self, *widgets):
        layout = qt.QHBoxLayout()
        for widget in widgets:
            layout.addWidget(widget)
        self.scriptedEffect.addOptionsWidget(layout)

    def button(self, title, toolTip, action):
        button = qt.QPushButton(title)
        button.toolTip = toolTip
        button.connect("clicked()", lambda: self.sync() and action(self.controller))
        return button

    def setMRMLDefaults(self):
        for name, value in dict(Window="auto", WriteMode="replace", Direction="both", Structure="anatomy").items():
            self.scriptedEffect.setParameterDefault(name, value)

    def updateGUIFromMRML(self):
        for parameter, combo in self.combos.items():
            wasBlocked = combo.blockSignals(True)
            combo.setCurrentIndex(max(combo.findData(self.scriptedEffect.parameter(parameter)), 0))
            combo.blockSignals(wasBlocked)
        self.applyChoices()

    def applyChoices(self):
        """Hand the panel's window and structure to the controller: on each parameter change and before each action."""
        if self.controller is not None:
            self.controller.set_window(self.combos["Window"].currentData)
            self.controller.structure = self.combos["Structure"].currentData

    def updateMRMLFromGUI(self, *unused):
        for parameter, combo in self.combos.items():
            self.scriptedEffect.setParameter(parameter, combo.currentData)

    def sliceRange(self):
        return tuple(sorted((self.rangeFirst.value, self.rangeLast.value))) if self.rangeCheckBox.checked else None

    def showState(self, state):
        """Draw the controller's state (None: no controller); poll while the controller has work."""
        self.statusLabel.text = state.status if state else _("Select a source volume, a segmentation and a segment.")
        self.statusLabel.setStyleSheet(f"color: {RED}" if state and state.error else "")
        for button, name in ((self.applyButton, "can_apply"), (self.cancelButton, "can_cancel"),
                             (self.propagateButton, "can_propagate"), (self.stopButton, "can_stop")):
            button.enabled = bool(state and getattr(state, name))
        self.progressBar.visible = bool(state and state.busy)
        self.progressBar.maximum, self.progressBar.value = ((state and state.progress) or (0, 0))[::-1]  # 0 of 0: busy
        axis = state.axis if state else None
        last = self.controller.shape[axis] - 1 if axis is not None else 0
        if self.rangeLast.maximum != last:  # another axis or volume: the spin boxes span all its slices
            self.rangeFirst.maximum = self.rangeLast.maximum = self.rangeLast.value = last
            self.rangeFirst.value = 0
        self.rangeFirst.enabled = self.rangeLast.enabled = axis is not None
        self.axisLabel.text = _("along {axis}").format(axis="KJI"[axis]) if axis is not None else ""
        self.showConfidence(state)
        self.serviceLabel.text = _("{model} on {device}; {service}").format(
            model=state.model, device=state.device or "?", service=state.service) if state else ""
        self.keepPolling()

    def keepPolling(self):
        if self.controller is not None and self.controller.wants_poll and not self.pollTimer.isActive():
            self.pollTimer.start()  # (a restart would postpone the next poll)

    def showConfidence(self, state):
        slices, weakest = (state.confidence, state.weakest()) if state else ((), None)
        self.stripSlices = [item.index for item in slices]
        self.strip.setColumnCount(len(slices))
        self.strip.setHorizontalHeaderLabels([str(index) for index in self.stripSlices])
        for column, item in enumerate(slices):
            cell = qt.QTableWidgetItem(item.label)
            if item.key or item.unsure or item.index == weakest:
                cell.setBackground(qt.QBrush(qt.QColor(BLUE if item.key else RED)))
            self.strip.setItem(0, column, cell)
        self.strip.visible = bool(slices)
        self.strip.toolTip = "<br>".join([self.stripHelp] + [f"{walk}: {why}" for walk, why in state.stops.items()]
                                         if state else [])

    def activate(self):
        node = self.scriptedEffect.parameterSetNode()  # modified when the volume, segmentation or segment changes
        self.observation = (node, node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *unused: self.sync()))
        self.sync()

    def deactivate(self):
        if self.observation is not None:
            self.observation = self.observation[0].RemoveObserver(self.observation[1])  # (returns None)
        if self.controller is not None and self.controller.has_preview:  # Esc, Space, another effect or module
            return slicer.util.showStatusMessage(_("SAM: the preview is kept, not applied: select SAM again."), 10000)
        self.closeController()

    def sync(self):
        """The controller of the editor's source volume, segmentation and selected segment (None without them)."""
        node = self.scriptedEffect.parameterSetNode()
        volume, segmentation = node.GetSourceVolumeNode(), node.GetSegmentationNode()
        segmentId = node.GetSelectedSegmentID()
        try:
            logic, now = SAMSegmenter.sharedLogic(), self.controller
            if now is not None and (now.volume_node is not volume or now.segmentation_node is not segmentation
                                    or now.engine is not logic.engine or now.spec.name != logic.model_name):
                self.closeController()
            if self.controller is None and volume and segmentation and segmentId:
                self.controller = InteractionController(
                    logic.engine, volume, segmentation, segmentId, self.writer, model=logic.model_name,
                    checkpoint=logic.checkpoint, window=self.combos["Window"].currentData, on_change=self.showState)
                self.showState(self.controller.state)
            elif self.controller is not None and segmentId and segmentId != self.controller.segment_id:
                self.controller.set_segment(segmentId)
            self.applyChoices()
        except SAMSegmenterError as error:
            self.closeController()
            self.statusLabel.text = _("The SAM effect cannot start: {error}").format(error=error)
            self.statusLabel.setStyleSheet(f"color: {RED}")
        return self.controller

    def closeController(self):
        if self.controller is not None:
            self.controller.close()  # its session closes in the background: keep polling the client
            self.closing, self.controller = self.controller.engine.client, None
            self.showState(None)
        self.onPoll()

    def onPoll(self):
        more = self.controller is not None and self.controller.poll()
        self.closing = self.closing if self.closing is not None and self.closing.poll() else None
        self.pollTimer.setInterval(self.controller.poll_interval_ms if more else 50)  # 0 while a volume is sent
        (self.pollTimer.start if more or self.closing is not None else self.pollTimer.stop)()

    def onStripClicked(self, row, column):
        sliceNode = self.lastSliceNode or slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        if self.controller is not None and column < len(self.stripSlices):
            self.controller.jump_to(self.stripSlices[column], sliceNode)

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        ctrl, shift, alt = (bool(key()) for key in (callerInteractor.GetControlKey, callerInteractor.GetShiftKey,
                                                    callerInteractor.GetAltKey))
        if eventId == vtk.vtkCommand.KeyPressEvent:
            controller = None if ctrl or alt else self.sync()  # Ctrl/Alt + key: application shortcuts
            if controller is None:
                return False
            controller.apply_mode, controller.slice_range = self.combos["WriteMode"].currentData, self.sliceRange()
            return bool(controller.key(callerInteractor.GetKeySym()))
        kind = POINTER_EVENTS.get(eventId)
        controller = self.sync() if kind and kind[0] == "press" else self.controller
        if kind is None or controller is None:
            return False
        xy = callerInteractor.GetEventPosition()
        sliceNode = viewWidget.sliceLogic().GetSliceNode()
        self.lastSliceNode = sliceNode if kind[0] == "press" else self.lastSliceNode
        ras = tuple(self.xyToRas(xy, viewWidget))
        return bool(controller.pointer(PointerEvent(*kind, (xy[0], xy[1]), ras, sliceNode, ctrl, shift, alt)))

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        if self.controller is not None and callerViewNode is not None and callerViewNode.IsA("vtkMRMLSliceNode"):
            self.controller.view_changed(callerViewNode)
            self.keepPolling()
