"""The package's layout: stages import only earlier stages and the plumbing, nothing imports in
a circle, and every module says what it is for and stays short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "histodistill"
# The plumbing every stage may use: it imports nothing but itself. Each stage's `config` module
# (plain dataclasses, which the presets and the run record read) counts as plumbing too.
PLUMBING = {"__init__", "presets", "cache", "checkpoints", "paths", "progress", "machine", "workers",
            "parameters", "plots"}
# The stage subpackages in the order of the notebooks; each may import the ones before it.
STAGES = ["data", "classifiers", "generate", "select", "evaluate", "privacy"]
# How notebooks and the runner reach every stage: nothing below imports them. `summary` reads
# every stage's output files for the notebooks' closing cells, and `lab_contents` serves the
# notebooks to JupyterLab, so they sit here too.
ORCHESTRATION = {"run_record", "runner", "notebook_runs", "compare", "summary", "run_outputs", "lab_contents"}
# Imports of a later stage allowed, each with its reason (none today).
UPWARD_ALLOWED: set[tuple[str, str]] = set()
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def layer(module: str) -> tuple[int, str]:
    """(rank, group): plumbing 0, stage i i + 1, orchestration last."""
    head = module.split(".")[0]
    if head in STAGES and module.endswith(".config"):
        return 0, "plumbing"
    if head in STAGES:
        return STAGES.index(head) + 1, head
    if head in PLUMBING:
        return 0, "plumbing"
    if head in ORCHESTRATION:
        return len(STAGES) + 1, "orchestration"
    raise AssertionError(f"histodistill.{module} belongs to no layer: add it to tests/plumbing/test_layout.py")


def imported_modules(path: Path) -> set[str]:
    """Every histodistill module `path` imports, at the top or inside a function."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("histodistill"):
                target = node.module.removeprefix("histodistill").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}" if target else alias.name
                found.add(candidate if _exists(candidate) else target or "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("histodistill.") for a in node.names if a.name.startswith("histodistill.")}
    return {m for m in found if m != module}


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    for path in MODULES:
        layer(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_module_imports_only_its_own_stage_earlier_stages_and_the_plumbing(path):
    module = module_name(path)
    rank, group = layer(module)
    upward = []
    for target in sorted(imported_modules(path)):
        target_rank, target_group = layer(target)
        if group == "plumbing" and target_group != "plumbing":
            upward.append(target)
        elif target_rank > rank and (module, target) not in UPWARD_ALLOWED:
            upward.append(target)
    assert not upward, f"histodistill.{module} ({group}) imports later layers: {upward}"


def test_nothing_imports_in_a_circle():
    graph = {module_name(p): {m for m in imported_modules(p) if _exists(m) or m == "__init__"} for p in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_a_module_says_what_it_is_for_and_stays_short(path):
    tree = ast.parse(path.read_text())
    docstring = ast.get_docstring(tree)
    assert docstring and len(docstring.split()) >= 8, f"{path.name} needs a docstring that says what it is for"
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {lines} lines (at most {MAX_LINES})"


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """A planted upward import (a data module importing the evaluation) is reported."""
    fake = tmp_path / "histodistill"
    (fake / "data").mkdir(parents=True)
    (fake / "evaluate").mkdir()
    for init in (fake / "__init__.py", fake / "data" / "__init__.py", fake / "evaluate" / "__init__.py"):
        init.write_text('"""A package for the layer check\'s own test, nothing more."""\n')
    (fake / "evaluate" / "evaluation.py").write_text('"""The evaluation."""\n')
    bad = fake / "data" / "dataset.py"
    bad.write_text('"""Reads data, and wrongly imports the evaluation."""\nfrom ..evaluate import evaluation\n')
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"imports later layers: \['evaluate.evaluation'\]"):
        test_a_module_imports_only_its_own_stage_earlier_stages_and_the_plumbing(bad)


def test_the_cycle_check_sees_a_lazy_import_in_a_circle(tmp_path, monkeypatch):
    """Two modules of one stage importing each other, one of them inside a function."""
    fake = tmp_path / "histodistill"
    (fake / "generate").mkdir(parents=True)
    for init in (fake / "__init__.py", fake / "generate" / "__init__.py"):
        init.write_text('"""A package for the cycle check\'s own test, nothing more."""\n')
    (fake / "generate" / "stages.py").write_text('"""Stages."""\nfrom . import scale_out\n')
    (fake / "generate" / "scale_out.py").write_text('"""Scale-out."""\n\ndef work():\n    from .stages import x\n')
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    monkeypatch.setitem(globals(), "MODULES", sorted(fake.rglob("*.py")))
    with pytest.raises(AssertionError, match="import cycle: generate.scale_out -> generate.stages -> generate.scale_out"):
        test_nothing_imports_in_a_circle()
