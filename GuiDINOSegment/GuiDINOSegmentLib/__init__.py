"""GuiDINO engine: guide generator, TokenBook, gated networks and slice-by-slice inference.

Plain Python on numpy / SimpleITK / torch; it never imports ``slicer``. The Slicer bridge,
``GuiDINOSegmentLogic`` (in ``SegmentLogic.py``), is exported lazily, so importing the engine
alone never imports ``slicer``.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "GuiDINOSegmentLogic":
        from .SegmentLogic import GuiDINOSegmentLogic

        return GuiDINOSegmentLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
