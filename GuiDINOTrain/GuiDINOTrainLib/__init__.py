"""Slicer code of the GuiDINO Train module: the Logic (refine from corrections on MRML) and the panel's
decisions (``TrainPanel``). Training itself is in the engine, ``guidino.training``.

``GuiDINOTrainLogic`` is exported lazily: it needs the installed packages (never torch: refining runs in
the worker process).
"""


def __getattr__(name):
    if name == "GuiDINOTrainLogic":
        from .TrainLogic import GuiDINOTrainLogic

        return GuiDINOTrainLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
