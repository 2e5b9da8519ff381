"""WeightSync's bookkeeping over a fake learner group and a fake fleet: ranks, rejections, errors.
(The real learner and vLLM replicas run in tests/sync/test_weight_sync.py.)"""

import threading
from types import SimpleNamespace

import pytest

from medix_ray.config import SyncConfig
from medix_ray.sync.coordinator import SyncError, WeightSync
from medix_ray.sync.endpoint import SyncOpen, SyncOpened, SyncPush
from medix_ray.sync.receiver import BucketUpdate, JoinReply, PushReply, ReceiveReport
from medix_ray.sync.sender import SentPush
from medix_ray.trajectory import ReplicaInfo


class FakeLearner:
    """The learner group's weight-sync methods, recording the typed requests."""

    world = 2

    def __init__(self, checksum="abc"):
        self.commands = []
        self.checksum = checksum
        self.lock = threading.RLock()

    def open_sync(self, request):
        assert isinstance(request, SyncOpen)
        self.commands.append(("open", request))
        return SyncOpened({"master_address": "h", "master_port": 1, "timeout_s": 5}, "gloo", [["w", "float32", [2]]])

    def connect_sync(self):
        self.commands.append(("connect", None))
        return SimpleNamespace(result=lambda: [True, True])

    def push_weights(self, request):
        assert isinstance(request, SyncPush) and self.lock._is_owned()  # a push holds the group's lock
        self.commands.append(("push", request))
        sent = SentPush(bytes=8, buckets=1, seconds=0.1, checksum=self.checksum)
        return SimpleNamespace(first=lambda: sent)


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
            return [JoinReply(r.replica, joined=True, rank=1) for r in self.roster]
        update, members = args
        assert isinstance(update, BucketUpdate)
        version = update.version
        replies = []
        for rid in members:
            error = "" if self.outcome[rid] == "ok" else self.outcome[rid]
            worker = ReceiveReport(version, 1, 1, 1, 0 if error else 1, 8, 1, None if error else "abc", error)
            replies.append(
                PushReply(rid, ok=not error, version=version if not error else 0, error=error, workers=[worker])
            )
        return replies


def _roster(*ranks):
    return [ReplicaInfo(f"r{i}", 0, "bfloat16", "gloo", True, "", n, 1) for i, n in enumerate(ranks)]


def test_each_vllm_worker_of_a_replica_gets_its_own_rank():
    fleet = FakeFleet(_roster(2, 2, 1), dict.fromkeys(["r0", "r1", "r2"], "ok"))
    learner = FakeLearner()
    report = WeightSync(learner, fleet, SyncConfig(timeout_s=5)).push(1)
    assert report.verified and report.replicas == 3 and report.checksum == "abc"
    (_, (ranks, _)), *_ = fleet.calls
    assert ranks == {"r0": 1, "r1": 3, "r2": 5}  # tensor parallel 2, 2 and 1 after the learner's rank 0
    opened = learner.commands[0][1]
    assert opened.world_size == 6 and opened.timeout_s == 5


def test_a_rejected_push_is_reported_and_the_group_formed_again_next_time():
    fleet = FakeFleet(_roster(1, 1), {"r0": "bucket 1 of 8 arrived with digest [1, 2]", "r1": "ok"})
    sync = WeightSync(FakeLearner(), fleet, SyncConfig())
    report = sync.push(4)
    assert report.rejected == {"r0": "bucket 1 of 8 arrived with digest [1, 2]"}
    assert report.replicas == 1 and not report.verified
    update = fleet.calls[-1][1][0]
    assert (update.version, update.checksum, update.specs) == (4, True, [["w", "float32", [2]]])
    assert sync.members == []  # the next push forms the group again
    fleet.outcome["r0"] = "ok"
    healed = sync.push(5)
    assert healed.reformed and healed.verified and healed.replicas == 2 and sync.synced_version == 5


def test_a_stale_replica_is_healed_by_the_weight_sync_not_the_trainer():
    """The fleet's stale-refusal hook is the weight sync's resync: it pushes the synced version again."""
    fleet = FakeFleet(_roster(1), {"r0": "ok"})
    fleet.on_stale = None
    sync = WeightSync(FakeLearner(), fleet, SyncConfig())
    assert fleet.on_stale == sync.resync
    sync.push(3)
    report = fleet.on_stale()  # as RolloutFleet.generate calls it after a StaleWeights refusal
    assert report.version == 3 and sync.synced_version == 3 and sync.resyncs == 1
    assert [c[1][0].version for c in fleet.calls if c[0] == "update_weights"] == [3, 3]


def test_a_push_no_replica_accepts_raises():
    fleet = FakeFleet(_roster(1), {"r0": "loading bucket 0 of 8 failed: KeyError: 'w'"})
    with pytest.raises(SyncError, match="no rollout replica accepted the weights of version 2.*KeyError"):
        WeightSync(FakeLearner(), fleet, SyncConfig()).push(2)


def test_a_replica_whose_push_digest_differs_from_the_learners_raises():
    fleet = FakeFleet(_roster(1), {"r0": "ok"})
    with pytest.raises(SyncError, match="rollout replica r0 received a push with digest abc; the learner sent xyz"):
        WeightSync(FakeLearner(checksum="xyz"), fleet, SyncConfig()).push(2)
