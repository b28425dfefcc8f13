"""SAM Segmenter module: registers the "SAM" Segment Editor effect and manages models, device and dependencies.

All decisions live in the Qt-free SAMSegmenterMRML package; this file only wires Slicer's
GUI to it. The engine (SAMSegmenterLib) needs PyTorch, so it is imported only after the
dependency check has passed.
"""

import importlib.util
import logging
import os

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from SAMSegmenterMRML import dependencies

EFFECT_NAME = "SAM"
SETTINGS_MODEL = "SAMSegmenter/Model"
SETTINGS_DEVICE = "SAMSegmenter/Device"
SETTINGS_PRECISION = "SAMSegmenter/Precision"
SETTINGS_CACHE_MB = "SAMSegmenter/EmbeddingCacheMB"
DEFAULT_CACHE_MB = 1024
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
PRECISION_CHOICES = ("fp32", "fp16", "bf16")


def registerEffect():
    """Register the SAM effect with the Segment Editor (a second call does nothing)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as editorEffects

    effectPath = os.path.join(os.path.dirname(__file__), "SegmentEditorSAMLib", "SegmentEditorEffect.py")
    instance = editorEffects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(effectPath.replace("\\", "/"))
    instance.self().register()


_dependenciesFound = False
UNSUPPORTED_SLICER = "SAMSegmenter needs 3D Slicer 5.10 or later (it uses vtkSlicerSegmentEditorLogic)."


def slicerSupported():
    """True on Slicer versions that have the Qt-free segment editor logic (5.10 and later)."""
    return hasattr(slicer, "vtkSlicerSegmentEditorLogic")


def dependenciesReady():
    """True when Slicer is recent enough and every Python package is importable and recent enough.

    Checked until it is true once."""
    global _dependenciesFound
    if not _dependenciesFound:
        _dependenciesFound = slicerSupported() and all(status.ok for status in dependencies.package_statuses())
    return _dependenciesFound


def savedSettings():
    """(model name, device, precision, embedding cache in MB) from the application settings, or the defaults."""
    settings = qt.QSettings()
    return (
        str(settings.value(SETTINGS_MODEL, "litemedsam")),
        str(settings.value(SETTINGS_DEVICE, "auto")),
        str(settings.value(SETTINGS_PRECISION, "fp32")),
        int(settings.value(SETTINGS_CACHE_MB, DEFAULT_CACHE_MB)),
    )


def sharedLogic():
    """The logic shared by this panel and the effect, configured from the application settings."""
    from SAMSegmenterMRML.logic import shared_logic

    logic = shared_logic()
    modelName, device, precision, cacheMB = savedSettings()
    logic.configure(model_name=modelName, device=device, precision=precision, cache_bytes=cacheMB << 20, load=False)
    return logic


class SAMSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SAM Segmenter"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["SAMSegmenter contributors"]
        self.parent.helpText = (
            "Segment Anything (SAM, MedSAM, LiteMedSAM) for 3D medical images. Segment in the "
            "<b>Segment Editor</b> with the <b>SAM</b> effect: drag a box (or click points) in a slice view, "
            "Apply, and propagate through the volume. This panel manages models, the compute device and "
            "the Python packages the models need."
        )
        self.parent.acknowledgementText = (
            "Uses Segment Anything (Meta AI, Apache-2.0), MedSAM and LiteMedSAM (bowang-lab, Apache-2.0)."
        )
        slicer.app.connect("startupCompleted()", registerEffect)


class SAMSegmenterWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        registerEffect()
        self.runner = None
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(100)
        self.pollTimer.connect("timeout()", self.onPoll)

        dependenciesSection = ctk.ctkCollapsibleButton()
        dependenciesSection.text = "Python packages"
        self.layout.addWidget(dependenciesSection)
        form = qt.QFormLayout(dependenciesSection)
        self.dependenciesLabel = qt.QLabel()
        self.dependenciesLabel.wordWrap = True
        form.addRow(self.dependenciesLabel)
        self.installButton = qt.QPushButton("Install missing packages...")
        self.installButton.toolTip = (
            "Asks before installing anything. PyTorch comes through the PyTorch extension when it is installed."
        )
        self.installButton.connect("clicked()", self.onInstall)
        form.addRow(self.installButton)
        self.upgradeTorchButton = qt.QPushButton("Upgrade PyTorch...")
        self.upgradeTorchButton.toolTip = "Replaces the installed PyTorch; other extensions using it are affected."
        self.upgradeTorchButton.connect("clicked()", self.onUpgradeTorch)
        form.addRow(self.upgradeTorchButton)

        modelSection = ctk.ctkCollapsibleButton()
        modelSection.text = "Model"
        self.layout.addWidget(modelSection)
        form = qt.QFormLayout(modelSection)
        self.modelSelector = qt.QComboBox()
        self.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        form.addRow("Model:", self.modelSelector)
        self.modelStateLabel = qt.QLabel()
        self.modelStateLabel.wordWrap = True
        form.addRow(self.modelStateLabel)
        buttons = qt.QHBoxLayout()
        self.downloadButton = qt.QPushButton("Download")
        self.downloadButton.connect("clicked()", self.onDownload)
        self.verifyButton = qt.QPushButton("Verify checksum")
        self.verifyButton.connect("clicked()", self.onVerify)
        self.deleteButton = qt.QPushButton("Delete")
        self.deleteButton.connect("clicked()", self.onDelete)
        for button in (self.downloadButton, self.verifyButton, self.deleteButton):
            buttons.addWidget(button)
        form.addRow(buttons)
        progressRow = qt.QHBoxLayout()
        self.downloadProgress = qt.QProgressBar()
        self.downloadProgress.visible = False
        self.cancelDownloadButton = qt.QPushButton("Cancel")
        self.cancelDownloadButton.visible = False
        self.cancelDownloadButton.connect("clicked()", self.onCancelDownload)
        progressRow.addWidget(self.downloadProgress)
        progressRow.addWidget(self.cancelDownloadButton)
        form.addRow(progressRow)

        computeSection = ctk.ctkCollapsibleButton()
        computeSection.text = "Compute"
        self.layout.addWidget(computeSection)
        form = qt.QFormLayout(computeSection)
        self.deviceSelector = qt.QComboBox()
        self.deviceSelector.addItems(list(DEVICE_CHOICES))
        self.deviceSelector.toolTip = "auto: CUDA GPU if present, then Apple MPS, then the CPU."
        form.addRow("Device:", self.deviceSelector)
        self.precisionSelector = qt.QComboBox()
        self.precisionSelector.addItems(list(PRECISION_CHOICES))
        self.precisionSelector.toolTip = "fp16 needs CUDA or MPS; bf16 needs a CPU or a CUDA GPU that supports it."
        form.addRow("Precision:", self.precisionSelector)
        self.cacheSpinBox = qt.QSpinBox()
        self.cacheSpinBox.setRange(64, 65536)
        self.cacheSpinBox.setSingleStep(256)
        self.cacheSpinBox.suffix = " MB"
        self.cacheSpinBox.toolTip = "Memory for slice embeddings, so prompting a slice again is instant."
        form.addRow("Embedding cache:", self.cacheSpinBox)
        self.applySettingsButton = qt.QPushButton("Apply settings")
        self.applySettingsButton.connect("clicked()", self.onApplySettings)
        form.addRow(self.applySettingsButton)
        self.computeLabel = qt.QLabel()
        self.computeLabel.wordWrap = True
        form.addRow(self.computeLabel)

        self.openEditorButton = qt.QPushButton("Segment with SAM in the Segment Editor")
        self.openEditorButton.connect("clicked()", self.onOpenEditor)
        self.layout.addWidget(self.openEditorButton)
        self.layout.addStretch(1)

        self.loadSettings()
        self.updateDependencies()

    def cleanup(self):
        self.pollTimer.stop()
        self.pollTimer.disconnect("timeout()", self.onPoll)
        if self.runner is not None:
            self.runner.cancel()

    # dependencies ---------------------------------------------------------------------------------

    def _plan(self, statuses=None, upgradeTorch=False):
        if statuses is None:
            statuses = dependencies.package_statuses()
        pytorchUtilsAvailable = importlib.util.find_spec("PyTorchUtils") is not None  # the SlicerPyTorch extension
        return dependencies.install_plan(statuses, pytorchUtilsAvailable, upgradeTorch)

    def updateDependencies(self):
        statuses = dependencies.package_statuses()
        plan = self._plan(statuses)
        lines = [status.describe() for status in statuses] + plan.notes
        if not slicerSupported():
            lines.insert(0, f"<b>{UNSUPPORTED_SLICER}</b>")
        self.dependenciesLabel.text = "<br>".join(lines)
        self.installButton.enabled = plan.needed
        self.upgradeTorchButton.visible = plan.torch == "keep_old"
        ready = slicerSupported() and all(status.ok for status in statuses)
        for widget in (
            self.modelSelector,
            self.downloadButton,
            self.verifyButton,
            self.deleteButton,
            self.applySettingsButton,
        ):
            widget.enabled = ready
        if ready:
            self.updateModels()

    def onInstall(self):
        self._install(self._plan())

    def onUpgradeTorch(self):
        plan = self._plan(upgradeTorch=True)
        if not slicer.util.confirmOkCancelDisplay(
            "Replace the installed PyTorch? Other extensions that use PyTorch will use the new version too. "
            "Slicer may need a restart afterwards.",
            "Upgrade PyTorch",
        ):
            return
        self._install(plan, confirmed=True)

    def _install(self, plan, confirmed=False):
        if not plan.needed:
            return
        if not confirmed and not slicer.util.confirmOkCancelDisplay(
            "SAMSegmenter needs additional Python packages. They are downloaded from the internet (PyTorch is "
            "large) and installed into Slicer's Python. Continue?",
            "Install Python packages",
            detailedText="Packages to install: "
            + plan.summary()
            + ("\n\n" + "\n".join(plan.notes) if plan.notes else ""),
        ):
            return
        with slicer.util.tryWithErrorDisplay("Installing Python packages failed.", waitCursor=True):
            if plan.torch == "pytorch_utils":
                import PyTorchUtils

                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=f">={dependencies.MINIMUM_TORCH}"
                )
                if torch is None:
                    raise RuntimeError("PyTorch was not installed.")
            elif plan.torch == "pip":
                slicer.util.pip_install(dependencies.TORCH.pip)
            if plan.pip_no_deps:
                slicer.util.pip_install("--no-deps " + " ".join(plan.pip_no_deps))
        self.updateDependencies()

    # models ---------------------------------------------------------------------------------------

    def updateModels(self):
        from SAMSegmenterMRML import model_store

        selected = self.modelSelector.currentData or savedSettings()[0]
        wasBlocked = self.modelSelector.blockSignals(True)
        self.modelSelector.clear()
        for entry in model_store.model_entries():
            self.modelSelector.addItem(entry.title, entry.name)
        index = self.modelSelector.findData(selected)
        self.modelSelector.setCurrentIndex(max(index, 0))
        self.modelSelector.blockSignals(wasBlocked)
        self.onModelSelected()

    def _entry(self):
        from SAMSegmenterMRML import model_store

        name = self.modelSelector.currentData
        return next((entry for entry in model_store.model_entries() if entry.name == name), None)

    def onModelSelected(self, index=None):
        entry = self._entry()
        if entry is None:
            return
        where = f"<br>{entry.path}" if entry.path is not None else ""
        self.modelStateLabel.text = entry.describe() + where + f"<br>Source: {entry.source}"
        downloading = self.runner is not None and self.runner.busy
        self.downloadButton.enabled = entry.downloadable and entry.state != "installed" and not downloading
        self.verifyButton.enabled = entry.state == "installed" and not downloading
        self.deleteButton.enabled = not entry.embedded and entry.state != "missing" and not downloading

    def onDownload(self):
        from SAMSegmenterMRML import model_store
        from SAMSegmenterMRML.jobs import BackgroundRunner

        entry = self._entry()
        if entry is None:
            return
        self.runner = BackgroundRunner()
        runner = self.runner
        self.runner.submit(
            entry.name,
            lambda: model_store.download_model(
                entry.name, progress=lambda done, total: runner.report(done, total or 0), cancel=runner.cancel_requested
            ),
        )
        self.downloadProgress.visible = True
        self.cancelDownloadButton.visible = True
        self.downloadProgress.setRange(0, 0)
        self.onModelSelected()
        self.pollTimer.start()

    def onCancelDownload(self):
        if self.runner is not None:
            self.runner.cancel()

    def onPoll(self):
        from SAMSegmenterLib.errors import Cancelled

        busy = self.runner.busy
        for finished in self.runner.poll():
            if isinstance(finished.error, Cancelled):
                slicer.util.showStatusMessage("Download cancelled; the next download resumes where it stopped.", 5000)
            elif finished.error is not None:
                slicer.util.errorDisplay(f"Download of {finished.tag} failed: {finished.error}")
            else:
                slicer.util.showStatusMessage(f"Verified weights saved at {finished.value}", 5000)
        if self.runner.progress is not None:
            done, total = self.runner.progress
            if total:
                self.downloadProgress.setRange(0, 1000)
                self.downloadProgress.value = int(1000 * done / total)
                self.downloadProgress.format = f"{done / 1e6:.0f} / {total / 1e6:.0f} MB"
        if not busy:
            self.pollTimer.stop()
            self.downloadProgress.visible = False
            self.cancelDownloadButton.visible = False
            self.updateModels()

    def onVerify(self):
        from SAMSegmenterMRML import model_store

        entry = self._entry()
        with slicer.util.tryWithErrorDisplay("Checksum verification failed.", waitCursor=True):
            path = model_store.verify_model(entry.name)
            slicer.util.infoDisplay(f"{entry.title}: SHA-256 matches the published checksum.\n{path}")

    def onDelete(self):
        from SAMSegmenterMRML import model_store

        entry = self._entry()
        if not slicer.util.confirmOkCancelDisplay(f"Delete the downloaded weights of {entry.title}?\n{entry.path}"):
            return
        with slicer.util.tryWithErrorDisplay("Deleting the weights failed."):
            model_store.delete_model(entry.name)
        self.updateModels()

    # compute settings -----------------------------------------------------------------------------

    def loadSettings(self):
        _, device, precision, cacheMB = savedSettings()
        self.deviceSelector.setCurrentIndex(max(self.deviceSelector.findText(device), 0))
        self.precisionSelector.setCurrentIndex(max(self.precisionSelector.findText(precision), 0))
        self.cacheSpinBox.value = cacheMB

    def onApplySettings(self):
        name = self.modelSelector.currentData
        with slicer.util.tryWithErrorDisplay("These settings cannot be used.", waitCursor=True):
            logic = sharedLogic()
            logic.configure(
                model_name=name,
                device=self.deviceSelector.currentText,
                precision=self.precisionSelector.currentText,
                cache_bytes=self.cacheSpinBox.value << 20,
            )
            settings = qt.QSettings()
            settings.setValue(SETTINGS_MODEL, name)
            settings.setValue(SETTINGS_DEVICE, self.deviceSelector.currentText)
            settings.setValue(SETTINGS_PRECISION, self.precisionSelector.currentText)
            settings.setValue(SETTINGS_CACHE_MB, self.cacheSpinBox.value)
            model = logic.model
            self.computeLabel.text = f"Loaded {model.spec.title} on {model.device} ({model.precision})."

    def onOpenEditor(self):
        slicer.util.selectModule("SegmentEditor")
        editorWidget = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editorWidget.setActiveEffectByName(EFFECT_NAME)


class SAMSegmenterTest(ScriptedLoadableModuleTest):
    """Registration check; the end-to-end effect test is the SAMSegmenterSelfTest module (Testing/Slicer)."""

    def runTest(self):
        self.test_effect_registered()

    def test_effect_registered(self):
        registerEffect()
        factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        names = [effect.name for effect in factory.registeredEffects()]
        self.assertIn(EFFECT_NAME, names)
        logging.info("SAM effect is registered")
