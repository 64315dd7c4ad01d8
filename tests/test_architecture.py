"""The package's import graph: no cycles, and no module imports a later stage.

Every import counts, at module level and inside functions, absolute and relative. Rooms, in stage order:

- wiring (``cli``, ``__main__``, ``completions``, ``commands/``): may import anything;
- shared (rank 0): everything that is not wiring, ``model`` or a stage (``errors``, ``records``, ``stream``,
  ``images``, ``masks/``, ``visual/``, ``prompts/``, ``mllm/``, ``datasets/``, ...);
- ``model`` (rank 1): architecture and checkpoints;
- the stages: ``curate`` (2), ``train`` (3), ``caption`` (4), ``evaluate`` (5).

A module may import its own room and lower ranks only.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "ureca_cli"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
STAGES = {"model": 1, "curate": 2, "train": 3, "caption": 4, "evaluate": 5}
WIRING = {"cli", "__main__", "completions", "commands"}


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package: dotted name -> file (a package is its ``__init__``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (module level or in functions)."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from pkg import sub` imports the submodule `pkg.sub`; `from mod import name` imports `mod`
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a non-module: its nearest module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def room(module: str) -> tuple[str, int | None]:
    """(room name, rank); rank ``None`` for wiring, which may import anything."""
    first = module.split(".")[1] if "." in module else ""
    if module == PACKAGE or first in WIRING:
        return "wiring", None
    if first in STAGES:
        return first, STAGES[first]
    return "shared", 0


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def later_stage_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a -> b (room -> later room)"`` for every import of a higher rank than the importer's."""
    bad = []
    for module, targets in sorted(graph.items()):
        name, rank = room(module)
        if rank is None:
            continue
        for target in sorted(targets):
            other, other_rank = room(target)
            if other_rank is None or other_rank > rank:
                bad.append(f"{module} -> {target} ({name} imports {other})")
    return bad


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_imports_a_later_stage():
    bad = later_stage_imports(import_graph())
    assert not bad, "imports of a later room:\n" + "\n".join(bad)


def test_the_graph_sees_every_kind_of_import():
    """The scanner finds imports inside functions, relative and absolute ones (else the checks prove nothing)."""
    graph = import_graph()
    assert "ureca_cli.errors" in graph["ureca_cli.stream"]  # module level, relative
    assert "ureca_cli.model.checkpoint" in graph["ureca_cli.caption.captioner"]  # inside a function
    assert "ureca_cli.cli" in graph["ureca_cli.completions"]  # inside a function, relative
    assert len(graph) > 40


def test_the_checks_fail_on_a_cycle_and_on_a_later_stage(tmp_path):
    """A made-up package with a cycle inside a function and a shared module importing a stage."""
    pkg = tmp_path / PACKAGE
    for rel, text in {
        "__init__.py": "",
        "records.py": "def f():\n    from .curate import tree\n",  # shared -> stage 2
        "curate/__init__.py": "",
        "curate/tree.py": "from . import refine\n",
        "curate/refine.py": "def g():\n    import ureca_cli.curate.tree\n",  # cycle, absolute, in a function
        "evaluate/__init__.py": "",
        "evaluate/score.py": "from ..curate.tree import x\n",  # a later stage importing an earlier one: fine
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert cycles(graph) == [["ureca_cli.curate.refine", "ureca_cli.curate.tree"]]
    assert later_stage_imports(graph) == ["ureca_cli.records -> ureca_cli.curate.tree (shared imports curate)"]
