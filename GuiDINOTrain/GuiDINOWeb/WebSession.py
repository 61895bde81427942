"""The web page's decisions on the MRML scene: open a volume of the served folder, Run a model, Refine from
corrections, roll back, Cancel, the guide overlay, save and reload. No trame, no torch.

The same Logics as the Slicer modules do the work (``GuiDINOSegmentLogic``, ``GuiDINOTrainLogic`` and its
``RefineRun``), in the same worker process, through the same write rule: the page adds no second implementation.
Every method runs on the server's event loop thread (MRML); a job is followed by the one ``JobPoller``.
"""

import dataclasses
import hashlib
import logging
import traceback
from pathlib import Path

import slicer

from guidino.axes import AXES
from guidino.bundlefiles import untrained_guide
from guidino.errors import InputError
from guidino.training.settings import RefineSettings
from GuiDINOSegmentLib import WidgetHelpers as helpers
from GuiDINOSegmentLib.JobPoller import JobPoller, statedProgress, workerJobProgress
from GuiDINOSegmentLib.SegmentSettings import DEFAULT_SEGMENT_NAME, SegmentSettings
from GuiDINOWeb.AsyncTimer import AsyncTimer
from GuiDINOWeb.DataFolder import findVolume, listVolumes, newSegmentationPath, savedSegmentations, writeNewFile

UNTRAINED_GUIDE_LABEL = "UNTRAINED GUIDE: the guide's weights are random; results are not GuiDINO's accuracy"


class Busy(InputError):
    """A job is running: the page offers Cancel instead."""


class WebSession:
    """One scene's volume, segmentation, jobs and status, for every page the server shows (they share it).

    Args:
        dataFolder: the folder served (its volumes are listed; saves go there under new names).
        segmentLogic, trainLogic: the GuiDINO Logics (the worker process does the computing).
        refineSettings: a refine round's settings (default: ``RefineSettings()``: the 20 s clock).
        segmentSettings: Run's settings (device, batch size; default ``SegmentSettings()``); its segment and model
            are the page's.
        newTimer: makes the timer each job's poller runs on (default: ``AsyncTimer`` on the running event loop).
        changed: ``changed(progressOnly=False)``, called after anything the page shows has changed (status, lists;
            ``progressOnly``: a running job's progress alone, every poll).
    """

    def __init__(self, dataFolder, segmentLogic, trainLogic, refineSettings=None, segmentSettings=None,
                 newTimer=AsyncTimer, changed=None):
        self.dataFolder = Path(dataFolder)
        self.segmentLogic, self.trainLogic = segmentLogic, trainLogic
        self.refineSettings = refineSettings or RefineSettings()
        self.segmentSettings = segmentSettings or SegmentSettings()
        self.newTimer = newTimer
        self.changed = changed or (lambda progressOnly=False: None)
        self.entry = self.volume = self.segmentation = None
        self.segmentId = ""
        self.task = None  # what runs: "run", "refine" or "rollback"; None when idle
        self.progress = (0, "")
        self.status = ""
        self.error = ""
        self.fusion = None  # the latest re-segmentation's fusionReport (sources, the slice suggested next)
        self.showGuide = True
        self._poller = None
        self._savedHash = None

    # -- the folder's volumes -------------------------------------------------------------------
    def volumeNames(self):
        """The names of the served folder's volumes, for the page's list."""
        return [entry.name for entry in listVolumes(self.dataFolder)]

    def openVolume(self, name, discard=False):
        """Read volume ``name`` of the folder into the scene with a new segmentation of one empty segment; what the
        scene held before leaves it (once saved, or with ``discard``). Returns (volume node, segmentation node).

        Raises:
            Busy: a job runs.
            InputError: no such volume; it cannot be read; the current segmentation has changes not saved
                (unless ``discard``).
        """
        self._refuseWhileBusy("open another volume")
        if not discard and self.unsavedChanges():
            raise InputError("the segmentation has changes that are not saved: Save them first, or open the volume "
                             "again with Discard changes")
        entry = findVolume(self.dataFolder, name)
        # the scene starts again (views and editor settings stay): the editor's effects then build their view
        # pipelines anew, on the views that exist now
        self.entry = self.volume = self.segmentation = None
        self.segmentId = ""
        slicer.mrmlScene.Clear()
        volume = readVolume(slicer.mrmlScene, entry)
        self.entry, self.volume = entry, volume
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume.GetName()} segmentation")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        self._setSegmentation(segmentation, segmentation.GetSegmentation().AddEmptySegment("", DEFAULT_SEGMENT_NAME))
        self.fusion, self.error = None, ""
        self.status = f"Opened {entry.name}: paint the structure on a few slices, then Refine (or Run a model)."
        return volume, segmentation

    def selectSegment(self, segmentId):
        """Make ``segmentId`` the segment Run, Refine and the corrections list act on; its edits are followed."""
        if self.segmentation is None or not segmentId:
            return
        if self.segmentation.GetSegmentation().GetSegment(segmentId) is None:
            raise InputError(f"{self.segmentation.GetName()} has no segment {segmentId!r}")
        self.segmentId = segmentId
        self.segmentLogic.reviewState(self.segmentation, segmentId, self.volume)  # its strokes are followed from now

    def _setSegmentation(self, segmentation, segmentId):
        self.segmentation = segmentation
        self.selectSegment(segmentId)
        self._savedHash = self._contentHash()

    # -- jobs ---------------------------------------------------------------------------------------
    def run(self, model=None):
        """Segment the slices not reviewed with ``model`` (a bundle folder; None: the segmentation's active model,
        then the server's default) in the worker process; the result is written when it ends.

        Raises:
            Busy, InputError, BundleError: nothing is started (no volume, no model, a bad bundle).
        """
        self._refuseWhileBusy("run")
        volume, segmentation = self._current()
        if not (model or self.segmentLogic.activeModel(segmentation) or self.segmentLogic.defaultModelPath):
            raise InputError("no model yet: paint the structure on a few slices and press Refine from corrections "
                             "to make one, or give a model bundle folder")
        job = self.segmentLogic.prepareSegmentation(volume, segmentation, dataclasses.replace(
            self.segmentSettings, segmentId=self.segmentId, model=model or None))
        self._follow("run", self.segmentLogic.startSegmentation(job), workerJobProgress,
                     lambda state: self._segmented(job, state))

    def refine(self):
        """Refine the active model (or make one from nothing) on the corrected slices, save it as a new version,
        make it active, re-segment the slices not reviewed and write them.

        Raises:
            Busy, InputError: nothing is started (no corrections yet).
        """
        self._refuseWhileBusy("refine")
        volume, segmentation = self._current()
        settings = dataclasses.replace(self.refineSettings)
        prepared = self.trainLogic.prepareRefine(volume, segmentation, self.segmentId, settings=settings)
        run = self.trainLogic.newRefineRun(volume, segmentation, self.segmentId, settings.time_budget).train(prepared)
        self._follow("refine", run, statedProgress, lambda state: self._refined(run, state))

    def rollback(self, bundle):
        """Make an earlier version active again and re-segment the slices not reviewed with it."""
        self._refuseWhileBusy("roll back")
        volume, segmentation = self._current()
        self.trainLogic.rollback(volume, segmentation, self.segmentId, bundle, resegment=False)
        run = self.trainLogic.newRefineRun(volume, segmentation, self.segmentId).resegment(
            bundle, f"Rolled back: {Path(bundle).name} is the active model.")
        self._follow("rollback", run, statedProgress, lambda state: self._refined(run, state))

    def cancel(self):
        """Ask the running job to stop; what it has done is kept (slices segmented, the model trained so far)."""
        if self._poller is not None:
            self._poller.cancel()
            self.progress = (self.progress[0], "Cancelling...")
            self.changed()

    def shutdown(self):
        """The server is stopping: stop following the job (the worker process is ended by its owner)."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller.stop()
            self._poller = None

    def _follow(self, task, job, describe, finished):
        self.task, self.error, self.status = task, "", ""
        self.progress = (0, "Starting...")

        def show(percent, text):
            self.progress = (percent, text)
            self.changed(progressOnly=True)

        def ended(state):
            self.task, self._poller = None, None
            try:
                finished(state)
            except Exception as error:  # shown in the page, the server goes on
                self._failed(error, traceback.format_exc())
            self.changed()

        self._poller = JobPoller(job, describe, show, ended, self.newTimer())
        self.changed()
        self._poller.start()

    def _segmented(self, job, state):
        self.progress = workerJobProgress(state)
        if state.error is not None:
            return self._failed(state.error, state.errorDetails)
        if job.inputVolume.GetScene() is None or job.segmentation.GetScene() is None:
            self.status = "Nothing written: the volume or the segmentation was closed while GuiDINO ran."
            return
        result = self.segmentLogic.applySegmentation(job, state.result)
        self.segmentId = result.segmentId
        self.fusion = result.fusion
        self.status = (f"{helpers.slicesText(result.slicesProcessed)} segmented in "
                       f"{helpers.formatDuration(result.seconds)}."
                       + (" Cancelled: the slices done were kept." if result.cancelled else ""))
        self.setGuideShown(self.showGuide)

    def _refined(self, run, state):
        self.progress = (state.percent, state.text)
        self.fusion = run.fusion or self.fusion
        if state.error is not None:
            return self._failed(state.error, state.errorDetails)
        self.status = state.message
        self.setGuideShown(self.showGuide)

    def _failed(self, error, details=""):
        logging.error("GuiDINO web: %s\n%s", error, details)
        self.error = str(error)

    def _refuseWhileBusy(self, what):
        if self.task is not None:
            raise Busy(f"cannot {what} while the {self.task} job runs: wait for it, or Cancel it")

    def _current(self):
        if self.volume is None or self.volume.GetScene() is None:
            raise InputError("no volume open: choose one of the data folder's volumes first")
        return self.volume, self.segmentation

    # -- what the page shows ------------------------------------------------------------------------
    def corrections(self):
        """{"axis", "slices"}: the user's slices of the segment (painted, erased or marked): Refine's corrections."""
        if self.segmentation is None or not self.segmentId:
            return {"axis": "axial", "slices": []}
        return self.trainLogic.corrections(self.segmentation, self.segmentId, volume=self.volume)

    def correctionsText(self):
        """The user's slices as the page lists them: those along Refine's axis first ("Corrected axial slices: 12,
        15"), then those along the other axes (a stroke on another view protects its slice there too)."""
        if self.segmentation is None or not self.segmentId:
            return "Corrected slices: none yet"
        state = self.segmentLogic.reviewState(self.segmentation, self.segmentId, self.volume)
        others = [f"{axis}: {', '.join(map(str, state.user_slices(axis)))}" for axis in AXES
                  if axis != state.axis and state.user_slices(axis)]
        return (f"Corrected {state.axis} slices: {', '.join(map(str, state.user_slices(state.axis))) or 'none yet'}"
                + (f" (also {'; '.join(others)})" if others else ""))

    def suggestedSlice(self):
        """The slice to correct next (its index along the array axis of ``fusion``), or None."""
        return helpers.suggestedSlice(self.fusion)

    def goToSuggestedSlice(self):
        """Centre the slice views on the suggested slice; returns its index, or None when there is none."""
        index = self.suggestedSlice()
        if index is not None and self.volume is not None:
            self.segmentLogic.jumpToSlice(self.volume, self.fusion["arrayAxis"], index)
        return index

    def setGuideShown(self, show, opacity=None):
        """Show (or hide) the volume's guide overlay in the slice views, at ``opacity`` (0..1) when given."""
        self.showGuide = bool(show)
        if opacity is not None:
            self.segmentLogic.setGuideOpacity(opacity)
        guide = self.segmentLogic.guideVolume(self.volume) if self.volume is not None else None
        if guide is not None:
            self.segmentLogic.showGuideVolume(guide, self.showGuide)
        return guide is not None

    def activeModel(self):
        """The bundle Run uses when none is given (a path string), or None."""
        return self.segmentLogic.activeModel(self.segmentation) or self.segmentLogic.defaultModelPath

    def untrainedGuide(self):
        """Whether the model Run and Refine use (or the guide a new model starts from) has random guide weights."""
        return untrained_guide(self.activeModel(), self.segmentLogic.guideSource)

    def versions(self):
        """The model versions Refine saved (path, created, parent, slices), oldest first."""
        return self.trainLogic.versions()

    # -- files ----------------------------------------------------------------------------------------
    def save(self):
        """Write the segmentation (its review state in it) to a new ``.seg.nrrd`` in the served folder; nothing
        there is written over. Returns the path."""
        volume, segmentation = self._current()
        path = writeNewFile(newSegmentationPath(self.dataFolder, self.entry),
                            lambda temporary: writeSegmentation(segmentation, temporary))
        self._savedHash = self._contentHash()
        self.status = f"Saved {path.name} in {path.parent}."
        return path

    def savedFiles(self):
        """The segmentations saved for the open volume, oldest first (names)."""
        return [] if self.entry is None else [p.name for p in savedSegmentations(self.dataFolder, self.entry)]

    def reload(self, name, discard=False):
        """Replace the segmentation with saved file ``name`` (one of ``savedFiles``), review state included.

        Raises:
            Busy, InputError: a job runs; no such file; it cannot be read; changes not saved (unless ``discard``).
        """
        self._refuseWhileBusy("reload")
        volume, old = self._current()
        if name not in self.savedFiles():
            raise InputError(f"{name!r} is not a saved segmentation of {self.entry.name}: choose one from the list")
        if not discard and self.unsavedChanges():
            raise InputError("the segmentation has changes that are not saved: Save them first, or reload with "
                             "Discard changes")
        segmentation = readSegmentation(slicer.mrmlScene, self.dataFolder / name)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        old.GetScene().RemoveNode(old)
        ids = list(segmentation.GetSegmentation().GetSegmentIDs())
        if not ids:
            ids = [segmentation.GetSegmentation().AddEmptySegment("", DEFAULT_SEGMENT_NAME)]
        self._setSegmentation(segmentation, ids[0])
        self.status = f"Reloaded {name}."
        return segmentation

    def unsavedChanges(self):
        """Whether the segmentation differs from what was opened, saved or reloaded last."""
        return self.segmentation is not None and self._contentHash() != self._savedHash

    def _contentHash(self):
        if self.segmentation is None or self.segmentation.GetScene() is None:
            return None
        digest = hashlib.sha1()
        segments = self.segmentation.GetSegmentation()
        for segmentId in segments.GetSegmentIDs():
            digest.update(segmentId.encode())
            labels = slicer.util.arrayFromSegmentBinaryLabelmap(self.segmentation, segmentId, self.volume)
            digest.update(labels.tobytes())
        return digest.hexdigest()


def readVolume(scene, entry):
    """Read a VolumeEntry (a file, or a DICOM series' files) into a new scalar volume node through a volume
    archetype storage node, as Slicer does.

    Raises:
        InputError: the files are not a volume this reader knows, or are damaged.
    """
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(entry.files[0])
    if len(entry.files) > 1:
        storage.ResetFileNameList()
        for name in entry.files:
            storage.AddFileName(name)
        storage.SetSingleFile(False)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(entry.stem))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node) or node.GetImageData() is None:
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InputError(f"{entry.name} could not be read as a volume (the file is damaged or is not an image): "
                         "choose another volume")
    node.CreateDefaultDisplayNodes()
    return node


def readSegmentation(scene, path):
    """Read a ``.seg.nrrd`` into a new segmentation node. Raises InputError when it cannot be read."""
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", Path(path).name.split(".")[0])
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InputError(f"{Path(path).name} could not be read as a segmentation: choose another file")
    node.CreateDefaultDisplayNodes()
    return node


def writeSegmentation(segmentation, path):
    """Write ``segmentation`` to ``path`` (``.seg.nrrd``, segment tags included: the review state)."""
    scene = segmentation.GetScene()
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.WriteData(segmentation):
            raise InputError(f"could not write {path}")
    finally:
        scene.RemoveNode(storage)
