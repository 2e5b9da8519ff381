"""The span recorder, its file, the lanes and the picture; the controller's per-replica rollout spans."""

import json
import threading

import pytest

from medix_ray.trainer.metrics import MetricsFileError
from medix_ray.trainer.timeline import Span, Timeline, busy_seconds, draw_timeline, lanes, plot_timeline, read_spans


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_spans_are_relative_to_the_run_start_and_written_as_they_end(tmp_path):
    clock = FakeClock(100.0)
    tl = Timeline(tmp_path / "timeline.jsonl", clock=clock)
    clock.t = 102.0
    with tl.span("learner", "update", step=1, version=0, counts={"groups": 2}):
        clock.t = 105.5
    start = tl.now()
    clock.t = 106.0
    tl.record("rollout", "generate", start, tl.now(), 2, lane="rollout/r1", replica="r1", version=1)
    rows = [json.loads(line) for line in (tmp_path / "timeline.jsonl").read_text().splitlines()]  # before close
    assert rows[0] == {
        "role": "learner",
        "name": "update",
        "start": 2.0,
        "end": 5.5,
        "step": 1,
        "lane": "learner",
        "version": 0,
        "session": 0,
        "counts": {"groups": 2},
    }
    assert rows[1]["lane"] == "rollout/r1" and rows[1]["replica"] == "r1" and rows[1]["start"] == 5.5
    tl.close()
    spans = read_spans(tmp_path / "timeline.jsonl")
    assert [s.seconds for s in spans] == [3.5, 0.5]


def test_a_phase_that_raises_still_gets_its_span(tmp_path):
    clock = FakeClock()
    tl = Timeline(tmp_path / "t.jsonl", clock=clock)
    with pytest.raises(RuntimeError, match="learner died"), tl.span("learner", "update", step=3):
        clock.t += 4.0
        raise RuntimeError("learner died")
    tl.close()
    (span,) = read_spans(tmp_path / "t.jsonl")
    assert span.name == "update" and span.seconds == 4.0 and span.step == 3


def test_a_resumed_run_continues_the_time_axis_in_a_new_session(tmp_path):
    path = tmp_path / "timeline.jsonl"
    clock = FakeClock(0.0)
    first = Timeline(path, clock=clock)
    clock.t = 10.0
    first.record("sync", "push", 0.0, first.now(), 0)
    first.close()
    # A new process: its monotonic clock has nothing to do with the first one's.
    clock2 = FakeClock(5000.0)
    second = Timeline(path, clock=clock2)
    assert second.session == 1 and second.now() == 11.0  # after the last span, plus the 1 s gap
    with second.span("sync", "push", step=2):
        clock2.t += 2.0
    second.close()
    spans = read_spans(path)
    assert [(s.session, s.start, s.end) for s in spans] == [(0, 0.0, 10.0), (1, 11.0, 13.0)]


def test_recording_from_many_threads_keeps_every_span_whole(tmp_path):
    tl = Timeline(tmp_path / "t.jsonl")

    def work(k: int) -> None:
        for i in range(200):
            with tl.span("reward", "score", step=i, counts={"responses": k}):
                pass

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tl.close()
    spans = read_spans(tmp_path / "t.jsonl")
    assert len(spans) == 1600
    assert sorted(s.counts["responses"] for s in spans) == sorted(k for k in range(8) for _ in range(200))


def test_bad_spans_are_refused_with_their_reason(tmp_path):
    with pytest.raises(ValueError, match="role 'judge' is not one of"):
        Span("judge", "score", 0.0, 1.0, 1)
    with pytest.raises(ValueError, match=r"ends \(1.0\) before it starts \(2.0\)"):
        Span("learner", "update", 2.0, 1.0, 1)
    path = tmp_path / "timeline.jsonl"
    good = json.dumps(Span("sync", "push", 0.0, 1.0, 0).to_json())
    path.write_text(good + "\n" + json.dumps({"role": "sync", "name": "push", "start": 0, "end": 1, "step": 1, "x": 1}))
    with pytest.raises(ValueError, match=r"timeline.jsonl: span 2 is not a span .*unexpected keyword"):
        read_spans(path)
    path.write_text(good + '\n{"role": "sync", "na\n' + good + "\n")
    with pytest.raises(MetricsFileError, match="line 2"):
        read_spans(path)
    path.write_text(good + '\n{"role": "sync", "na')  # a kill mid-append: only the torn tail goes
    assert len(read_spans(path)) == 1


def _spans() -> list[Span]:
    return [
        Span("learner", "update", 4.0, 9.0, 1),
        Span("sync", "push", 9.0, 9.5, 1),
        Span("rollout", "generate", 0.0, 3.0, 1, lane="rollout/bbb", replica="bbb"),
        Span("rollout", "generate", 0.0, 2.5, 1, lane="rollout/aaa", replica="aaa"),
        Span("reward", "score", 3.0, 4.0, 1),
        Span("learner", "logprobs", 4.0, 6.0, 1),  # inside the update's span in this made-up case
        Span("learner", "save", 12.0, 13.0, 1),
        Span("rollout", "generate", 10.0, 11.0, 2, lane="rollout/aaa", replica="aaa"),
    ]


def test_lanes_put_each_replica_first_then_reward_learner_sync():
    assert lanes(_spans()) == ["rollout/aaa", "rollout/bbb", "reward", "learner", "sync"]


def test_busy_seconds_count_overlapping_spans_once():
    busy = busy_seconds(_spans())
    assert busy == {"rollout/aaa": 3.5, "rollout/bbb": 3.0, "reward": 1.0, "learner": 6.0, "sync": 0.5}


def test_the_picture_has_one_lane_per_role_and_replica(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    fig = draw_timeline(_spans())
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rollout/aaa", "rollout/bbb", "reward", "learner", "sync"]
    bars = {c.get_label(): len(c.get_paths()) for c in ax.collections}
    assert bars == {"rollout/aaa": 2, "rollout/bbb": 1, "reward": 1, "learner": 3, "sync": 1}
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        "generate",
        "logprobs",
        "push",
        "save",
        "score",
        "update",
    ]

    path = tmp_path / "timeline.jsonl"
    path.write_text("".join(json.dumps(s.to_json()) + "\n" for s in _spans()))
    png = plot_timeline(path, tmp_path / "timeline.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    path.write_text("")
    with pytest.raises(ValueError, match="no spans to draw"):
        plot_timeline(path, tmp_path / "empty.png")


def test_the_controller_records_one_rollout_span_per_serving_replica(tmp_path):
    """Rollouts.generate on a fake fleet whose replies name two replicas: a lane each, with its counts."""
    from medix_ray.config import load_config
    from medix_ray.data.schema import Sample
    from medix_ray.trainer.rollouts import Rollouts
    from medix_ray.trajectory import Response, Rollout, Sampling

    class FakeFleet:
        def generate(self, samples, sampling, min_version=0):
            resp = [Response("a", [1], [-0.5], "stop")] * sampling.n
            return [Rollout(s, resp, 7, "r0" if i % 3 else "r1", [2, 3]) for i, s in enumerate(samples)]

    cfg = load_config("configs/tiny_cpu.yaml", [f"trainer.output_dir={tmp_path}"])
    timeline = Timeline(tmp_path / "timeline.jsonl")
    rollouts = Rollouts(cfg, FakeFleet(), None, timeline, synced_version=lambda: 7)
    samples = [Sample(f"s{i}", "q?", "<X_RAY> a") for i in range(5)]
    out = rollouts.generate(samples, Sampling(n=2), "generate", 4)
    assert [ro.replica for ro in out] == ["r1", "r0", "r0", "r1", "r0"]
    timeline.close()
    spans = read_spans(tmp_path / "timeline.jsonl")
    assert [(s.lane, s.replica, s.counts, s.step, s.version) for s in spans] == [
        ("rollout/r0", "r0", {"groups": 3, "responses": 6}, 4, 7),
        ("rollout/r1", "r1", {"groups": 2, "responses": 4}, 4, 7),
    ]
    assert spans[0].start == spans[1].start and spans[0].end == spans[1].end


def test_a_training_step_records_each_phase_in_order(tmp_path, monkeypatch):
    """Trainer.train_step on fakes of the fleet, reward ensemble and learner, with the real weight sync: one
    span per phase, in the order they ran, with the step and the policy version; the step's metrics as before."""
    import types

    import torch

    import medix_ray.learner.batch
    from medix_ray.config import load_config
    from medix_ray.data.schema import Sample
    from medix_ray.rewards.composite import RewardBreakdown
    from medix_ray.sync.coordinator import WeightSync
    from medix_ray.trainer.async_step import AsyncCollector
    from medix_ray.trainer.controller import Trainer
    from medix_ray.trainer.rollouts import Rollouts
    from medix_ray.trajectory import Response, Rollout, UpdateStats
    from tests.sync.test_coordinator import FakeFleet, FakeLearner, _roster

    overrides = ["learner.mini_batches_per_step=2", "algorithm.kl_coef=0.01", "algorithm.dynamic_sampling=none"]
    trainer = Trainer(load_config("configs/tiny_cpu.yaml", [f"trainer.output_dir={tmp_path}", *overrides]))
    calls = []

    class Fleet(FakeFleet):
        retries = 0

        def generate(self, samples, sampling, min_version=0):
            calls.append("generate")
            resp = [Response("a", [1, 2], [-0.5, -0.1], "stop") for _ in range(sampling.n)]
            return [Rollout(s, resp, min_version, f"r{i % 2}", [3, 4]) for i, s in enumerate(samples)]

        def broadcast(self, method, *args):
            if method == "update_weights":
                calls.append("push")
            return super().broadcast(method, *args)

    class Rewards:
        def __init__(self):
            self.score = types.SimpleNamespace(remote=self._remote)

        def _remote(self, items):
            calls.append("score")
            # overall varied within each group
            bds = [RewardBreakdown(item.id, float(k % 2), 0.5, 0.5, 0.5, 0.5) for k, item in enumerate(items)]
            return types.SimpleNamespace(result=lambda timeout_s: bds)

    class Learner(FakeLearner):
        def compute_logprobs(self, batch):
            calls.append("logprobs")

        def compute_ref_logprobs(self, batch):
            calls.append("ref_logprobs")

        def update(self, batch):
            calls.append("update")
            return [UpdateStats(0.1, 0.0, 1.0, 0.0, 8, 1.0, attention="sdpa", micro_batches=1)]

    def batch(sample_ids, prompt_ids, response_ids, adv, renderer, images=None, behaviour_logp=None):
        return types.SimpleNamespace(loss_mask=torch.ones(len(sample_ids), 2), old_logp=None, ref_logp=None)

    monkeypatch.setattr(medix_ray.learner.batch, "build_rollout_batch", batch)
    samples = iter(Sample(f"s{i}", "q?", "<X_RAY> a") for i in range(100))
    trainer.stream = types.SimpleNamespace(take=lambda k: [next(samples) for _ in range(k)])
    trainer.fleet, trainer.learner = Fleet(_roster(1, 1), {"r0": "ok", "r1": "ok"}), Learner()
    trainer.renderer = types.SimpleNamespace(eos_token_id=2)  # start() would load the tokenizer and push
    trainer.sync = WeightSync(trainer.learner, trainer.fleet, trainer.cfg.sync, timeline=trainer.timeline)
    trainer.rollouts = Rollouts(trainer.cfg, trainer.fleet, Rewards(), trainer.timeline, lambda: trainer.synced_version)
    trainer.collector = AsyncCollector(trainer.rollouts, trainer.stream, trainer.cfg, lambda: trainer.synced_version)
    metrics = [trainer.train_step().metrics for _ in range(2)]
    trainer.timeline.close()

    spans = read_spans(tmp_path / "timeline.jsonl")
    order = ["generate", "score", "logprobs", "ref_logprobs", "update", "push"]
    assert calls == order * 2
    phases = [
        ("rollout/r0", "generate"),
        ("rollout/r1", "generate"),
        ("reward", "score"),
        ("learner", "logprobs"),
        ("learner", "ref_logprobs"),
        ("learner", "update"),
    ]
    # Step k's phases run on policy version k - 1; its push carries version k.
    expected = [row for k in (1, 2) for row in [*[(*p, k, k - 1) for p in phases], ("sync", "push", k, k)]]
    assert [(s.lane, s.name, s.step, s.version) for s in spans] == expected
    serial = [s for s in spans if s.lane != "rollout/r0"]  # r0 and r1 share their fleet call's span
    assert all(a.end <= b.start for a, b in zip(serial, serial[1:], strict=False))  # one after the other
    assert [m["policy/version"] for m in metrics] == [1.0, 2.0]
    assert all(m["sync/verified"] == 1.0 and m["time/update_s"] >= 0 for m in metrics)
