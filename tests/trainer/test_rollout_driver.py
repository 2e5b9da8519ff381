"""The async rollout driver's bookkeeping with a scripted producer (the real fleet, reward and learner run
in tests/trainer/test_train_e2e.py::test_async_run_bounds_staleness_and_resumes_without_losing_prompts)."""

import threading
import time
from types import SimpleNamespace

import pytest

from medix_ray.data.schema import Sample
from medix_ray.trainer.rollout_driver import RolloutDriver

pytestmark = pytest.mark.timeout(60)


class Stream:
    """Samples s0, s1, ... at coordinates (0, 1), (0, 2), ..."""

    def __init__(self):
        self.position = 0

    def take_indexed(self, count):
        out = []
        for _ in range(count):
            self.position += 1
            out.append(((0, self.position), Sample(f"s{self.position}", "q", "<X_RAY> a")))
        return out

    def state(self):
        return {"epoch": 0, "position": self.position}


class Fleet:
    """Generates with the synced version; `delay(sample)` seconds per group."""

    def __init__(self, delay=lambda s: 0.01):
        self.synced = 0
        self.delay = delay
        self.started = []
        self.lock = threading.Lock()

    def produce(self, sample):
        version = self.synced
        with self.lock:
            self.started.append((sample.id, version))
        time.sleep(self.delay(sample))
        return SimpleNamespace(rollout=SimpleNamespace(version=version, sample=sample))


def _driver(fleet, keep=lambda g: True, want=2, staleness=1, workers=3, stream=None):
    return RolloutDriver(
        fleet.produce,
        keep,
        stream or Stream(),
        want=want,
        max_staleness=staleness,
        workers=workers,
        synced_version=lambda: fleet.synced,
        base_version=0,
    )


@pytest.mark.parametrize("staleness", [0, 1, 2])
def test_no_batch_holds_a_group_older_than_max_staleness(staleness):
    fleet = Fleet()
    driver = _driver(fleet, want=2, staleness=staleness, workers=4)
    driver.start()
    try:
        lags = []
        for version in range(6):  # the learner: take, update (version + 1), push
            batch = driver.take(version, timeout_s=30)
            assert len(batch.kept) == 2
            lags += [version - g.rollout.version for g in batch.kept]
            time.sleep(0.05)  # the update: the driver keeps generating meanwhile
            fleet.synced = version + 1
            driver.notify()
        assert max(lags) <= staleness
        if staleness:  # generation overlapped the updates: some groups were one version behind
            assert max(lags) >= 1
    finally:
        driver.stop(timeout_s=5)


def test_dropped_groups_free_their_place_and_are_reported_with_the_next_batch():
    fleet = Fleet()
    drop = {"s1", "s3"}
    driver = _driver(fleet, keep=lambda g: g.rollout.sample.id not in drop, want=2, staleness=0, workers=2)
    driver.start()
    try:
        batch = driver.take(0, timeout_s=30)
        assert {g.rollout.sample.id for g in batch.filtered} == drop
        assert len(batch.kept) == 2 and not batch.stale
        assert len(batch.sampled) == 4
    finally:
        driver.stop(timeout_s=5)


def test_a_group_that_finishes_too_late_is_dropped_and_counted():
    # s1 is slow: it was started at version 0 and finishes after the learner reached version 2.
    fleet = Fleet(delay=lambda s: 1.5 if s.id == "s1" else 0.01)
    driver = _driver(fleet, want=1, staleness=1, workers=2)
    driver.start()
    try:
        stale = []
        for version in range(8):
            batch = driver.take(version, timeout_s=30)
            stale += [g.rollout.sample.id for g in batch.stale]
            assert all(version - g.rollout.version <= 1 for g in batch.kept)
            fleet.synced = version + 1
            driver.notify()
            time.sleep(0.3)
        assert ("s1", 0) in fleet.started and stale == ["s1"]
    finally:
        driver.stop(timeout_s=5)


def test_pending_prompts_are_the_ones_in_flight_or_waiting():
    gate = threading.Event()
    fleet = Fleet(delay=lambda s: 0.01 if s.id in ("s1", "s2") else 0)
    blocked = fleet.produce

    def produce(sample):
        if sample.id not in ("s1", "s2"):
            gate.wait(10)
        return blocked(sample)

    stream = Stream()
    driver = RolloutDriver(
        produce,
        lambda g: True,
        stream,
        want=2,
        max_staleness=1,
        workers=3,
        synced_version=lambda: 0,
        base_version=0,
    )
    driver.start()
    batch = driver.take(0, timeout_s=30)
    assert sorted(g.rollout.sample.id for g in batch.kept) == ["s1", "s2"]
    time.sleep(0.2)
    # Admission: 2 groups per batch, lag 1 allowed at version 0: batches 0 and 1, so s3 and s4 only.
    cursor = driver.cursor()
    assert cursor["pending"] == [[0, 3], [0, 4]] and cursor["position"] == 4
    driver.stop()
    gate.set()
    time.sleep(0.2)
    assert driver.pending() == [(0, 3), (0, 4)]  # finished after the stop: still pending, not lost


def test_a_failed_rollout_is_raised_by_take_and_its_prompt_stays_pending():
    def produce(sample):
        if sample.id == "s2":
            raise RuntimeError("rollout of sample s2 failed 3 times")
        return SimpleNamespace(rollout=SimpleNamespace(version=0, sample=sample))

    driver = RolloutDriver(
        produce, lambda g: True, Stream(), want=4, max_staleness=0, workers=1, synced_version=lambda: 0, base_version=0
    )
    driver.start()
    with pytest.raises(RuntimeError, match="rollout of sample s2 failed 3 times"):
        driver.take(0, timeout_s=30)
    assert (0, 2) in driver.pending()
