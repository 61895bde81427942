"""The job protocol between a GUI (3D Slicer's modules) and the GuiDINO worker process, typed, in one place.

A request is a dataclass that becomes one JSON line (``to_message``) with its arrays as ``.npy`` files in the
job's folder; the worker reads it back (``from_message``), runs it and answers with a result that is rebuilt
here too (``segmentation_from_answer``, ``refine_from_answer``). ``SegmentationResult`` and ``RefineResult``
are the engine's own results, so the same objects come from an in-process run and from the worker. No torch:
Slicer's process imports this, never the engine's models.
"""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np

from .geometry import Geometry

SEGMENT_ARRAYS_OUT = ("labels", "probability", "guide", "processed")  # .npy files a segment job writes


@dataclass
class SegmentationResult:
    """What a segmentation run gives: per-voxel labels, probability and guide on the input grid."""

    labels: np.ndarray  # uint8 (D, H, W), input geometry
    probability: np.ndarray  # float32 foreground probability
    guide: Optional[np.ndarray]  # float32 guide in [0, 1] resampled to the input grid, None if unguided
    geometry: Geometry
    is_2d: bool
    axis: int  # numpy axis the slices were taken along
    processed: np.ndarray  # bool per slice along ``axis``: which slices were segmented
    seconds: float
    cancelled: bool = False
    guide_stride: int = 1  # the guide ran on every n-th slice, interpolated between
    region: Optional[dict] = None  # the model's evidence region (ModelConfig.region): it knows nothing beyond it


@dataclass
class RefineResult:
    """What a refine round gives: the refined model (in process) or the saved version (from the worker)."""

    model: object  # the refined GuiDINOModel (None when a cancelled round was discarded, or from the worker)
    slices: list
    steps: int
    seconds: float
    stopped: str  # why training stopped: "time budget", "finished" or "cancelled"
    bundle: Optional[Path] = None
    settings: dict = field(default_factory=dict)
    interpolated: list = field(default_factory=list)  # slices trained on with the interpolated shape as label


@dataclass
class SegmentRequest:
    """Segment ``slices`` of the job's ``image.npy`` along ``axis`` with the bundle at ``bundle``.

    Paths are absolute: the worker runs in another folder.
    """

    bundle: str
    guide: Optional[str]
    axis: str
    geometry: Geometry
    is_2d: bool
    slices: list
    batch_size: object = "auto"
    device: str = "auto"
    guide_stride: object = "auto"

    kind = "segment"

    def to_message(self):
        """The request as the JSON-ready dict of the protocol."""
        message = asdict(self)
        message["geometry"] = self.geometry.to_dict()
        message["slices"] = [int(s) for s in self.slices]
        return message

    @classmethod
    def from_message(cls, message):
        """The request a message holds (KeyError/TypeError when it is not one)."""
        values = {f.name: message[f.name] for f in fields(cls) if f.name in message}
        values["geometry"] = Geometry.from_dict(message["geometry"])
        return cls(**values)


@dataclass
class RefineRequest:
    """Refine from ``labels.npy`` on ``slices`` of ``image.npy``; save the version under ``models_folder``."""

    parent: Optional[str]  # the bundle to refine, None to start from nothing
    guide: Optional[str]
    axis: str
    slices: list
    settings: dict  # RefineSettings as a dict
    models_folder: str
    stem: str
    volume: str
    geometry: Geometry

    kind = "refine"

    to_message = SegmentRequest.to_message

    @classmethod
    def from_message(cls, message):
        values = {f.name: message[f.name] for f in fields(cls)}
        values["geometry"] = Geometry.from_dict(message["geometry"])
        return cls(**values)


def segmentation_answer(result):
    """The worker's answer for a SegmentationResult (its arrays go to .npy files beside it)."""
    return {"axis": int(result.axis), "seconds": float(result.seconds), "cancelled": bool(result.cancelled),
            "guide_stride": int(result.guide_stride), "guide": result.guide is not None, "region": result.region}


def segmentation_from_answer(answer, arrays, geometry, is_2d):
    """Rebuild a SegmentationResult from the worker's answer and its arrays ({name: array or None})."""
    return SegmentationResult(arrays["labels"], arrays["probability"], arrays.get("guide"), geometry, is_2d,
                              int(answer["axis"]), arrays["processed"], float(answer["seconds"]),
                              bool(answer["cancelled"]), int(answer["guide_stride"]), answer.get("region"))


def refine_answer(result, bundle):
    """The worker's answer for a RefineResult whose model it saved as ``bundle`` (None: nothing saved)."""
    return {"bundle": None if bundle is None else str(bundle), "slices": list(result.slices),
            "steps": int(result.steps), "seconds": float(result.seconds), "stopped": result.stopped,
            "interpolated": [int(k) for k in result.interpolated]}


def refine_from_answer(answer):
    """Rebuild a RefineResult (no model: the worker saved it as ``bundle``) from the worker's answer."""
    return RefineResult(None, answer["slices"], answer["steps"], answer["seconds"], answer["stopped"],
                        bundle=Path(answer["bundle"]) if answer["bundle"] else None,
                        interpolated=answer["interpolated"])
