"""End-to-end test of the SAM Segment Editor effect inside 3D Slicer (not a module: a plain unittest module).

Mouse and key events go through the effect's own event translation (processInteractionEvents with the Red view's
interactor) into its InteractionController; the effect's QTimer polls the SAM service while the test processes Qt
events. Covered: the Structure combo box -> the controller; a box -> preview -> Apply (Enter) -> undo; right
click left to Slicer by the box-only model;
a box -> Propagate button limited to 7 slices -> a click on the confidence strip -> a corrective box on a
propagated slice (a key slice, partial re-propagation) -> Apply button -> the written slices.

ctest runs it as py_SAMSegmenterSelfTest; in Slicer:
  Slicer --additional-module-paths <repository>/SAMSegmenter --python-code "import slicer.testing;
  slicer.testing.runUnitTest(['<repository>/Testing/Slicer'], 'SAMSegmenterSelfTest')"
It is skipped, with the reason, when the local SAM service's Python packages or the network (MRHead) are missing.
"""

import time
import unittest

import numpy as np
import slicer
import vtk


class SAMSegmenterSelfTest(unittest.TestCase):
    def setUp(self):
        from SAMSegmenterMRML import dependencies  # the first of ours: it imports no other SAMSegmenter module

        missing = dependencies.missing_for_local_service()
        if missing:
            self.skipTest(f"Python packages missing for the SAM service: {', '.join(missing)} "
                          "(install them in the SAM Segmenter module)")
        slicer.mrmlScene.Clear(0)

    def tearDown(self):
        slicer.mrmlScene.Clear(0)

    def loadVolume(self):
        import SampleData

        try:
            volume = SampleData.downloadSample("MRHead")
        except Exception as error:  # SampleData raises several kinds of errors when it cannot download
            self.skipTest(f"MRHead could not be downloaded (network?): {error}")
        if volume is None:
            self.skipTest("MRHead could not be downloaded (network?)")
        return volume

    def send(self, sam, sliceWidget, eventId, ras=None, keySym=None):
        """Translate one event as the Segment Editor would hand it to the effect; the effect's answer (consumed)."""
        interactor = sliceWidget.sliceView().interactor()
        if ras is not None:
            x, y = sam.rasToXy(ras, sliceWidget)
            interactor.SetEventPosition(int(x), int(y))
        interactor.SetControlKey(0)
        interactor.SetShiftKey(0)
        interactor.SetAltKey(0)
        if keySym is not None:
            interactor.SetKeySym(keySym)
        return sam.processInteractionEvents(interactor, eventId, sliceWidget)

    def dragBox(self, sam, sliceWidget, corners):
        start, end = corners
        self.assertTrue(self.send(sam, sliceWidget, vtk.vtkCommand.LeftButtonPressEvent, start))
        self.assertTrue(self.send(sam, sliceWidget, vtk.vtkCommand.MouseMoveEvent, (start + end) / 2))
        self.assertTrue(self.send(sam, sliceWidget, vtk.vtkCommand.LeftButtonReleaseEvent, end))

    def settle(self, controller, timeout=900):
        """Process Qt events (the effect's timer polls the controller) until the controller has no work left."""
        deadline = time.monotonic() + timeout
        while controller.wants_poll:
            slicer.app.processEvents()
            time.sleep(0.02)
            self.assertLess(time.monotonic(), deadline, controller.state.status)
        state = controller.state
        self.assertFalse(state.error, state.status)
        return state

    def boxOnSlice(self, volume, axis, index, shrink=0.0):
        """RAS of two opposite corners of a box over the middle of slice ``index`` along numpy ``axis``."""
        shape = slicer.util.arrayFromVolume(volume).shape
        low, high = np.array(shape, float) * (0.3 + shrink), np.array(shape, float) * (0.7 - shrink)
        low[axis] = high[axis] = index
        ijkToRas = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijkToRas)
        matrix = slicer.util.arrayFromVTKMatrix(ijkToRas)
        return [(matrix @ np.append(corner[::-1], 1.0))[:3] for corner in (low, high)]  # [k, j, i] -> (i, j, k)

    def written(self, segmentation, segmentId, volume):
        return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) > 0

    def test_effect_end_to_end(self):
        import SAMSegmenter
        from SAMSegmenterMRML.geometry import view_slice, volume_ijk_to_world, volume_shape

        volume = self.loadVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = segmentation.GetSegmentation().AddEmptySegment("Structure")

        SAMSegmenter.registerEffect()  # before the editor widget: it copies the registered effects when built
        editorWidget = slicer.qMRMLSegmentEditorWidget()
        editorWidget.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editorWidget.setMRMLSegmentEditorNode(editorNode)
        editorWidget.setSegmentationNode(segmentation)
        editorWidget.setSourceVolumeNode(volume)
        editorNode.SetSelectedSegmentID(segmentId)
        editorWidget.show()
        editorWidget.setActiveEffectByName(SAMSegmenter.EFFECT_NAME)
        effect = editorWidget.activeEffect()
        self.assertIsNotNone(effect, "the SAM effect is not registered")
        sam = effect.self()
        controller = sam.controller
        self.assertIsNotNone(controller, sam.statusLabel.text)

        sliceWidget = slicer.app.layoutManager().sliceWidget("Red")
        sliceNode = sliceWidget.mrmlSliceNode()
        sliceNode.SetOrientation("Axial")
        sliceNode.RotateToVolumePlane(volume)
        bounds = [0.0] * 6
        volume.GetRASBounds(bounds)
        sliceNode.JumpSliceByOffsetting((bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2,
                                        (bounds[4] + bounds[5]) / 2)
        slicer.app.processEvents()
        shown = view_slice(slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()), volume_ijk_to_world(volume),
                           volume_shape(volume))
        axis, index = shown.axis, shown.index
        others = tuple(a for a in range(3) if a != axis)

        # the panel's structure reaches the controller, at the latest with the next action (a one-slice preview
        # does not use it)
        structure = sam.combos["Structure"]
        structure.setCurrentIndex(structure.findData("compact"))
        self.assertEqual(sam.scriptedEffect.parameter("Structure"), "compact")

        # a box -> preview -> Apply (Enter) -> undo
        self.dragBox(sam, sliceWidget, self.boxOnSlice(volume, axis, index))
        state = self.settle(controller)
        self.assertEqual(controller.structure, "compact")
        self.assertEqual(state.preview_range, (index, index))
        preview = slicer.util.arrayFromSegmentBinaryLabelmap(controller.preview.node, "SAMPreview", volume) > 0
        self.assertGreater(int(preview.sum()), 0)
        self.assertTrue(self.send(sam, sliceWidget, vtk.vtkCommand.KeyPressEvent, keySym="Return"))
        written = self.written(segmentation, segmentId, volume)
        self.assertEqual(int(written.sum()), int(preview.sum()), sam.statusLabel.text)
        self.assertEqual(list(np.flatnonzero(written.any(axis=others))), [index])
        editorWidget.undo()
        self.assertEqual(int(self.written(segmentation, segmentId, volume).sum()), 0)

        # LiteMedSAM takes boxes only: a right click stays with Slicer (zoom, context menu)
        self.assertFalse(self.send(sam, sliceWidget, vtk.vtkCommand.RightButtonPressEvent, self.boxOnSlice(
            volume, axis, index)[0]))

        # a box -> Propagate (limited to 7 slices) -> the confidence strip -> a correction -> Apply
        self.dragBox(sam, sliceWidget, self.boxOnSlice(volume, axis, index))
        self.settle(controller)
        sam.rangeCheckBox.checked = True
        sam.rangeFirst.value, sam.rangeLast.value = index - 3, index + 3
        structure.setCurrentIndex(structure.findData("anatomy"))
        sam.propagateButton.click()
        propagated = self.settle(controller)
        self.assertEqual(controller.structure, "anatomy")
        first, last = propagated.preview_range
        self.assertTrue(index - 3 <= first < last <= index + 3, propagated.status)
        self.assertEqual([item.key for item in propagated.confidence].count(True), 1)
        self.assertEqual(sam.stripSlices, list(range(first, last + 1)))
        fix = last if last != index else first
        sam.onStripClicked(0, sam.stripSlices.index(fix))  # the Red view moves to that slice
        slicer.app.processEvents()
        self.assertEqual(view_slice(slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()),
                                    volume_ijk_to_world(volume), volume_shape(volume)).index, fix)
        self.dragBox(sam, sliceWidget, self.boxOnSlice(volume, axis, fix, shrink=0.05))
        corrected = self.settle(controller)
        self.assertEqual({item.index for item in corrected.confidence if item.key}, {index, fix}, corrected.status)
        sam.applyButton.click()
        written = self.written(segmentation, segmentId, volume)
        segmented = set(np.flatnonzero(written.any(axis=others)))
        self.assertGreater(len(segmented), 1, sam.statusLabel.text)
        self.assertTrue(segmented <= set(range(first, last + 1)))

        editorWidget.setActiveEffectByName("")
        self.assertIsNone(sam.controller)
