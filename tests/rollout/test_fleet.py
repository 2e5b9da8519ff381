"""RolloutFleet's retries of refused requests, over a fake Serve handle (the real stack runs in
tests/sync/test_weight_sync.py and tests/trainer/test_train_e2e.py)."""

import pytest

from medix_ray.data.schema import Sample
from medix_ray.rollout.fleet import RolloutError, RolloutFleet, retryable
from medix_ray.trajectory import ReplicaUnhealthy, Response, Rollout, Sampling, StaleWeights


class _Response:
    def __init__(self, outcome):
        self.outcome = outcome

    def result(self, timeout_s=None):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class _Handle:
    """Answers each generate call with the next scripted outcome for that sample."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls = []
        self.generate = self

    def remote(self, sample, sampling, min_version):
        self.calls.append(sample.id)
        return _Response(self.script[sample.id].pop(0))


def _reply(sample_id, version=3):
    sample = Sample(id=sample_id, problem="q", solution="<OTHER> a")
    return Rollout(sample, [Response("x", [5], [-0.1], "stop")], version, "r1", [1, 2])


def _refusal():
    return StaleWeights("r0", "weight push to version 3 was rejected: bucket 1 of 8")


def test_one_wave_of_refusals_asks_for_one_resync_and_every_request_is_retried():
    samples = [Sample(id=f"s{i}", problem="q", solution="<OTHER> a") for i in range(3)]
    handle = _Handle({s.id: [_refusal(), _reply(s.id)] for s in samples})
    fleet = RolloutFleet(handle)
    resyncs = []
    fleet.on_stale = lambda: resyncs.append(len(handle.calls))
    out = fleet.generate(samples, Sampling(n=1), min_version=3)
    assert [r.sample.id for r in out] == ["s0", "s1", "s2"] and all(r.version == 3 for r in out)
    # All three were sent before the first refusal came back: one resync heals them all.
    assert len(resyncs) == 1 and fleet.resyncs == 1 and fleet.retries == 3


def test_a_request_refused_again_after_a_resync_asks_for_another():
    sample = Sample(id="s0", problem="q", solution="<OTHER> a")
    handle = _Handle({"s0": [_refusal(), _refusal(), _reply("s0")]})
    fleet = RolloutFleet(handle)
    calls = []
    fleet.on_stale = lambda: calls.append(1)
    fleet.generate([sample], Sampling(n=1))
    assert len(calls) == 2 and fleet.retries == 2


def test_refusals_on_every_attempt_end_in_an_error_naming_the_sample():
    sample = Sample(id="s0", problem="q", solution="<OTHER> a")
    fleet = RolloutFleet(_Handle({"s0": [_refusal()] * 3}), attempts=3)
    with pytest.raises(RolloutError, match="rollout of sample s0 failed 3 times; last error: stale weights"):
        fleet.generate([sample], Sampling(n=1))


def test_only_replica_failures_are_retried_and_by_type_not_by_message():
    import ray.exceptions

    assert retryable(_refusal()) and retryable(ReplicaUnhealthy("r0"))
    # As Ray delivers a replica's error to the caller: an instance of the original class too.
    wrapped = ray.exceptions.RayTaskError("generate", "traceback", _refusal()).as_instanceof_cause()
    assert retryable(wrapped) and isinstance(wrapped, StaleWeights) and wrapped.replica == "r0"
    assert not retryable(RuntimeError("stale weights: a message that only looks like a refusal"))
    assert not retryable(ValueError("bad sample"))


def test_a_failure_that_is_not_the_replicas_is_not_retried():
    sample = Sample(id="s0", problem="q", solution="<OTHER> a")
    handle = _Handle({"s0": [ValueError("sample s0: image missing"), _reply("s0")]})
    with pytest.raises(RolloutError, match="rollout of sample s0 failed: sample s0: image missing"):
        RolloutFleet(handle).generate([sample], Sampling(n=1))
    assert handle.calls == ["s0"]


@pytest.mark.slow  # imports vLLM (about 30 s)
def test_a_dead_vllm_engine_is_retried_on_another_replica():
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    assert retryable(EngineDeadError()) and retryable(EngineGenerateError())
