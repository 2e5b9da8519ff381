"""The `medix-ray` command line, run as a user would (a subprocess of the installed entry point)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run(*args, timeout=300):
    exe = Path(sys.executable).parent / "medix-ray"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "medix_ray.cli"]
    return subprocess.run(
        cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ)
    )


def test_models_list_names_every_offline_model():
    out = run("models", "list")
    assert out.returncode == 0, out.stderr
    for name in ("smollm2-135m-instruct", "all-minilm-l6-v2", "tiny-qwen2.5-vl", "tiny-qwen3-vl"):
        assert name in out.stdout


def test_config_show_prints_the_resolved_config_with_overrides():
    out = run("config", "show", "--config", "configs/tiny_cpu.yaml", "rollout.n=9")
    assert out.returncode == 0, out.stderr
    import yaml

    shown = yaml.safe_load(out.stdout)
    assert shown["rollout"]["n"] == 9 and shown["model"]["policy"] == "smollm2-135m-instruct"


def test_unknown_key_exits_2_with_a_suggestion():
    out = run("config", "show", "--config", "configs/tiny_cpu.yaml", "rollout.temprature=0.5")
    assert out.returncode == 2
    assert "did you mean 'rollout.temperature'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_data_validate_reports_bundled_counts():
    out = run("data", "validate", "--config", "configs/tiny_vlm_cpu.yaml", "--strict")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "train: read 528, valid 528, excluded by config 0, skipped 0, images 128" in out.stdout
    assert "X_RAY 8" in out.stdout


@pytest.mark.slow
def test_data_validate_on_a_bad_file_names_the_sample(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "q7", "problem": "Q?", "solution": "<XRAY> A", "image": []}\n')
    out = run("data", "validate", f"data.train={bad}", "--split", "train")
    assert out.returncode == 2
    assert "sample 'q7': field 'solution': unknown modality tag <XRAY>" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("data", "validate", f"data.train={bad}", "data.on_bad_sample=skip", "--split", "train", "--strict")
    assert out.returncode == 1
    assert "skipped 1" in out.stdout and "skipped for solution: 1" in out.stdout


def test_export_of_a_folder_that_is_not_a_checkpoint_is_named(tmp_path):
    out = run("export", str(tmp_path), str(tmp_path / "hf"))
    assert out.returncode == 2
    assert f"{tmp_path} is not a learner checkpoint" in out.stderr and "Traceback" not in out.stderr
