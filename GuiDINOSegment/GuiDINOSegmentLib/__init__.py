"""GuiDINO engine: guide generator, TokenBook, gated networks and slice-by-slice inference.

Plain Python on numpy / SimpleITK / torch; it never imports ``slicer``.
"""

__version__ = "0.1.0"
