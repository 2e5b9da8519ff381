"""Every private (`_`-prefixed) API of another library that medix-ray uses is listed, with the version it was
checked against, in medix_ray/environment/__init__.py's docstring."""

import ast
import sys
from pathlib import Path

import medix_ray.environment

ROOT = Path(__file__).resolve().parents[2]
OURS = {"medix_ray", "deployments", "jobs", "tools", "tests"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(source: str) -> set[str]:
    """Returns the private names of other libraries that `source` uses: `from lib import _x` as `lib._x`, and an
    attribute chain from an imported library name (`ray._private.worker._global_node`, `Factory._registry`)
    up to its last private part."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> what it imports
    uses: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top not in OURS and top not in sys.stdlib_module_names:
                    bound[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in OURS or top in sys.stdlib_module_names:
                continue
            for alias in node.names:
                if _private(alias.name):
                    uses.add(f"{node.module}.{alias.name}")
                bound[alias.asname or alias.name] = alias.name
    inner_links = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner_links:  # each whole chain once
            parts: list[str] = []
            inner: ast.AST = node
            while isinstance(inner, ast.Attribute):
                parts.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in bound:
                chain = [bound[inner.id], *parts]
                last = max((i for i, p in enumerate(chain) if _private(p)), default=None)
                if last is not None:
                    uses.add(".".join(chain[: last + 1]))
    return uses


def test_the_scan_finds_private_names():
    code = (
        "import ray\nfrom vllm.x import Factory\nfrom ray.serve.context import _client\nimport os\n"
        "ray._private.worker._global_node.get_logs_dir_path()\nFactory._registry\nos._exit\nray.init()\n"
    )
    assert private_uses(code) == {
        "ray._private.worker._global_node",
        "Factory._registry",
        "ray.serve.context._client",
    }


def test_every_private_api_used_is_listed():
    listed = medix_ray.environment.__doc__
    files = [p for folder in ("medix_ray", "deployments", "jobs") for p in (ROOT / folder).rglob("*.py")]
    used = {
        name: str(path.relative_to(ROOT)) for path in files for name in private_uses(path.read_text(encoding="utf-8"))
    }
    assert "ray._private.worker._global_node" in used  # the scan reaches the code
    assert {name: where for name, where in used.items() if name not in listed} == {}
