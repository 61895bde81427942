"""Make an MRML scene the one the GuiDINO Logics use, as Slicer's application does for its modules.

The Logics read ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()``; in Slicer the application sets them.
Here trame-slicer's ``SlicerApp`` (or any holder of a scene and its module logics) provides them.
"""

import types

import slicer
import slicer.util  # noqa: F401  (the Logics' array helpers read slicer.mrmlScene through it)

from GuiDINOSegmentLib.ReviewStore import watchScene


def bindScene(scene, segmentationsLogic, volumesLogic, colorLogic):
    """Make ``scene`` the process's ``slicer.mrmlScene`` with its module logics, and find every edit of GuiDINO's
    segments in it as it is made (the Slicer module does this when Slicer starts).

    Args:
        scene: the ``vtkMRMLScene`` the page shows.
        segmentationsLogic, volumesLogic, colorLogic: that scene's module logics.
    """
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        segmentations=types.SimpleNamespace(logic=lambda: segmentationsLogic),
        volumes=types.SimpleNamespace(logic=lambda: volumesLogic),
        colors=types.SimpleNamespace(logic=lambda: colorLogic),
    )
    watchScene(scene)
