"""No import cycles among the package's modules or the training package's, lazy imports (inside functions)
included: every module can be read and changed without the ones that import it. Standard library only: the
imports are read from the source with `ast`."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"simple_ddpm": ROOT / "src" / "simple_ddpm", "training": ROOT / "training"}


def module_name(package: str, path: Path) -> str:
    return package if path.name == "__init__.py" else f"{package}.{path.stem}"


def imported_modules(package: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that `path` imports anywhere in its body: `import a.b`, `from a import b`,
    `from .b import c`, `from . import b`, and `importlib.import_module("a.b")` with a literal name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package if node.level else (node.module or "")
            if node.level and node.module:
                base = f"{package}.{node.module}"
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [node.args[0].value]
        found.update(name for name in names if name in known)
    found.discard(module_name(package, path))
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p, f): (p, f) for p, folder in PACKAGES.items() for f in sorted(folder.glob("*.py"))}
    known = set(files)
    graph = {name: imported_modules(p, f, known) for name, (p, f) in files.items()}
    # A package's __init__ importing its modules is no cycle of theirs: `from .x import y` runs x first.
    return {name: {m for m in targets if m not in PACKAGES} for name, targets in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "a.py").write_text("from .b import f\n")
    (folder / "b.py").write_text("def f():\n    from .a import g\n")
    (folder / "c.py").write_text("import importlib\nimportlib.import_module('pkg.a')\n")
    known = {"pkg.a", "pkg.b", "pkg.c"}
    graph = {f"pkg.{name}": imported_modules("pkg", folder / f"{name}.py", known) for name in "abc"}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_the_import_graph_of_the_package_and_training_has_no_cycle():
    graph = import_graph()
    assert "simple_ddpm.scheduling_simple_ddpm" in graph and "training.train" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
