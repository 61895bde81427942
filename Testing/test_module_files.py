"""Static checks of the Slicer extension layout: Slicer installs only what CMake lists."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["GuiDINOSegment", "GuiDINOTrain"]


def _cmake_list(module, variable):
    text = (ROOT / module / "CMakeLists.txt").read_text()
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"{module}/CMakeLists.txt has no {variable}"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return {item.replace("${MODULE_NAME}", module) for item in items if item}


@pytest.mark.parametrize("module", MODULES)
def test_every_python_file_is_listed(module):
    on_disk = {p.relative_to(ROOT / module).as_posix() for p in (ROOT / module).rglob("*.py") if "__pycache__" not in p.parts}
    listed = _cmake_list(module, "MODULE_PYTHON_SCRIPTS")
    assert on_disk - listed == set(), "add these to MODULE_PYTHON_SCRIPTS"
    assert listed - on_disk == set(), "listed in MODULE_PYTHON_SCRIPTS but missing on disk"


@pytest.mark.parametrize("module", MODULES)
def test_every_resource_is_listed(module):
    on_disk = {p.relative_to(ROOT / module).as_posix() for p in (ROOT / module).rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc") and p.name != "CMakeLists.txt"}
    listed = _cmake_list(module, "MODULE_PYTHON_RESOURCES")
    assert on_disk - listed == set(), "add these to MODULE_PYTHON_RESOURCES"
    assert listed - on_disk == set(), "listed in MODULE_PYTHON_RESOURCES but missing on disk"


def test_top_level_cmake_declares_the_extension():
    text = (ROOT / "CMakeLists.txt").read_text()
    for needed in ["EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY \"Segmentation\"", "EXTENSION_CONTRIBUTORS",
                   "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                   "EXTENSION_DEPENDS \"PyTorch\"", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "add_subdirectory(GuiDINOSegment)", "add_subdirectory(GuiDINOTrain)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]:
        assert needed in text, needed


@pytest.mark.parametrize("path", sorted(p for m in MODULES + ["Testing"] for p in (ROOT / m).rglob("*.py")), ids=str)
def test_python_files_parse(path):
    ast.parse(path.read_text(), filename=str(path))


def test_engine_never_imports_slicer():
    for lib in ["GuiDINOSegment/GuiDINOSegmentLib", "GuiDINOTrain/GuiDINOTrainLib"]:
        for path in (ROOT / lib).rglob("*.py"):
            if path.stem.endswith("Logic"):
                continue  # the Logic is the only bridge to MRML
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == "slicer" or n.startswith("slicer.") or n in ("qt", "ctk") for n in names), path
