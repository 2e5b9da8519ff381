"""One registry of every environment variable medix-ray reads (medix_ray/environment/switches.py): the code
names none outside it, and docs/config.md ("Environment switches") prints it."""

import re
from pathlib import Path

from medix_ray.config import EvalConfig, JudgeConfig, ServeConfig
from medix_ray.environment.switches import BY_NAME, SECRETS, SWITCHES, markdown_table

ROOT = Path(__file__).resolve().parents[1]
# A MEDIX_ name on its own (not the tail of a longer identifier such as _MEDIX_TEMPLATE).
NAME = re.compile(r"(?<![A-Za-z0-9_])MEDIX_[A-Z0-9_]*[A-Z0-9]")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".toml", ".sh", ".cfg", ".txt", ".md", ".jinja"}


def names_in_code() -> dict[str, set[str]]:
    """Returns every MEDIX_ name in medix_ray/, deployments/, jobs/ and the Makefile, with the files naming it."""
    files = [ROOT / "Makefile"]
    for folder in ("medix_ray", "deployments", "jobs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    found: dict[str, set[str]] = {}
    for path in files:
        for name in NAME.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_medix_variable_in_the_code_is_in_the_registry():
    found = names_in_code()
    assert {"MEDIX_RAY_HOME", "MEDIX_RAY_TARGET", "MEDIX_VLLM_READER_SPIN_S"} <= set(found)  # the scan sees them
    assert {name: sorted(files) for name, files in found.items() if name not in BY_NAME} == {}


def test_every_registered_variable_is_documented():
    config_doc = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert [s.name for s in SWITCHES if f"`{s.name}`" not in config_doc] == []
    assert markdown_table() in config_doc  # the table is the registry's, as generated


def test_the_secrets_are_the_defaults_the_configs_point_to():
    defaults = {JudgeConfig().api_key_env, EvalConfig().judge_api_key_env, ServeConfig().auth_token_env}
    assert {s.name for s in SECRETS} == defaults
