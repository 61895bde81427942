"""GuiDINOTrainLogic: refine from corrections on MRML nodes (the only bridge from GuiDINOTrainLib to Slicer)."""

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import slicer

from GuiDINOSegmentLib import GuiDINOSegmentLogic
from GuiDINOSegmentLib.VolumeNodes import checkSegmentation, imageDataFromVolume
from GuiDINOSegmentLib.SegmentSettings import SegmentSettings
from guidino.errors import InputError
from guidino.imageio import ImageData
from guidino.jobs import RefineRequest, refine_from_answer
from guidino.bundlefiles import list_versions
from guidino.training.settings import REFINE_TIME_BUDGET, RefineSettings


def defaultModelsFolder():
    """Where refined bundles go: ``$GUIDINO_MODELS`` or the user's cache (never the extension folder)."""
    return Path(os.environ.get("GUIDINO_MODELS") or Path.home() / ".cache" / "GuiDINO" / "models")


@dataclass
class PreparedRefine:
    """What a refine needs, copied out of the scene on the main thread."""

    inputVolume: object
    segmentation: object
    segmentId: str
    image: ImageData  # a copy of the voxels: the user may edit the scene while training runs
    labels: np.ndarray
    corrections: dict  # {"axis", "slices"}
    parent: Optional[str]  # the starting bundle, None to start from nothing
    settings: RefineSettings
    resegment: bool
    started: float


@dataclass
class RefineFromCorrectionsResult:
    bundle: Optional[Path]  # the new version; None when a cancelled round was discarded
    slices: list
    steps: int
    seconds: float
    stopped: str
    voxelsChanged: int  # by the re-segmentation of the slices the user has not reviewed
    interpolated: list = field(default_factory=list)  # slices trained on with the interpolated shape as label


class GuiDINOTrainLogic:
    """Refines the model of a segmentation from the user's corrections, as new bundle versions."""

    def __init__(self, segmentLogic=None, modelsFolder=None):
        self.segmentLogic = segmentLogic or GuiDINOSegmentLogic()
        self.modelsFolder = Path(modelsFolder) if modelsFolder else defaultModelsFolder()

    def corrections(self, segmentation, segmentId, volume=None):
        """The user's slices of a segment along the latest axis (edited or marked): the corrections."""
        return self.segmentLogic.reviewedSlices(segmentation, segmentId, volume=volume)

    def refineFromCorrections(self, inputVolume, segmentation, segmentId, model=None, train="tokenbook+network",
                              lora=False, timeBudgetSeconds=REFINE_TIME_BUDGET, resegment=True, progressCallback=None,
                              cancelEvent=None, keepOnCancel=True, settings=None):
        """Fine-tune on the corrected slices, save a new version, make it active, re-segment the rest.

        ``model``: a bundle, or None for the segmentation's active model, then the default model, then
        a new model built from the guide (few-shot from one or two labelled slices).
        ``settings`` (RefineSettings) overrides ``train``/``lora``/``timeBudgetSeconds``/``keepOnCancel``.
        Training runs in the GuiDINO worker process, as a GUI's Refine does (``startRefine``); this waits for it.
        ``progressCallback(entry)`` gets the training's progress entries. A GUI uses the three phases
        (``prepareRefine`` and ``finishRefine`` on the main thread, ``startRefine`` polled between).
        """
        from GuiDINOSegmentLib.WorkerClient import waitForJob

        prepared = self.prepareRefine(inputVolume, segmentation, segmentId, model=model, train=train, lora=lora,
                                      timeBudgetSeconds=timeBudgetSeconds, resegment=resegment,
                                      keepOnCancel=keepOnCancel, settings=settings)
        result = waitForJob(self.startRefine(prepared), progressCallback and (
            lambda handle, state: handle.latest is not None and progressCallback(handle.latest)), cancelEvent)
        return self.finishRefine(prepared, result)

    def prepareRefine(self, inputVolume, segmentation, segmentId, model=None, train="tokenbook+network", lora=False,
                      timeBudgetSeconds=REFINE_TIME_BUDGET, resegment=True, keepOnCancel=True, settings=None):
        """Main thread: copy what training needs out of the scene (voxels, the user's labels, corrections)."""
        started = time.perf_counter()
        settings = settings or RefineSettings(train=train, lora=lora, time_budget=timeBudgetSeconds,
                                              keep_on_cancel=keepOnCancel)  # arguments are checked first
        image = imageDataFromVolume(inputVolume, copy=True)  # the user may edit the scene while training runs
        checkSegmentation(segmentation, inputVolume)
        corrections = self.corrections(segmentation, segmentId, volume=inputVolume)
        if not corrections["slices"]:
            raise InputError("no corrections yet: correct the segment on a few slices with the Segment Editor "
                             "(or press Mark slice reviewed on slices that are right), then Refine")
        labels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, inputVolume).copy()
        parent = model or self.segmentLogic.activeModel(segmentation) or self.segmentLogic.defaultModelPath
        return PreparedRefine(inputVolume, segmentation, segmentId, image, labels, corrections, parent, settings,
                              resegment, started)

    def runRefine(self, prepared, progressCallback=None, cancelEvent=None):
        """Any thread, no scene access: load the starting model and fine-tune it in this process (torch; scripts and
        tests that want the model object, ``guidino.jobs.RefineResult``)."""
        from guidino.training.refine import load_starting_model, refine_model

        guide = self.segmentLogic.guideSource
        starting = load_starting_model(prepared.parent, guide=guide) if prepared.parent else None
        return refine_model(prepared.image, prepared.labels, prepared.corrections["slices"], model=starting,
                            guide=guide, axis=prepared.corrections["axis"], settings=prepared.settings,
                            progress=progressCallback, cancel=cancelEvent)

    def startRefine(self, prepared):
        """Start ``runRefine`` in the GuiDINO worker process (a GUI's way; Slicer's threads barely run). The worker
        saves the new version; poll() the handle, then ``finishRefine(prepared, handle.result)``."""
        from dataclasses import asdict

        from GuiDINOSegmentLib.WorkerClient import absoluteSource, sharedWorker

        name = prepared.inputVolume.GetName()
        request = RefineRequest(absoluteSource(prepared.parent), absoluteSource(self.segmentLogic.guideSource),
                                prepared.corrections["axis"], list(prepared.corrections["slices"]),
                                asdict(prepared.settings), str(self.modelsFolder.expanduser().resolve()),
                                _safeName(name), name, prepared.image.geometry)
        return sharedWorker().submit(request, {"image": prepared.image.voxels, "labels": prepared.labels},
                                     convert=lambda handle, answer: refine_from_answer(answer))

    def newRefineRun(self, inputVolume, segmentation, segmentId, timeBudget=None, resegment=True):
        """A ``RefineRun`` on this Logic: how a GUI (the Train panel, the Segment Editor effect) follows a refinement
        or a roll back from the main thread. ``resegment=False``: it stops once the new version is active."""
        from GuiDINOTrainLib.RefineRun import RefineRun

        return RefineRun(self, inputVolume, segmentation, segmentId, timeBudget=timeBudget, resegment=resegment)

    def finishRefine(self, prepared, result):
        """Main thread: save the new version (unless the worker did), make it active, re-segment the slices the
        user has not reviewed."""
        if result.model is None and result.bundle is None:  # a cancelled round, discarded
            return RefineFromCorrectionsResult(None, result.slices, result.steps,
                                               time.perf_counter() - prepared.started, result.stopped, 0)
        name, axis = prepared.inputVolume.GetName(), prepared.corrections["axis"]
        if result.bundle is None:  # refined in this process (runRefine)
            from guidino.training.refine import save_version
        bundle = result.bundle or save_version(result, self.modelsFolder, _safeName(name), parent=prepared.parent,
                                               volume=name, axis=axis)
        self.segmentLogic.setActiveModel(prepared.segmentation, bundle)
        changed = self._resegment(prepared.inputVolume, prepared.segmentation, prepared.segmentId, bundle,
                                  axis) if prepared.resegment else 0
        return RefineFromCorrectionsResult(bundle, result.slices, result.steps, time.perf_counter() - prepared.started,
                                           result.stopped, changed, list(result.interpolated))

    def versions(self):
        """The bundles in the models folder, oldest first (path, created, parent, slices)."""
        return list_versions(self.modelsFolder)

    def rollback(self, inputVolume, segmentation, segmentId, bundle, resegment=True):
        """Make an earlier version active again and re-segment the slices the user has not reviewed."""
        bundle = Path(bundle)
        if not (bundle / "config.json").is_file():
            raise InputError(f"{bundle} is not a model version: choose one from the versions list")
        self.segmentLogic.setActiveModel(segmentation, bundle)
        return self._resegment(inputVolume, segmentation, segmentId, bundle, None) if resegment else 0

    def _resegment(self, inputVolume, segmentation, segmentId, bundle, axis):
        before = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, inputVolume).copy()
        logic = self.segmentLogic
        axis = axis or self.corrections(segmentation, segmentId, inputVolume)["axis"]
        job = logic.prepareSegmentation(inputVolume, segmentation,
                                        SegmentSettings(segmentId=segmentId, model=str(bundle), axis=axis))
        logic.applySegmentation(job, logic.segment(job))
        after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, inputVolume)
        return int(np.count_nonzero((before > 0) != (after > 0)))


def _safeName(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "volume"
