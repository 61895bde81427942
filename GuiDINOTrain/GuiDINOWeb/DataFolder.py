"""The folder a GuiDINO web server serves: the volumes it offers and where a saved segmentation goes.

Plain Python (no MRML): which files are volumes, which folders are DICOM series, and a new file name for each save,
so that nothing in the folder is ever written over.
"""

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from guidino.errors import InputError

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")
SEGMENTATION_SUFFIX = ".seg.nrrd"
SAVED_MARK = ".GuiDINO"  # "<volume>.GuiDINO-<n>.seg.nrrd": the page's saves of that volume's segmentation


@dataclass(frozen=True)
class VolumeEntry:
    """One volume the folder offers: a file, or the files of a DICOM series (one folder)."""

    name: str  # what the page lists: the file name, or the series folder's path relative to the data folder
    files: tuple  # the paths to read (one file; a series' files sorted by name)

    @property
    def stem(self):
        """The name without its extension (a saved segmentation's name starts with it)."""
        name = Path(self.name).name
        for suffix in VOLUME_SUFFIXES:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name


def isDicomFile(path):
    """Whether ``path`` is a DICOM Part 10 file ("DICM" at byte 128), whatever its name."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def listVolumes(folder):
    """The volumes in ``folder``: its volume files (segmentations excluded) and, in it and its subfolders, each
    folder that holds DICOM files (one series per folder). Sorted by name.

    Raises:
        InputError: ``folder`` is not a readable folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} not found: start the web app with --data FOLDER holding your volumes")
    entries = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        root = Path(root)
        names = sorted(f for f in files if not f.startswith("."))
        dicom = tuple(str(root / f) for f in names if isDicomFile(root / f))
        if dicom:
            entries.append(VolumeEntry(root.relative_to(folder).as_posix() or ".", dicom))
        if root == folder:
            entries += [VolumeEntry(f, (str(root / f),)) for f in names
                        if f.lower().endswith(VOLUME_SUFFIXES) and not f.lower().endswith(SEGMENTATION_SUFFIX)]
    return sorted(entries, key=lambda entry: entry.name)


def findVolume(folder, name):
    """The volume called ``name`` in ``folder``.

    Raises:
        InputError: no volume of that name (the message lists those there are).
    """
    entries = listVolumes(folder)
    for entry in entries:
        if entry.name == name:
            return entry
    offered = ", ".join(entry.name for entry in entries) or "none"
    raise InputError(f"{name!r} is not a volume of {folder} (volumes there: {offered})")


def _numberedSaves(folder, volume):
    """[(n, path)] of the page's saves ``<stem>.GuiDINO-<n>.seg.nrrd`` of ``volume`` in ``folder``, by n."""
    pattern = re.compile(re.escape(volume.stem + SAVED_MARK) + r"-(\d+)" + re.escape(SEGMENTATION_SUFFIX) + "$")
    return sorted((int(m.group(1)), path) for path in Path(folder).iterdir() if (m := pattern.match(path.name)))


def savedSegmentations(folder, volume):
    """The segmentations the page saved for ``volume`` (a VolumeEntry) in ``folder``, oldest first."""
    return [path for _, path in _numberedSaves(folder, volume)]


def newSegmentationPath(folder, volume):
    """A file name no file of ``folder`` has yet, for the next save of ``volume``'s segmentation."""
    number = 1 + max((n for n, _ in _numberedSaves(folder, volume)), default=0)
    while True:
        path = Path(folder) / f"{volume.stem}{SAVED_MARK}-{number}{SEGMENTATION_SUFFIX}"
        if not path.exists():
            return path
        number += 1


def writeNewFile(path, write):
    """Write a file that does not exist yet: ``write(temporary path)`` writes it beside ``path``, then it takes the
    name ``path`` only if nothing has that name by then (a hard link: never replaces a file).

    Raises:
        InputError: ``path`` exists, or the folder is not writable.
    """
    path = Path(path)
    temporary = path.with_name(f".{uuid.uuid4().hex}{SEGMENTATION_SUFFIX}")
    try:
        write(temporary)
        os.link(temporary, path)
    except FileExistsError:
        raise InputError(f"{path} exists already: nothing was written over it; save again") from None
    except OSError as error:
        raise InputError(f"could not save {path.name} in {path.parent} ({error.strerror or error}): make the "
                         "data folder writable, or start the web app on a copy of it") from None
    finally:
        if temporary.exists():
            temporary.unlink()
    return path
