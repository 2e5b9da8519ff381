"""Which packages may import which: `medix_ray.data` sits below the engines and the trainer, and the
environment package below everything (it imports only the console, when it starts Ray)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Returns, for each module file of `package` (a folder under the repository root), every module it
    imports, at the top or inside a function."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def offending(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """Returns the modules of `package` that import one of `forbidden` (or a module inside one), with those imports."""
    found = {
        path: sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))
        for path, names in imported_modules(package).items()
    }
    return {path: names for path, names in found.items() if names}


def test_data_imports_no_engine_trainer_or_deployment():
    assert imported_modules("medix_ray/data")  # the scan found the package's files
    forbidden = ("medix_ray.rollout", "medix_ray.trainer", "medix_ray.learner", "medix_ray.sync", "deployments")
    assert offending("medix_ray/data", forbidden) == {}


def test_the_environment_package_imports_only_itself_and_the_console():
    imports = imported_modules("medix_ray/environment")
    ours = {n for names in imports.values() for n in names if n.split(".")[0] in ("medix_ray", "deployments")}
    assert ours and all(n.startswith("medix_ray.environment") or n.startswith("medix_ray.console") for n in ours), ours
