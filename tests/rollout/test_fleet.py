"""RolloutFleet's retries of refused requests, over a fake Serve handle (the real stack runs in
tests/sync/test_weight_sync.py and tests/trainer/test_train_e2e.py)."""

import pytest

from medix_ray.data.schema import Sample
from medix_ray.rollout.fleet import STALE, RolloutError, RolloutFleet


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
    return {
        "sample_id": sample_id,
        "replica": "r1",
        "version": version,
        "prompt_token_ids": [1, 2],
        "responses": [{"text": "x", "token_ids": [5], "logprobs": [-0.1], "finish_reason": "stop"}],
    }


def _refusal():
    return RuntimeError(f"{STALE} replica r0 refuses requests: weight push to version 3 was rejected: bucket 1 of 8")


def test_one_wave_of_refusals_asks_for_one_resync_and_every_request_is_retried():
    samples = [Sample(id=f"s{i}", problem="q", solution="<OTHER> a") for i in range(3)]
    handle = _Handle({s.id: [_refusal(), _reply(s.id)] for s in samples})
    fleet = RolloutFleet(handle)
    resyncs = []
    fleet.on_stale = lambda: resyncs.append(len(handle.calls))
    out = fleet.generate(samples, {"n": 1}, min_version=3)
    assert [r.sample.id for r in out] == ["s0", "s1", "s2"] and all(r.version == 3 for r in out)
    # All three were sent before the first refusal came back: one resync heals them all.
    assert len(resyncs) == 1 and fleet.resyncs == 1 and fleet.retries == 3


def test_a_request_refused_again_after_a_resync_asks_for_another():
    sample = Sample(id="s0", problem="q", solution="<OTHER> a")
    handle = _Handle({"s0": [_refusal(), _refusal(), _reply("s0")]})
    fleet = RolloutFleet(handle)
    calls = []
    fleet.on_stale = lambda: calls.append(1)
    fleet.generate([sample], {"n": 1})
    assert len(calls) == 2 and fleet.retries == 2


def test_refusals_on_every_attempt_end_in_an_error_naming_the_sample():
    sample = Sample(id="s0", problem="q", solution="<OTHER> a")
    fleet = RolloutFleet(_Handle({"s0": [_refusal()] * 3}), attempts=3)
    with pytest.raises(RolloutError, match="rollout of sample s0 failed 3 times; last error: stale weights"):
        fleet.generate([sample], {"n": 1})
