"""The typed readers of the environment switches (medix_ray/environment/switches.py): defaults when unset,
and a bad value refused with the variable's name."""

from pathlib import Path

import pytest

from medix_ray.environment import switches
from medix_ray.rewards import adapters
from medix_ray.rewards.composite import RewardBreakdown


def test_unset_switches_read_as_their_defaults():
    assert switches.HOME.read({}) == Path.home() / ".cache" / "medix_ray"
    assert switches.DASHBOARD.read({}) is None  # decided by the node
    assert switches.READER_SPIN_S.read({"MEDIX_VLLM_READER_SPIN_S": "  "}) is None  # blank is unset
    assert switches.REWARD_URL.read({}) is None and switches.REWARD_CONFIG.read({}) is None
    assert switches.ON_UNSCORED.read({}) == "raise"
    assert switches.TARGET.read({}) == "auto"
    assert switches.JUDGE_API_KEY.read({}) == "" and switches.SERVE_TOKEN.read({}) == ""


def test_set_switches_read_as_typed_values(tmp_path):
    config = tmp_path / "reward.yaml"
    config.write_text("{}\n")
    assert switches.HOME.read({"MEDIX_RAY_HOME": "~/cache"}) == Path.home() / "cache"
    assert switches.DASHBOARD.read({"MEDIX_RAY_DASHBOARD": "0"}) is False
    assert switches.READER_SPIN_S.read({"MEDIX_VLLM_READER_SPIN_S": "0.05"}) == 0.05
    assert switches.REWARD_URL.read({"MEDIX_RAY_REWARD_URL": "http://10.0.0.1:8000"}) == "http://10.0.0.1:8000"
    assert switches.REWARD_CONFIG.read({"MEDIX_RAY_REWARD_CONFIG": str(config)}) == str(config)
    assert switches.ON_UNSCORED.read({"MEDIX_RAY_ON_UNSCORED": "zero"}) == "zero"
    assert switches.TARGET.read({"MEDIX_RAY_TARGET": "gpu"}) == "gpu"


@pytest.mark.parametrize(
    ("switch", "bad", "expected"),
    [
        (switches.DASHBOARD, "yes", "expected 1 (dashboard) or 0 (none)"),
        (switches.READER_SPIN_S, "soon", "expected seconds, a number >= 0"),
        (switches.READER_SPIN_S, "-1", "expected seconds, a number >= 0"),
        (switches.READER_SPIN_S, "nan", "expected seconds, a number >= 0"),
        (switches.REWARD_URL, "localhost:8000", "expected an http:// or https:// URL"),
        (switches.REWARD_CONFIG, "/no/such/reward.yaml", "expected the path of a config YAML file (no such file)"),
        (switches.ON_UNSCORED, "Zero", "expected raise or zero"),
        (switches.TARGET, "tpu", "expected auto, cpu or gpu"),
    ],
)
def test_a_bad_value_is_refused_by_name(switch, bad, expected):
    with pytest.raises(ValueError) as err:
        switch.read({switch.name: bad})
    assert str(err.value) == f"{switch.name}={bad!r}: {expected}"


def test_the_reward_adapters_read_through_the_registry(monkeypatch):
    unscored = RewardBreakdown("q1", None, 1.0, None, 0.8, 1.0, {"accuracy_llm": "judge_error"})
    monkeypatch.setenv(switches.ON_UNSCORED.name, "Zero")
    with pytest.raises(ValueError, match="MEDIX_RAY_ON_UNSCORED='Zero': expected raise or zero"):
        adapters._as_scores(unscored)
    monkeypatch.setattr(adapters, "_default", None)
    monkeypatch.setenv(switches.REWARD_URL.name, "reward-host:8000")
    with pytest.raises(ValueError, match="MEDIX_RAY_REWARD_URL='reward-host:8000'"):
        adapters._default_reward()


def test_the_judge_server_gets_the_switches_marked_for_it():
    from medix_ray.rewards.judge_server import judge_server_env

    env = judge_server_env({"MEDIX_RAY_HOME": "/cache", "MEDIX_VLLM_READER_SPIN_S": "0", "MEDIX_RAY_SERVE_TOKEN": "t"})
    assert env == {"MEDIX_RAY_HOME": "/cache", "MEDIX_VLLM_READER_SPIN_S": "0"}
    assert switches.judge_server_names() == {"MEDIX_RAY_HOME", "MEDIX_VLLM_READER_SPIN_S"}
