"""GuiDINO training: training loops, refine from corrections, and the ``guidino`` command line.

Plain Python on numpy / torch; it never imports ``slicer``.
"""
