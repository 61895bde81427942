"""Slicer code of the GuiDINO Segment module: the Logic (MRML <-> engine), dependency installation and
the panel's and effect's helpers. The engine itself is the ``guidino`` package beside it.

``GuiDINOSegmentLogic`` is exported lazily: it needs the installed packages (never torch: models run in the
worker process), and the GUI imports this package before the dependencies are installed.
"""


def __getattr__(name):
    if name == "GuiDINOSegmentLogic":
        from .SegmentLogic import GuiDINOSegmentLogic

        return GuiDINOSegmentLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
