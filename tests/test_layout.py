"""The package's shape: subpackages in layers, imports running one way (no circle), nothing reaching around the
install through sys.path."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "common"

# Bottom to top: a module may import its own layer and the layers below, never one above.
LAYERS = ("plumbing", "theory", "models", "testbeds", "steering", "families", "detectors", "plotting", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """Every module of `common` that `name` imports, at module level or inside a function (`from x import y` counts
    y when it is a module, else x)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "common"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "common":
                continue
            modules = {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES}
            found |= modules or {source}
            if modules and len(modules) < len(node.names):
                found.add(source)
    return found


def runtime_edges(name: str) -> set[str]:
    """What importing `name` runs: each imported module and the packages above it that `name` is not inside (its own
    packages are initialised before it)."""
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    edges = set()
    for target in imported_modules(name):
        parts = target.split(".")
        edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - own
    return edges & set(MODULES)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_passes_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_walker_sees_function_level_and_relative_imports():
    """The two circles this layout removed were function-level imports; the walker must see such imports."""
    assert "common.testbeds.cpu_testbed" in imported_modules("common.families.cpu_testbed")
    assert "common.models.pipelines" in imported_modules("common.testbeds.cpu_testbed")     # inside build_word_tokenizer
    assert "common.detectors.nemo" in imported_modules("common.cli.score")                 # inside main


def test_no_import_circle_in_common():
    graph = {name: runtime_edges(name) for name in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1          # `common` itself: below everything


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"common"}))
def test_imports_run_down_the_layers(name):
    """plumbing < theory < models < testbeds < steering < families < detectors < plotting < cli."""
    above = sorted(t for t in imported_modules(name) if t != "common" and layer(t) > layer(name))
    assert not above, f"{name} (layer {LAYERS[layer(name)]}) imports from a layer above it: {above}"


def test_every_subpackage_is_a_layer_and_says_what_it_holds_and_may_import():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} | {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert subpackages == set(LAYERS)
    for p in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        assert len(doc.splitlines()) >= 3 and "import" in doc.lower(), f"{p.parent.name}/__init__.py: no docstring saying what it holds and may import"


def code_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    return path.read_text()


SCRIPTS = sorted({*ROOT.glob("*/*.ipynb"), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")} - {Path(__file__)})


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebooks_tests_and_benchmarks_import_the_installed_package(path):
    """`make` installs `common` (editable): nothing puts the repo on the import path by hand."""
    assert not re.search(r"sys\.path\.(insert|append)|sys\.path \+=|PYTHONPATH", code_of(path))
