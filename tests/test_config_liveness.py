"""Every config key is read by code: a key that nothing reads is a bug (a recipe would set it for nothing).

Statically, over the product's code (medix_ray/, deployments/, jobs/; config.py itself excluded): a key
`section.leaf` is live when some attribute access `<expr>.leaf` exists whose `<expr>` names the key's
section (`cfg.data.min_pixels`, `data_cfg.min_pixels`, `self.cfg.trainer.seed`), or, for a leaf name no
other section uses, any access `<expr>.leaf`. Keys read by name from a tuple of strings (the rollout's
sampling keys) count when the string appears in a module that reads the section.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

from medix_ray.config import MedixConfig, all_keys, load_config

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("medix_ray", "deployments", "jobs")
SHIPPED = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "paper").glob("*.yaml"))


def _leaves() -> list[str]:
    sections = {k for k in all_keys() if any(o.startswith(k + ".") for o in all_keys())}
    return [k for k in all_keys() if k not in sections]


_SECTION_OF_CLASS = {
    "DataConfig": "data",
    "ModelConfig": "model",
    "RolloutConfig": "rollout",
    "RewardConfig": "reward",
    "JudgeConfig": "judge",
    "EmbeddingConfig": "embedding",
    "AlgorithmConfig": "algorithm",
    "LearnerConfig": "learner",
    "SyncConfig": "sync",
    "TrainerConfig": "trainer",
    "EvalConfig": "eval",
    "ServeConfig": "serve",
}


def _typed_names(func: ast.AST) -> dict[str, str]:
    """Returns {name: section} for the arguments of `func` annotated with a config section class and the
    local aliases of a section (`s = cfg.serve`)."""
    names: dict[str, str] = {}
    args = getattr(func, "args", None)
    for arg in (args.args + args.kwonlyargs) if args else ():
        text = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        for cls, section in _SECTION_OF_CLASS.items():
            if cls in text:
                names[arg.arg] = section
    sections = set(_SECTION_OF_CLASS.values())
    for node in ast.walk(func):  # aliases: `s = cfg.serve`
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Attribute) and value.attr in sections:
                names[node.targets[0].id] = value.attr
    return names


def _segment(lines: list[bytes], node: ast.AST) -> str | None:
    """Returns the source text of `node` as ast.get_source_segment does, from the file's lines split once
    (get_source_segment splits the whole file again on every call: most of this test's time)."""
    if getattr(node, "end_lineno", None) is None:
        return None
    first, last = node.lineno - 1, node.end_lineno - 1
    if first == last:
        return lines[first][node.col_offset : node.end_col_offset].decode("utf-8")
    parts = [lines[first][node.col_offset :], *lines[first + 1 : last], lines[last][: node.end_col_offset]]
    return b"".join(parts).decode("utf-8")


@functools.cache
def _accesses() -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Returns {attribute name: [what it is read from: the object's source text, or the section of an
    argument annotated with a config class]} and {string constant: {module sources}} over the product's code."""
    attrs: dict[str, list[str]] = defaultdict(list)
    strings: dict[str, set[str]] = defaultdict(set)
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "config.py" and path.parent.name == "medix_ray":
                continue
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
            lines = source.encode("utf-8").splitlines(keepends=True)
            typed: dict[int, str] = {}  # id(Name node) -> section, for names bound to annotated arguments
            for func in ast.walk(tree):
                if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    names = _typed_names(func)
                    for node in ast.walk(func):
                        if isinstance(node, ast.Name) and node.id in names:
                            typed[id(node)] = names[node.id]
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute):
                    owner = typed.get(id(node.value)) or _segment(lines, node.value) or ""
                    attrs[node.attr].append(owner)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    strings[node.value].add(source)
    return attrs, strings


def _is_read(key: str, attrs, strings, ambiguous: set[str]) -> bool:
    *path, leaf = key.split(".")
    section = path[-1]
    owners = attrs.get(leaf, [])
    if leaf not in ambiguous and owners:
        return True
    if any(owner == section or owner.split(".")[-1] == section or owner.endswith(f"{section}_cfg") for owner in owners):
        return True
    # read by name: `getattr(cfg.rollout, name) for name in ("n", "temperature", ...)`
    return any(f".{section}" in src or f"{section}_cfg" in src for src in strings.get(leaf, ()))


def test_every_config_key_is_read_by_code():
    attrs, strings = _accesses()
    leaves = _leaves()
    count: dict[str, int] = defaultdict(int)
    for key in leaves:
        count[key.rsplit(".", 1)[1]] += 1
    ambiguous = {leaf for leaf, n in count.items() if n > 1}
    dead = [k for k in leaves if not _is_read(k, attrs, strings, ambiguous)]
    assert not dead, f"config keys no code reads: {dead}"


def test_the_check_catches_a_dead_key():
    attrs, strings = _accesses()
    assert not _is_read("data.no_such_key_anywhere", attrs, strings, set())
    # an ambiguous leaf read only from another section does not count for this one
    assert not _is_read("data.concurrency", attrs, strings, {"concurrency"})


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_only_set_declared_keys(path):
    cfg = load_config(path)  # unknown keys raise ConfigError
    assert isinstance(cfg, MedixConfig)
