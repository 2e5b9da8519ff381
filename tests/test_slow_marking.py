"""The `slow` marking in tests/conftest.py: tests that use a heavy fixture are marked at collection, and a test
not marked slow that starts something heavy fails. Runs the real conftest on small test files in a child pytest."""

import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = """
import subprocess
import sys

import pytest


def test_light():
    pass


def test_uses_a_heavy_fixture(smollm2_path):
    pass


def test_spawns_a_vllm_server_unmarked():
    subprocess.run([sys.executable, "-c", "pass", "vllm serve"], check=True)


@pytest.mark.slow
def test_spawns_a_vllm_server_marked():
    subprocess.run([sys.executable, "-c", "pass", "vllm serve"], check=True)


@pytest.fixture(scope="module")
def server():
    subprocess.run([sys.executable, "-c", "pass", "vllm serve"], check=True)


def test_uses_a_module_fixture_that_spawns_unmarked(server):
    pass


def test_prepares_a_model_unmarked(monkeypatch, tmp_path):
    from medix_ray import models

    monkeypatch.setenv("MEDIX_RAY_HOME", str(tmp_path))  # a model already built there: nothing is built
    models.model_dir("smollm2-135m-instruct").mkdir(parents=True)
    (models.model_dir("smollm2-135m-instruct") / models._COMPLETE).touch()
    assert models.prepare_model("smollm2-135m-instruct") == models.model_dir("smollm2-135m-instruct")


def test_fake_and_unknown_models_are_not_heavy(monkeypatch, tmp_path):
    from medix_ray import models

    monkeypatch.setenv("MEDIX_RAY_HOME", str(tmp_path))
    monkeypatch.setitem(models.MODELS, "fake", models.OfflineModel("fake", "causal-lm", "test", None, lambda out: None))
    assert models.prepare_model("fake") == models.model_dir("fake")
    with pytest.raises(KeyError):
        models.prepare_model("no-such-model")
"""


def _pytest(tmp_path: Path, *args: str) -> str:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_heavy.py").write_text(TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-p", "no:cacheprovider", "-o", "markers=slow", "-rA", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    return result.stdout


def test_heavy_fixture_users_are_marked_slow_at_collection(tmp_path):
    out = _pytest(tmp_path, "--collect-only", "-q", "-m", "slow")
    assert "test_uses_a_heavy_fixture" in out
    assert "test_spawns_a_vllm_server_marked" in out
    assert "test_light" not in out
    assert "5 deselected" in out


def test_unmarked_heavy_tests_fail_and_marked_ones_pass(tmp_path):
    out = _pytest(tmp_path, "-m", "not slow")
    assert "PASSED test_heavy.py::test_light" in out
    assert "ERROR test_heavy.py::test_spawns_a_vllm_server_unmarked" in out
    assert "spawned a vLLM server but is not marked slow" in out
    assert "ERROR test_heavy.py::test_prepares_a_model_unmarked" in out
    assert "prepared the offline model 'smollm2-135m-instruct' (prepare_model) but is not marked slow" in out
    assert "PASSED test_heavy.py::test_fake_and_unknown_models_are_not_heavy" in out
    assert "ERROR test_heavy.py::test_uses_a_module_fixture_that_spawns_unmarked" in out
    assert "2 deselected" in out

    out = _pytest(tmp_path, "-k", "marked and not unmarked")
    assert "PASSED test_heavy.py::test_spawns_a_vllm_server_marked" in out
    assert "ERROR" not in out
