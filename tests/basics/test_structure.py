"""The package's shape, read from its own source (no tool): layers that point one way, no import cycle between
files, nothing inside the package importing `api`, and no source file over 400 lines."""
import ast
from pathlib import Path

import pytest

MAX_LINES = 400
# lower number = lower layer; a module may import only from its own layer or below
LAYERS = {
    "threads": 0, "amx": 0, "registry": 0, "schema": 0, "recipe": 0, "boxes": 0, "files": 0, "plugins": 0,
    "devices": 0, "drawing": 0,
    "data": 1, "models": 1, "targets": 1, "losses": 1, "postprocess": 1, "optim": 1,
    "inference": 2,
    "engine": 3, "evaluation": 3, "deploy": 3, "interop": 3, "distributed": 3, "speed": 3,
    "api": 4,
    "commands": 5, "cli": 5,
    "node": 6,           # the entry of every process of a distributed job: runs any CLI verb
}


@pytest.fixture(scope="module")
def package(repo) -> Path:
    """The package's source folder, gluon_yolo3/."""
    return repo / "gluon_yolo3"


def modules(package: Path):
    """{module name: path} of every source file of the package."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known):
    """The package modules `name` imports (every import statement, at any depth of the file)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}    # `from . import x` names a module
    return {m for m in found if m in known and m != name}


def graph(package: Path):
    known = modules(package)
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else -1


def find_cycle(edges):
    """One import cycle as a list of modules, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_between_files(package):
    edges = graph(package)
    # a package's __init__ is imported with any of its modules: count its imports, not the reverse edge
    cycle = find_cycle({k: {m for m in v if not k.startswith(m + ".")} for k, v in edges.items()})
    assert cycle is None, " -> ".join(cycle)


def test_nothing_inside_the_package_imports_api(package):
    importers = [name for name, deps in graph(package).items() if "gluon_yolo3.api" in deps
                 and not name.startswith(("gluon_yolo3.commands", "gluon_yolo3.cli", "gluon_yolo3.node"))]
    assert importers == []


def test_every_import_points_down_or_sideways(package):
    upward = [(name, dep) for name, deps in graph(package).items() for dep in deps
              if name.count(".") and dep.count(".") and layer(dep) > layer(name)]
    assert upward == []


def test_every_folder_is_in_a_layer(package):
    assert {m.split(".")[1] for m in modules(package) if m.count(".")} <= set(LAYERS)


def test_no_source_file_over_400_lines(package):
    long = {str(p.relative_to(package)): n for p in package.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
