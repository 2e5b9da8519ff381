"""docs/architecture.md names every module of the product (a module it does not name is a module a newcomer
cannot place)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _named(doc: str) -> set[str]:
    """Returns the module paths the page names: a full path, or a backticked name on a line naming its package."""
    named = set(re.findall(r"`((?:medix_ray|deployments|jobs)/[\w/]+\.py)`", doc))
    for line in doc.splitlines():
        for package in re.findall(r"`((?:medix_ray|deployments|jobs)(?:/\w+)*/)", line):
            for name in re.findall(r"`(\w+)(?:\.py)?`", line):
                named.add(f"{package}{name}.py")
    return named


def test_the_architecture_page_names_every_module():
    doc = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    modules = {
        p.relative_to(ROOT).as_posix()
        for top in ("medix_ray", "deployments", "jobs")
        for p in (ROOT / top).rglob("*.py")
        if p.name != "__init__.py"
    }
    missing = sorted(modules - _named(doc))
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_the_check_sees_a_module_the_page_leaves_out():
    assert "medix_ray/x/a.py" in _named("| `medix_ray/x/` (`a`, `b`) | ... |")
    assert "medix_ray/x/c.py" not in _named("| `medix_ray/x/` (`a`, `b`) | ... |")
    assert "medix_ray/y/z.py" in _named("see `medix_ray/y/z.py`")
