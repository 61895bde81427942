"""Whose voxels they are, kept in the scene: each GuiDINO segment's review state and the baseline edits are
measured against, brought up to date at every change of the segment. No torch.

The state (``guidino.review.ReviewState``) lives in a segment tag, so it is saved in ``.seg.nrrd`` and restored
by Slicer's undo; the segment as GuiDINO last saw it lives in a hidden labelmap volume referenced from the
segmentation node (its content hash in an attribute and in the state). One ``SegmentWatcher`` per process
observes every segmentation node of the scenes it watches, those added later (a ``.seg.nrrd`` loaded) included,
so each paint stroke is found on its own and given to the slice it was drawn on. Main thread only (MRML).
"""

import contextlib
import logging
import weakref

import numpy as np
import slicer
import vtk

from guidino.axes import numpy_axes
from guidino.errors import InputError
from guidino.review import (ReviewState, attribute_edits, changed_from_fingerprint, content_hash, content_slices,
                            fingerprint)

from .VolumeNodes import gridVolume, matchGrid, segmentMask, volumeGeometry

REVIEW_TAG = "GuiDINO.ReviewState"  # segment tag: the ReviewState (saved in .seg.nrrd, restored by undo)
BASELINE_ROLE = "GuiDINOBaseline_"  # + segment id: segmentation node -> hidden labelmap, the segment as last seen
BASELINE_HASH_ATTRIBUTE = "GuiDINO.BaselineHash"  # on that labelmap: the content hash it holds
GUIDE_INPUT_ROLE = "GuiDINOInput"  # guide volume -> the volume it was computed from


def recordEdits(segmentation, segmentId, volume, axis=None, written=None):
    """Make the edits since the baseline the user's; returns (ReviewState, current content as bool array).

    The baseline is the segment's hidden labelmap when its hash is the one the state names (or, after the
    segmentation was reloaded, another baseline labelmap of the scene holding exactly that content); otherwise
    (a file saved elsewhere, a new scene) the state's per-slice fingerprint bounds the changed voxels. A segment
    without a state (content from before GuiDINO, or a file without its state) is the user's wherever it has
    content. ``written``: voxels a GuiDINO writer just wrote (not edits). ``axis``: the axis of a new state.

    Raises:
        InputError: the segmentation has no segment ``segmentId``.
    """
    segment = segmentation.GetSegmentation().GetSegment(segmentId)
    if segment is None:
        raise InputError(f"{segmentation.GetName()} has no segment {segmentId!r}")
    current = segmentMask(segmentation, segmentId, volume)
    axes = numpy_axes(volumeGeometry(volume).direction)
    state = ReviewState.decode(segmentTag(segment, REVIEW_TAG))
    if state is None:  # nothing is known: whatever the segment holds is the user's
        state = ReviewState(axis=axis or "axial")
        state.add("edited", state.axis, content_slices(current, axes[state.axis]))
        commitBaseline(segmentation, segmentId, volume, state, current)
        watcher.watch(segmentation, volume)
        return state, current
    baseline, own = _baseline(segmentation, segmentId, state, current.shape)
    diff = current != baseline if baseline is not None else changed_from_fingerprint(current, state)
    if diff is None:  # a state from another grid: nothing is known about this one
        diff = current.copy()
    box = _bounds(diff) if own else None  # what changed since this segment's own baseline (None: unknown)
    if written is not None:
        diff &= ~written
    region = tuple(slice(lo, hi) for lo, hi in box) if box is not None else (slice(None),) * diff.ndim
    edited = diff[region].any()
    if edited:  # counted in the changed box only (the same slices: nothing changed outside it)
        for name, slices in attribute_edits(diff[region], axes, prefer=state.axis).items():
            state.add("edited", name, [index + (region[axes[name]].start or 0) for index in slices])
    if edited or not own or written is not None:
        commitBaseline(segmentation, segmentId, volume, state, current, changed=box)
    watcher.watch(segmentation, volume)
    return state, current


def _bounds(mask):
    """[(lo, hi)] per numpy axis of the True voxels ((0, 0) on each axis when there is none)."""
    bounds, block = [], mask
    for axis in range(mask.ndim):  # each axis on the block the axes before it bounded (a stroke: a thin block)
        hit = np.flatnonzero(block.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hit.size:
            return [(0, 0)] * mask.ndim
        bounds.append((int(hit[0]), int(hit[-1]) + 1))
        block = block[(slice(None),) * axis + (slice(*bounds[-1]),)]
    return bounds


def _baseline(segmentation, segmentId, state, shape):
    """(the baseline the state names as a bool array or None, whether it is this segment's own labelmap)."""
    own = baselineVolume(segmentation, segmentId)
    if _holds(own, state.baseline, shape):
        return slicer.util.arrayFromVolume(own).view(bool), True  # 0/1 as commitBaseline writes it: no copy
    scene = segmentation.GetScene()
    labelmaps = scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode") if scene is not None else None
    for n in range(labelmaps.GetNumberOfItems() if labelmaps is not None else 0):
        node = labelmaps.GetItemAsObject(n)
        if node is not own and _holds(node, state.baseline, shape):
            content = slicer.util.arrayFromVolume(node) > 0
            if content_hash(content) == state.baseline:  # the attribute names it; the content proves it
                return content, False
    return None, False


def _holds(node, baselineHash, shape):
    return node is not None and node.GetImageData() is not None and bool(baselineHash) \
        and node.GetAttribute(BASELINE_HASH_ATTRIBUTE) == baselineHash \
        and tuple(node.GetImageData().GetDimensions()[::-1]) == tuple(shape)


def commitBaseline(segmentation, segmentId, volume, state, content, changed=None):
    """Make ``content`` the segment's baseline (hidden labelmap and fingerprint) and store ``state`` in its tag.

    ``changed``: [(lo, hi)] per numpy axis bounding every voxel where ``content`` differs from the baseline the
    segment's labelmap and ``state`` hold now (a stroke): only that box is written and fingerprinted again.
    """
    node = baselineVolume(segmentation, segmentId)
    partial = changed is not None and node is not None
    state.fingerprint = fingerprint(content, state.fingerprint if partial else None, changed if partial else None)
    state.shape, state.baseline = content.shape, content_hash(content)
    if partial:
        box = tuple(slice(lo, hi) for lo, hi in changed)
        slicer.util.arrayFromVolume(node)[box] = content[box]
    else:
        if node is None:
            name = segmentation.GetSegmentation().GetSegment(segmentId).GetName()
            node = segmentation.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode",
                                                             f"{segmentation.GetName()} {name} GuiDINO baseline")
            node.SetHideFromEditors(True)
            segmentation.SetNodeReferenceID(BASELINE_ROLE + segmentId, node.GetID())
        matchGrid(node, volume, 0, np.uint8)[:] = content
    slicer.util.arrayFromVolumeModified(node)
    node.SetAttribute(BASELINE_HASH_ATTRIBUTE, state.baseline)
    with watcher.writing(segmentation):
        segmentation.GetSegmentation().GetSegment(segmentId).SetTag(REVIEW_TAG, state.encode())


def baselineVolume(segmentation, segmentId):
    """The hidden labelmap holding the segment as GuiDINO last saw it (edits are measured against it), or None."""
    return segmentation.GetNodeReference(BASELINE_ROLE + segmentId)


def segmentTag(segment, name):
    """The text of a segment's tag ``name`` ("" when it has none)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else ""


class SegmentWatcher:
    """Brings the review state of GuiDINO's segments up to date after every change of their segmentation.

    One observer per segmentation node in the process (the panels, the effect and the Train module share it),
    so that each paint stroke is found on its own and given to the slice it was drawn on. A watched scene has
    every segmentation node observed, those added later too (a ``.seg.nrrd`` loaded after GuiDINO first
    looked): strokes made there before any GuiDINO run are found one by one as well, not later all together
    (which cannot tell a one-row stroke on a coronal slice from one on an axial slice). Changes GuiDINO makes
    itself (``writing``) are not edits. Mid-undo states (a segment momentarily without a labelmap) are skipped.
    Segments without a review state (GuiDINO never looked at them) cost one tag lookup per change.
    """

    def __init__(self):
        self._observed = {}  # address of a segmentation node -> (the node, observer tag)
        self._volumes = {}  # address of a segmentation node -> weak reference to the volume its grid comes from
        self._scenes = {}  # address of an MRML scene -> (weak reference to it, its observer tags)
        self._writing = set()

    def watch(self, segmentationNode, volumeNode=None):
        """Observe ``segmentationNode``; its edits are measured on ``volumeNode``'s grid (the latest one given;
        None: the volume it is bound to, or one of its scene with its reference geometry, when a change comes).

        The node is observed, not its ``vtkSegmentation``: reading a file into the node replaces that object
        (``vtkMRMLSegmentationStorageNode::ReadData``), and the node forwards every segment's changes. The node
        is held until it leaves its scene (a weak reference would die with the Python wrapper of a node only
        the scene holds, and a freed node's address may be reused by the next).
        """
        key = _address(segmentationNode)
        if volumeNode is not None:
            self._volumes[key] = weakref.ref(volumeNode)
        if segmentationNode.GetScene() is not None:
            self.watchScene(segmentationNode.GetScene())
        if key in self._observed:
            return

        def onSegmentModified(segmentationNode, event, segmentId=None):
            if key in self._writing:
                return
            volume = self._volumes[key]() if key in self._volumes else None
            if volume is None or volume.GetScene() is not segmentationNode.GetScene():
                volume = gridVolume(segmentationNode)
            segmentation = segmentationNode.GetSegmentation()
            # no id when the node was being modified as a whole (MRML then sends the event once, without data)
            ids = [segmentId] if segmentId else list(segmentation.GetSegmentIDs())
            for segmentId in ids:
                segment = segmentation.GetSegment(segmentId)
                if segment is None or volume is None or not segmentTag(segment, REVIEW_TAG):
                    continue
                try:
                    recordEdits(segmentationNode, segmentId, volume)
                except RuntimeError:  # "Export of segment failed": a segment being restored by undo, seen midway
                    pass
                except Exception:
                    logging.exception("GuiDINO: could not record an edit of %s", segmentationNode.GetName())

        onSegmentModified.CallDataType = vtk.VTK_STRING
        self._observed[key] = (segmentationNode, segmentationNode.AddObserver(
            slicer.vtkSegmentation.SegmentModified, onSegmentModified))

    def forget(self, segmentationNode):
        """Stop observing a segmentation node (it leaves its scene)."""
        key = _address(segmentationNode)
        node, tag = self._observed.pop(key, (None, None))
        if node is not None:
            node.RemoveObserver(tag)
        self._volumes.pop(key, None)

    def watchScene(self, scene):
        """Observe every segmentation node of ``scene``, now and added later; remove GuiDINO's hidden nodes with
        what they belong to: a volume's guide overlay when the volume is removed, a segmentation's baselines when
        the segmentation is (else memory grows run after run)."""
        key = _address(scene)
        known = self._scenes.get(key)
        if known is not None and known[0]() is scene:
            return  # (an address alone is not enough: a new scene may reuse a deleted one's)

        def onNodeAboutToBeRemoved(caller, event, node=None):
            if node is None:
                return
            if node.IsA("vtkMRMLSegmentationNode"):
                self.forget(node)
                doomed = [node.GetNthNodeReference(role, 0) for role in _roles(node) if role.startswith(BASELINE_ROLE)]
            elif node.IsA("vtkMRMLScalarVolumeNode"):
                volumes = caller.GetNodesByClass("vtkMRMLScalarVolumeNode")  # of this scene, not slicer.mrmlScene
                doomed = [volumes.GetItemAsObject(n) for n in range(volumes.GetNumberOfItems())
                          if volumes.GetItemAsObject(n).GetNodeReferenceID(GUIDE_INPUT_ROLE) == node.GetID()]
            else:
                return
            for other in doomed:
                if other is not None and other.GetScene() is caller:
                    caller.RemoveNode(other)

        def onNodeAdded(caller, event, node=None):
            if node is not None and node.IsA("vtkMRMLSegmentationNode"):
                self.watch(node)

        onNodeAboutToBeRemoved.CallDataType = vtk.VTK_OBJECT
        onNodeAdded.CallDataType = vtk.VTK_OBJECT
        self._scenes[key] = (weakref.ref(scene), (scene.AddObserver(scene.NodeAboutToBeRemovedEvent,
                                                                    onNodeAboutToBeRemoved),
                                                  scene.AddObserver(scene.NodeAddedEvent, onNodeAdded)))
        segmentations = scene.GetNodesByClass("vtkMRMLSegmentationNode")
        for n in range(segmentations.GetNumberOfItems()):
            self.watch(segmentations.GetItemAsObject(n))

    @contextlib.contextmanager
    def writing(self, segmentationNode):
        """Changes made to ``segmentationNode`` inside this block are GuiDINO's own, not the user's edits."""
        key = _address(segmentationNode)
        self._writing.add(key)
        try:
            yield
        finally:
            self._writing.discard(key)


def _roles(node):
    return [node.GetNthNodeReferenceRole(n) for n in range(node.GetNumberOfNodeReferenceRoles())]


def _address(vtkObject):
    """A stable key of the C++ object (Python wrappers may be recreated)."""
    return vtkObject.GetAddressAsString(vtkObject.GetClassName())


watcher = SegmentWatcher()


def watchScene(scene):
    """Find every edit of GuiDINO's segments in ``scene`` as it is made (the module calls it when Slicer starts)."""
    watcher.watchScene(scene)
