"""Headless Slicer for tests: a real MRML scene with the Segmentations and Volumes logics.

``slicer-core`` gives Slicer's MRML libraries without the application. The application normally
provides ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()``; ``HeadlessSlicer`` provides
them so that ``slicer.util`` array helpers and ``.seg.nrrd`` writing work as in Slicer.
"""

import types

import slicer
import slicer.util


class HeadlessSlicer:
    """A fresh scene with the logics attached; ``close()`` restores the previous globals."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.color_logic = slicer.vtkSlicerColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.app_logic)
        self.color_logic.SetMRMLScene(self.scene)
        self.app_logic.SetColorLogic(self.color_logic)
        self.app_logic.SetModuleLogic("Colors", self.color_logic)
        self.segmentations_logic = slicer.vtkSlicerSegmentationsModuleLogic()
        self.segmentations_logic.SetMRMLApplicationLogic(self.app_logic)
        self.segmentations_logic.SetMRMLScene(self.scene)
        self.volumes_logic = slicer.vtkSlicerVolumesLogic()
        self.volumes_logic.SetMRMLApplicationLogic(self.app_logic)
        self.volumes_logic.SetMRMLScene(self.scene)
        self._saved = {name: getattr(slicer, name, None) for name in ("mrmlScene", "modules", "app")}
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            segmentations=types.SimpleNamespace(logic=lambda: self.segmentations_logic),
            volumes=types.SimpleNamespace(logic=lambda: self.volumes_logic),
            colors=types.SimpleNamespace(logic=lambda: self.color_logic),
        )

    def close(self):
        self.scene.Clear(True)
        for name, value in self._saved.items():
            if value is None:
                if hasattr(slicer, name):
                    delattr(slicer, name)
            else:
                setattr(slicer, name, value)

    # -- files -------------------------------------------------------------------------------
    def load_volume(self, path, name=None):
        """Read a volume file into a new ``vtkMRMLScalarVolumeNode``."""
        storage = self.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or _stem(path))
        node.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(node):
            raise IOError(f"could not read volume {path}")
        node.CreateDefaultDisplayNodes()
        return node

    def save_volume(self, node, path):
        storage = self.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        storage.SetUseCompression(False)
        if not storage.WriteData(node):
            raise IOError(f"could not write volume {path}")
        self.scene.RemoveNode(storage)

    def save_segmentation(self, node, path):
        storage = self.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        storage.SetFileName(str(path))
        if not storage.WriteData(node):
            raise IOError(f"could not write segmentation {path}")
        self.scene.RemoveNode(storage)

    def load_segmentation(self, path, name=None):
        storage = self.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        storage.SetFileName(str(path))
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or _stem(path))
        node.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(node):
            raise IOError(f"could not read segmentation {path}")
        node.CreateDefaultDisplayNodes()
        return node


def _stem(path):
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name
