"""GuiDINO training: training loops, refine from corrections, and the ``guidino`` command line.

Plain Python on numpy / torch; it never imports ``slicer``. The Slicer bridge,
``GuiDINOTrainLogic`` (in ``TrainLogic.py``), is exported lazily; ``TrainPanel.py`` holds the
Train panel's decisions (no qt, no torch).
"""


def __getattr__(name):
    if name == "GuiDINOTrainLogic":
        from .TrainLogic import GuiDINOTrainLogic

        return GuiDINOTrainLogic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
