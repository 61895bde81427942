"""The GuiDINO web page on trame-slicer: the slice views, trame-slicer's segment editor (paint, erase, undo) and
the GuiDINO panel, wired to one ``WebSession``.

Every tab connected to one server shows the same scene and session (trame shares one state per server): a second
tab sees the first one's volume, strokes and jobs. The page only shows state and forwards clicks; the decisions
are the session's, the computing the worker process's.
"""

import asyncio
import logging
import os
import traceback
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen rendering: no X server needed

from trame.app import TrameApp
from trame.widgets import html
from trame.widgets.vuetify3 import (VAlert, VBtn, VCard, VCardText, VCardTitle, VCheckbox, VDivider, VExpansionPanel,
                                    VExpansionPanels, VExpansionPanelText,
                                    VNavigationDrawer, VProgressLinear, VSelect, VSlider, VTextField)
from trame_slicer import module as trameSlicerModule
from trame_slicer.app.logic.layout_button_logic import LayoutButtonLogic
from trame_slicer.app.logic.segmentation import SegmentEditorLogic
from trame_slicer.app.logic.volume_property_logic import VolumePropertyLogic
from trame_server.utils.typed_state import TypedState
from trame_slicer.app.ui import (PaintEffectState, SegmentEditorToolbarUI, SegmentEditorUI, SegmentEditorUndoRedoUI,
                                 ViewerLayout, VolumePropertyUI)
from trame_slicer.core import SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from GuiDINOSegmentLib.SegmentLogic import GuiDINOSegmentLogic
from GuiDINOTrainLib.TrainLogic import GuiDINOTrainLogic
from GuiDINOWeb.SceneBinding import bindScene
from GuiDINOWeb.WebSession import UNTRAINED_GUIDE_LABEL, WebSession
from guidino.errors import GuideNotFoundError

LAYOUT_ID = "GuiDINO"  # axial large, coronal and sagittal beside it


def threeSliceLayout():
    """The page's views: axial on the left, coronal above sagittal on the right."""
    return Layout(LayoutDirection.Horizontal, [
        ViewLayoutDefinition.axial_view(),
        Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.sagittal_view()]),
    ])


class GuiDINOWebApp(TrameApp):
    """The page on ``server`` for the volumes of ``dataFolder``.

    Args:
        dataFolder: the folder whose volumes the page offers (saves go there, under new names).
        server: a trame server (default: a new one).
        model: a model bundle Run uses when the segmentation has no active model yet, or None.
        guide: a guide source (hub id, folder, .pth) for models made from nothing and overriding bundles', or None.
        modelsFolder: where Refine saves the versions (default: the Slicer module's, ``$GUIDINO_MODELS``).
        refineSettings: a refine round's settings (default: ``RefineSettings()``).
        segmentSettings: Run's settings (device, batch size; default ``SegmentSettings()``).
    """

    def __init__(self, dataFolder, server=None, model=None, guide=None, modelsFolder=None, refineSettings=None,
                 segmentSettings=None):
        super().__init__(server)
        self.server.enable_module(trameSlicerModule)
        self.slicerApp = SlicerApp()
        bindScene(self.slicerApp.scene, self.slicerApp.segmentations_logic, self.slicerApp.volumes_logic,
                  self.slicerApp.color_logic)
        segmentLogic = GuiDINOSegmentLogic()
        segmentLogic.defaultModelPath = model or segmentLogic.defaultModelPath
        segmentLogic.guideSource = guide
        self.session = WebSession(dataFolder, segmentLogic, GuiDINOTrainLogic(segmentLogic, modelsFolder),
                                  refineSettings, segmentSettings, changed=self.refresh)

        register_rca_factories(self.slicerApp.view_manager, self.server)
        self.editorLogic = SegmentEditorLogic(self.server, self.slicerApp)
        self.volumePropertyLogic = VolumePropertyLogic(self.server, self.slicerApp)
        # paint and erase on the slice drawn on, as Slicer's Paint does by default (trame-slicer's brush is a sphere)
        TypedState(self.state, PaintEffectState).data.use_sphere_brush = False
        self.layoutLogic = LayoutButtonLogic(self.server, self.slicerApp)
        self.layoutLogic.layout_manager.register_layout(LAYOUT_ID, threeSliceLayout())
        self.layoutLogic.data.current_layout_id = LAYOUT_ID
        self.state.trame__title = "GuiDINO"
        self._refreshPending = False
        self._initialState()
        self._buildUi()
        self.slicerApp.segmentation_editor.active_segment_id_changed.connect(self._onActiveSegment)
        self.slicerApp.segmentation_editor.segmentation_modified.connect(self._scheduleRefresh)
        self.ctrl.on_server_exited.add(self._onExit)

    # -- state the page shows -----------------------------------------------------------------
    def _initialState(self):
        state = self.state
        state.guidino_volumes = self._safe(self.session.volumeNames, [])  # again each time the list opens
        state.guidino_volume = None
        state.guidino_discard = False
        state.guidino_model = ""  # empty: the segmentation's active model, then the server's --model (the placeholder)
        state.guidino_show_guide = True
        state.guidino_guide_opacity = 0.4
        state.guidino_selected_version = None
        state.guidino_selected_saved = None
        self._push()

    def _scheduleRefresh(self, *_):
        """After strokes: refresh the corrections list once the editor is done (not inside its event)."""
        if self._refreshPending:
            return
        self._refreshPending = True

        def later():
            self._refreshPending = False
            self.refresh()

        try:
            asyncio.get_running_loop().call_later(0.1, later)
        except RuntimeError:  # no event loop yet (the server has not started)
            self._refreshPending = False

    def refresh(self, progressOnly=False):
        """Push the session's status, progress and lists to every connected page (``progressOnly``: a job's
        progress alone: the lists, which read the scene and the folders, wait until it ends)."""
        with self.state:
            self._push(progressOnly)

    def _push(self, progressOnly=False):
        session, state = self.session, self.state
        state.guidino_busy = session.task is not None
        state.guidino_task = session.task or ""
        state.guidino_progress, state.guidino_progress_text = session.progress
        if progressOnly:
            return
        state.guidino_status = session.status
        state.guidino_error = session.error
        state.guidino_corrections = self._safe(session.correctionsText, "")
        suggested = session.suggestedSlice()
        state.guidino_suggested = -1 if suggested is None else int(suggested)
        state.guidino_active_model = session.activeModel() or ""
        state.guidino_untrained = UNTRAINED_GUIDE_LABEL if self._safe(session.untrainedGuide, False) else ""
        state.guidino_versions = [{"title": Path(v["path"]).name, "value": str(v["path"])}
                                  for v in self._safe(session.versions, [])]
        state.guidino_saved = self._safe(session.savedFiles, [])
        state.guidino_open = session.entry.name if session.entry is not None else ""
        state.is_volume_loaded = session.volume is not None and session.volume.GetScene() is not None

    @staticmethod
    def _safe(read, default):
        try:
            return read()
        except Exception:  # a list that cannot be read is shown empty; the action that needs it says why
            logging.exception("GuiDINO web: could not read the page's state")
            return default

    def _act(self, action, *args):
        """Run a page action; a refusal or an error is shown in the page (no traceback), the server goes on."""
        self.session.error = ""
        try:
            action(*args)
        except (ValueError, GuideNotFoundError, OSError) as error:
            self.session.error = str(error)
        except Exception as error:
            logging.error("GuiDINO web: %s\n%s", error, traceback.format_exc())
            self.session.error = f"Unexpected error: {error} (details in the server's log)"
        self.refresh()

    # -- actions ----------------------------------------------------------------------------------
    def listVolumes(self, *_):
        self._act(lambda: setattr(self.state, "guidino_volumes", self.session.volumeNames()))

    def openVolume(self):
        self._act(self._openVolume)

    def _openVolume(self):
        if not self.state.guidino_volume:
            raise ValueError("choose a volume of the data folder first")
        volume, segmentation = self.session.openVolume(self.state.guidino_volume, discard=self.state.guidino_discard)
        self.state.guidino_discard = False
        display = self.slicerApp.display_manager  # slice views only: no volume rendering (a CPU server)
        display.show_volume_in_slice_background(volume)
        display.show_volume_in_slice_foreground(None)
        display.reset_views()
        self._editInEditor(segmentation, volume)
        self.editorLogic.on_volume_changed(volume)
        self.volumePropertyLogic.on_volume_changed(volume)

    def _editInEditor(self, segmentation, volume):
        """trame-slicer's editor edits ``segmentation`` on ``volume``, the session's segment selected."""
        editor = self.slicerApp.segmentation_editor
        editor.set_active_segmentation(segmentation, volume)
        editor.set_active_segment_id(self.session.segmentId)

    def _onActiveSegment(self, *_):
        """The segment selected in the editor is the one Run, Refine and the corrections act on."""
        def select():
            segmentId = self.slicerApp.segmentation_editor.get_active_segment_id()
            if segmentId and segmentId != self.session.segmentId:
                self.session.selectSegment(segmentId)
        self._act(select)

    def run(self):
        self._act(lambda: self.session.run(self.state.guidino_model.strip() or None))

    def refine(self):
        self._act(self.session.refine)

    def rollback(self):
        def rollback():
            if not self.state.guidino_selected_version:
                raise ValueError("choose a version to roll back to")
            self.session.rollback(self.state.guidino_selected_version)
        self._act(rollback)

    def cancel(self):
        self._act(self.session.cancel)

    def save(self):
        self._act(self.session.save)

    def reload(self):
        def reload():
            if not self.state.guidino_selected_saved:
                raise ValueError("choose a saved segmentation to reload")
            segmentation = self.session.reload(self.state.guidino_selected_saved, discard=self.state.guidino_discard)
            self.state.guidino_discard = False
            self._editInEditor(segmentation, self.session.volume)
        self._act(reload)

    def goToSuggested(self):
        self._act(self.session.goToSuggestedSlice)

    def guideDisplay(self, **_):
        self._act(self.session.setGuideShown, bool(self.state.guidino_show_guide),
                  float(self.state.guidino_guide_opacity))

    def _onExit(self, **_):
        from GuiDINOSegmentLib.WorkerClient import closeSharedWorker

        self.session.shutdown()
        closeSharedWorker()

    # -- the page -----------------------------------------------------------------------------------
    def _buildUi(self):
        self.state.change("guidino_show_guide", "guidino_guide_opacity")(self.guideDisplay)
        with ViewerLayout(self.server, title="GuiDINO", is_drawer_visible=True) as self.layout:
            with self.layout.drawer:
                self.editorUi = SegmentEditorUI()
            with self.layout.toolbar:
                SegmentEditorToolbarUI(editor_ui=self.editorUi)
            with self.layout.undo_redo:
                SegmentEditorUndoRedoUI(editor_ui=self.editorUi)
            with self.layout.content:
                self.layoutLogic.layout_manager.initialize_layout_grid(self.layout)
            with self.layout:
                self._buildPanel()
        self.editorLogic.set_ui(self.editorUi)
        self.volumePropertyLogic.set_ui(self.volumeUi)

    def _buildPanel(self):
        with VNavigationDrawer(location="right", permanent=True, width=360, classes="pa-2"):
            with VCard(flat=True, classes="guidino-panel"):
                VCardTitle("GuiDINO")
                with VCardText():
                    VAlert(text=("guidino_untrained",), v_if=("guidino_untrained",), type="warning", density="compact",
                           classes="mb-2 guidino-untrained")
                    VSelect(label="Volume", items=("guidino_volumes",), v_model=("guidino_volume",),
                            density="compact", hide_details=True, classes="guidino-volume",
                            update_menu=self.listVolumes)  # the folder as it is when the list opens
                    VCheckbox(label="Discard changes not saved", v_model=("guidino_discard",), density="compact",
                              hide_details=True, classes="guidino-discard")
                    VBtn("Open", click=self.openVolume, disabled=("guidino_busy",), block=True,
                         classes="mb-2 guidino-open")
                    VTextField(label="Model bundle (Run)", v_model=("guidino_model",), density="compact",
                               hide_details=True, classes="mb-2",
                               placeholder=("guidino_active_model || 'none yet: Refine makes one'",))
                    VBtn("Run", click=self.run, disabled=("guidino_busy || !is_volume_loaded",), block=True,
                         classes="mb-1 guidino-run")
                    VBtn("Refine from corrections", click=self.refine, color="primary",
                         disabled=("guidino_busy || !is_volume_loaded",), block=True, classes="mb-1 guidino-refine")
                    VBtn("Cancel", click=self.cancel, disabled=("!guidino_busy",), block=True,
                         classes="mb-2 guidino-cancel")
                    VProgressLinear(model_value=("guidino_progress",), height=6, classes="mb-1")
                    html.Div("{{ guidino_progress_text }}", classes="text-caption guidino-progress")
                    html.Div("{{ guidino_status }}", classes="text-body-2 my-1 guidino-status")
                    VAlert(text=("guidino_error",), v_if=("guidino_error",), type="error", density="compact",
                           classes="mb-2 guidino-error")
                    html.Div("{{ guidino_corrections }}", classes="text-caption guidino-corrections")
                    VBtn("Go to suggested slice {{ guidino_suggested }}", click=self.goToSuggested,
                         v_if=("guidino_suggested >= 0",), block=True, variant="tonal", classes="my-1 guidino-suggested")
                    VDivider(classes="my-2")
                    VCheckbox(label="Show the guide", v_model=("guidino_show_guide",), density="compact",
                              hide_details=True, classes="guidino-show-guide")
                    VSlider(label="Guide opacity", v_model=("guidino_guide_opacity",), min=0, max=1, step=0.05,
                            density="compact", hide_details=True, classes="guidino-guide-opacity")
                    VDivider(classes="my-2")
                    VSelect(label="Model versions", items=("guidino_versions",),
                            v_model=("guidino_selected_version",), density="compact", hide_details=True,
                            classes="guidino-versions")
                    VBtn("Roll back", click=self.rollback, disabled=("guidino_busy || !guidino_selected_version",),
                         block=True, classes="my-1 guidino-rollback")
                    VDivider(classes="my-2")
                    with VExpansionPanels(classes="my-2"), VExpansionPanel(title="Window / level",
                                                                         classes="guidino-window-level"):
                        with VExpansionPanelText():
                            self.volumeUi = VolumePropertyUI()  # presets and the window/level range
                    VBtn("Save", click=self.save, disabled=("!is_volume_loaded",), block=True,
                         classes="mb-1 guidino-save")
                    VSelect(label="Saved segmentations", items=("guidino_saved",),
                            v_model=("guidino_selected_saved",), density="compact", hide_details=True,
                            classes="guidino-saved")
                    VBtn("Reload", click=self.reload, disabled=("guidino_busy || !guidino_selected_saved",),
                         block=True, classes="my-1 guidino-reload")
