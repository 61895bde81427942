"""Small helpers shared by the GuiDINO Segment panel and its Segment Editor effect.

The GUI's decisions (the run's settings, which slices, which slice index a view shows, how far a
background job has got) are plain functions here, so they are tested without the Slicer
application. Functions whose name ends in ``Node`` take MRML nodes and
import ``slicer``/``vtk`` when called; the rest need numpy only. Nothing here imports qt.
"""

import math
import numpy as np

from guidino.axes import AXES, AXIS_NORMAL, check_axis  # noqa: F401  (AXES: the widgets read it from here)

from .SegmentSettings import DEFAULT_SEGMENT_NAME, SegmentSettings

SLICE_MODES = ("all", "current", "range")  # module panel: which slices Run segments
SCOPES = ("current", "visible", "all")  # Segment Editor effect: which slices Initialize/Update predicts
DEVICES = ("auto", "cpu", "gpu")
REFINE_UNAVAILABLE_TOOLTIP = "Available with the GuiDINO Train module"
SUGGESTED_SLICE_TOOLTIP = ("Show the slice where GuiDINO is least sure of the result (the model unsure, or it and the "
                           "interpolation between your slices disagreeing): correcting it there teaches it most.")


# -- parameters -> Logic arguments -----------------------------------------------------------
def optionalText(value):
    """A path or text setting as the Logic wants it: None when empty ("" or the "." of an empty Path)."""
    text = str(value if value is not None else "").strip()
    return None if text in ("", ".") else text


def sliceRangeFor(mode, first=0, last=0, current=None):
    """The Logic's ``sliceRange`` for the panel's slice mode: None (all), an index, or (first, last)."""
    if mode == "all":
        return None
    if mode == "current":
        if current is None:
            raise ValueError("The slice view is outside the input volume: move it onto the volume, "
                             "or choose another slice range.")
        return int(current)
    if mode == "range":
        first, last = sorted((int(first), int(last)))
        if first < 0:
            raise ValueError(f"Slice {first} does not exist: slice indices start at 0.")
        return first, last
    raise ValueError(f"Unknown slice mode {mode!r}: choose one of {', '.join(SLICE_MODES)}.")


def panelSettings(parameters, currentSlice=None):
    """The SegmentSettings of one Run of the GuiDINO Segment panel, from its parameter node.

    ``currentSlice``: the index the slice view shows along the axis (for the "current" slice mode).
    """
    return SegmentSettings.fromParameters(
        parameters, segmentName=parameters.segmentName or DEFAULT_SEGMENT_NAME,
        model=optionalText(parameters.modelPath), guideSource=optionalText(parameters.guideSource),
        sliceRange=sliceRangeFor(parameters.sliceMode, parameters.sliceFirst, parameters.sliceLast, currentSlice))


def sliceRangeForScope(scope, current=None, visible=None):
    """The Logic's ``sliceRange`` for the effect's scope (current slice, visible range, all slices)."""
    if scope == "visible":
        if visible is None:
            raise ValueError("No slice view shows the source volume along this axis: "
                             "bring it into view, or choose another scope.")
        return tuple(int(i) for i in visible)
    if scope in ("all", "current"):
        return sliceRangeFor(scope, current=current)
    raise ValueError(f"Unknown scope {scope!r}: choose one of {', '.join(SCOPES)}.")


# -- slice geometry (pure) -------------------------------------------------------------------
def slicePosition(rasToIjk, ras, numpyAxis):
    """Continuous voxel coordinate of RAS point ``ras`` along ``numpyAxis`` (voxel centres are integers)."""
    ijk = np.asarray(rasToIjk, dtype=float) @ np.append(np.asarray(ras, dtype=float)[:3], 1.0)
    return float(ijk[2 - numpyAxis])


def sliceIndexFromRas(rasToIjk, ras, numpyAxis, count):
    """Index of the slice (along ``numpyAxis``) that contains RAS point ``ras``; None outside the volume."""
    index = int(math.floor(slicePosition(rasToIjk, ras, numpyAxis) + 0.5))
    return index if 0 <= index < count else None


def sliceSpanFromRas(rasToIjk, points, numpyAxis, count):
    """Inclusive (first, last) slice range spanned by RAS ``points``, clipped to the volume; None if outside."""
    positions = [slicePosition(rasToIjk, p, numpyAxis) for p in points]
    if not positions:
        return None
    first = max(0, int(math.floor(min(positions) + 0.5)))
    last = min(count - 1, int(math.floor(max(positions) + 0.5)))
    return (first, last) if first <= last else None


def sliceViewCenter(sliceToRas):
    """RAS point at the centre of a slice view (translation of its SliceToRAS matrix)."""
    return np.asarray(sliceToRas, dtype=float)[:3, 3].copy()


def sliceViewNormal(sliceToRas):
    """Unit normal of a slice view (third column of its SliceToRAS matrix)."""
    normal = np.asarray(sliceToRas, dtype=float)[:3, 2]
    return normal / np.linalg.norm(normal)


def sliceViewCorners(xyToRas, dimensions):
    """RAS corners of what a slice view shows: its XYToRAS applied to the corners of its viewport."""
    width, height = float(dimensions[0]), float(dimensions[1])
    matrix = np.asarray(xyToRas, dtype=float)
    return [(matrix @ np.array([x, y, 0.0, 1.0]))[:3] for x in (0.0, width) for y in (0.0, height)]


def viewLookingAlong(axis, normals):
    """Index of the slice view whose normal is closest to ``axis``'s normal (None without views)."""
    if not len(normals):
        return None
    component = AXIS_NORMAL[check_axis(axis)]
    scores = [abs(n[component]) / np.linalg.norm(n[:3]) for n in (np.asarray(n, dtype=float) for n in normals)]
    return int(np.argmax(scores))


# -- progress (pure) -------------------------------------------------------------------------
def formatDuration(seconds):
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def slicesText(count):
    return f"{count} slice" if count == 1 else f"{count} slices"


def progressReport(done, total, elapsed):
    """(percent, text) for a progress bar: slices done and an estimate of the time left."""
    if not total:
        return 0, "Loading the model..."
    done = min(int(done), int(total))
    text = f"{done} / {total} slices"
    if 0 < done < total:
        text += f", about {formatDuration(elapsed / done * (total - done))} left"
    return int(100 * done / total), text


# -- the Logic, and the Train module's refine (registered at startup) ---------------------------
def segmentLogicClass():
    """The GuiDINOSegmentLogic class (it needs the installed packages: check the dependencies first)."""
    from GuiDINOSegmentLib.SegmentLogic import GuiDINOSegmentLogic

    return GuiDINOSegmentLogic


# -- slice views (MRML slice nodes; import slicer when called) ------------------------------------
def _matrixArray(matrix):
    """A vtkMatrix4x4 as a 4x4 numpy array."""
    import slicer

    return slicer.util.arrayFromVTKMatrix(matrix)


def sliceIndexAtViewNode(volumeNode, sliceNode, axis):
    """Index along ``axis`` of the volume slice at the centre of a slice view (None outside the volume)."""
    from GuiDINOSegmentLib.VolumeNodes import numpyAxisNode, sliceCountNode, worldRasToIjkNode

    centre = sliceViewCenter(_matrixArray(sliceNode.GetSliceToRAS()))
    return sliceIndexFromRas(worldRasToIjkNode(volumeNode), centre, numpyAxisNode(volumeNode, axis),
                             sliceCountNode(volumeNode, axis))


def visibleSliceRangeNode(volumeNode, sliceNodes, axis):
    """(first, last) along ``axis`` of the volume slices the given slice views show, or None."""
    from GuiDINOSegmentLib.VolumeNodes import numpyAxisNode, sliceCountNode, worldRasToIjkNode

    corners = [c for node in sliceNodes
               for c in sliceViewCorners(_matrixArray(node.GetXYToRAS()), node.GetDimensions())]
    return sliceSpanFromRas(worldRasToIjkNode(volumeNode), corners, numpyAxisNode(volumeNode, axis),
                            sliceCountNode(volumeNode, axis))


def viewLookingAlongNode(sliceNodes, axis):
    """The slice node among ``sliceNodes`` that looks along ``axis`` best (None when there is none)."""
    index = viewLookingAlong(axis, [sliceViewNormal(_matrixArray(n.GetSliceToRAS())) for n in sliceNodes])
    return None if index is None else sliceNodes[index]


SOURCE_NAMES = {"user": "yours", "model and interpolation": "from the model and the shape between your slices",
                "interpolation": "from the shape between your slices", "model": "from the model alone",
                "none": "not segmented"}


def suggestedSlice(fusion):
    """The slice a ``fusionReport`` suggests correcting next, or None (no report, or nothing uncertain)."""
    return None if not fusion else fusion.get("suggested")


def fusionSummary(fusion):
    """One line on where a region model's result came from, slice by slice, and the slice suggested next."""
    counts = fusion.get("slices_by_source", {})
    parts = [f"{count} {SOURCE_NAMES.get(name, name)}" for name, count in counts.items() if name != "none"]
    text = "Slices: " + ("; ".join(parts) if parts else "none") + "."
    index = suggestedSlice(fusion)
    if index is not None:
        text += f" Suggested next: {fusion['axis']} slice {index}."
    return text


def formatSlices(indices):
    """'0-3, 7, 9-10' for [0, 1, 2, 3, 7, 9, 10]; 'none' when empty."""
    indices = sorted({int(i) for i in indices})
    if not indices:
        return "none"
    runs, start = [], indices[0]
    for previous, index in zip(indices, indices[1:] + [None]):
        if index is None or index != previous + 1:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
            start = index
    return ", ".join(runs)


def shownSliceNodes():
    """Slice nodes of the slice views on screen; every slice node of the scene without a main window."""
    import slicer

    layoutManager = slicer.app.layoutManager()
    nodes = []
    if layoutManager is not None:
        for name in layoutManager.sliceViewNames():
            widget = layoutManager.sliceWidget(name)
            if widget is not None and widget.isVisible():
                nodes.append(widget.mrmlSliceNode())
    return nodes or list(slicer.util.getNodesByClass("vtkMRMLSliceNode"))
