"""What one paint stroke costs Slicer's main thread in GuiDINO's stroke observer (issue 27: a big volume).

Headless: a real MRML scene (slicer-core), a 512x512x300 segmentation GuiDINO has looked at (a review state
and a baseline), then strokes as Slicer's Segment Editor writes them (a disc on one axial slice through
``updateSegmentBinaryLabelmapFromArray`` would itself export the whole segment, so the stroke is written into
the segment's own labelmap and the segment is marked modified, as the editor's paint effect does). Reports
the median seconds the observer takes per stroke, and how many nodes it added to or removed from the scene.

    .venv/bin/python benchmarks/stroke_cost.py --strokes 10
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "GuiDINOSegment"), str(ROOT / "Testing")]

import numpy as np  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strokes", type=int, default=10)
    parser.add_argument("--shape", default="300,512,512", help="slices,rows,columns")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import slicer
    import slicer.util
    import vtk
    from slicer_harness import HeadlessSlicer

    from GuiDINOSegmentLib.ReviewStore import recordEdits, watchScene, watcher

    shape = tuple(int(v) for v in args.shape.split(","))
    app = HeadlessSlicer()
    voxels = np.zeros(shape, np.int16)
    volume = slicer.util.addVolumeFromArray(voxels, name="ct")
    segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("organ", "organ")
    watchScene(app.scene)
    recordEdits(segmentation, segmentId, volume)  # GuiDINO looks at the empty segment: a state and a baseline
    start = np.zeros(shape, np.uint8)
    start[100:200, 150:350, 150:350] = 1  # a structure the model wrote
    with watcher.writing(segmentation):
        slicer.util.updateSegmentBinaryLabelmapFromArray(start, segmentation, segmentId, volume)
    recordEdits(segmentation, segmentId, volume, written=start > 0)

    events = {"added": 0, "removed": 0}
    app.scene.AddObserver(app.scene.NodeAddedEvent, lambda *a: events.__setitem__("added", events["added"] + 1))
    app.scene.AddObserver(app.scene.NodeRemovedEvent, lambda *a: events.__setitem__("removed", events["removed"] + 1))
    labelmap = segmentation.GetSegmentation().GetSegment(segmentId).GetRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    rows, columns = np.ogrid[:shape[1], :shape[2]]
    seconds = []
    for stroke in range(args.strokes):
        k = 110 + 7 * stroke
        disc = (rows - 256) ** 2 + (columns - 256 - 10 * stroke) ** 2 < 15 ** 2
        array = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation, segmentId)
        extent = labelmap.GetExtent()
        plane = array[k - extent[4]]
        plane[disc[extent[2]:extent[3] + 1, extent[0]:extent[1] + 1]] = 0  # an erase stroke inside the structure
        labelmap.Modified()
        begin = time.perf_counter()
        segmentation.GetSegmentation().GetSegment(segmentId).Modified()  # the editor's stroke ends so
        segmentation.GetSegmentation().InvokeEvent(slicer.vtkSegmentation.SegmentModified, segmentId)
        seconds.append(time.perf_counter() - begin)
    state = recordEdits(segmentation, segmentId, volume)[0]
    report = {"shape": shape, "strokes": args.strokes, "median_seconds": round(statistics.median(seconds), 4),
              "max_seconds": round(max(seconds), 4), "nodes_added": events["added"],
              "nodes_removed": events["removed"], "edited_slices": state.edited,
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    app.close()
    del vtk


if __name__ == "__main__":
    main()
