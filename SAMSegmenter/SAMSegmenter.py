"""SAM Segmenter module: registers the "SAM" Segment Editor effect; its panel manages the Python packages, the
models, and the SAM inference service (local or remote) with its compute settings.

Decisions live in the Qt-free SAMSegmenterMRML package. Slicer's process never imports PyTorch: model work runs in
the inference service (another process), downloads run in a subprocess, and a QTimer polls both.
"""

import importlib
import importlib.util
import logging
import os
import time

import ctk
import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from SAMSegmenterLib.errors import InputError, SAMSegmenterError
from SAMSegmenterLib.models.registry import BACKENDS, DEVICES, PRECISIONS
from SAMSegmenterLib.service.protocol import PREFIX
from SAMSegmenterMRML import dependencies

EFFECT_NAME = "SAM"
SETTINGS = {  # saved under SAMSegmenter/<key>, with these defaults
    "Model": "litemedsam", "Device": "auto", "Precision": "fp32", "Backend": "auto", "EmbeddingCacheMB": 1024,
    "Service": "local", "ServiceURL": "", "TokenFile": "",
}
POLL_MSEC = 100
UNSUPPORTED_SLICER = "SAMSegmenter needs 3D Slicer 5.10 or later (it uses vtkSlicerSegmentEditorLogic)."


def slicerSupported():
    """True on Slicer versions that have the Qt-free segment editor logic (5.10 and later)."""
    return hasattr(slicer, "vtkSlicerSegmentEditorLogic")


def registerEffect():
    """Register the SAM effect with the Segment Editor, once: a second registration would build another effect
    that the factory then refuses (it keeps one effect per name)."""
    import qSlicerSegmentationsEditorEffectsPythonQt as editorEffects

    factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
    if any(effect.name == EFFECT_NAME for effect in factory.registeredEffects()):
        return
    if not slicerSupported():
        logging.error(UNSUPPORTED_SLICER)
        return
    effectPath = os.path.join(os.path.dirname(__file__), "SegmentEditorSAMLib", "SegmentEditorEffect.py")
    instance = editorEffects.qSlicerSegmentEditorScriptedEffect(None)
    instance.setPythonSource(effectPath.replace("\\", "/"))
    instance.self().register()


def savedSettings():
    """The panel's settings (see SETTINGS) from the application settings."""
    settings = qt.QSettings()
    return {key: type(default)(settings.value(f"SAMSegmenter/{key}", default)) for key, default in SETTINGS.items()}


def logicFromSettings(settings):
    """A new SAMSegmenterLogic for ``settings``: a remote service, or a local one started on first use with the
    model, device, precision, backend and cache options. Nothing is started or loaded here."""
    if not slicerSupported():
        raise InputError(UNSUPPORTED_SLICER)
    from SAMSegmenterMRML.engines import ServiceEngine
    from SAMSegmenterMRML.logic import SAMSegmenterLogic

    if settings["Service"] == "remote":
        if not settings["ServiceURL"]:
            raise InputError(_("give the address of the remote SAM service"))
        engine = ServiceEngine(url=settings["ServiceURL"], token_file=settings["TokenFile"] or None)
    else:
        engine = ServiceEngine(server_args=[
            "--model", settings["Model"], "--device", settings["Device"], "--precision", settings["Precision"],
            "--backend", settings["Backend"], "--cache-mb", str(settings["EmbeddingCacheMB"])])
    return SAMSegmenterLogic(model=settings["Model"], engine=engine)


_sharedFromSettings = False


def sharedLogic():
    """The logic this panel and the effect share (SAMSegmenterMRML.logic.shared_logic), built from the saved
    settings on first use. SAMSegmenterError when the saved service cannot be used (e.g. its token file is gone)."""
    global _sharedFromSettings
    if not slicerSupported():  # the MRML layer needs vtkSlicerSegmentEditorLogic: say so instead of failing on it
        raise InputError(UNSUPPORTED_SLICER)
    from SAMSegmenterMRML.logic import replace_shared_logic, shared_logic

    if not _sharedFromSettings:
        replace_shared_logic(logicFromSettings(savedSettings()))
        _sharedFromSettings = True
    return shared_logic()


def useLogic(logic):
    """Make ``logic`` the shared one; the previous one is closed (its local server stops)."""
    global _sharedFromSettings
    from SAMSegmenterMRML.logic import replace_shared_logic

    replace_shared_logic(logic)
    _sharedFromSettings = True


class SAMSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SAM Segmenter")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["SAMSegmenter contributors"]
        self.parent.helpText = _(
            "Segment Anything (SAM, MedSAM, LiteMedSAM) for 3D medical images. Segment in the <b>Segment Editor</b> "
            "with the <b>SAM</b> effect: drag a box in a slice view, Apply, propagate through the volume and correct "
            "any slice. This panel manages the Python packages, the models and the SAM service that runs them "
            "(on this computer or on a remote GPU server).")
        self.parent.acknowledgementText = _(
            "Uses Segment Anything (Meta AI, Apache-2.0), MedSAM and LiteMedSAM (bowang-lab, Apache-2.0).")
        slicer.app.connect("startupCompleted()", registerEffect)  # the only registration


class SAMSegmenterWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.download = None  # model_store.DownloadProcess running
        self.downloadCancelled = False
        self.installing = None  # installer.InstallProcess running
        self.verifying = None  # model_store.VerifyProcess running
        self.statusCall = None  # (client call, when it started) of a service status request
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_MSEC)
        self.pollTimer.connect("timeout()", self.onPoll)

        form = self.section(_("Python packages"))
        self.packagesLabel = self.label(form)
        self.installButton = self.button(form, _("Install missing packages..."), self.onInstall, _(
            "Asks before installing anything. PyTorch comes through the PyTorch extension when it is installed."))
        self.upgradeTorchButton = self.button(form, _("Upgrade PyTorch..."), self.onUpgradeTorch, _(
            "Replaces the installed PyTorch; other extensions that use it are affected."))
        self.installLabel = self.label(form)
        self.cancelInstallButton = self.button(form, _("Cancel installation"), self.onCancelInstall, _(
            "Stops the running installer (a package may be left half-installed: install again)."))
        self.cancelInstallButton.visible = False

        form = self.section(_("Models"))
        self.modelSelector = qt.QComboBox()
        self.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        form.addRow(_("Model:"), self.modelSelector)
        self.modelLabel = self.label(form)
        buttons = qt.QHBoxLayout()
        self.downloadButton = self.button(buttons, _("Download"), self.onDownload)
        self.verifyButton = self.button(buttons, _("Verify checksum"), self.onVerify)
        self.deleteButton = self.button(buttons, _("Delete"), self.onDelete)
        form.addRow(buttons)
        progress = qt.QHBoxLayout()
        self.downloadProgress = qt.QProgressBar()
        progress.addWidget(self.downloadProgress)
        self.cancelDownloadButton = self.button(progress, _("Cancel"), self.onCancelDownload)
        form.addRow(progress)

        form = self.section(_("SAM service"))
        self.serviceSelector = qt.QComboBox()
        self.serviceSelector.addItem(_("Local: on this computer"), "local")
        self.serviceSelector.addItem(_("Remote server"), "remote")
        self.serviceSelector.connect("currentIndexChanged(int)", self.updateServiceWidgets)
        form.addRow(_("Runs:"), self.serviceSelector)
        self.urlEdit = qt.QLineEdit()
        self.urlEdit.placeholderText = "https://gpu-server:8443"
        form.addRow(_("Address:"), self.urlEdit)
        self.tokenFileEdit = ctk.ctkPathLineEdit()
        self.tokenFileEdit.filters = ctk.ctkPathLineEdit.Files
        self.tokenFileEdit.toolTip = _("File holding the server's access token (one line).")
        form.addRow(_("Token file:"), self.tokenFileEdit)
        self.selectors = {}  # setting -> combo box
        for key, label, choices, toolTip in (
                ("Device", _("Device:"), DEVICES, _("auto: a CUDA GPU if present, then Apple MPS, then the CPU.")),
                ("Precision", _("Precision:"), PRECISIONS, _("fp16 needs CUDA or MPS; bf16 a CPU or a recent GPU.")),
                ("Backend", _("Backend:"), BACKENDS, _("Image encoder code; auto measures once per machine."))):
            selector = self.selectors[key] = qt.QComboBox()
            selector.addItems(list(choices))
            selector.toolTip = toolTip
            form.addRow(label, selector)
        self.cacheSpinBox = qt.QSpinBox()
        self.cacheSpinBox.setRange(64, 65536)
        self.cacheSpinBox.setSingleStep(256)
        self.cacheSpinBox.suffix = " MB"
        self.cacheSpinBox.toolTip = _("Memory for slice embeddings, so prompting a slice again is instant.")
        form.addRow(_("Embedding cache:"), self.cacheSpinBox)
        buttons = qt.QHBoxLayout()
        self.applySettingsButton = self.button(buttons, _("Apply settings"), self.onApplySettings, _(
            "Use the selected model and these settings: a local service restarts with them (in the background)."))
        self.checkServiceButton = self.button(buttons, _("Check service"), self.checkService, _(
            "Ask the service for its model and device (starts a local service if needed)."))
        form.addRow(buttons)
        self.serviceProgress = qt.QProgressBar()
        self.serviceProgress.setRange(0, 0)
        self.serviceProgress.visible = False
        form.addRow(self.serviceProgress)
        self.serviceLabel = self.label(form)

        self.openEditorButton = self.button(self.layout, _("Segment with SAM in the Segment Editor"), self.onOpenEditor)
        self.layout.addStretch(1)
        self.loadSettings()
        self.updatePackages()
        self.showDownload()

    def section(self, title):
        section = ctk.ctkCollapsibleButton()
        section.text = title
        self.layout.addWidget(section)
        return qt.QFormLayout(section)

    @staticmethod
    def label(form):
        label = qt.QLabel()
        label.wordWrap = True
        form.addRow(label)
        return label

    @staticmethod
    def button(layout, title, slot, toolTip=""):
        button = qt.QPushButton(title)
        button.toolTip = toolTip
        button.connect("clicked()", slot)
        if isinstance(layout, qt.QFormLayout):
            layout.addRow(button)
        else:
            layout.addWidget(button)
        return button

    def enter(self):
        self.updatePackages()
        logic = self.currentLogic()
        local = logic.engine.local if logic is not None else None
        if logic is not None and (local is None or local.running):  # a remote service, or a running local one
            self.checkService()

    def cleanup(self):
        self.pollTimer.stop()
        self.pollTimer.disconnect("timeout()", self.onPoll)
        for process in (self.download, self.installing, self.verifying and self.verifying[0]):
            if process is not None:
                process.cancel()  # kills the helper's process tree; never waits
        if self.statusCall is not None:
            self.statusCall[0].cancel()

    # Python packages ------------------------------------------------------------------------------

    def plan(self, statuses=None, upgradeTorch=False):
        statuses = dependencies.package_statuses() if statuses is None else statuses
        pytorchUtils = importlib.util.find_spec("PyTorchUtils") is not None  # the SlicerPyTorch extension
        return dependencies.install_plan(statuses, pytorchUtils, upgradeTorch)

    def updatePackages(self):
        statuses = dependencies.package_statuses()
        plan = self.plan(statuses)
        lines = [status.describe() for status in statuses] + plan.notes
        if not slicerSupported():
            lines.insert(0, "<b>" + _("SAMSegmenter needs 3D Slicer 5.10 or later.") + "</b>")
        self.packagesLabel.text = "<br>".join(lines)
        self.installButton.enabled = plan.needed
        self.upgradeTorchButton.visible = plan.torch == "keep_old"
        self.updateModels()

    def onInstall(self):
        self.install(self.plan())

    def onUpgradeTorch(self):
        if slicer.util.confirmOkCancelDisplay(
                _("Replace the installed PyTorch? Other extensions that use PyTorch will use the new version too. "
                  "Slicer may need a restart afterwards."), _("Upgrade PyTorch")):
            self.install(self.plan(upgradeTorch=True), confirmed=True)

    def install(self, plan, confirmed=False):
        """Install in helper processes (pip; light-the-torch for the PyTorch build SlicerPyTorch would pick):
        Slicer never imports PyTorch and keeps running; progress and Cancel are on the panel."""
        from SAMSegmenterMRML import installer

        if not plan.needed or self.installing is not None:
            return
        if not confirmed and not slicer.util.confirmOkCancelDisplay(
                _("SAMSegmenter needs additional Python packages. They are downloaded from the internet (PyTorch is "
                  "large) and installed into Slicer's Python. Continue?"), _("Install Python packages"),
                detailedText=_("Packages to install: {packages}").format(packages=plan.summary())
                + ("\n\n" + "\n".join(plan.notes) if plan.notes else "")):
            return
        with slicer.util.tryWithErrorDisplay(_("The installation cannot start.")):
            self.installing = installer.InstallProcess(installer.install_steps(plan))
            self.showInstall()
            self.pollTimer.start()

    def showInstall(self):
        running = self.installing is not None and not self.installing.done
        self.installButton.enabled = not running and self.installButton.enabled
        self.cancelInstallButton.visible = running
        self.installLabel.text = self.installing.status() if self.installing is not None else ""

    def onCancelInstall(self):
        if self.installing is not None:
            self.installing.cancel()

    def installFinished(self):
        process, self.installing = self.installing, None
        importlib.invalidate_caches()  # so that the packages just installed are found
        self.updatePackages()
        self.showInstall()
        if process.succeeded:
            slicer.util.showStatusMessage(_("Python packages installed."), 5000)
            try:  # a new logic: the effect then re-checks the packages for its local service
                useLogic(logicFromSettings(savedSettings()))
            except SAMSegmenterError as error:
                self.showService(str(error), error=True)
        elif process.cancelled:
            self.installLabel.text = _("Installation cancelled; install again to complete it.")
        else:
            slicer.util.errorDisplay(_("Installing Python packages failed: {error}").format(error=process.failed),
                                     detailedText=process.log_tail())

    # models ---------------------------------------------------------------------------------------

    def updateModels(self):
        from SAMSegmenterMRML import model_store

        selected = self.modelSelector.currentData or savedSettings()["Model"]
        wasBlocked = self.modelSelector.blockSignals(True)
        self.modelSelector.clear()
        for entry in model_store.model_entries():
            self.modelSelector.addItem(entry.title, entry.name)
        self.modelSelector.setCurrentIndex(max(self.modelSelector.findData(selected), 0))
        self.modelSelector.blockSignals(wasBlocked)
        self.onModelSelected()

    def entry(self):
        from SAMSegmenterMRML import model_store

        return next((e for e in model_store.model_entries() if e.name == self.modelSelector.currentData), None)

    def onModelSelected(self, index=None):
        entry = self.entry()
        if entry is None:
            return
        where = f"<br>{entry.path}" if entry.path is not None else ""
        self.modelLabel.text = entry.describe() + where + "<br>" + _("Source: {source}").format(source=entry.source)
        idle = self.download is None and self.verifying is None
        self.downloadButton.enabled = entry.downloadable and entry.state != "installed" and idle
        self.verifyButton.enabled = entry.state == "installed" and idle
        self.deleteButton.enabled = not entry.embedded and entry.state != "missing" and idle

    def onDownload(self):
        from SAMSegmenterMRML import model_store

        entry = self.entry()
        with slicer.util.tryWithErrorDisplay(_("The download cannot start.")):
            self.download, self.downloadCancelled = model_store.DownloadProcess(entry.name), False
            self.downloadTitle = entry.title
            self.pollTimer.start()
        self.showDownload()
        self.onModelSelected()

    def onCancelDownload(self):
        if self.download is not None:
            self.downloadCancelled = True
            self.download.cancel()

    def showDownload(self):
        self.downloadProgress.visible = self.cancelDownloadButton.visible = self.download is not None
        if self.download is not None:
            done, total = self.download.progress
            self.downloadProgress.setRange(0, 1000 if total else 0)
            self.downloadProgress.value = int(1000 * done / total) if total else 0
            self.downloadProgress.format = f"{done / 1e6:.0f} / {total / 1e6:.0f} MB" if total else ""

    def downloadFinished(self, code):
        title = self.downloadTitle
        if self.downloadCancelled:
            slicer.util.showStatusMessage(_("Download cancelled; the next download resumes where it stopped."), 5000)
        elif code == 0:
            slicer.util.showStatusMessage(_("{model}: verified weights saved.").format(model=title), 5000)
        else:
            slicer.util.errorDisplay(_("The download of {model} failed: {error}").format(
                model=title, error=self.download.error()))
        self.download = None
        self.showDownload()
        self.updateModels()

    def onVerify(self):
        """The checksum runs in a helper process (GB-sized files take seconds); the result comes through onPoll."""
        from SAMSegmenterMRML import model_store

        entry = self.entry()
        with slicer.util.tryWithErrorDisplay(_("Checksum verification cannot start.")):
            self.verifying = (model_store.VerifyProcess(entry.name), entry.title)
            self.verifyButton.enabled = False
            slicer.util.showStatusMessage(_("Checking the SHA-256 of {model}...").format(model=entry.title))
            self.pollTimer.start()

    def verifyFinished(self, code):
        process, title = self.verifying
        self.verifying = None
        self.onModelSelected()
        if code == 0:
            slicer.util.infoDisplay(_("{model}: the SHA-256 matches the published checksum.\n{path}").format(
                model=title, path=process.result()))
        else:
            slicer.util.errorDisplay(_("Checksum verification failed: {error}").format(error=process.result()))

    def onDelete(self):
        from SAMSegmenterMRML import model_store

        entry = self.entry()
        if slicer.util.confirmOkCancelDisplay(_("Delete the downloaded weights of {model}?\n{path}").format(
                model=entry.title, path=entry.path)):
            with slicer.util.tryWithErrorDisplay(_("Deleting the weights failed.")):
                model_store.delete_model(entry.name)
            self.updateModels()

    # the service and its compute settings ---------------------------------------------------------

    def loadSettings(self):
        settings = savedSettings()
        self.serviceSelector.setCurrentIndex(max(self.serviceSelector.findData(settings["Service"]), 0))
        self.urlEdit.text = settings["ServiceURL"]
        self.tokenFileEdit.currentPath = settings["TokenFile"]
        for key, selector in self.selectors.items():
            selector.setCurrentIndex(max(selector.findText(settings[key]), 0))
        self.cacheSpinBox.value = settings["EmbeddingCacheMB"]
        self.updateServiceWidgets()

    def settingsFromGUI(self):
        settings = {key: selector.currentText for key, selector in self.selectors.items()}
        settings.update(Model=self.modelSelector.currentData or SETTINGS["Model"],
                        Service=self.serviceSelector.currentData, EmbeddingCacheMB=self.cacheSpinBox.value,
                        ServiceURL=self.urlEdit.text.strip(), TokenFile=self.tokenFileEdit.currentPath)
        return settings

    def updateServiceWidgets(self, index=None):
        remote = self.serviceSelector.currentData == "remote"
        self.urlEdit.enabled = self.tokenFileEdit.enabled = remote
        for widget in (*self.selectors.values(), self.cacheSpinBox):
            widget.enabled = not remote  # a remote server runs with its own options

    def currentLogic(self):
        """The shared logic, or None (with the reason shown) when the saved service cannot be used."""
        try:
            return sharedLogic()
        except SAMSegmenterError as error:
            self.showService(_("The saved service settings cannot be used: {error}").format(error=error), error=True)
            return None

    def onApplySettings(self):
        settings = self.settingsFromGUI()
        try:
            logic = logicFromSettings(settings)
        except SAMSegmenterError as error:
            self.showService(_("These settings cannot be used: {error}").format(error=error), error=True)
            return
        qsettings = qt.QSettings()
        for key, value in settings.items():
            qsettings.setValue(f"SAMSegmenter/{key}", value)
        if self.statusCall is not None:
            self.statusCall[0].cancel()
            self.statusCall = None
        useLogic(logic)  # the previous logic closes: its local server stops; the effect follows the new logic
        self.checkService()

    def checkService(self):
        """Ask the service for its status without waiting (a local one starts and loads its model first)."""
        logic = self.currentLogic()
        if logic is None or self.statusCall is not None:
            return
        missing = dependencies.missing_for_local_service() if logic.engine.local is not None else []
        if missing:
            self.showService(_("The local service needs Python packages that are missing ({packages}): install them "
                               "above, or use a remote service.").format(packages=", ".join(missing)), error=True)
            return
        self.statusCall = (logic.engine.client.call("GET", f"{PREFIX}/status"), time.monotonic())
        self.serviceProgress.visible = True
        self.showService(_("Contacting the SAM service ({service})...").format(service=logic.engine.describe()))
        self.pollTimer.start()

    def serviceStatusArrived(self, call):
        logic = self.currentLogic()
        try:
            status = call.result(0)
        except SAMSegmenterError as error:
            local = logic.engine.local if logic is not None else None
            why = local.log_tail() if local is not None else ""
            self.showService(_("The SAM service failed: {error}").format(error=error) + (f"<br>{why}" if why else ""),
                             error=True)
            return
        loaded = ", ".join(_("{model} on {device} ({precision}, {backend})").format(**m)
                           for m in status.get("loaded", []))
        self.showService(_("Ready: {service}. Loaded: {loaded}. Open volumes: {sessions}.").format(
            service=logic.engine.describe() if logic is not None else "", loaded=loaded or _("no model yet"),
            sessions=status.get("sessions", 0)))

    def showService(self, text, error=False):
        self.serviceLabel.text = text
        self.serviceLabel.setStyleSheet("color: #c00000" if error else "")
        self.serviceProgress.visible = self.statusCall is not None

    def onPoll(self):
        if self.installing is not None:
            if self.installing.poll():
                self.installFinished()
            else:
                self.showInstall()
        if self.verifying is not None:
            code = self.verifying[0].poll()
            if code is not None:
                self.verifyFinished(code)
        if self.download is not None:
            code = self.download.poll()
            if code is None:
                self.showDownload()
            else:
                self.downloadFinished(code)
        if self.statusCall is not None:
            call, started = self.statusCall
            if call.poll():
                self.statusCall = None
                self.serviceStatusArrived(call)
            else:
                self.serviceLabel.text = _("Waiting for the SAM service (a local one starts and loads its model): "
                                           "{seconds:.0f} s").format(seconds=time.monotonic() - started)
        if self.download is None and self.statusCall is None and self.installing is None and self.verifying is None:
            self.pollTimer.stop()

    def onOpenEditor(self):
        slicer.util.selectModule("SegmentEditor")
        slicer.modules.segmenteditor.widgetRepresentation().self().editor.setActiveEffectByName(EFFECT_NAME)


class SAMSegmenterTest(ScriptedLoadableModuleTest):
    """Registration check; the end-to-end effect test is Testing/Slicer/SAMSegmenterSelfTest.py."""

    def runTest(self):
        self.test_effect_registered_once()

    def test_effect_registered_once(self):
        registerEffect()
        registerEffect()
        names = [effect.name for effect in slicer.qSlicerSegmentEditorEffectFactory.instance().registeredEffects()]
        self.assertEqual(names.count(EFFECT_NAME), 1)
