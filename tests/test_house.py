"""The house rules of docs/architecture.md, checked: rooms stay small and imports flow one way.

No module of the package over 400 lines, no function over 80, no import cycle between its modules (imports inside
functions count: a cycle deferred to run time is still a cycle), and every command of the CLI in its own module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mieruka"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from a.b import c`` counts a.b, or a.b.c if that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mieruka":
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "mieruka")
    return {m for m in out if m in known and m != "mieruka"}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets, as the list of modules from the repeated one back to it."""
    done: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        if m in stack:
            cycles.append([*stack[stack.index(m) :], m])
            return
        if m in done:
            return
        done.add(m)
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            visit(d)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    return cycles


def test_find_cycles_finds_a_cycle_and_only_that() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle_among_the_package_modules() -> None:
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}
    assert find_cycles(graph) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_rooms_stay_small(name: str) -> None:
    path = _modules()[name]
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path}: split the module before it passes {MAX_MODULE_LINES}"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


MODEL_MODULES = {"mieruka.models", "mieruka.checkpoint", "mieruka.neighbors", "mieruka.inference"}
"""What builds or runs a model; the data layer imports none of them (docs/architecture.md)."""


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """What a caller may pass: every named parameter but ``self``/``cls``, and ``*args`` / ``**kwargs`` one each."""
    a = node.args
    named = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.arg not in ("self", "cls")]
    return len(named) + (a.vararg is not None) + (a.kwarg is not None)


def test_parameter_count_counts_what_a_caller_passes() -> None:
    tree = ast.parse("class C:\n    def m(self, a, /, b, *args, c, **kw): ...\ndef f(a, b=1): ...")
    counts = [parameter_count(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert sorted(counts) == [2, 5]


@pytest.mark.parametrize("name", sorted(_modules()))
def test_signatures_stay_short(name: str) -> None:
    """Long signatures become options objects (``PredictOptions``, ``AuditOptions``…), as ``TrainConfig`` did."""
    path = _modules()[name]
    long = [
        f"{node.name} ({parameter_count(node)} parameters)"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and parameter_count(node) > MAX_PARAMETERS
    ]
    assert not long, f"{path}: functions over {MAX_PARAMETERS} parameters: {', '.join(long)}"


def test_the_data_layer_imports_no_model() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("mieruka.data."):
            reached = _imports(path, set(modules)) & MODEL_MODULES
            assert not reached, f"{path}: the data layer imports {', '.join(sorted(reached))}"


def private_imports(source: str) -> list[str]:
    """``module.name`` for every private name (``_x``) imported from another module of the package; a module
    whose own name is private (``mieruka._io``) is the package's shared helpers and may be imported."""
    return [
        f"{node.module}.{a.name}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mieruka"
        if not node.module.split(".")[-1].startswith("_")
        for a in node.names
        if a.name.startswith("_") and not a.name.endswith("__")  # __version__ is public
    ]


def test_private_imports_are_found() -> None:
    source = (
        "from mieruka.cli.evaluate import _track\nfrom mieruka._io import write_json\nfrom mieruka import __version__\n"
    )
    assert private_imports(source) == ["mieruka.cli.evaluate._track"]


def test_no_module_borrows_another_modules_private_helper() -> None:
    """A helper two modules need is made public where both can reach it (``cli._common.track_figures``)."""
    borrowed = {
        name: found for name, path in _modules().items() if (found := private_imports(path.read_text(encoding="utf-8")))
    }
    assert not borrowed, f"private helpers imported across modules: {borrowed}"


def test_every_command_keeps_its_options_beside_its_handler() -> None:
    from mieruka.cli import COMMANDS, build_parser

    names = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for module in COMMANDS:
        assert callable(module.register), module.__name__
    # every subcommand's handler lives in the module that registered its parser
    parser = build_parser()
    for name in names:
        sub = parser._subparsers._group_actions[0].choices[name]  # type: ignore[union-attr]
        handler = sub.get_default("func")
        assert handler.__module__.startswith("mieruka.cli."), name
        assert handler.__module__ != "mieruka.cli", name


def test_code_cites_benchmarks_by_stable_anchors() -> None:
    """Code, tests and benchmark scripts link the benchmark history by anchors (a new section shifts numbers, not
    anchors), and every anchor they name exists."""
    import re

    root = PACKAGE.parents[1]
    history = (root / "docs" / "benchmarks-history.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', history))
    for path in [*PACKAGE.rglob("*.py"), *(root / "tests").glob("*.py"), *(root / "bench").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"BENCHMARKS(\.md)?\s+§\d", text), f"{path}: cites a section number"
        cited = set(re.findall(r"benchmarks-history\.md#([a-z0-9-]+)", text))
        assert cited <= anchors, f"{path}: no such anchor {sorted(cited - anchors)}"
