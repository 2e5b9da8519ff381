"""One judge for training and evaluation: the reward application's judge deployment answers the evaluation's
chats (`eval.judge=serve:<app>`). Unit tests drive the real `JudgeDeployment` (a pass-through to a scripted
endpoint) through a fake handle; the slow test runs `medix-ray evaluate` against the running reward app."""

import asyncio
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from test_pipeline import ROW  # the answered item the judge worker's tests use (tests/eval/test_pipeline.py)

from medix_ray.config import EvalConfig, load_config
from medix_ray.eval import serve_judge
from medix_ray.eval.judging import REEVALUATE
from medix_ray.eval.protocol import judge_rows
from medix_ray.eval.serve_judge import ServeTransport
from medix_ray.rewards.judge import JudgeUnavailableError
from medix_ray.rewards.judge_chat import ChatRequest, JudgeChatError, ServeJudgeInfo

FIXTURES = Path(__file__).parent / "fixtures"


class _Response:
    """A DeploymentResponse stand-in: awaitable once, cancellable."""

    def __init__(self, call):
        self.call = call
        self.cancelled = False

    def __await__(self):
        return self.call().__await__()

    def cancel(self):
        self.cancelled = True


class _Method:
    def __init__(self, handle, name):
        self.handle, self.name = handle, name

    def remote(self, *args, **kwargs):
        target = getattr(self.handle.target, self.name)

        async def call():
            self.handle.calls.append((self.name, args, kwargs))
            self.handle.in_flight += 1
            self.handle.peak = max(self.handle.peak, self.handle.in_flight)
            try:
                out = target(*args, **kwargs)
                return await out if asyncio.iscoroutine(out) else out
            finally:
                self.handle.in_flight -= 1

        response = _Response(call)
        self.handle.responses.append(response)
        return response


class FakeHandle:
    """A DeploymentHandle stand-in that calls the methods of `target` in the caller's event loop."""

    def __init__(self, target):
        self.target = target
        self.calls, self.responses = [], []
        self.in_flight = self.peak = 0

    def __getattr__(self, name):
        return _Method(self, name)


class _ScriptedJudge:
    """A judge deployment stand-in: replies from a script (a str, or an exception to raise), after `delay_s`."""

    def __init__(self, replies=(), default='{"score": 1}', delay_s=0.0):
        self.replies, self.default, self.delay_s = list(replies), default, delay_s

    async def chat(self, messages, *, max_tokens=None, temperature=None, structured=None):
        await asyncio.sleep(self.delay_s)
        reply = self.replies.pop(0) if self.replies else self.default
        if isinstance(reply, BaseException):
            raise reply
        return reply


def _pass_through(url, **kw):
    """The real judge deployment of the reward app, as a plain object: a pass-through to `url`."""
    from deployments.reward_app import JudgeDeployment

    overrides = [f"reward.judge.base_url={url}"] + [f"{k}={v}" for k, v in kw.items()]
    return JudgeDeployment(load_config("configs/serve/rewards_cpu.yaml", overrides))


def test_app_names_and_labels():
    assert serve_judge.is_serve_judge("serve:medix-rewards") and not serve_judge.is_serve_judge("http://x/v1")
    assert serve_judge.app_name("serve: medix-rewards ") == "medix-rewards"
    for bad in ("serve:", "serve:  ", "medix-rewards"):
        with pytest.raises(ValueError, match="serve:<application name>"):
            serve_judge.app_name(bad)
    passing = ServeJudgeInfo("Qwen/Qwen3-14B", in_cluster=False, chats=3)
    assert serve_judge.label("serve:r", passing) == "serve:r (Qwen/Qwen3-14B, pass-through to reward.judge.base_url)"
    assert serve_judge.label("serve:r", None) == "serve:r"


def test_the_judge_deployment_chat_forwards_to_its_judge_and_counts(stub):
    handler, url = stub
    handler.default = '{"score": 1}'
    judge = _pass_through(url)
    schema = {"json": {"type": "object"}}

    async def run():
        reply = await judge.chat([{"role": "user", "content": "grade this"}], max_tokens=7, structured=schema)
        handler.script = [503, 400]
        errors = []
        for _ in range(2):
            with pytest.raises(JudgeChatError) as caught:
                await judge.chat([{"role": "user", "content": "again"}], max_tokens=7, temperature=0.5)
            errors.append(caught.value)
        return reply, errors

    reply, (unavailable, rejected) = asyncio.run(run())
    assert reply == '{"score": 1}'
    body = handler.requests[0]
    assert body["messages"] == [{"role": "user", "content": "grade this"}] and body["max_tokens"] == 7
    assert body["structured_outputs"] == schema and body["model"] == "smollm2-135m-instruct"
    assert handler.requests[1]["temperature"] == 0.5
    assert unavailable.retryable and "503" in str(unavailable)
    assert not rejected.retryable and "400" in str(rejected)
    assert judge.info() == ServeJudgeInfo("smollm2-135m-instruct", in_cluster=False, chats=1)  # failures not counted


def test_judge_chat_errors_survive_pickling_with_their_verdict():
    for retry in (True, False):
        again = pickle.loads(pickle.dumps(JudgeChatError("RateLimitError: 429", retry)))
        assert type(again) is JudgeChatError and str(again) == "RateLimitError: 429" and again.retryable is retry


def test_retryable_unwraps_replica_errors():
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    transport = ServeTransport(FakeHandle(None))
    wrapped = RayTaskError("chat", "traceback", JudgeChatError("APITimeoutError", True))
    assert transport.retryable(wrapped) and transport.retryable(wrapped.as_instanceof_cause())  # as Ray raises it
    assert not transport.retryable(RayTaskError("chat", "traceback", JudgeChatError("BadRequestError: 400", False)))
    assert transport.retryable(ActorDiedError())
    assert transport.retryable(BackPressureError(num_queued_requests=9, max_queued_requests=8))
    assert transport.retryable(TimeoutError())
    assert not transport.retryable(ValueError("a bug"))


def test_the_protocol_over_the_handle_sends_the_conversations_and_retries(stub):
    """Round 1 fails retryably for one item (resent), round 2 continues each conversation; early decision."""
    target = _ScriptedJudge(replies=[JudgeChatError("APIConnectionError", True)])
    handle = FakeHandle(target)
    transport = ServeTransport(handle, concurrency=4, backoff_s=0.001)
    rows = [ROW, dict(ROW, id="medqa_1", prediction="A")]
    out = asyncio.run(judge_rows(transport, rows, protocol="paper", rounds=3, max_tokens=16, structured=True))
    assert [r["status"] for r in out] == ["scored", "scored"] and [r["score"] for r in out] == [1.0, 1.0]
    assert [(r["rounds_asked"], r["rounds_saved"]) for r in out] == [(2, 1), (2, 1)]
    chats = [c for c in handle.calls if c[0] == "chat"]
    assert len(chats) == 5  # 2 items x 2 rounds + the one resent
    messages, kwargs = chats[-1][1][0], chats[-1][2]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"] and messages[2]["content"] == REEVALUATE
    assert kwargs["max_tokens"] == 16 and kwargs["temperature"] == 0.0 and "json" in kwargs["structured"]


def test_concurrency_is_bounded_and_used():
    """The handle sees up to `concurrency` chats in flight at once: Serve counts them as ongoing requests."""
    handle = FakeHandle(_ScriptedJudge(default="x", delay_s=0.02))
    transport = ServeTransport(handle, concurrency=3)
    request = ChatRequest(messages=({"role": "user", "content": "q"},), temperature=0.0, max_tokens=4)
    replies = asyncio.run(transport.send([request] * 10))
    assert replies == ["x"] * 10 and handle.peak == 3


def test_a_chat_past_the_timeout_is_cancelled_and_retryable():
    handle = FakeHandle(_ScriptedJudge(default="late", delay_s=5))
    transport = ServeTransport(handle, timeout_s=0.05)
    request = ChatRequest(messages=({"role": "user", "content": "q"},), temperature=0.0, max_tokens=4)
    (reply,) = asyncio.run(transport.send([request]))
    assert isinstance(reply, TimeoutError) and transport.retryable(reply) and handle.responses[0].cancelled


def test_the_judge_worker_picks_the_serve_transport_and_gets_the_http_verdicts(stub, monkeypatch):
    """`eval.judge=serve:<app>`: the worker's chats reach the judge deployment, whose pass-through sends the
    judge the same request bodies as the URL judge does: one judge, the same verdicts."""
    from medix_ray.eval.judge_worker import JudgeWorker

    handler, url = stub
    handler.default = '{"score": 1}'
    cfg = EvalConfig(judge_max_retries=1, judge_rounds=3, judge_structured=True, judge_max_tokens=16)
    rows = pd.DataFrame([ROW, dict(ROW, id="medqa_1", prediction="A")])
    direct = JudgeWorker(url, "smollm2-135m-instruct", cfg, ["paper"])(rows)
    http_bodies = list(handler.requests)
    handler.requests.clear()

    handle = FakeHandle(_pass_through(url))
    asked = []
    monkeypatch.setattr(serve_judge, "judge_handle", lambda judge: asked.append(judge) or handle)
    worker = JudgeWorker("serve:medix-rewards", "smollm2-135m-instruct", cfg, ["paper"])
    assert isinstance(worker.transport, ServeTransport) and asked == ["serve:medix-rewards"]
    via_serve = worker(rows)
    assert list(via_serve["judgment_paper"]) == list(direct["judgment_paper"])

    def bodies(requests):  # the items of a round are sent concurrently: their order may differ
        return sorted(json.dumps(r, sort_keys=True) for r in requests)

    assert bodies(handler.requests) == bodies(http_bodies)
    assert handle.target.info().chats == len(http_bodies) == 4


def _status(**apps):
    return SimpleNamespace(applications=apps)


def _app(state="RUNNING", deployments=("ingress", "judge", "embedder"), message=""):
    return SimpleNamespace(status=state, message=message, deployments={d: None for d in deployments})


@pytest.mark.parametrize(
    ("status", "needle"),
    [
        (_status(), "no Serve application named 'medix-rewards' on this cluster (applications: none)"),
        (_status(rollout=_app()), "(applications: rollout)"),
        (_status(**{"medix-rewards": _app(deployments=("rollout",))}), "has no 'judge' deployment"),
        (_status(**{"medix-rewards": _app("DEPLOY_FAILED", message="judge died")}), "is DEPLOY_FAILED: judge died"),
    ],
    ids=["no-apps", "other-app", "no-judge-deployment", "failed"],
)
def test_a_missing_or_unusable_app_is_an_error_naming_it(monkeypatch, status, needle):
    from ray import serve

    monkeypatch.setattr(serve, "status", lambda: status)
    monkeypatch.setattr(serve, "get_deployment_handle", lambda *a, **k: pytest.fail("no handle for a bad app"))
    with pytest.raises(JudgeUnavailableError, match="eval.judge=serve:medix-rewards") as caught:
        serve_judge.judge_handle("serve:medix-rewards")
    assert needle in str(caught.value)


def test_no_serve_on_the_cluster_is_an_error_saying_what_to_start(monkeypatch):
    from ray import serve

    def no_serve():
        raise RuntimeError("There is no Serve instance running on this Ray cluster.")

    monkeypatch.setattr(serve, "status", no_serve)
    with pytest.raises(JudgeUnavailableError, match=r"no Ray Serve instance .*\(medix-ray serve-rewards\)"):
        serve_judge.judge_handle("serve:medix-rewards")


def test_a_running_app_gives_its_judge_handle(monkeypatch):
    from ray import serve

    got = []
    monkeypatch.setattr(serve, "status", lambda: _status(**{"medix-rewards": _app("RUNNING")}))
    monkeypatch.setattr(serve, "get_deployment_handle", lambda name, app_name: got.append((name, app_name)) or "h")
    assert serve_judge.judge_handle("serve:medix-rewards") == "h" and got == [("judge", "medix-rewards")]


def test_the_report_label_without_a_cluster_is_the_app_name(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a report rebuilt with --phases report only
    assert serve_judge.report_label("serve:medix-rewards") == "serve:medix-rewards"


# ---------------------------------------------------------------------------------------------------------------
# The real stack: the reward application with its in-cluster vLLM judge, and `medix-ray evaluate` against it.

APP = "medix-rewards-one-judge"
SERVER_MARK = "vllm.entrypoints.openai.api_server"  # what LocalJudgeServer runs (medix_ray/rewards/judge_server.py)


def _judge_servers() -> set[int]:
    """Returns the pids of the vLLM judge servers under this test process: its Ray cluster's workers (the
    raylet is its child) and the `medix-ray evaluate` it runs; other users' servers on the machine are not.
    Reads /proc, not `ps`, whose columns a COLUMNS setting truncates (the server's mark falls off the end)."""
    parent, servers = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        pid = int(entry.name)
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid, ...
        if SERVER_MARK in argv:
            servers.add(pid)

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent.get(pid, 1)
        return False

    return {pid for pid in servers if ours(pid)}


@pytest.fixture(scope="module")
def reward_app(ray_cluster, smollm2_path):
    """The reward application with its own vLLM judge in the judge replica (reward.judge.base_url empty)."""
    from ray import serve

    from deployments.reward_app import build_reward_app

    cfg = load_config(
        "configs/serve/rewards_cpu.yaml",
        [
            "serve.auth_token_env=MEDIX_RAY_TEST_TOKEN",
            "serve.judge_max_replicas=1",
            "serve.embedder_max_replicas=1",
            "serve.ingress_max_replicas=1",
        ],
    )
    assert cfg.reward.judge.base_url == ""
    serve.start(http_options={"host": "127.0.0.1", "port": 8765})  # as tests/deployments/test_reward_app.py
    serve.run(build_reward_app(cfg), name=APP, route_prefix="/one-judge")
    yield serve.get_deployment_handle("judge", app_name=APP)
    serve.delete(APP)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_evaluate_uses_the_running_reward_apps_judge(reward_app, ray_cluster, tmp_path):
    info = reward_app.info.remote().result(timeout_s=120)
    assert info.in_cluster and info.model == "smollm2-135m-instruct"
    before = _judge_servers()
    assert before, "the reward app's judge replica runs its vLLM server"

    seen, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.update(_judge_servers() - before)
            time.sleep(0.5)

    out_dir = tmp_path / "eval"
    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "medix_ray.cli", "evaluate", "--model", "smollm2-135m-instruct"]
    command += ["--tasks", "medqa,pubmedqa", "--data-dir", str(FIXTURES), "--limit", "1"]
    command += ["--output-dir", str(out_dir), "--judge", f"serve:{APP}", "--address", address]
    command += ["eval.max_tokens=16", "eval.max_model_len=1024", "eval.judge_max_tokens=16"]
    command += ["eval.judge_structured=true", "eval.n_boot=50", "rollout.kv_cache_space_gib=1"]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    finally:
        stop.set()
        watcher.join()
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    assert not seen, f"a second judge server started during the evaluation: pids {sorted(seen)}"

    out = out_dir / "smollm2-135m-instruct"
    judged = [
        json.loads(line) for part in sorted((out / "judgments-paper").glob("part-*.jsonl")) for line in part.open()
    ]
    assert sorted(r["task"] for r in judged) == ["medqa", "pubmedqa"]
    scored = [r for r in judged if r["status"] == "scored"]
    assert scored, [r["error"] for r in judged]
    # Every round the evaluation asked was answered by the reward app's judge (+1: the start-up check; more
    # only if a reply had to be asked again).
    after = reward_app.info.remote().result(timeout_s=60)
    asked = sum(r["rounds_asked"] for r in judged if not r["reused"])
    assert asked > 0 and after.chats - info.chats >= asked + 1
    for name in ("report.md", "scores.json", "scores.csv"):
        assert (out / "report" / name).is_file(), name
    label = f"serve:{APP} (smollm2-135m-instruct, in-cluster vLLM)"
    assert json.loads((out / "report" / "scores.json").read_text())["judge"] == label
    assert label in (out / "report" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_missing_app_or_an_app_without_a_judge_is_named(reward_app, ray_cluster, tmp_path):
    from ray import serve

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.05})
    class NotAJudge:
        def __call__(self, request):
            return "no judge here"

    serve.run(NotAJudge.bind(), name="medix-not-a-judge", route_prefix="/not-a-judge")
    try:
        with pytest.raises(JudgeUnavailableError, match="'medix-not-a-judge' has no 'judge' deployment"):
            serve_judge.judge_handle("serve:medix-not-a-judge")
    finally:
        serve.delete("medix-not-a-judge")

    address = ray_cluster.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "medix_ray.cli", "evaluate", "--model", "smollm2-135m-instruct"]
    command += ["--tasks", "medqa", "--data-dir", str(FIXTURES), "--limit", "1", "--output-dir", str(tmp_path)]
    command += ["--judge", "serve:no-such-app", "--address", address]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert run.returncode == 2, (run.stdout[-2000:], run.stderr[-2000:])
    assert "no Serve application named 'no-such-app'" in run.stderr and APP in run.stderr
