"""The layering of the package, read from the source with `ast` (nothing is imported).

Every module of medix_ray/ and deployments/ is parsed, and every import of one of their modules is an edge of
the module graph: `import` and `from ... import` at module level, inside functions (lazy imports count: they run
too) and under `if TYPE_CHECKING:` (a type is a dependency too), relative imports, and
`importlib.import_module("...")` with a literal name. The rules:

- the graph has no cycle;
- reward code (medix_ray/rewards/) imports neither the evaluation (medix_ray.eval) nor the trainer, and the reward
  side (medix_ray/rewards/ and deployments/reward_app.py) reaches neither even through other modules;
- data code (medix_ray/data/) imports neither rollout, nor the evaluation, nor the trainer;
- only entry points import deployments/: the command line (medix_ray/cli.py, medix_ray/commands/), the training
  controller (medix_ray/trainer/) and jobs/ (scripts, not parsed here); deployments/ itself, too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("medix_ray", "deployments")

# Edges "importer -> imported" that a rule refuses but a change in progress still needs: the cycle test leaves
# them out of the graph, the layer tests let them pass. Empty at a release; a listed edge that is gone fails
# test_every_pending_offender_still_exists, so the list cannot go stale.
PENDING: set[str] = set()

REWARD_SIDE = ("medix_ray.rewards", "deployments.reward_app")
ENTRY_POINTS = ("medix_ray.cli", "medix_ray.commands", "medix_ray.trainer", "deployments")
# (importer package, imported packages it must not import)
FORBIDDEN = (
    ("medix_ray.rewards", ("medix_ray.eval", "medix_ray.trainer")),
    ("medix_ray.data", ("medix_ray.rollout", "medix_ray.eval", "medix_ray.trainer")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Returns {module name: file} of every module of PACKAGES (a package is its __init__.py)."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_names(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """Yields (the dotted name an import asks for, its line) for every import in the file, at any depth.

    `from a.b import c` yields `a.b.c` (a module `c`, or a name in `a.b`: `resolve` decides).
    """
    package = name if _is_package(path) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield (f"{base}.{alias.name}" if alias.name != "*" else base), node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def resolve(dotted: str, known: dict[str, Path]) -> str | None:
    """Returns the module of ours an imported name lives in: the longest known prefix; None for another package's.

    A namespace package without __init__.py (medix_ray/eval/) is no module: `from medix_ray.eval import x` is `x`.
    """
    parts = dotted.split(".")
    if parts[0] not in PACKAGES:
        return None
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def edges() -> dict[str, dict[str, int]]:
    """Returns {importer: {imported: first line}} over our modules (self-imports left out)."""
    known = modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        out = graph.setdefault(name, {})
        for dotted, line in imported_names(path, name):
            target = resolve(dotted, known)
            if target is not None and target != name:
                out.setdefault(target, line)
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Returns one cycle (its modules in import order, the first repeated at the end) per strongly connected
    component of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    cycles = []
    for component in map(sorted, components):
        inside = {m: {t: line for t, line in graph[m].items() if t in component} for m in component}
        cycles.append(path_to(inside, component[0], lambda m, first=component[0]: m == first))
    return cycles


def path_to(graph: dict[str, dict[str, int]], start: str, goal: Callable[[str], bool]) -> list[str] | None:
    """Returns a shortest import chain from `start` to a module for which `goal` is true (`start` itself only
    through a cycle); None if none is reached."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, {})):
                if goal(child):
                    return [*paths[node], child]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    return None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edge(graph: dict[str, dict[str, int]], importer: str, imported: str) -> str:
    return f"{importer} -> {imported}  ({modules()[importer].relative_to(ROOT)}:{graph[importer][imported]})"


def without_pending(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {a: {b: line for b, line in targets.items() if f"{a} -> {b}" not in PENDING} for a, targets in graph.items()}


def test_the_parser_sees_lazy_relative_and_importlib_imports(tmp_path, monkeypatch):
    package = tmp_path / "medix_ray"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "import importlib\ndef f():\n    from medix_ray.sub import b\n    importlib.import_module('deployments.app')\n"
    )
    (package / "sub" / "b.py").write_text("from ..a import f\nfrom . import c\n")
    (package / "sub" / "c.py").write_text("import json\nimport medix_ray.sub.b\n")
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "app.py").write_text("from medix_ray.a import f\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    graph = edges()
    assert graph == {
        "medix_ray": {},
        "medix_ray.a": {"medix_ray.sub.b": 3, "deployments.app": 4},
        "medix_ray.sub.b": {"medix_ray.a": 1, "medix_ray.sub.c": 2},
        "medix_ray.sub.c": {"medix_ray.sub.b": 2},
        "deployments.app": {"medix_ray.a": 1},
    }
    assert find_cycles(graph) == [["deployments.app", "medix_ray.a", "deployments.app"]]  # one per tangle, shortest
    del graph["medix_ray.a"]["deployments.app"]
    assert find_cycles(graph) == [["medix_ray.a", "medix_ray.sub.b", "medix_ray.a"]]


def test_the_module_graph_has_no_cycle():
    graph = edges()
    cycles = find_cycles(without_pending(graph))
    assert not cycles, "import cycles (each from a module back to it):\n" + "\n".join(
        "  " + "\n    ".join(_edge(graph, a, b) for a, b in zip(c, c[1:], strict=False)) for c in cycles
    )


def test_rewards_and_data_import_none_of_the_layers_above_them():
    graph = edges()
    wrong = [
        f"{importer} -> {imported}"
        for importer, targets in graph.items()
        for package, above in FORBIDDEN
        if _within(importer, package)
        for imported in targets
        if any(_within(imported, layer) for layer in above)
    ]
    offenders = [_edge(graph, *e.split(" -> ")) for e in wrong if e not in PENDING]
    assert not offenders, "imports of a layer above:\n  " + "\n  ".join(offenders)


def test_the_reward_side_reaches_neither_the_evaluation_nor_the_trainer():
    graph = without_pending(edges())
    above = ("medix_ray.eval", "medix_ray.trainer")
    chains = [
        path_to(graph, m, lambda n: any(_within(n, layer) for layer in above))
        for m in sorted(graph)
        if any(_within(m, side) for side in REWARD_SIDE)
    ]
    assert not any(chains), "the reward side loads a layer above it:\n  " + "\n  ".join(
        " -> ".join(c) for c in chains if c
    )


def test_only_entry_points_import_deployments():
    graph = edges()
    wrong = [
        f"{importer} -> {imported}"
        for importer, targets in graph.items()
        if not any(_within(importer, entry) for entry in ENTRY_POINTS)
        for imported in targets
        if _within(imported, "deployments")
    ]
    offenders = [_edge(graph, *e.split(" -> ")) for e in wrong if e not in PENDING]
    assert not offenders, "library modules importing deployments/:\n  " + "\n  ".join(offenders)


def test_every_pending_offender_still_exists():
    graph = edges()
    gone = sorted(e for e in PENDING if e.split(" -> ")[1] not in graph.get(e.split(" -> ")[0], {}))
    assert not gone, f"these imports are gone: remove them from PENDING: {gone}"
