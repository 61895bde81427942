"""ARCHITECTURE.md held to the code: the engine files its diagram draws, the ones it calls torch-free (with every
import they reach, lazy ones too), and the Slicer-side methods it names."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "GuiDINOSegment" / "guidino"
TEXT = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
DIAGRAM = TEXT.split("```")[1]
COMPUTE = ("torch", "transformers", "peft", "monai")


def engine_box():
    """The diagram's lines inside the ``guidino/`` box."""
    lines = DIAGRAM.splitlines()
    start = next(i for i, line in enumerate(lines) if "GuiDINOSegment/guidino/" in line)
    return lines[start + 1:next(i for i in range(start, len(lines)) if "└" in lines[i])]


def engine_modules():
    """Every engine module as its dotted name below ``guidino`` (``training.refine``, ``guides.base``)."""
    return sorted(".".join(p.relative_to(ENGINE).with_suffix("").parts) for p in ENGINE.rglob("*.py")
                  if p.name != "__init__.py")


def imports(module):
    """The modules ``guidino.<module>`` imports, lazily or not, as absolute dotted names."""
    path = ENGINE.joinpath(*module.split(".")).with_suffix(".py")
    package = ["guidino", *module.split(".")[:-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from . import x` names a module
    return found


def reached(module):
    """Every module ``guidino.<module>`` reaches through the engine's own imports (itself included)."""
    known = set(engine_modules())
    todo, seen, outside = [module], set(), set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imports(current):
            if name.startswith("guidino."):
                inner = name[len("guidino."):]
                if inner in known:
                    todo.append(inner)
            else:
                outside.add(name)
    return seen, outside


def test_the_diagram_draws_every_engine_file_and_no_other():
    box = " ".join(engine_box())
    words = {w for w in re.findall(r"[A-Za-z_]+/?", box) if w.islower()}
    drawn = {w.rstrip("/") for w in words}
    for module in engine_modules():
        name = module.split(".")[-1]
        folder = module.split(".")[0] if "." in module else None
        assert name in drawn or (folder == "guides" and "guides/" in words), f"{module} is not in ARCHITECTURE.md"
    leaves = {m.split(".")[-1] for m in engine_modules()} | {"guides", "training"}
    prose = {"pip", "install", "e", "guidino", "the", "command", "line", "sits", "on", "top", "of", "rest", "python",
             "m", "worker", "process", "slicer", "s", "jobs", "run", "in", "base", "one", "file", "per", "family",
             "evidence", "connectivity", "continuity", "torch_free", "torch", "free"}
    assert not {w.rstrip("/") for w in words} - leaves - prose, "the diagram names files that do not exist"


def torch_free_drawn():
    """The engine modules the diagram calls torch-free: the words before '(torch-free)' on its lines."""
    names = []
    for line in engine_box():
        if "torch-free" in line:
            before = line.split("(torch-free)")[0].strip("│ ")
            prefix = "training." if before.startswith("training/") else ""
            words = re.findall(r"[a-z_]+", before.replace("training/", ""))
            names += [prefix + w for w in words][-1:] if prefix else [prefix + w for w in words]
    return names


def test_the_diagram_says_which_engine_files_slicer_may_import():
    assert set(torch_free_drawn()) >= {"review", "jobs", "bundlefiles", "interpolation", "fusion", "training.settings"}


@pytest.mark.parametrize("module", torch_free_drawn())
def test_what_the_diagram_calls_torch_free_reaches_no_torch(module):
    assert module in engine_modules()
    seen, outside = reached(module)
    heavy = sorted(n for n in outside if n.split(".")[0] in COMPUTE)
    assert not heavy, f"guidino.{module} reaches {heavy} through {sorted(seen)}"


def test_the_slicer_side_methods_it_names_exist():
    code = "\n".join(p.read_text(encoding="utf-8") for folder in ("GuiDINOSegment", "GuiDINOTrain") for p in (ROOT / folder).rglob("*.py")
                     if "guidino" not in p.parts)
    defined = {node.name for node in ast.walk(ast.parse(code)) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    named = set(re.findall(r"`([a-z]+[A-Z][A-Za-z]*)(?:\(|`)", TEXT))
    assert named and not named - defined, f"ARCHITECTURE.md names {sorted(named - defined)}, which the code lacks"


def lib_imports(package):
    """{file stem: stems of the same package it imports, lazily or not} for a Slicer-side ``*Lib`` package."""
    folder = next(ROOT.glob(f"*/{package}"))
    graph = {}
    for path in folder.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    found.add(node.module.split(".")[0])
                elif node.module == package or (node.module or "").startswith(package + "."):
                    found.update([node.module.split(".")[1]] if "." in node.module else
                                 [alias.name for alias in node.names])
        graph[path.stem] = found - {path.stem, "__init__"}
    return graph


@pytest.mark.parametrize("package", ["GuiDINOSegmentLib", "GuiDINOTrainLib"])
def test_the_slicer_side_files_import_each_other_without_a_loop(package):
    graph = lib_imports(package)

    def visit(stem, path):
        assert stem not in path, f"import loop: {' -> '.join(path + [stem])}"
        for other in sorted(graph.get(stem, ())):
            visit(other, path + [stem])

    for stem in graph:
        visit(stem, [])


@pytest.mark.parametrize("package", ["GuiDINOSegmentLib", "GuiDINOTrainLib", "SegmentEditorGuiDINOLib", "GuiDINOWeb"])
def test_the_diagram_draws_every_slicer_side_file(package):
    for path in next(ROOT.glob(f"*/{package}")).glob("*.py"):
        if path.name != "__init__.py":
            assert path.name in DIAGRAM, f"{package}/{path.name} is not in ARCHITECTURE.md's diagram"
