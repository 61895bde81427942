"""The settings of one GuiDINO segmentation run in Slicer: what the panel, the Segment Editor effect and
the refine run hand to ``GuiDINOSegmentLogic.prepareSegmentation``. No torch, no MRML: the GUI builds it
before the Python packages are installed.
"""

from dataclasses import dataclass, fields
from typing import Any, Optional

from guidino.axes import AXES

DEFAULT_SEGMENT_NAME = "GuiDINO"


@dataclass
class SegmentSettings:
    """One run's choices. ``sliceRange``: None (all slices), one index, or (first, last) inclusive."""

    segmentName: str = DEFAULT_SEGMENT_NAME  # the segment to fill (created when missing)
    segmentId: str = ""  # or the segment by id (the effect's selected segment); wins over the name
    model: Any = None  # bundle folder or a GuiDINOModel; None: the segmentation's active model, then $GUIDINO_MODEL
    guideSource: Optional[str] = None  # hub id, folder or .pth overriding the guide the bundle names
    axis: str = AXES[0]
    sliceRange: Any = None
    device: str = "auto"
    batchSize: Any = "auto"
    guideStride: Any = "auto"
    showGuide: bool = True

    @classmethod
    def fromParameters(cls, parameters, **overrides):
        """The settings from an object with attributes of the same names (a parameter node), then ``overrides``."""
        values = {f.name: getattr(parameters, f.name) for f in fields(cls) if hasattr(parameters, f.name)}
        return cls(**{**values, **overrides})
