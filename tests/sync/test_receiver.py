"""One push, trainer side (WeightSender) to rollout side (receive_push): over an in-process wire, then over
real gloo groups in two threads. The vLLM engine around receive_push runs in tests/sync/test_weight_sync.py."""

import threading
import time
from collections import deque

import pytest
import torch

from medix_ray.sync.buckets import plan_buckets, specs_of
from medix_ray.sync.receiver import BucketUpdate, receive_push
from medix_ray.sync.sender import WeightSender, free_port
from medix_ray.sync.transport import SyncTimeout, open_group
from tests.sync.faults import FlipBit, fail_loading

BUCKET = 1024


def _model():
    g = torch.Generator().manual_seed(0)
    return [(f"layer{i}.weight", torch.randn(16, 16, generator=g)) for i in range(4)] + [
        ("head.bias", torch.randn(7, generator=g))
    ]


class Wire:
    """Rank 0's broadcasts, delivered in order to one receiver (the in-process stand-in for a group)."""

    def __init__(self, fail_at: int = -1):
        self.sent: deque[torch.Tensor] = deque()
        self.fail_at = fail_at
        self.received = 0

    def sender(self):
        wire = self

        class Side:
            def broadcast(self, tensor):
                wire.sent.append(tensor.clone())

        return Side()

    def broadcast(self, tensor):  # the receiver's side
        if self.received == self.fail_at:
            raise SyncTimeout("gloo weight-sync broadcast took over 1 s")
        tensor.copy_(self.sent.popleft())
        self.received += 1


def _push(flip_bucket=-1, fail_load_bucket=-1, checksum=True, fail_at=-1):
    named = _model()
    specs = specs_of(named, torch.bfloat16)
    sender = WeightSender("gloo", BUCKET)
    wire = Wire(fail_at)
    sender.group = wire.sender()
    sent = sender.send(iter(named), specs, checksum=checksum)
    loaded: list[tuple[str, torch.Tensor]] = []
    update = BucketUpdate(
        specs=[[s.name, s.dtype, list(s.shape)] for s in specs],
        bucket_bytes=BUCKET,
        checksum=checksum,
        version=7,
    )
    load = lambda batch: loaded.extend((n, t.clone()) for n, t in batch)  # noqa: E731
    group = FlipBit(wire, flip_bucket) if flip_bucket >= 0 else wire
    if fail_load_bucket >= 0:
        load = fail_loading(load, fail_load_bucket)
    report = receive_push(group, update, load)
    return named, specs, sent, report, loaded, wire


def test_an_intact_push_is_verified_bucket_by_bucket_and_loaded_whole():
    named, specs, sent, report, loaded, wire = _push()
    buckets = plan_buckets(specs, BUCKET)
    assert len(buckets) == 3 and sent.buckets == 3
    assert report.ok and report.error == ""
    assert (report.buckets, report.received, report.verified, report.loaded) == (3, 3, 3, 3)
    assert report.bytes == sent.bytes == sum(s.nbytes for s in specs)
    assert report.checksum == sent.checksum is not None
    assert [n for n, _ in loaded] == [n for n, _ in named]
    for (_, got), (_, want) in zip(loaded, named, strict=True):
        assert torch.equal(got, want.to(torch.bfloat16))
    assert not wire.sent  # every broadcast was received


def test_a_flipped_bit_is_caught_before_its_bucket_loads_and_the_rest_is_drained():
    named, _, _, report, loaded, wire = _push(flip_bucket=1)
    assert not report.ok
    assert report.error.startswith("bucket 1 of 3 (layer2.weight ... layer3.weight) arrived with digest")
    # Bucket 0 was loaded before bucket 1 arrived; nothing of bucket 1 or 2 reached the model.
    assert [n for n, _ in loaded] == ["layer0.weight", "layer1.weight"]
    assert (report.received, report.verified, report.loaded) == (3, 1, 1)
    assert report.checksum is None
    assert not wire.sent  # the push was received to the end, so the trainer and other replicas finish it


def test_a_failure_mid_load_rejects_the_push_and_loads_nothing_after_it():
    _, _, _, report, loaded, wire = _push(fail_load_bucket=1)
    assert not report.ok
    assert report.error == "loading bucket 1 of 3 failed: InjectedFault: injected failure after loading 1 buckets"
    assert [n for n, _ in loaded] == ["layer0.weight", "layer1.weight"]
    assert (report.received, report.verified, report.loaded) == (3, 2, 1)
    assert not wire.sent


def test_a_loader_error_is_recorded_with_its_bucket():
    named = _model()
    specs = specs_of(named, torch.bfloat16)
    sender, wire = WeightSender("gloo", BUCKET), Wire()
    sender.group = wire.sender()
    sender.send(iter(named), specs)
    update = BucketUpdate([[s.name, s.dtype, list(s.shape)] for s in specs], BUCKET, version=1)

    def load(batch):
        if batch[0][0] == "head.bias":
            raise KeyError("head.bias")

    report = receive_push(wire, update, load)
    assert report.error == "loading bucket 2 of 3 failed: KeyError: 'head.bias'"
    assert report.loaded == 2 and not report.ok


def test_without_checksums_no_digest_travels_and_a_corrupt_bucket_goes_unseen():
    _, _, sent, report, loaded, _ = _push(flip_bucket=1, checksum=False)
    assert sent.checksum is None and report.checksum is None
    assert report.ok and report.verified == 0 and len(loaded) == 5  # what verify_checksum=false gives up


def test_a_group_failure_ends_the_receive_with_the_bucket_named():
    _, _, _, report, loaded, _ = _push(fail_at=2)  # bucket 0's bytes and digest arrive, then the group fails
    assert report.error.startswith("bucket 1 of 3 was not received: gloo weight-sync broadcast took over 1 s")
    assert (report.received, report.loaded) == (1, 1) and not report.ok


def _run(*targets):
    results, errors = {}, {}

    def wrap(name, fn):
        try:
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors[name] = exc

    threads = [threading.Thread(target=wrap, args=(n, f)) for n, f in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_a_push_over_real_gloo_groups_checks_each_replica_on_its_own():
    named = _model()
    specs = specs_of(named, torch.bfloat16)
    sender = WeightSender("gloo", BUCKET, timeout_s=30)
    r = sender.open(world_size=3)
    update = BucketUpdate([[s.name, s.dtype, list(s.shape)] for s in specs], BUCKET, version=2)

    def replica(rank, info, flip_bucket=-1):
        group = open_group("gloo", r["master_address"], r["master_port"], rank, 3, r["timeout_s"])
        loaded = []
        wire = FlipBit(group, flip_bucket) if flip_bucket >= 0 else group
        return receive_push(wire, info, loaded.extend), [n for n, _ in loaded]

    def learner():
        sender.connect()
        return sender.send(iter(named), specs)

    results, errors = _run(
        ("learner", learner), ("good", lambda: replica(1, update)), ("bad", lambda: replica(2, update, flip_bucket=2))
    )
    assert not errors
    good, good_loaded = results["good"]
    bad_report, bad_loaded = results["bad"]
    assert good.ok and good.checksum == results["learner"].checksum
    assert good_loaded == [n for n, _ in named]
    assert bad_report.error.startswith("bucket 2 of 3 (head.bias ... head.bias) arrived with digest")
    assert bad_loaded == [n for n, _ in named[:4]]
    sender.close()


def test_a_gloo_broadcast_that_gets_no_sender_times_out():
    port = free_port()
    joined = threading.Event()

    def learner():
        group = open_group("gloo", "127.0.0.1", port, 0, 2, 2.0)
        joined.wait(30)
        time.sleep(4)  # joined, but never sends
        group.close()

    def replica():
        group = open_group("gloo", "127.0.0.1", port, 1, 2, 2.0)
        joined.set()
        start = time.monotonic()
        with pytest.raises(SyncTimeout, match="took over 2 s"):
            group.broadcast(torch.empty(16, dtype=torch.uint8))
        return time.monotonic() - start

    results, errors = _run(("learner", learner), ("replica", replica))
    assert not errors, errors
    assert 1.5 < results["replica"] < 4.0


def test_a_timeout_must_be_positive():
    with pytest.raises(ValueError, match="sync.timeout_s must be positive; got 0"):
        open_group("gloo", "127.0.0.1", free_port(), 0, 1, 0)
