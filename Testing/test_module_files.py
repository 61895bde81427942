"""Static checks of the Slicer extension layout: Slicer installs only what CMake lists."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["GuiDINOSegment", "GuiDINOTrain"]


def _cmake_list(module, variable):
    text = (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"{module}/CMakeLists.txt has no {variable}"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return {item.replace("${MODULE_NAME}", module) for item in items if item}


WEB = ROOT / "GuiDINOTrain" / "GuiDINOWeb"  # the web app: its own venv, never installed into Slicer


@pytest.mark.parametrize("module", MODULES)
def test_every_python_file_is_listed(module):
    on_disk = {p.relative_to(ROOT / module).as_posix() for p in (ROOT / module).rglob("*.py")
               if "__pycache__" not in p.parts and WEB not in p.parents}
    listed = _cmake_list(module, "MODULE_PYTHON_SCRIPTS")
    assert on_disk - listed == set(), "add these to MODULE_PYTHON_SCRIPTS"
    assert listed - on_disk == set(), "listed in MODULE_PYTHON_SCRIPTS but missing on disk"


def test_slicer_installs_no_file_of_the_web_app():
    assert {p.name for p in WEB.glob("*.py")} >= {"WebApp.py", "WebSession.py"}
    for module in MODULES:
        text = (ROOT / module / "CMakeLists.txt").read_text(encoding="utf-8")
        assert "GuiDINOWeb" not in text, f"{module}/CMakeLists.txt installs the web app into Slicer"


@pytest.mark.parametrize("module", MODULES)
def test_every_resource_is_listed(module):
    on_disk = {p.relative_to(ROOT / module).as_posix() for p in (ROOT / module).rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc") and p.name != "CMakeLists.txt"}
    listed = _cmake_list(module, "MODULE_PYTHON_RESOURCES")
    assert on_disk - listed == set(), "add these to MODULE_PYTHON_RESOURCES"
    assert listed - on_disk == set(), "listed in MODULE_PYTHON_RESOURCES but missing on disk"


def test_top_level_cmake_declares_the_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for needed in ["EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY \"Segmentation\"", "EXTENSION_CONTRIBUTORS",
                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                   "EXTENSION_DEPENDS \"PyTorch\"", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "add_subdirectory(GuiDINOSegment)", "add_subdirectory(GuiDINOTrain)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]:
        assert needed in text, needed


@pytest.mark.parametrize("path", sorted(p for m in MODULES + ["Testing"] for p in (ROOT / m).rglob("*.py")), ids=str)
def test_python_files_parse(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


ENGINE = ROOT / "GuiDINOSegment" / "guidino"
FORBIDDEN_IN_ENGINE = ("slicer", "qt", "ctk", "vtk", "PythonQt", "SegmentEditorEffects")


def _imports(path):
    """Every module name ``path`` imports (at any depth, lazy imports included); relative ones as '.name'."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            names += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return names


def _top(name):
    return name.split(".")[0]


ENGINE_FILES = sorted(ENGINE.rglob("*.py"))


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: p.relative_to(ENGINE).as_posix())
def test_engine_never_imports_slicer_qt_or_vtk(path):
    """No exceptions: not the Logic, not lazily; the engine runs in a plain venv and in a worker process."""
    bad = [n for n in _imports(path) if _top(n) in FORBIDDEN_IN_ENGINE or n.startswith(("qSlicer", "vtk"))
           or _top(n).endswith("Lib")]
    assert not bad, f"{path.name} imports {bad}: Slicer code belongs in a module's *Lib package"


def test_the_guard_sees_every_kind_of_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import vtk\ndef f():\n    from slicer.util import arrayFromVolume\n"
                     "    import importlib; importlib.import_module('qt')\n")
    assert {"vtk", "slicer.util", "qt"} <= set(_imports(probe))


SLICER_LIBS = [ROOT / "GuiDINOSegment" / "GuiDINOSegmentLib", ROOT / "GuiDINOSegment" / "SegmentEditorGuiDINOLib",
               ROOT / "GuiDINOTrain" / "GuiDINOTrainLib"]


def test_lib_packages_hold_only_slicer_code():
    """Every file of a *Lib package works on MRML, the GUI or Slicer's installers; none computes (no torch)."""
    slicer_side = ("slicer", "qt", "ctk", "vtk", "GuiDINOSegmentLib", "SegmentEditorEffects")
    for lib in SLICER_LIBS:
        for path in lib.glob("*.py"):
            if path.name == "__init__.py":
                continue
            names = _imports(path)
            text = path.read_text(encoding="utf-8")
            assert any(_top(n) in slicer_side for n in names) or "MRML" in text or "Slicer" in text, path
            compute = [n for n in names if _top(n) in ("torch", "transformers", "peft", "SimpleITK", "monai")]
            assert not compute, f"{path.name} imports {compute}: computation belongs in the engine (guidino)"


def test_modules_import_one_way_train_to_segment():
    segment_files = list((ROOT / "GuiDINOSegment").rglob("*.py"))
    for path in segment_files:
        names = _imports(path)
        assert not any(_top(n) in ("GuiDINOTrainLib", "GuiDINOTrain") for n in names), path
        assert "GuiDINOTrainLib" not in path.read_text(encoding="utf-8").replace("# ", ""), f"{path} names GuiDINOTrainLib"


def test_the_train_module_registers_refine_for_the_effect_at_startup():
    tree = ast.parse((ROOT / "GuiDINOTrain" / "GuiDINOTrain.py").read_text(encoding="utf-8"))
    module_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GuiDINOTrain")
    init = next(n for n in module_class.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert "registerRefineLogic(trainLogicClass)" in ast.unparse(init)
    factory = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "trainLogicClass")
    assert "from GuiDINOTrainLib import GuiDINOTrainLogic" in ast.unparse(factory)


# -- what an old Slicer loads before GuiDINO can say it is too old --------------------------------
STARTUP_ROOTS = [ROOT / "GuiDINOSegment" / "GuiDINOSegment.py", ROOT / "GuiDINOTrain" / "GuiDINOTrain.py",
                 ROOT / "GuiDINOSegment" / "SegmentEditorGuiDINOLib" / "SegmentEditorEffect.py"]
SEARCH = [ROOT / "GuiDINOSegment", ROOT / "GuiDINOTrain"]


def _module_level_imports(path):
    """Project files imported when ``path`` is imported (module level, not inside functions)."""
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = path.parent if node.level else None
            for _ in range(max(node.level - 1, 0)):
                base = base.parent
            module = (node.module or "").split(".") if node.module else []
            names = []
            for alias in node.names:  # "from pkg import mod" imports pkg/mod.py
                names.append((base, module + [alias.name]))
                names.append((base, module))
            for base, parts in names:
                for root in ([base] if base else SEARCH):
                    target = root.joinpath(*parts)
                    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                        if parts and candidate.is_file():
                            found.append(candidate)
            continue
        else:
            continue
        for name in names:
            for root in SEARCH:
                target = root.joinpath(*name.split("."))
                for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                    if candidate.is_file():
                        found.append(candidate)
    return found


def _startup_files():
    seen, todo = set(), list(STARTUP_ROOTS)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _module_level_imports(path)
    return sorted(seen)


def test_startup_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in _startup_files()}
    assert {"GuiDINOSegment/GuiDINOSegmentLib/DependencyLogic.py", "GuiDINOSegment/GuiDINOSegmentLib/WidgetHelpers.py",
            "GuiDINOTrain/GuiDINOTrainLib/TrainPanel.py", "GuiDINOSegment/guidino/training/settings.py"} <= names


@pytest.mark.parametrize("path", _startup_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_what_slicer_loads_at_startup_runs_on_python_3_9(path):
    """Slicer 5.8 (Python 3.9) must load the modules to tell its user that GuiDINO needs Slicer 5.10: no Python
    3.10 syntax (``ast`` checks the grammar), no ``zip(strict=)``, no ``dataclass(slots=/kw_only=)``, no
    ``X | Y`` annotations without ``from __future__ import annotations``."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, feature_version=(3, 9))
    postponed = "from __future__ import annotations" in text
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            keywords = {k.arg for k in node.keywords}
            assert not (name == "zip" and "strict" in keywords), f"{path.name}:{node.lineno} zip(strict=)"
            assert not (name == "dataclass" and keywords & {"slots", "kw_only"}), f"{path.name}:{node.lineno}"
        annotations = []
        if isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations += [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
            annotations += [node.returns] if node.returns else []
        for annotation in annotations:
            union = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(annotation))
            assert postponed or not union, f"{path.name}:{node.lineno} uses X | Y in an annotation"


def test_extension_icon_and_screenshot_urls_point_to_files_of_this_repository():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        urls = re.search(variable + r'\s+"([^"]+)"', text).group(1).split()
        assert urls, variable
        for url in urls:
            path = url.split("/main/", 1)[1]
            assert (ROOT / path).is_file(), f"{variable}: {path} is not in the repository"


UNIMPORTABLE = '''import sys

class Unimportable:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "peft", "monai"):
            raise ImportError(f"{name} is unimportable in Slicer's process")

sys.meta_path.insert(0, Unimportable())
'''


def _run_without_torch(tmp_path, code, *args):
    """Run ``code`` in a new Python where torch, transformers, peft and monai cannot be imported (Slicer's process
    as it must be), with the modules' Libs and the test harness importable; it must print nothing but end well."""
    script = tmp_path / "probe.py"
    script.write_text(UNIMPORTABLE + code + '\nprint("ok")\n')
    paths = [str(ROOT / "GuiDINOSegment"), str(ROOT / "GuiDINOTrain"), str(ROOT / "Testing")]
    done = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-4000:]


def test_the_review_store_records_strokes_without_torch(tmp_path):
    """What Slicer's own process runs at startup and at every stroke (the review store, the MRML <-> array code)
    works with torch, transformers, peft and monai unimportable: a stroke on a watched scene becomes the user's."""
    _run_without_torch(tmp_path, '''
import numpy as np
import slicer.util
from slicer_harness import HeadlessSlicer
from GuiDINOSegmentLib.ReviewStore import REVIEW_TAG, recordEdits, segmentTag, watchScene
from guidino.review import ReviewState

app = HeadlessSlicer()
volume = slicer.util.addVolumeFromArray(np.zeros((6, 8, 9), np.int16), name="volume")
segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
segmentId = segmentation.GetSegmentation().AddEmptySegment("target", "target")
watchScene(app.scene)
recordEdits(segmentation, segmentId, volume)  # GuiDINO looks at the segment once
drawn = np.zeros((6, 8, 9), np.uint8)
drawn[4, 2:6, 3:7] = 1
slicer.util.updateSegmentBinaryLabelmapFromArray(drawn, segmentation, segmentId, volume)  # a stroke
state = ReviewState.decode(segmentTag(segmentation.GetSegmentation().GetSegment(segmentId), REVIEW_TAG))
assert state.edited == {"axial": [4]}, state.edited
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft", "monai")]
''')


def test_slicers_process_segments_refines_and_lists_versions_without_torch(tmp_path, tiny_guide_dir):
    """Slicer's own process never imports torch, transformers, peft or MONAI: with them unimportable there, the
    Logics of both modules segment a volume and refine from a correction (both in the real worker process, which
    has them), mark slices, show the guide and list the versions."""
    from guidino.bundle import build_model, save_bundle
    from guidino.model import ModelConfig

    bundle = save_bundle(build_model(ModelConfig(network="unet", input_size=64, widths=[8, 16]), str(tiny_guide_dir)),
                         tmp_path / "bundle")
    _run_without_torch(tmp_path, '''
from pathlib import Path

import numpy as np
import slicer.util
from slicer_harness import HeadlessSlicer

from GuiDINOSegmentLib import GuiDINOSegmentLogic, WidgetHelpers  # noqa: F401
from GuiDINOSegmentLib.WorkerClient import closeSharedWorker
from GuiDINOTrainLib import GuiDINOTrainLogic, TrainPanel  # noqa: F401
from guidino.training.settings import RefineSettings

bundle, folder = Path(sys.argv[1]), Path(sys.argv[2])
app = HeadlessSlicer()
voxels = np.zeros((10, 40, 36), np.int16)
voxels[3:8, 10:30, 8:28] = 900
volume = slicer.util.addVolumeFromArray(voxels, name="volume")
segmentation = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
segmentation.CreateDefaultDisplayNodes()
try:
    logic = GuiDINOSegmentLogic()
    result = logic.process(volume, segmentation, model=str(bundle), device="cpu")
    assert result.slicesProcessed == 10 and logic.guideVolume(volume) is not None
    drawn = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, result.segmentId, volume).copy()
    drawn[5] = (voxels[5] > 0).astype(np.uint8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(drawn, segmentation, result.segmentId, volume)
    logic.markSliceReviewed(segmentation, result.segmentId, 6)
    assert logic.reviewedSlices(segmentation, result.segmentId)["slices"] == [5, 6]
    train = GuiDINOTrainLogic(logic, modelsFolder=folder)
    refined = train.refineFromCorrections(volume, segmentation, result.segmentId, model=str(bundle),
                                          settings=RefineSettings(steps=2, time_budget=None, device="cpu"))
    assert refined.bundle is not None and [v["path"] for v in train.versions()] == [refined.bundle]
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, result.segmentId,
                                                                             volume)[5], drawn[5])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "peft", "monai"))
    assert not loaded, loaded
finally:
    closeSharedWorker()
    app.close()
''', bundle, tmp_path / "models")
