"""End-to-end test of the SAM Segment Editor effect inside 3D Slicer (run it from the Self Tests module).

It needs a network connection (SampleData's MRHead) and the Python packages the SAM
Segmenter module installs. Prompts are fed through the effect's scripting API
(promptBox, waitForResult, apply, propagate), which is what mouse events call.
"""

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class SAMSegmenterSelfTest(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "SAMSegmenterSelfTest"
        parent.categories = ["Testing.TestCases"]
        parent.dependencies = ["SAMSegmenter", "SegmentEditor"]
        parent.contributors = ["SAMSegmenter contributors"]
        parent.helpText = "End-to-end test of the SAM Segment Editor effect on MRHead."
        parent.acknowledgementText = ""


class SAMSegmenterSelfTestWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.layout.addStretch(1)


class SAMSegmenterSelfTestTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_effect_end_to_end()

    def segmentVoxels(self, segmentationNode, segmentId, volumeNode):
        return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode) > 0

    def test_effect_end_to_end(self):
        import SampleData

        import SAMSegmenter
        from SAMSegmenterMRML.geometry import ijk_to_world, volume_ijk_to_world, xy_to_ijk

        self.assertTrue(
            SAMSegmenter.dependenciesReady(), "install the Python packages in the SAM Segmenter module first"
        )
        self.delayDisplay("Loading MRHead")
        volumeNode = SampleData.downloadSample("MRHead")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("Structure")

        self.delayDisplay("Activating the SAM effect")
        SAMSegmenter.registerEffect()  # before the widget: it copies the registered effects when built
        editorWidget = slicer.qMRMLSegmentEditorWidget()
        editorWidget.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        editorWidget.setMRMLSegmentEditorNode(editorNode)
        editorWidget.setSegmentationNode(segmentationNode)
        editorWidget.setSourceVolumeNode(volumeNode)
        editorWidget.show()
        editorWidget.setActiveEffectByName(SAMSegmenter.EFFECT_NAME)
        effect = editorWidget.activeEffect()
        self.assertIsNotNone(effect, "the SAM effect is not registered")
        sam = effect.self()
        editorNode.SetSelectedSegmentID(segmentId)

        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        sliceNode.SetOrientation("Axial")
        sliceNode.RotateToVolumePlane(volumeNode)
        bounds = [0.0] * 6
        volumeNode.GetRASBounds(bounds)
        sliceNode.JumpSliceByOffsetting(
            (bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2
        )

        session = sam.currentSession()
        ref = session.view_slice(slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS()))
        rows, cols = [n for axis, n in enumerate(slicer.util.arrayFromVolume(volumeNode).shape) if axis != ref.axis]
        corners_xy = [
            (0.3 * cols, 0.3 * rows),
            (0.7 * cols, 0.3 * rows),
            (0.7 * cols, 0.7 * rows),
            (0.3 * cols, 0.7 * rows),
        ]
        cornersRas = ijk_to_world(xy_to_ijk(np.array(corners_xy), ref), volume_ijk_to_world(volumeNode))

        self.delayDisplay("Box prompt")
        sam.promptBox(cornersRas, sliceNode)
        self.assertTrue(sam.waitForResult(600), "the prediction did not finish")
        self.assertIsNotNone(session.result, sam.statusLabel.text)
        self.assertGreater(int(session.result[1].sum()), 0)
        self.assertIsNotNone(session.preview.node)

        self.delayDisplay("Apply")
        sam.apply()
        written = self.segmentVoxels(segmentationNode, segmentId, volumeNode)
        self.assertGreater(int(written.sum()), 0)
        self.assertEqual(int(np.take(written, ref.index, axis=ref.axis).sum()), int(written.sum()))

        self.delayDisplay("Undo")
        editorWidget.undo()
        self.assertEqual(int(self.segmentVoxels(segmentationNode, segmentId, volumeNode).sum()), 0)

        self.delayDisplay("Propagate")
        sam.promptBox(cornersRas, sliceNode)
        self.assertTrue(sam.waitForResult(600))
        sam.propagate("both", (ref.index - 3, ref.index + 3))
        self.assertTrue(sam.waitForResult(1200), "the propagation did not finish")
        slab = session.result[0]
        self.assertLess(slab.first, slab.last, sam.statusLabel.text)
        sam.apply()
        written = self.segmentVoxels(segmentationNode, segmentId, volumeNode)
        other = tuple(axis for axis in range(3) if axis != ref.axis)
        segmentedSlices = np.flatnonzero(written.any(axis=other))
        self.assertGreater(len(segmentedSlices), 1)
        self.assertTrue(set(segmentedSlices) <= set(range(ref.index - 3, ref.index + 4)))

        editorWidget.setActiveEffectByName("")
        self.assertIsNone(sam.session)
        self.delayDisplay("SAM effect test passed")
