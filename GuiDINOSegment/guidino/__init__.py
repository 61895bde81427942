"""GuiDINO engine: guide, TokenBook, gated networks, bundles, slice-by-slice inference, training, CLI.

Plain Python on numpy / SimpleITK / torch. It never imports ``slicer``, Qt or VTK (a test checks
every file); the Slicer modules' ``*Lib`` packages bridge it to MRML. Importing the package itself
imports nothing heavy: torch-free modules (``axes``, ``errors``, ``geometry``) stay cheap to use.
"""

__version__ = "0.1.0"
