"""The web app's decisions on a real MRML scene (``GuiDINOWeb.WebSession``, ``DataFolder``): the folder's volumes
(files and DICOM series), saves that never write over a file, geometry and review state through open, save and
reload, bad input refused with a message, Cancel keeping the slices done. No browser, no trame: the page itself is
tested in a real browser by ``Testing/Web`` (``make test-web``)."""

import hashlib
import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
from conftest import oblique_image

from GuiDINOSegmentLib import GuiDINOSegmentLogic
from GuiDINOSegmentLib.SegmentSettings import SegmentSettings
from GuiDINOSegmentLib.VolumeNodes import imageDataFromVolume
from GuiDINOTrainLib.TrainLogic import GuiDINOTrainLogic
from GuiDINOWeb.DataFolder import (findVolume, listVolumes, newSegmentationPath, savedSegmentations,
                                   writeNewFile)
from GuiDINOWeb.WebSession import Busy, WebSession
from guidino.bundlefiles import untrained_guide
from guidino.errors import BundleError, InputError
from guidino.geometry import Geometry
from test_worker import bundle, worker  # noqa: F401  (fixtures: a tiny model bundle, the Logics' worker)


class ManualTimer:
    """A JobPoller timer the test fires by hand (``fire``), as the web server's loop would every interval."""

    def __init__(self):
        self.slots, self.running = [], False

    def connect(self, signal, slot):
        self.slots.append(slot)

    def start(self, intervalMs):
        self.running = True

    def stop(self):
        self.running = False

    def fire(self):
        for slot in list(self.slots):
            slot()


def write_dicom_series(image, folder):
    """``image`` (3D, int16) as one DICOM file per slice with the tags a series reader sorts and places them by.

    SimpleITK's DICOM writer sets the process's locale to "C" (Python's text files then default to ASCII): the
    locale is put back, or every later test that reads text would run in another process than CI's."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_series(image, folder)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(image, folder):
    folder.mkdir(parents=True)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in (("0008|0060", "MR"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2"), ("0020|0037", orientation),
                           ("0020|0032", "\\".join(f"{v:.10f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k)))),
                           ("0020|0013", str(k + 1)), ("0018|0050", f"{image.GetSpacing()[2]:.10f}"),
                           ("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.2.{k + 1}")):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}"))  # no extension: found by content, as DICOM often is
        writer.Execute(piece)


def file_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    sitk.WriteImage(oblique_image(shape=(7, 12, 10)), str(folder / "oblique.nrrd"))
    return folder


@pytest.fixture
def session(headless_slicer, data, tmp_path):
    segmentLogic = GuiDINOSegmentLogic()
    timers = []

    def newTimer():
        timers.append(ManualTimer())
        return timers[-1]

    session = WebSession(data, segmentLogic, GuiDINOTrainLogic(segmentLogic, tmp_path / "models"),
                         segmentSettings=SegmentSettings(device="cpu", batchSize=1), newTimer=newTimer)
    session.timers = timers
    return session


def paint(session, sliceIndex, rows=slice(3, 7), columns=slice(2, 6)):
    """A stroke on one slice of the open segment, as an editor writes it (the review store sees it)."""
    labels = slicer.util.arrayFromSegmentBinaryLabelmap(session.segmentation, session.segmentId, session.volume)
    labels[sliceIndex, rows, columns] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(labels, session.segmentation, session.segmentId, session.volume)


def test_the_folder_offers_volume_files_and_dicom_series_not_segmentations(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    image = oblique_image(shape=(5, 9, 8))
    for name in ("a.nrrd", "b.nii.gz", "c.mha"):
        sitk.WriteImage(image, str(folder / name))
    (folder / "a.GuiDINO-1.seg.nrrd").write_bytes(b"segmentation")
    (folder / "notes.txt").write_text("not a volume")
    (folder / ".hidden.nrrd").write_bytes(b"")
    write_dicom_series(image, folder / "series" / "t1")
    entries = listVolumes(folder)
    assert [e.name for e in entries] == ["a.nrrd", "b.nii.gz", "c.mha", "series/t1"]
    assert len(findVolume(folder, "series/t1").files) == 5
    assert [e.stem for e in entries] == ["a", "b", "c", "t1"]
    with pytest.raises(InputError, match=r"'d.nrrd' is not a volume of .* \(volumes there: a.nrrd, b.nii.gz"):
        findVolume(folder, "d.nrrd")
    with pytest.raises(InputError, match="data folder .* not found: start the web app with --data"):
        listVolumes(tmp_path / "missing")


def test_a_save_never_writes_over_a_file(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    entry = findVolume(_with_volume(folder), "v.nrrd")
    first = newSegmentationPath(folder, entry)
    assert first.name == "v.GuiDINO-1.seg.nrrd"
    first.write_bytes(b"the user's earlier save")
    (folder / "v.GuiDINO-3.seg.nrrd").write_bytes(b"another")
    assert newSegmentationPath(folder, entry).name == "v.GuiDINO-4.seg.nrrd"
    assert [p.name for p in savedSegmentations(folder, entry)] == ["v.GuiDINO-1.seg.nrrd", "v.GuiDINO-3.seg.nrrd"]
    with pytest.raises(InputError, match="exists already: nothing was written over it"):  # taken meanwhile
        writeNewFile(first, lambda temporary: temporary.write_bytes(b"new"))
    assert first.read_bytes() == b"the user's earlier save"
    assert sorted(p.name for p in folder.iterdir()) == ["v.GuiDINO-1.seg.nrrd", "v.GuiDINO-3.seg.nrrd", "v.nrrd"]


def _with_volume(folder):
    sitk.WriteImage(oblique_image(shape=(3, 4, 5)), str(folder / "v.nrrd"))
    return folder


def test_open_save_reload_keep_the_geometry_the_review_state_and_the_originals(session, data):
    before = file_hashes(data)
    volume, segmentation = session.openVolume("oblique.nrrd")
    expected = Geometry.from_sitk(sitk.ReadImage(str(data / "oblique.nrrd")))
    paint(session, 2)
    paint(session, 5, rows=slice(1, 4))
    assert session.corrections() == {"axis": "axial", "slices": [2, 5]}
    assert session.unsavedChanges()
    saved = session.save()
    assert saved.parent == data and saved.name == "oblique.GuiDINO-1.seg.nrrd" and not session.unsavedChanges()
    assert {k: v for k, v in file_hashes(data).items() if k in before} == before  # the originals as they were
    content = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, session.segmentId, volume).copy()

    written = sitk.ReadImage(str(saved))  # the file itself: on the volume's oblique grid
    assert Geometry.from_sitk(written).is_close(expected, tol=1e-5)

    paint(session, 0)
    with pytest.raises(InputError, match="changes that are not saved: Save them first"):
        session.reload(saved.name)
    reloaded = session.reload(saved.name, discard=True)
    assert reloaded is session.segmentation and segmentation.GetScene() is None
    np.testing.assert_array_equal(
        slicer.util.arrayFromSegmentBinaryLabelmap(reloaded, session.segmentId, volume), content)
    assert session.corrections() == {"axis": "axial", "slices": [2, 5]}  # the review state came back with it
    second = session.save()
    assert second.name == "oblique.GuiDINO-2.seg.nrrd" and saved.is_file()
    assert session.savedFiles() == [saved.name, second.name]
    assert Geometry.from_sitk(sitk.ReadImage(str(second))).is_close(expected, tol=1e-5)
    assert imageDataFromVolume(volume).geometry.is_close(expected, tol=1e-5)


def test_a_nifti_file_opens_with_its_geometry(session, data):
    image = oblique_image(shape=(5, 8, 7))
    sitk.WriteImage(image, str(data / "t2.nii.gz"))
    volume, _ = session.openVolume("t2.nii.gz")
    got = imageDataFromVolume(volume)
    assert got.geometry.is_close(Geometry.from_sitk(sitk.ReadImage(str(data / "t2.nii.gz"))), tol=1e-4)
    np.testing.assert_array_equal(got.voxels, sitk.GetArrayFromImage(image))
    assert volume.GetName() == "t2"


def test_a_dicom_series_opens_with_its_geometry(session, data):
    image = oblique_image(shape=(6, 10, 9))
    write_dicom_series(image, data / "patient" / "series1")
    volume, _ = session.openVolume("patient/series1")
    got = imageDataFromVolume(volume)
    assert got.geometry.is_close(Geometry.from_sitk(image), tol=1e-4)
    np.testing.assert_array_equal(got.voxels, sitk.GetArrayFromImage(image))


def test_bad_input_is_refused_with_a_message_and_the_session_goes_on(session, data, tiny_guide_dir):
    (data / "damaged.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 9 9\n\ngarbage")
    with pytest.raises(InputError, match="damaged.nrrd could not be read as a volume .*: choose another volume"):
        session.openVolume("damaged.nrrd")
    with pytest.raises(InputError, match="no volume open: choose one"):
        session.run()
    session.openVolume("oblique.nrrd")
    with pytest.raises(InputError, match="no model yet: paint the structure on a few slices and press Refine"):
        session.run()
    with pytest.raises(BundleError, match="model bundle .*nowhere not found"):
        session.run(str(data / "nowhere"))
    with pytest.raises(BundleError, match="is a guide .* not a GuiDINO model bundle"):
        session.run(str(tiny_guide_dir))
    with pytest.raises(InputError, match="no corrections yet"):
        session.refine()
    with pytest.raises(InputError, match="'x.seg.nrrd' is not a saved segmentation"):
        session.reload("x.seg.nrrd")
    paint(session, 1)
    with pytest.raises(InputError, match="changes that are not saved"):
        session.openVolume("oblique.nrrd")
    assert session.task is None and session.volume.GetScene() is not None  # still serving the open volume
    assert untrained_guide(guide=str(tiny_guide_dir)) and not untrained_guide(guide=str(data))


def test_run_follows_the_job_cancel_keeps_the_slices_done(session, bundle, worker):  # noqa: F811
    volume, segmentation = session.openVolume("oblique.nrrd")
    paint(session, 6)
    session.run(str(bundle))
    assert session.task == "run"
    with pytest.raises(Busy, match="while the run job runs: wait for it, or Cancel it"):
        session.refine()
    timer = session.timers[-1]
    while worker.ready is False or session._poller.state is None or not session._poller.state.done:
        timer.fire()
    session.cancel()
    while session.task is not None:
        timer.fire()
    assert session.error == "", session.error
    assert "Cancelled: the slices done were kept." in session.status
    assert not timer.running
    labels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, session.segmentId, volume)
    assert labels[6, 3:7, 2:6].all() and session.corrections()["slices"] == [6]  # the user's slice untouched
    assert session.activeModel() is None or Path(session.activeModel()) != bundle  # Run makes no model active


def test_the_web_servers_process_never_imports_torch(tmp_path, data):
    """Open, paint, save and reload with torch, transformers, peft and MONAI unimportable: the web server's own process
    (like Slicer's) leaves computing to the worker."""
    from test_module_files import _run_without_torch

    _run_without_torch(tmp_path, '''
import numpy as np
import slicer.util
from slicer_harness import HeadlessSlicer
from GuiDINOSegmentLib import GuiDINOSegmentLogic
from GuiDINOTrainLib.TrainLogic import GuiDINOTrainLogic
from GuiDINOWeb.SceneBinding import bindScene
from GuiDINOWeb.WebSession import WebSession

app = HeadlessSlicer()
bindScene(app.scene, app.segmentations_logic, app.volumes_logic, app.color_logic)
logic = GuiDINOSegmentLogic()
session = WebSession(sys.argv[1], logic, GuiDINOTrainLogic(logic, sys.argv[2]))
session.openVolume("oblique.nrrd")
labels = slicer.util.arrayFromSegmentBinaryLabelmap(session.segmentation, session.segmentId, session.volume)
labels[3, 2:5, 2:5] = 1
slicer.util.updateSegmentBinaryLabelmapFromArray(labels, session.segmentation, session.segmentId, session.volume)
assert session.corrections()["slices"] == [3]
session.reload(session.save().name)
assert session.corrections()["slices"] == [3] and session.versions() == [] and not session.untrainedGuide()
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft", "monai")]
''', data, tmp_path / "models")


def test_writing_a_dicom_series_leaves_the_locale_as_it_was(tmp_path):
    before = locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False)
    write_dicom_series(oblique_image(shape=(3, 6, 5)), tmp_path / "series")
    assert (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False)) == before
