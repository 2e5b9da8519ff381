"""WeightSync's bookkeeping over a fake learner group and a fake fleet: ranks, rejections, errors.
(The real learner and vLLM replicas run in tests/sync/test_weight_sync.py.)"""

from types import SimpleNamespace

import pytest

from medix_ray.config import SyncConfig
from medix_ray.sync.coordinator import SyncError, WeightSync
from medix_ray.sync.endpoint import SyncOpened
from medix_ray.sync.receiver import PushReply, ReceiveReport, SyncFault


class FakeLearner:
    world = 2

    def __init__(self, checksum="abc"):
        self.commands = []
        self.checksum = checksum

    def call(self, name, payloads=None):
        assert name == "sync.open"
        self.commands.append((name, payloads))
        rendezvous = {"master_address": "h", "master_port": 1, "timeout_s": 5}
        return [SyncOpened(rendezvous, "gloo", [["w", "float32", [2]]]), SyncOpened(None, "gloo", [])]

    def submit(self, name, payloads=None):
        self.commands.append((name, payloads))
        replies = {
            "sync.connect": [True, True],
            "sync.push": [{"bytes": 8, "buckets": 1, "checksum": self.checksum}, {"bytes": 0}],
        }[name]
        return SimpleNamespace(result=lambda: replies)


class FakeFleet:
    def __init__(self, replicas, outcome):
        self.roster = replicas
        self.outcome = outcome  # replica -> "ok" | an error string
        self.calls = []

    def replicas(self):
        return self.roster

    def broadcast(self, method, *args):
        self.calls.append((method, args))
        if method == "join_sync":
            return [{"replica": r["replica"], "joined": True} for r in self.roster]
        update_info, version, members = args
        replies = []
        for rid in members:
            error = "" if self.outcome[rid] == "ok" else self.outcome[rid]
            worker = ReceiveReport(version, 1, 1, 1, 0 if error else 1, 8, 1, None if error else "abc", error)
            replies.append(
                PushReply(rid, ok=not error, version=version if not error else 0, error=error, workers=[worker])
            )
        return replies


def _roster(*ranks):
    return [{"replica": f"r{i}", "dtype": "bfloat16", "sync_ranks": n, "healthy": True} for i, n in enumerate(ranks)]


def test_each_vllm_worker_of_a_replica_gets_its_own_rank():
    fleet = FakeFleet(_roster(2, 2, 1), dict.fromkeys(["r0", "r1", "r2"], "ok"))
    learner = FakeLearner()
    report = WeightSync(learner, fleet, SyncConfig(timeout_s=5)).push(1)
    assert report.verified and report.replicas == 3 and report.checksum == "abc"
    (_, (ranks, _)), *_ = fleet.calls
    assert ranks == {"r0": 1, "r1": 3, "r2": 5}  # tensor parallel 2, 2 and 1 after the learner's rank 0
    opened = learner.commands[0][1][0]
    assert opened.world_size == 6 and opened.timeout_s == 5


def test_a_rejected_push_is_reported_and_the_group_formed_again_next_time():
    fleet = FakeFleet(_roster(1, 1), {"r0": "bucket 1 of 8 arrived with digest [1, 2]", "r1": "ok"})
    sync = WeightSync(FakeLearner(), fleet, SyncConfig())
    report = sync.push(4, fault=SyncFault(replica="r0", flip_bit_in_bucket=1))
    assert report.rejected == {"r0": "bucket 1 of 8 arrived with digest [1, 2]"}
    assert report.replicas == 1 and not report.verified
    update_info = fleet.calls[-1][1][0]
    assert update_info["fault"] == {"replica": "r0", "flip_bit_in_bucket": 1, "fail_after_buckets": -1}
    assert sync.members == []  # the next push forms the group again
    fleet.outcome["r0"] = "ok"
    healed = sync.push(5)
    assert healed.reformed and healed.verified and healed.replicas == 2
    assert "fault" not in fleet.calls[-1][1][0]  # production pushes carry none


def test_a_push_no_replica_accepts_raises():
    fleet = FakeFleet(_roster(1), {"r0": "loading bucket 0 of 8 failed: KeyError: 'w'"})
    with pytest.raises(SyncError, match="no rollout replica accepted the weights of version 2.*KeyError"):
        WeightSync(FakeLearner(), fleet, SyncConfig()).push(2)


def test_a_replica_whose_push_digest_differs_from_the_learners_raises():
    fleet = FakeFleet(_roster(1), {"r0": "ok"})
    with pytest.raises(SyncError, match="rollout replica r0 received a push with digest abc; the learner sent xyz"):
        WeightSync(FakeLearner(checksum="xyz"), fleet, SyncConfig()).push(2)
