from pathlib import Path

import pytest

from medix_ray.config import ConfigError, MedixConfig, all_keys, load_config, to_yaml

# Run configs (the evaluation's task registry and leaderboard live in medix_ray/eval/configs/, with their own tests).
CONFIGS = sorted(Path(__file__).parents[1].joinpath("configs").glob("**/*.yaml"))


def test_defaults_load_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, MedixConfig)
    assert cfg.reward.preset == "medix"
    assert cfg.algorithm.clip_high == 0.28


def test_file_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  n: 3\nreward:\n  judge:\n    model: judge-a\n")
    cfg = load_config(path, ["rollout.n=7", "reward.judge.temperature=0.5"])
    assert cfg.rollout.n == 7
    assert cfg.reward.judge.model == "judge-a"
    assert cfg.reward.judge.temperature == 0.5


def test_unknown_key_in_file_suggests_nearest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  temprature: 0.7\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key 'rollout.temprature'.*did you mean 'rollout.temperature'"
    ):
        load_config(path)


def test_unknown_top_level_section_suggests_nearest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rewards:\n  preset: paper\n")
    with pytest.raises(ConfigError, match=r"'rewards'.*did you mean 'reward'"):
        load_config(path)


def test_unknown_override_suggests_nearest():
    with pytest.raises(
        ConfigError,
        match=r"'algorithm.clip_hgh' in command-line overrides; did you mean 'algorithm.clip_high'",
    ):
        load_config(None, ["algorithm.clip_hgh=0.3"])


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, ["rollout.n"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="rollout.n"):
        load_config(None, ["rollout.n=many"])


def test_choice_outside_allowed_values_is_an_error():
    with pytest.raises(ConfigError, match=r"'reward.preset' is 'strict'; expected one of medix, paper"):
        load_config(None, ["reward.preset=strict"])


def test_unknown_modality_tag_is_an_error():
    with pytest.raises(ConfigError, match="XRAY"):
        load_config(None, ["data.modalities=[XRAY]"])


def test_section_given_a_scalar_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout: 5\n")
    with pytest.raises(ConfigError, match="'rollout'.*is a section"):
        load_config(path)


def test_missing_file_and_bad_yaml_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_yaml_round_trip_preserves_values(tmp_path):
    cfg = load_config(None, ["rollout.n=9", "data.think_tag=thinking"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_all_keys_lists_nested_leaves():
    keys = all_keys()
    assert "reward.judge.base_url" in keys and "learner.zero_stage" in keys and "reward" in keys


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    load_config(path)
