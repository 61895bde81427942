"""GuiDINOSegmentLogic: the engine on MRML nodes (scalar volume in; segment, raw prediction and guide out).

Usable without the widget (scripts, batch, tests)::

    logic = GuiDINOSegmentLogic()
    result = logic.process(volumeNode, segmentationNode, model="/path/to/bundle", axis="axial")

Every run is one ``SegmentationJob`` in three phases, whoever starts it (the panel, the Segment
Editor effect, a refine round, ``process``): ``prepareSegmentation`` on the main thread (reads the
settings, validates the inputs once, resolves the model, copies the voxels, drops reviewed slices),
``computeSegmentation`` anywhere (no MRML), then ``applySegmentation`` (or, for the effect,
``previewLabels`` + ``applyThroughEditor``) on the main thread, through one write rule.

The raw prediction of every processed voxel is kept in a hidden labelmap volume referenced from the
segmentation node, so that later edits of the segment are recognised as corrections (reviewed slices).
"""

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import slicer

from guidino.arguments import slice_index, slice_indices
from guidino.axes import check_axis, numpy_axes, slice_axis
from guidino.bundlefiles import read_bundle_json
from guidino.errors import BundleError, InputError
from guidino.fusion import suggest_slice
from guidino.imageio import ImageData
from guidino.jobs import SEGMENT_ARRAYS_OUT, SegmentationResult, SegmentRequest, segmentation_from_answer
from guidino.review import merge_prediction_explained, slice_mask

from .GuideOverlay import GuideOverlay
from .ReviewStore import baselineVolume, commitBaseline, recordEdits, watcher
from .SegmentSettings import SegmentSettings
from .VolumeNodes import checkSegmentation, imageDataFromVolume, sliceCentre, sliceIndices, volumeGeometry



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
    slicesProcessed: int  # slices segmented and written to (the user's, which a region model also runs on, are not)
    seconds: float
    cancelled: bool
    prediction: SegmentationResult
    fusion: Optional[dict] = None  # a region model's: slices by source, the slice suggested next (fusionReport)


def fusionReport(fused, region, written):
    """What the Train panel and the effect show of a region model's write (a ``FusedPrediction``; None: nothing to
    show): its ``report()``, the ``axis`` of its slices (anatomical name and ``arrayAxis``, from the model's
    ``region``) and ``suggested``, the slice along it to correct next (or None), judged on ``written``: the
    segment as the write leaves it (the volume's array order)."""
    if fused is None:
        return None
    return {**fused.report(), "axis": region["axis"], "arrayAxis": int(fused.axis),
            "suggested": suggest_slice(fused, written)}


ACTIVE_MODEL_ATTRIBUTE = "GuiDINO.Model"


def madeFromCorrections(model):
    """Whether ``model`` (a model object, or a checked bundle folder) was made from a few corrected slices: it has
    an evidence region (``ModelConfig.region``)."""
    if isModel(model):
        return getattr(model.config, "region", None) is not None
    return read_bundle_json(model).get("model", {}).get("region") is not None


def isModel(model):
    """Whether ``model`` is a model object (in this process) rather than a bundle folder (for the worker)."""
    return model is not None and not isinstance(model, (str, os.PathLike))


class GuiDINOSegmentLogic(GuideOverlay):
    """Runs GuiDINO models on MRML nodes.

    Bundles run in the GuiDINO worker process, and this process never imports torch for them. ``segmenter``
    (``segment_volume``'s signature) and ``bundleLoader`` (``load_bundle``'s), injectable for tests and scripts,
    run in this process instead, as does a model object given in place of a bundle.
    """

    def __init__(self, segmenter=None, bundleLoader=None):
        self.segmenter = segmenter
        self.bundleLoader = bundleLoader
        self.defaultModelPath = os.environ.get("GUIDINO_MODEL") or None
        self.guideSource = None  # hub id, folder or .pth overriding the guide a bundle names
        GuideOverlay.__init__(self)
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
            loader = self.bundleLoader
            if loader is None:
                from guidino.bundle import load_bundle as loader  # torch, in this process: scripts only
            self._cachedModel = (key, loader(bundle, guide=guide))
        return self._cachedModel[1]

    def _resolveModel(self, model):
        """A model object as it is; else the bundle folder (``model``, else ``defaultModelPath``), checked."""
        if isModel(model):
            return model
        path = model or self.defaultModelPath
        if not path:
            raise BundleError("no model bundle chosen: select a model folder in GuiDINO Segment, "
                              "or set the GUIDINO_MODEL environment variable to one")
        bundle = Path(path).expanduser().resolve()
        read_bundle_json(bundle)  # a missing or corrupt bundle is refused before any work (the worker checks the rest)
        return bundle

    def _model(self, model, guideSource=None):
        return model if isModel(model) else self.loadModel(model, guideSource)

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
        requested = np.arange(count) if settings.sliceRange is None else np.asarray(
            slice_indices(sliceIndices(settings.sliceRange), count, settings.axis), dtype=int)
        todo = requested
        if segmentId and not madeFromCorrections(model):  # the user's slices along the run's axis are not computed
            state, _ = recordEdits(outputSegmentation, segmentId, inputVolume, axis=settings.axis)
            todo = np.setdiff1d(requested, state.user_slices(settings.axis))
        # a model made from corrections runs on the user's slices too: how well it reproduces them weighs its
        # prediction against the shape between them (guidino.fusion); the write rule never writes them
        return SegmentationJob(inputVolume, outputSegmentation, segmentId, segmentName, image, model,
                               settings.guideSource or self.guideSource, settings.axis, todo, int(requested.size),
                               settings, started)

    def computeSegmentation(self, job, progressCallback=None, cancelEvent=None):
        """Any thread, no scene access: load the model (cached) and segment the job's slices."""
        settings = job.settings
        segmenter = self.segmenter
        if segmenter is None:
            from guidino.inference import segment_volume as segmenter  # torch, in this process: scripts only
        return segmenter(self._model(job.model, job.guideSource), job.image, axis=job.axis, slices=job.slices,
                              batch_size=settings.batchSize, device=settings.device, progress=progressCallback,
                              cancel=cancelEvent, guide_stride=settings.guideStride)

    def startSegmentation(self, job):
        """Start computing ``job`` in the GuiDINO worker process (a GUI's way: Slicer's threads barely run).

        Returns a handle to ``poll()`` (a JobState; its ``result`` is the SegmentationResult once finished) and
        ``cancel()``; then ``applySegmentation(job, result)`` on the main thread. The worker keeps the model
        loaded between jobs. ``job.model`` must be a bundle folder there (not an in-memory model).
        """
        if isModel(job.model):
            raise InputError("the worker process loads models from bundle folders: save the model as a bundle")
        from .WorkerClient import absoluteSource, sharedWorker

        geometry, is2d = job.image.geometry, job.image.is_2d
        request = SegmentRequest(absoluteSource(job.model), absoluteSource(job.guideSource), job.axis, geometry, is2d,
                                 [int(s) for s in job.slices], job.settings.batchSize, job.settings.device,
                                 job.settings.guideStride)

        def result(handle, answer):
            arrays = {name: handle.array(name) for name in SEGMENT_ARRAYS_OUT}
            return segmentation_from_answer(answer, arrays, geometry, is2d)

        return sharedWorker().submit(request, {"image": job.image.voxels}, convert=result)

    def applySegmentation(self, job, prediction):
        """Main thread: write the prediction into the segment by the one write rule, show the guide.

        Edits the user made while the job computed count first: their slices are the user's too.
        """
        segmentation = job.segmentation.GetSegmentation()
        if not job.segmentId or segmentation.GetSegment(job.segmentId) is None:
            job.segmentId = (segmentation.GetSegmentIdBySegmentName(job.segmentName)
                             or segmentation.AddEmptySegment("", job.segmentName))
        state, current = recordEdits(job.segmentation, job.segmentId, job.inputVolume, axis=job.axis)
        write, fused = self._writable(job, prediction, state), None
        if write.any():
            labels, fused = self._merge(current, prediction, write, state)
            with watcher.writing(job.segmentation):
                slicer.util.updateSegmentBinaryLabelmapFromArray(labels, job.segmentation, job.segmentId,
                                                                 job.inputVolume)
            current = self._segmentArray(job) > 0
        state.axis = job.axis
        commitBaseline(job.segmentation, job.segmentId, job.inputVolume, state, current)
        guide = self.showPredictionGuide(job, prediction) if job.settings.showGuide else None
        written = np.moveaxis(write, prediction.axis, 0).reshape(write.shape[prediction.axis], -1).any(axis=1)
        return ProcessResult(job.segmentId, guide, int(written.sum()), time.perf_counter() - job.started,
                             prediction.cancelled, prediction, fusionReport(fused, prediction.region, current))

    def previewLabels(self, job, prediction):
        """What Apply would leave in the segment (0/1 uint8, the volume's grid): the prediction where the write
        rule allows it, the segment's current content elsewhere. The Segment Editor effect shows and applies it.
        Returns (those labels, ``fusionReport`` of a region model's prediction or None)."""
        state, current = (recordEdits(job.segmentation, job.segmentId, job.inputVolume) if job.segmentId
                          else (None, self._segmentArray(job)))
        labels, fused = self._merge(current, prediction, self._writable(job, prediction, state), state)
        return labels, fusionReport(fused, prediction.region, labels)

    @staticmethod
    def _merge(current, prediction, writable, state=None):
        """The one write rule (``merge_prediction_explained``) for this prediction: (the segment after it, the
        ``FusedPrediction`` of a region model's prediction or None). A region model's prediction is combined with
        the shape between the user's slices along its axis (``state``: the segment's ReviewState) and keeps to
        them."""
        region = prediction.region
        if region is None:
            return merge_prediction_explained(current, prediction.labels, writable)
        userSlices = [] if state is None else state.user_slices(region["axis"])
        return merge_prediction_explained(current, prediction.labels, writable, evidence_axis=region["array_axis"],
                                          spacing=prediction.geometry.spacing[::-1],
                                          probability=prediction.probability, processed=prediction.processed,
                                          user_slices=userSlices)

    def jumpToSlice(self, volumeNode, arrayAxis, index):
        """Centre every slice view of the volume's scene on slice ``index`` along the volume's array axis
        ``arrayAxis`` (the suggested slice of ``fusionReport``). Returns the point jumped to (world RAS)."""
        point = sliceCentre(volumeNode, arrayAxis, index)
        slicer.vtkMRMLSliceNode.JumpAllSlices(volumeNode.GetScene(), *point, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        return point

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
        return self.applySegmentation(job, self.segment(job, progressCallback, cancelEvent))

    def segment(self, job, progressCallback=None, cancelEvent=None):
        """The prediction of a prepared job, waited for: in the worker process for a bundle (``startSegmentation``),
        in this process for an injected segmenter or a model object (``computeSegmentation``).

        ``progressCallback(done, total)``; ``cancelEvent`` (threading.Event) stops between slice batches.
        """
        if self.segmenter is not None or isModel(job.model):
            return self.computeSegmentation(job, progressCallback, cancelEvent)
        from .WorkerClient import waitForJob

        return waitForJob(self.startSegmentation(job), progressCallback and (
            lambda handle, state: progressCallback(state.done, state.total)), cancelEvent)

    def applyThroughEditor(self, job, prediction, apply):
        """The Segment Editor effect's Apply: ``apply()`` writes ``previewLabels`` through the editor (its masking,
        overwrite settings and undo), then what it wrote is recorded as GuiDINO's, not as the user's edits.

        Voxels the editor wrote are those the write rule allowed that now equal the prediction; every other
        change since GuiDINO last looked (the user's) still counts as an edit.
        """
        state, current = recordEdits(job.segmentation, job.segmentId, job.inputVolume)  # the user's edits so far
        writable = self._writable(job, prediction, state)
        expected = self._merge(current, prediction, writable, state)[0]
        with watcher.writing(job.segmentation):
            apply()
        recordEdits(job.segmentation, job.segmentId, job.inputVolume, axis=job.axis,
                   written=writable & ((self._segmentArray(job) > 0) == (expected > 0)))

    def _writable(self, job, prediction, state=None):
        """The write rule: a prediction may change its processed slices, minus every voxel of the user's slices
        (marked or edited, along any axis; ``state``: the segment's ReviewState, None for a new segment)."""
        geometry, shape = job.image.geometry, job.image.voxels.shape[:3]
        if prediction.labels.shape != shape or not prediction.geometry.is_close(geometry, tol=1e-4) \
                or slice_axis(geometry.direction, job.axis) != prediction.axis:
            raise InputError(f"this prediction was not computed on {job.inputVolume.GetName()} along the "
                             f"{job.axis} axis")
        writable = slice_mask(shape, prediction.axis, np.flatnonzero(prediction.processed))
        return writable if state is None else writable & ~state.protected(shape, numpy_axes(geometry.direction))

    def _segmentArray(self, job):
        if not job.segmentId:
            return np.zeros(job.image.voxels.shape[:3], np.uint8)
        return slicer.util.arrayFromSegmentBinaryLabelmap(job.segmentation, job.segmentId, job.inputVolume)

    # -- reviewed slices: the ReviewState of each segment ---------------------------------------------
    def reviewState(self, segmentation, segmentId, volume=None):
        """The segment's ReviewState, brought up to date: edits made since GuiDINO last looked become the user's.

        ``volume``: the grid to look on (default: the volume the segmentation is bound to).
        """
        return recordEdits(segmentation, segmentId, self._referenceVolume(segmentation, volume))[0]

    def reviewedSlices(self, segmentation, segmentId, axis=None, volume=None):
        """{"axis", "slices"}: the user's slices along ``axis`` (default: the axis of the latest run or mark):
        marked reviewed, or edited (painted or erased) since GuiDINO last wrote them."""
        state = self.reviewState(segmentation, segmentId, volume)
        axis = check_axis(axis) if axis else state.axis
        return {"axis": axis, "slices": state.user_slices(axis)}

    def markSliceReviewed(self, segmentation, segmentId, sliceIndex, axis="axial", reviewed=True, volume=None):
        """Mark (or unmark) one slice along ``axis`` as the user's. Unmarking gives it back to the model, its edits
        included. Marks along several axes may coexist."""
        check_axis(axis)
        volume = self._referenceVolume(segmentation, volume)
        count = slicer.util.arrayFromVolume(volume).shape[slice_axis(volumeGeometry(volume).direction, axis)]
        sliceIndex = slice_index(sliceIndex, count, axis)
        state, current = recordEdits(segmentation, segmentId, volume)
        if reviewed:
            state.add("marked", axis, [sliceIndex])
        else:
            state.remove(axis, [sliceIndex])
        state.axis = axis
        commitBaseline(segmentation, segmentId, volume, state, current)

    @staticmethod
    def baselineVolume(segmentation, segmentId):
        """The hidden labelmap holding the segment as GuiDINO last saw it (edits are measured against it), or None."""
        return baselineVolume(segmentation, segmentId)

    def _referenceVolume(self, segmentation, volume=None):
        if segmentation is None or not segmentation.IsA("vtkMRMLSegmentationNode"):
            raise InputError("no segmentation: select the segmentation holding the segment")
        volume = volume or segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        if volume is None:
            raise InputError(f"{segmentation.GetName()} is not bound to a volume yet: run GuiDINO on it (or choose its "
                             "volume) first")
        return volume
