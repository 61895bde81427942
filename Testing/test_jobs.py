"""The typed job protocol (guidino.jobs): what Slicer sends the worker and what comes back, through JSON."""

import json
import subprocess
import sys

import numpy as np

from guidino.geometry import Geometry
from guidino.jobs import (RefineRequest, SegmentationResult, SegmentRequest, refine_answer, refine_from_answer,
                          segmentation_answer, segmentation_from_answer)

OBLIQUE = Geometry((0.7, 1.3, 2.5), (12.5, -40.25, 77.0), (0.92, -0.39, 0.0, 0.39, 0.92, 0.0, 0.0, 0.0, 1.0))


def test_requests_survive_the_json_line_exactly():
    segment = SegmentRequest("/models/v1", None, "coronal", OBLIQUE, False, [np.int64(3), 4], "auto", "cpu", 2)
    message = json.loads(json.dumps(segment.to_message()))
    again = SegmentRequest.from_message(message)
    assert again == SegmentRequest("/models/v1", None, "coronal", OBLIQUE, False, [3, 4], "auto", "cpu", 2)
    assert again.geometry.is_close(OBLIQUE, tol=0)
    refine = RefineRequest(None, "/guides/vits16", "axial", [2, 9], {"steps": 60}, "/models", "brain1", "brain1",
                           OBLIQUE)
    assert RefineRequest.from_message(json.loads(json.dumps(refine.to_message()))) == refine


def test_results_are_rebuilt_from_the_answer_and_its_arrays():
    labels = np.zeros((3, 4, 5), np.uint8)
    result = SegmentationResult(labels, labels.astype(np.float32), None, OBLIQUE, False, 1,
                                np.array([True, False, True, True]), 0.5, True, 3, {"array_axis": 0})
    answer = json.loads(json.dumps(segmentation_answer(result)))
    arrays = {"labels": result.labels, "probability": result.probability, "guide": None, "processed": result.processed}
    rebuilt = segmentation_from_answer(answer, arrays, OBLIQUE, False)
    assert (rebuilt.axis, rebuilt.cancelled, rebuilt.guide_stride, rebuilt.region, rebuilt.guide) == \
        (1, True, 3, {"array_axis": 0}, None)
    from guidino.jobs import RefineResult

    refined = RefineResult(object(), [2, 9], 60, 20.1, "time budget", interpolated=[3, 8])
    back = refine_from_answer(json.loads(json.dumps(refine_answer(refined, "/models/brain1-v2"))))
    assert back.model is None and str(back.bundle) == "/models/brain1-v2" and back.steps == 60
    assert back.interpolated == [3, 8]


def test_the_protocol_imports_no_torch():
    code = "import sys, guidino.jobs; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
