"""GuiDINOSegmentLogic: the engine on MRML nodes (scalar volume in; segment, raw prediction and guide out).

Usable without the widget (scripts, batch, tests)::

    logic = GuiDINOSegmentLogic()
    result = logic.process(volumeNode, segmentationNode, model="/path/to/bundle", axis="axial")

Every run is one ``SegmentationJob`` in three phases, whoever starts it (the panel, the Segment
Editor effect, a refine round, ``process``): ``prepareSegmentation`` on the main thread (reads the
settings, validates the inputs once, resolves the model, copies the voxels, drops reviewed slices),
``computeSegmentation`` anywhere (no MRML), then ``applySegmentation`` (or, for the effect,
``previewLabels`` + ``recordPrediction``) on the main thread, through one write rule.

The raw prediction of every processed voxel is kept in a hidden labelmap volume referenced from the
segmentation node, so that later edits of the segment are recognised as corrections (reviewed slices).
"""

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import slicer
import vtk

from guidino.axes import check_axis, slice_axis
from guidino.bundle import load_bundle, read_bundle_config
from guidino.errors import BundleError, InputError
from guidino.geometry import Geometry
from guidino.imageio import ImageData, check_shape, check_voxels
from guidino.inference import SegmentationResult, segment_volume
from guidino.model import GuiDINOModel
from guidino.review import merge_prediction, slice_mask

from .SegmentSettings import SegmentSettings

NOT_PREDICTED = 255  # stored-prediction value of voxels no run has predicted yet
PREDICTION_ROLE = "GuiDINOPrediction_"  # + segment id: segmentation node -> raw prediction labelmap
REVIEWED_ATTRIBUTE = "GuiDINO.Reviewed."  # + segment id: JSON {"axis": ..., "slices": [...]} of marked slices
GUIDE_INPUT_ROLE = "GuiDINOInput"  # guide volume -> the volume it was computed from
GUIDE_COLOR_NAME = "GuiDINO guide"
GUIDE_COLORS = ((0.0, (0.0, 0.0, 0.5)), (0.25, (0.0, 0.4, 1.0)), (0.6, (1.0, 1.0, 0.0)), (1.0, (1.0, 0.0, 0.0)))
GUIDE_THRESHOLD = 0.05  # guide values below it are transparent in the slice views


@dataclass
class SegmentationJob:
    """One segmentation run, prepared on the main thread; ``computeSegmentation`` reads only the copies here."""

    inputVolume: object  # the nodes: main thread only
    segmentation: object
    segmentId: str  # "" until the first write creates the segment
    segmentName: str
    image: ImageData  # a copy of the voxels: the scene may change while the job computes
    model: object  # a bundle path or a GuiDINOModel
    guideSource: Optional[str]
    axis: str
    slices: np.ndarray  # the slices to compute along ``axis``: those asked for, minus the reviewed ones
    requested: int  # how many slices were asked for
    settings: SegmentSettings
    started: float


@dataclass
class ProcessResult:
    segmentId: str
    guideVolumeNode: Optional[object]  # None when showGuide is off or the model has no guide
    slicesProcessed: int
    seconds: float
    cancelled: bool
    prediction: SegmentationResult


ACTIVE_MODEL_ATTRIBUTE = "GuiDINO.Model"


class GuiDINOSegmentLogic:
    """Runs GuiDINO models on MRML nodes; ``segmenter`` and ``bundleLoader`` are injectable for tests."""

    def __init__(self, segmenter=segment_volume, bundleLoader=load_bundle):
        self.segmenter = segmenter
        self.bundleLoader = bundleLoader
        self.defaultModelPath = os.environ.get("GUIDINO_MODEL") or None
        self.guideSource = None  # hub id, folder or .pth overriding the guide a bundle names
        self.guideOpacity = 0.4
        self._cachedModel = (None, None)  # (key, model): one model at a time, a ViT is large

    # -- models ----------------------------------------------------------------------------
    def loadModel(self, path=None, guideSource=None):
        """The model of bundle ``path`` (default: ``defaultModelPath``), cached while the bundle is unchanged.

        ``guideSource``: where the bundle's guide is, if not where it says (default: ``guideSource``).
        """
        bundle = self._resolveModel(path)
        guide = guideSource or self.guideSource
        config = bundle / "config.json"
        key = (bundle, config.stat().st_mtime_ns if config.is_file() else None, guide)
        if self._cachedModel[0] != key:
            self._cachedModel = (None, None)  # release the old model before loading the new one
            self._cachedModel = (key, self.bundleLoader(bundle, guide=guide))
        return self._cachedModel[1]

    def _resolveModel(self, model):
        """A GuiDINOModel as it is; else the bundle folder (``model``, else ``defaultModelPath``), checked."""
        if isinstance(model, GuiDINOModel):
            return model
        path = model or self.defaultModelPath
        if not path:
            raise BundleError("no model bundle chosen: select a model folder in GuiDINO Segment, "
                              "or set the GUIDINO_MODEL environment variable to one")
        bundle = Path(path).expanduser().resolve()
        read_bundle_config(bundle)  # a missing or corrupt bundle is refused before any work
        return bundle

    def _model(self, model, guideSource=None):
        return model if isinstance(model, GuiDINOModel) else self.loadModel(model, guideSource)

    def activeModel(self, segmentation):
        """The bundle a segmentation was last refined to (saved with the scene), or None."""
        return segmentation.GetAttribute(ACTIVE_MODEL_ATTRIBUTE) if segmentation is not None else None

    def setActiveModel(self, segmentation, bundle):
        """Make ``bundle`` the model later runs on this segmentation use when none is given."""
        segmentation.SetAttribute(ACTIVE_MODEL_ATTRIBUTE, str(bundle))

    # -- segmentation: prepare (main thread) -> compute (anywhere) -> apply (main thread) -----------
    def prepareSegmentation(self, inputVolume, outputSegmentation, settings=None, **changes):
        """Main thread: validate the inputs once, resolve the model, copy the voxels, drop reviewed slices.

        ``settings``: a SegmentSettings (default: its defaults), with ``changes`` applied. Refuses a missing
        model or bundle, bad slice ranges, and unusable volumes or segmentations before anything is computed.
        An unbound segmentation is bound to the volume's geometry.
        """
        started = time.perf_counter()
        settings = dataclasses.replace(settings or SegmentSettings(), **changes)
        check_axis(settings.axis)
        image = imageDataFromVolume(inputVolume, copy=True)
        checkSegmentation(outputSegmentation, inputVolume)
        segmentation = outputSegmentation.GetSegmentation()
        segmentId = settings.segmentId or segmentation.GetSegmentIdBySegmentName(settings.segmentName) or ""
        if settings.segmentId and segmentation.GetSegment(settings.segmentId) is None:
            raise InputError(f"{outputSegmentation.GetName()} has no segment {settings.segmentId!r}")
        segmentName = segmentation.GetSegment(segmentId).GetName() if segmentId else settings.segmentName
        model = self._resolveModel(settings.model if settings.model is not None
                                   else self.activeModel(outputSegmentation))
        axisIndex = slice_axis(image.geometry.direction, settings.axis)
        count = image.voxels.shape[axisIndex]
        requested = np.arange(count) if settings.sliceRange is None else np.asarray(sliceIndices(settings.sliceRange))
        if requested.size and (requested.min() < 0 or requested.max() >= count):
            raise InputError(f"slice indices must be in 0..{count - 1} along the {settings.axis} axis")
        todo = requested
        if segmentId:
            reviewed = self.reviewedSlices(outputSegmentation, segmentId)
            if reviewed["axis"] == settings.axis:
                todo = np.setdiff1d(requested, reviewed["slices"])
        return SegmentationJob(inputVolume, outputSegmentation, segmentId, segmentName, image, model,
                               settings.guideSource or self.guideSource, settings.axis, todo, int(requested.size),
                               settings, started)

    def computeSegmentation(self, job, progressCallback=None, cancelEvent=None):
        """Any thread, no scene access: load the model (cached) and segment the job's slices."""
        settings = job.settings
        return self.segmenter(self._model(job.model, job.guideSource), job.image, axis=job.axis, slices=job.slices,
                              batch_size=settings.batchSize, device=settings.device, progress=progressCallback,
                              cancel=cancelEvent, guide_stride=settings.guideStride)

    def applySegmentation(self, job, prediction):
        """Main thread: write the prediction into the segment by the one write rule, show the guide."""
        segmentation = job.segmentation.GetSegmentation()
        if not job.segmentId or segmentation.GetSegment(job.segmentId) is None:
            job.segmentId = (segmentation.GetSegmentIdBySegmentName(job.segmentName)
                             or segmentation.AddEmptySegment("", job.segmentName))
        reviewed = self.reviewedSlices(job.segmentation, job.segmentId)
        write = self._writable(job, prediction, reviewed)
        if write.any():
            labels = merge_prediction(self._segmentArray(job), prediction.labels, write)
            slicer.util.updateSegmentBinaryLabelmapFromArray(labels, job.segmentation, job.segmentId, job.inputVolume)
            self._record(job, prediction, write)
        if not reviewed["slices"]:  # the reviewed axis follows the runs until a slice is reviewed
            self._storeMarked(job.segmentation, job.segmentId, job.axis, [])
        guide = self.showPredictionGuide(job, prediction) if job.settings.showGuide else None
        return ProcessResult(job.segmentId, guide, int(prediction.processed.sum()), time.perf_counter() - job.started,
                             prediction.cancelled, prediction)

    def previewLabels(self, job, prediction):
        """What Apply would leave in the segment (0/1 uint8, the volume's grid): the prediction where the write
        rule allows it, the segment's current content elsewhere. The Segment Editor effect shows and applies it."""
        return merge_prediction(self._segmentArray(job), prediction.labels, self._writable(job, prediction))

    def showPredictionGuide(self, job, prediction):
        """Show the prediction's guide as the overlay of the job's volume; None for unguided models."""
        if prediction.guide is None:
            return None
        guide = self.updateGuideVolume(job.inputVolume, prediction)
        self.showGuideVolume(guide)
        return guide

    def process(self, inputVolume, outputSegmentation, segmentName="GuiDINO", model=None, axis="axial",
                sliceRange=None, device="auto", showGuide=True, progressCallback=None, cancelEvent=None):
        """Segment ``inputVolume`` into segment ``segmentName``, leaving reviewed slices as they are.

        ``sliceRange``: None (all slices), one index, or (first, last) inclusive, along ``axis``.
        ``cancelEvent`` (threading.Event) stops between slice batches; processed slices are kept.
        """
        job = self.prepareSegmentation(inputVolume, outputSegmentation, SegmentSettings(
            segmentName=segmentName, model=model, axis=axis, sliceRange=sliceRange, device=device, showGuide=showGuide))
        return self.applySegmentation(job, self.computeSegmentation(job, progressCallback, cancelEvent))

    def recordPrediction(self, job, prediction):
        """After another writer applied ``previewLabels`` (the Segment Editor effect), store the raw baseline.

        Recorded are the writable voxels where the segment now equals the prediction: what the writer put
        there. Voxels it did not write (the user's reviewed content, masked or non-editable areas) keep their
        baseline, so the user's edits still count as corrections.
        """
        axisMarked, marked = self._marked(job.segmentation, job.segmentId)
        write = self._writable(job, prediction, {"axis": axisMarked, "slices": marked})
        write &= (self._segmentArray(job) > 0) == (prediction.labels > 0)
        if write.any():
            self._record(job, prediction, write)

    def _writable(self, job, prediction, reviewed=None):
        """The write rule: the voxels a prediction may change are its processed slices minus the reviewed ones
        (``reviewed``: default, the segment's reviewed slices now)."""
        geometry, shape = job.image.geometry, job.image.voxels.shape[:3]
        if prediction.labels.shape != shape or not prediction.geometry.is_close(geometry, tol=1e-4) \
                or slice_axis(geometry.direction, job.axis) != prediction.axis:
            raise InputError(f"this prediction was not computed on {job.inputVolume.GetName()} along the "
                             f"{job.axis} axis")
        if reviewed is None:
            reviewed = (self.reviewedSlices(job.segmentation, job.segmentId) if job.segmentId
                        else {"axis": job.axis, "slices": []})
        protected = slice_mask(shape, slice_axis(geometry.direction, reviewed["axis"]), reviewed["slices"])
        return slice_mask(shape, prediction.axis, np.flatnonzero(prediction.processed)) & ~protected

    def _segmentArray(self, job):
        if not job.segmentId:
            return np.zeros(job.image.voxels.shape[:3], np.uint8)
        return slicer.util.arrayFromSegmentBinaryLabelmap(job.segmentation, job.segmentId, job.inputVolume)

    def _record(self, job, prediction, write):
        stored = self._storedPrediction(job.segmentation, job.segmentId, job.inputVolume)
        raw = slicer.util.arrayFromVolume(stored)
        raw[write] = prediction.labels[write] > 0
        slicer.util.arrayFromVolumeModified(stored)

    # -- reviewed slices -------------------------------------------------------------------
    def reviewedSlices(self, segmentation, segmentId):
        """{"axis", "slices"}: slices marked reviewed plus slices edited since their last prediction."""
        axis, marked = self._marked(segmentation, segmentId)
        stored, edited = self._editedMask(segmentation, segmentId)
        if stored is not None:
            edited = np.moveaxis(edited, slice_axis(volumeGeometry(stored).direction, axis), 0)
            marked = set(marked) | set(np.flatnonzero(edited.reshape(len(edited), -1).any(1)).tolist())
        return {"axis": axis, "slices": sorted(marked)}

    def markSliceReviewed(self, segmentation, segmentId, sliceIndex, axis="axial", reviewed=True):
        """Mark (or unmark) one slice as reviewed; unmarking also accepts its edits as the new baseline."""
        check_axis(axis)
        state = self.reviewedSlices(segmentation, segmentId)
        if axis != state["axis"] and state["slices"]:
            raise InputError(f"slices of this segment are reviewed along the {state['axis']} axis: review along "
                             f"that axis, or unmark slices {state['slices']} first")
        stored = self.predictionVolume(segmentation, segmentId)
        count = None if stored is None else slicer.util.arrayFromVolume(stored).shape[
            slice_axis(volumeGeometry(stored).direction, axis)]
        if sliceIndex < 0 or (count is not None and sliceIndex >= count):
            upper = "" if count is None else f"..{count - 1}"
            raise InputError(f"slice {sliceIndex} does not exist: slice indices are 0{upper} along the {axis} axis")
        marked = set(self._marked(segmentation, segmentId)[1]) if axis == state["axis"] else set()
        if reviewed:
            marked.add(int(sliceIndex))
        else:
            marked.discard(int(sliceIndex))
            self._acceptEdits(segmentation, segmentId, axis, sliceIndex)
        self._storeMarked(segmentation, segmentId, axis, marked)

    def predictionVolume(self, segmentation, segmentId):
        """The hidden labelmap holding the segment's raw prediction (255 = not predicted), or None."""
        return segmentation.GetNodeReference(PREDICTION_ROLE + segmentId)

    def _marked(self, segmentation, segmentId):
        if segmentation.GetSegmentation().GetSegment(segmentId) is None:
            raise InputError(f"{segmentation.GetName()} has no segment {segmentId!r}")
        text = segmentation.GetAttribute(REVIEWED_ATTRIBUTE + segmentId)
        state = json.loads(text) if text else {"axis": "axial", "slices": []}
        return state["axis"], [int(i) for i in state["slices"]]

    def _storeMarked(self, segmentation, segmentId, axis, slices):
        segmentation.SetAttribute(REVIEWED_ATTRIBUTE + segmentId,
                                  json.dumps({"axis": axis, "slices": sorted(int(i) for i in slices)}))

    def _editedMask(self, segmentation, segmentId):
        """(raw-prediction node, voxels whose segment content differs from it), or (None, None)."""
        stored = self.predictionVolume(segmentation, segmentId)
        if stored is None or stored.GetImageData() is None:
            return None, None
        raw = slicer.util.arrayFromVolume(stored)
        current = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, stored) > 0
        return stored, (raw != NOT_PREDICTED) & (raw != current)

    def _acceptEdits(self, segmentation, segmentId, axis, sliceIndex):
        stored, edited = self._editedMask(segmentation, segmentId)
        if stored is None:
            return
        raw = slicer.util.arrayFromVolume(stored)
        accept = edited & slice_mask(raw.shape, slice_axis(volumeGeometry(stored).direction, axis), [sliceIndex])
        raw[accept] = 1 - raw[accept]  # edited voxels of a binary prediction are its complement
        slicer.util.arrayFromVolumeModified(stored)

    def _storedPrediction(self, segmentation, segmentId, inputVolume):
        """The raw-prediction node, created (or reset) on the input's grid when needed."""
        stored = self.predictionVolume(segmentation, segmentId)
        if stored is None:
            name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
            stored = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode",
                                                        f"{segmentation.GetName()} {name} GuiDINO prediction")
            stored.SetHideFromEditors(True)
            segmentation.SetNodeReferenceID(PREDICTION_ROLE + segmentId, stored.GetID())
        _matchGrid(stored, inputVolume, NOT_PREDICTED, np.uint8)
        return stored

    # -- guide -----------------------------------------------------------------------------
    def guideVolume(self, inputVolume):
        """The guide volume computed for ``inputVolume``, or None."""
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if node.GetNodeReferenceID(GUIDE_INPUT_ROLE) == inputVolume.GetID():
                return node
        return None

    def updateGuideVolume(self, inputVolume, prediction):
        """Create or update "<volume> GuiDINO guide" from a prediction's processed slices; returns the node."""
        guide = self.guideVolume(inputVolume)
        if guide is None:
            guide = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                       f"{inputVolume.GetName()} GuiDINO guide")
            guide.SetNodeReferenceID(GUIDE_INPUT_ROLE, inputVolume.GetID())
        values = _matchGrid(guide, inputVolume, 0.0, np.float32)
        processed = slice_mask(values.shape, prediction.axis, np.flatnonzero(prediction.processed))
        values[processed] = prediction.guide[processed]
        slicer.util.arrayFromVolumeModified(guide)
        if guide.GetDisplayNode() is None:
            guide.CreateDefaultDisplayNodes()
        display = guide.GetDisplayNode()
        display.SetAndObserveColorNodeID(guideColorNode().GetID())
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.AutoThresholdOff()
        display.SetThreshold(GUIDE_THRESHOLD, 1.0)
        display.ApplyThresholdOn()
        return guide

    def showGuideVolume(self, guideNode, show=True):
        """Show the guide as the foreground of every slice view (or remove it from where it is shown)."""
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            if show:
                composite.SetForegroundVolumeID(guideNode.GetID())
                composite.SetForegroundOpacity(self.guideOpacity)
            elif composite.GetForegroundVolumeID() == guideNode.GetID():
                composite.SetForegroundVolumeID(None)

    def setGuideOpacity(self, opacity):
        """Foreground opacity (0..1) of every slice view, used for the guide from now on."""
        self.guideOpacity = float(min(max(opacity, 0.0), 1.0))
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(self.guideOpacity)


# -- MRML <-> engine -------------------------------------------------------------------------
def volumeGeometry(volumeNode):
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return Geometry.from_ijk_to_ras(slicer.util.arrayFromVTKMatrix(matrix))


def imageDataFromVolume(volumeNode, copy=False):
    """The engine's ImageData of a scalar volume node; InputError if unusable. Main thread only.

    The voxels are shared with the node unless ``copy`` (a job that computes while the scene changes).
    """
    if volumeNode is None:
        raise InputError("no input volume: select the scalar volume to segment")
    name = volumeNode.GetName()
    if volumeNode.IsA("vtkMRMLMultiVolumeNode") or _isSequenceItem(volumeNode):
        check_shape(name, 4, 1)
    image = volumeNode.GetImageData() if volumeNode.IsA("vtkMRMLVolumeNode") else None
    components = image.GetNumberOfScalarComponents() if image is not None else 1
    check_shape(name, 3, 3 if volumeNode.IsA("vtkMRMLTensorVolumeNode") else components)
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{name}: a {volumeNode.GetClassName()} is not a scalar volume; select a scalar volume")
    if image is None or 0 in image.GetDimensions():
        raise InputError(f"{name}: the volume has no voxels; load its image data first")
    voxels = check_voxels(slicer.util.arrayFromVolume(volumeNode), name)
    return ImageData(voxels.copy() if copy else voxels, volumeGeometry(volumeNode))


def _isSequenceItem(volumeNode):
    nodeId = volumeNode.GetID()  # None outside a scene: vtkMRMLSequenceBrowserNode.IsProxyNodeID would crash on it
    return bool(nodeId) and volumeNode.GetScene() is not None and any(
        browser.IsProxyNodeID(nodeId) for browser in slicer.util.getNodesByClass("vtkMRMLSequenceBrowserNode"))


def checkSegmentation(segmentationNode, volumeNode):
    """Refuse a segmentation that cannot hold ``volumeNode``'s voxels; bind an unbound one to its geometry."""
    if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
        raise InputError("no output segmentation: select or create a segmentation")
    names = f"{segmentationNode.GetName()} and {volumeNode.GetName()}"
    if segmentationNode.GetTransformNodeID() != volumeNode.GetTransformNodeID():
        raise InputError(f"{names} are under different transforms: put both under the same transform "
                         "(or none) in the Transforms or Data module")
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    serialized = segmentationNode.GetSegmentation().GetConversionParameter(parameter)
    if not serialized:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        return
    matrix, extent = vtk.vtkMatrix4x4(), [0] * 6
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(serialized, matrix, extent)
    if tuple(extent) != tuple(volumeNode.GetImageData().GetExtent()) or not np.allclose(
            slicer.util.arrayFromVTKMatrix(matrix), volumeGeometry(volumeNode).ijk_to_ras(), atol=1e-4):
        raise InputError(f"{segmentationNode.GetName()} is bound to another geometry than {volumeNode.GetName()}: "
                         "segment into a new segmentation, or set its geometry from this volume "
                         "(Segment Editor > Specify geometry)")


def sliceIndices(sliceRange):
    """None (all slices), an index, or an inclusive (first, last) range -> the engine's slice list."""
    if sliceRange is None:
        return None
    if isinstance(sliceRange, (int, np.integer)):
        return [int(sliceRange)]
    first, last = (int(i) for i in sliceRange)
    if first > last:
        raise InputError(f"slice range ({first}, {last}) is empty: give (first, last) with first <= last")
    return list(range(first, last + 1))


def _matchGrid(node, like, fill, dtype):
    """Give ``node`` the grid and transform of ``like`` (refilling it with ``fill`` if they differed); its array."""
    matrix = vtk.vtkMatrix4x4()
    like.GetIJKToRASMatrix(matrix)
    shape = slicer.util.arrayFromVolume(like).shape
    if node.GetImageData() is None or slicer.util.arrayFromVolume(node).shape != shape \
            or not volumeGeometry(node).is_close(volumeGeometry(like), tol=1e-6):
        node.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(node, np.full(shape, fill, dtype))
    node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
    return slicer.util.arrayFromVolume(node)


def guideColorNode():
    """The guide's colour map (dark blue at 0 through yellow to red at 1), created once per scene."""
    node = slicer.mrmlScene.GetFirstNode(GUIDE_COLOR_NAME, "vtkMRMLProceduralColorNode")
    if node is None:
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLProceduralColorNode", GUIDE_COLOR_NAME)
        colors = vtk.vtkColorTransferFunction()
        for value, rgb in GUIDE_COLORS:
            colors.AddRGBPoint(value, *rgb)
        node.SetAndObserveColorTransferFunction(colors)
        node.SetAttribute("Category", "GuiDINO")
    return node
