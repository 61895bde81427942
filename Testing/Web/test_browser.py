"""The GuiDINO web app in a real browser (Debian's chromium driven by playwright), as a person uses it: open the
bundled sample volume, paint the tumour on two slices, Refine, undo a stroke, toggle the guide, save, reload; bad
input shown in the page; two tabs on one server. Each check reads the server's real MRML scene.

Run by ``make test-web`` (the second step of ``.ci/run``), in the web venv. Screenshots of each step go to
``Testing/Web/screenshots/`` (git-ignored).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicer.util
import vtk
from conftest import oblique_image
from playwright.sync_api import expect, sync_playwright
from webharness import CHROMIUM, ServedApp

from GuiDINOSegmentLib import WidgetHelpers as helpers
from guidino.geometry import Geometry
from guidino.training.settings import RefineSettings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "GuiDINOSegment" / "Resources" / "SampleData"
SHOTS = Path(__file__).resolve().parent / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(SAMPLE / "brain1_image.nrrd", folder)
    return folder


@pytest.fixture
def served(data, tiny_guide_dir, tmp_path):
    app = ServedApp(data, guide=str(tiny_guide_dir), modelsFolder=tmp_path / "models",
                    refineSettings=RefineSettings(steps=60, time_budget=None, seed=0))
    yield app
    app.close()


def browse(served, script):
    """Run ``script(page)`` in chromium against the served app; returns its result."""

    def session(served):
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(served.url)
                expect(page.locator(".guidino-panel")).to_be_visible(timeout=30000)
                return script(page)
            finally:
                browser.close()

    return served.drive(session)


def shoot(page, name):
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def open_volume(page, name):
    page.locator(".guidino-volume").click()
    page.get_by_role("option", name=name).click()
    page.locator(".guidino-open").click()


def shown_axial_slice(served):
    """On the server's thread: the index of the axial slice the axial view shows."""
    node = served.app.slicerApp.scene.GetNodeByID("vtkMRMLSliceNodeRed")
    return helpers.sliceIndexAtViewNode(served.session.volume, node, "axial")


def axial_slice(served):
    """From the browser's thread: the index of the axial slice the axial view shows."""
    return served.call(lambda: shown_axial_slice(served))


def show_axial_slice(page, served, index):
    """Move the axial view to slice ``index`` with its slider, from the keyboard (which arrow goes which way
    depends on the volume's orientation: a key that brings the view no closer is swapped for the other)."""
    thumb = page.locator(".slice-slider [role=slider]").first
    thumb.focus()
    key = "ArrowRight"
    for _ in range(80):
        current = axial_slice(served)
        if current == index:
            return
        thumb.press(key)
        page.wait_for_timeout(150)
        if abs(axial_slice(served) - index) >= abs(current - index):
            key = "ArrowLeft" if key == "ArrowRight" else "ArrowRight"
    raise AssertionError(f"the axial view did not reach slice {index} (at {axial_slice(served)})")


VIEWS = {"axial": ("vtkMRMLSliceNodeRed", 0), "coronal": ("vtkMRMLSliceNodeGreen", 1)}  # slice node, image on the page


def screen_point(page, served, ijk, view="axial"):
    """Where voxel ``ijk`` (i, j, k) of the open volume is on the page, in ``view`` (axial or coronal)."""
    nodeId, image = VIEWS[view]

    def read():
        matrix = vtk.vtkMatrix4x4()
        served.session.volume.GetIJKToRASMatrix(matrix)
        ras = matrix.MultiplyPoint([*ijk, 1.0])
        node = served.app.slicerApp.scene.GetNodeByID(nodeId)
        toXY = vtk.vtkMatrix4x4()
        toXY.DeepCopy(node.GetXYToRAS())
        toXY.Invert()
        return toXY.MultiplyPoint(ras)[:2], node.GetDimensions()[:2]
    (x, y), (width, height) = served.call(read)
    box = page.locator("img.image-display-area").nth(image).bounding_box()
    return box["x"] + x / width * box["width"], box["y"] + (1 - y / height) * box["height"]


def stroke(page, x, y):
    """A short paint stroke centred on (x, y): press, drag, release."""
    page.mouse.move(x - 5, y)
    page.mouse.down()
    page.mouse.move(x + 5, y, steps=6)
    page.mouse.move(x, y + 4, steps=4)
    page.mouse.up()


def segment_labels(served):
    session = served.session
    return served.call(lambda: slicer.util.arrayFromSegmentBinaryLabelmap(
        session.segmentation, session.segmentId, session.volume).copy())


def tumour_centre(label, k):
    rows, columns = np.nonzero(label[k])
    return columns.mean(), rows.mean(), k


def wait_for(page, served, predicate, what, seconds=30):
    for _ in range(int(seconds * 10)):
        if served.call(predicate):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"{what}: not within {seconds} s")


def paint_the_tumour_and_refine(page, served, index=12):
    """Open the sample volume, paint its tumour on slice ``index`` (the only correction), press Refine."""
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "brain1_label.nrrd")))
    open_volume(page, "brain1_image.nrrd")
    page.locator("button:has(i.mdi-brush)").first.click()
    stroke(page, *screen_point(page, served, tumour_centre(label, index)))
    wait_for(page, served, lambda: served.session.corrections()["slices"] == [index], "the stroke")
    page.locator(".guidino-refine").click()


def test_paint_refine_undo_guide_save_reload_in_a_real_browser(served, data):
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "brain1_label.nrrd")))
    session = served.session

    def script(page):
        expect(page.locator(".guidino-untrained")).to_contain_text("UNTRAINED GUIDE")
        open_volume(page, "brain1_image.nrrd")
        expect(page.locator(".guidino-status")).to_contain_text("Opened brain1_image.nrrd")
        shoot(page, "01-opened")

        page.locator("button:has(i.mdi-brush)").first.click()  # trame-slicer's Paint
        for k in (12, 15):  # two slices through the tumour (it spans slices 11-17)
            show_axial_slice(page, served, k)
            stroke(page, *screen_point(page, served, tumour_centre(label, k)))
            wait_for(page, served, lambda k=k: k in session.corrections()["slices"], f"the stroke on slice {k}")
        expect(page.locator(".guidino-corrections")).to_contain_text("Corrected axial slices: 12, 15")
        shoot(page, "02-painted")
        painted = segment_labels(served)
        assert painted[12].sum() > 100 and painted[15].sum() > 100
        assert painted.sum() == painted[12].sum() + painted[15].sum()  # each stroke stayed on its slice

        page.locator(".guidino-refine").click()
        expect(page.locator(".guidino-cancel")).to_be_enabled()
        status = served.waitIdle(600)
        assert served.call(lambda: session.error) == ""
        assert status.startswith("Saved brain1_image-v001 and made it the active model: 60 steps"), status
        expect(page.locator(".guidino-status")).to_contain_text("slices re-segmented")
        shoot(page, "03-refined")
        refined = segment_labels(served)
        np.testing.assert_array_equal(refined[[12, 15]], painted[[12, 15]])  # the user's slices untouched
        others = [k for k in range(refined.shape[0]) if k not in (12, 15) and refined[k].any()]
        assert others, "Refine wrote no prediction outside the painted slices"
        assert served.call(lambda: [v["path"].name for v in session.versions()]) == ["brain1_image-v001"]

        suggested = served.call(session.suggestedSlice)
        assert suggested is not None and suggested not in (12, 15)
        page.locator(".guidino-suggested").click()  # "Go to suggested slice"
        wait_for(page, served, lambda: shown_axial_slice(served) == suggested, f"the view on suggested slice {suggested}")

        guide = served.call(lambda: session.segmentLogic.guideVolume(session.volume).GetID())
        red = lambda: served.app.slicerApp.scene.GetNodeByID("vtkMRMLSliceCompositeNodeRed")  # noqa: E731
        assert served.call(lambda: red().GetForegroundVolumeID()) == guide
        page.locator(".guidino-show-guide input").click()
        wait_for(page, served, lambda: red().GetForegroundVolumeID() is None, "the guide hidden")
        shoot(page, "04-guide-hidden")
        page.locator(".guidino-show-guide input").click()
        wait_for(page, served, lambda: red().GetForegroundVolumeID() == guide, "the guide shown again")

        show_axial_slice(page, served, 13)
        stroke(page, *screen_point(page, served, tumour_centre(label, 13)))
        wait_for(page, served, lambda: 13 in session.corrections()["slices"], "the stroke on slice 13")
        assert not np.array_equal(segment_labels(served)[13], refined[13])
        page.locator("button:has(i.mdi-undo)").first.click()  # trame-slicer's undo
        wait_for(page, served, lambda: session.corrections()["slices"] == [12, 15], "slice 13 given back by undo")
        np.testing.assert_array_equal(segment_labels(served), refined)
        expect(page.locator(".guidino-corrections")).to_contain_text("Corrected axial slices: 12, 15")

        page.locator(".guidino-save").click()
        expect(page.locator(".guidino-status")).to_contain_text("Saved brain1_image.GuiDINO-1.seg.nrrd")
        assert (data / "brain1_image.GuiDINO-1.seg.nrrd").is_file()
        page.locator(".guidino-saved").click()
        page.get_by_role("option", name="brain1_image.GuiDINO-1.seg.nrrd").click()
        page.locator(".guidino-reload").click()
        expect(page.locator(".guidino-status")).to_contain_text("Reloaded brain1_image.GuiDINO-1.seg.nrrd")
        np.testing.assert_array_equal(segment_labels(served), refined)
        assert served.call(session.corrections)["slices"] == [12, 15]  # the review state came back with the file
        shoot(page, "05-reloaded")

        page.locator(".guidino-versions").click()
        page.get_by_role("option", name="brain1_image-v001").click()
        page.locator(".guidino-rollback").click()
        status = served.waitIdle(300)
        assert status.startswith("Rolled back: brain1_image-v001 is the active model."), status
        np.testing.assert_array_equal(segment_labels(served)[[12, 15]], painted[[12, 15]])

        page.locator(".guidino-run").click()  # the active model (the field is empty), on the slices not reviewed
        expect(page.locator(".guidino-status")).to_contain_text("slices segmented in", timeout=120000)
        assert served.call(lambda: session.error) == ""
        np.testing.assert_array_equal(segment_labels(served)[[12, 15]], painted[[12, 15]])
        assert "Traceback" not in page.content()

    browse(served, script)
    assert sorted(p.name for p in data.iterdir()) == ["brain1_image.GuiDINO-1.seg.nrrd", "brain1_image.nrrd"]


def test_bad_input_is_shown_in_the_page_and_the_app_keeps_serving(served, data, tmp_path):
    (data / "damaged.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 9 9\n\ngarbage")
    sitk.WriteImage(oblique_image(shape=(7, 12, 10)), str(data / "oblique.nrrd"))
    expected = Geometry.from_sitk(sitk.ReadImage(str(data / "oblique.nrrd")))

    def script(page):
        open_volume(page, "damaged.nrrd")
        expect(page.locator(".guidino-error")).to_contain_text("damaged.nrrd could not be read as a volume")
        expect(page.locator(".guidino-refine")).to_be_disabled()  # no volume open: nothing to refine
        shoot(page, "10-damaged-volume")
        open_volume(page, "oblique.nrrd")
        expect(page.locator(".guidino-status")).to_contain_text("Opened oblique.nrrd")
        expect(page.locator(".guidino-error")).to_have_count(0)
        page.get_by_label("Model bundle (Run)").fill(str(tmp_path / "no-such-bundle"))
        page.locator(".guidino-run").click()
        expect(page.locator(".guidino-error")).to_contain_text("no-such-bundle not found")
        page.locator("button:has(i.mdi-brush)").first.click()
        box = page.locator("img.image-display-area").first.bounding_box()
        stroke(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # the oblique volume's centre
        wait_for(page, served, lambda: served.session.corrections()["slices"], "the stroke")
        page.locator(".guidino-save").click()
        expect(page.locator(".guidino-status")).to_contain_text("Saved oblique.GuiDINO-1.seg.nrrd")
        assert "Traceback" not in page.content()

    browse(served, script)
    saved = sitk.ReadImage(str(data / "oblique.GuiDINO-1.seg.nrrd"))
    assert Geometry.from_sitk(saved).is_close(expected, tol=1e-5)  # spacing, origin and direction kept


def test_an_unreachable_guide_is_a_message_not_a_traceback(data, tmp_path):
    app = ServedApp(data, guide=str(tmp_path / "no-guide-here"), modelsFolder=tmp_path / "models",
                    refineSettings=RefineSettings(steps=60, time_budget=None))

    def script(page):
        paint_the_tumour_and_refine(page, app)
        app.waitIdle(300)
        # the failed job's message reaches the page on the server's next state flush, which a loaded CI machine delays
        expect(page.locator(".guidino-error")).to_contain_text("no-guide-here", timeout=60_000)
        shoot(page, "11-unreachable-guide")
        assert "Traceback" not in page.locator(".guidino-error").inner_text()

    try:
        browse(app, script)
    finally:
        app.close()


def test_two_tabs_share_one_scene(served):
    def script(page):
        open_volume(page, "brain1_image.nrrd")
        expect(page.locator(".guidino-status")).to_contain_text("Opened brain1_image.nrrd")
        second = page.context.browser.new_page(viewport=VIEWPORT)  # another tab (its own browser context)
        second.goto(served.url)
        expect(second.locator(".guidino-status")).to_contain_text("Opened brain1_image.nrrd")
        expect(second.locator(".guidino-run")).to_be_enabled()
        return served.call(lambda: served.session.volume.GetName())

    assert browse(served, script) == "brain1_image"


def test_a_browser_that_leaves_mid_refine_loses_nothing(served, data):
    """The round runs on the server: closing the tab does not stop it, and a new tab shows its result."""

    def script(page):
        paint_the_tumour_and_refine(page, served)
        wait_for(page, served, lambda: served.session.task == "refine", "the refine started")
        browser = page.context.browser
        page.close()  # the user leaves mid-round
        status = served.waitIdle(600)
        assert status.startswith("Saved brain1_image-v001"), status
        again = browser.new_page(viewport=VIEWPORT)
        again.goto(served.url)
        expect(again.locator(".guidino-status")).to_contain_text("Saved brain1_image-v001")
        labels = segment_labels(served)
        assert any(labels[k].any() for k in range(labels.shape[0]) if k != 12)

    browse(served, script)


def test_window_level_from_the_page(served):
    def script(page):
        open_volume(page, "brain1_image.nrrd")
        expect(page.locator(".guidino-status")).to_contain_text("Opened brain1_image.nrrd")
        display = lambda: served.session.volume.GetScalarVolumeDisplayNode()  # noqa: E731
        before = served.call(lambda: (display().GetWindow(), display().GetLevel()))
        page.locator(".guidino-window-level button").first.click()
        low = page.locator(".guidino-window-level [role=slider]").first
        low.scroll_into_view_if_needed()
        low.focus()
        for _ in range(10):
            low.press("ArrowRight")  # the window's lower end up: a narrower window, a higher level
        wait_for(page, served, lambda: display().GetWindow() < before[0] and display().GetLevel() > before[1],
                 "the window/level changed")
        shoot(page, "06-window-level")

    browse(served, script)


def test_a_new_segment_gets_its_own_corrections_and_the_guide_its_opacity(served):
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "brain1_label.nrrd")))
    session = served.session

    def script(page):
        open_volume(page, "brain1_image.nrrd")
        expect(page.locator(".guidino-status")).to_contain_text("Opened brain1_image.nrrd")
        first = served.call(lambda: session.segmentId)
        page.locator("button:has(i.mdi-brush)").first.click()
        stroke(page, *screen_point(page, served, tumour_centre(label, 12)))
        wait_for(page, served, lambda: session.corrections()["slices"] == [12], "the stroke on the first segment")
        page.locator("button:has(i.mdi-plus)").first.click()  # trame-slicer's Add segment
        wait_for(page, served, lambda: session.segmentId not in ("", first), "the new segment selected")
        page.locator("button:has(i.mdi-brush)").first.click()
        show_axial_slice(page, served, 14)
        stroke(page, *screen_point(page, served, tumour_centre(label, 14)))
        wait_for(page, served, lambda: session.corrections()["slices"] == [14], "the stroke on the new segment")
        expect(page.locator(".guidino-corrections")).to_contain_text("Corrected axial slices: 14")
        assert served.call(lambda: session.trainLogic.corrections(session.segmentation, first, session.volume)
                           )["slices"] == [12]

        composites = lambda: slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")  # noqa: E731
        slider = page.locator(".guidino-guide-opacity [role=slider]")
        slider.focus()
        for _ in range(4):
            slider.press("ArrowRight")
        wait_for(page, served, lambda: all(abs(c.GetForegroundOpacity() - 0.6) < 1e-6 for c in composites()),
                 "the guide opacity at 0.6 in every slice view")

    browse(served, script)


def test_erase_and_a_stroke_on_the_coronal_view_are_the_users(served):
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "brain1_label.nrrd")))
    session = served.session
    state = lambda: session.segmentLogic.reviewState(session.segmentation, session.segmentId, session.volume)  # noqa

    def script(page):
        open_volume(page, "brain1_image.nrrd")
        expect(page.locator(".guidino-status")).to_contain_text("Opened brain1_image.nrrd")
        page.locator("button:has(i.mdi-brush)").first.click()
        centre = tumour_centre(label, 12)
        stroke(page, *screen_point(page, served, centre))
        wait_for(page, served, lambda: state().edited == {"axial": [12]}, "the axial stroke")
        painted = int(segment_labels(served).sum())
        page.locator("button:has(i.mdi-eraser)").first.click()  # trame-slicer's Erase
        stroke(page, *screen_point(page, served, centre))
        wait_for(page, served, lambda: int(slicer.util.arrayFromSegmentBinaryLabelmap(
            session.segmentation, session.segmentId, session.volume).sum()) < painted, "the erase")
        assert served.call(lambda: state().edited) == {"axial": [12]}  # erasing is an edit of the same slice

        page.locator("button:has(i.mdi-brush)").first.click()
        shown = served.call(lambda: helpers.sliceIndexAtViewNode(
            session.volume, served.app.slicerApp.scene.GetNodeByID("vtkMRMLSliceNodeGreen"), "coronal"))
        stroke(page, *screen_point(page, served, (centre[0], shown, 14), view="coronal"))
        wait_for(page, served, lambda: state().edited.get("coronal") == [shown], "the coronal stroke")
        assert served.call(lambda: state().edited["axial"]) == [12]
        expect(page.locator(".guidino-corrections")).to_have_text(
            f"Corrected axial slices: 12 (also coronal: {shown})")
        shoot(page, "07-erase-and-coronal")

    browse(served, script)
