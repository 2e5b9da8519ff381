"""bench/async_projection.py: the sync and async step times on hand-computed costs, and costs read from a timeline."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from medix_ray.trainer.timeline import Span

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("async_projection", ROOT / "bench" / "async_projection.py")
proj = importlib.util.module_from_spec(_spec)
sys.modules["async_projection"] = proj  # dataclasses look their module up
_spec.loader.exec_module(proj)


def test_sync_mode_is_every_phase_after_the_other():
    p = proj.sync_mode(proj.PhaseCosts(gen=10, reward=2, update=5, sync=1), steps=3)
    assert (p.total_s, p.steady_step_s, p.fill_s) == (54, 18, 0)
    assert p.learner_busy == pytest.approx(18 / 54) and p.fleet_busy == pytest.approx(39 / 54)
    # A push every second step: 4 steps of 17 s and 2 pushes.
    q = proj.sync_mode(proj.PhaseCosts(10, 2, 5, 1), steps=4, sync_interval=2)
    assert (q.total_s, q.steady_step_s) == (70, 17.5)


def test_async_fleet_bound_steps_take_generation_plus_reward_plus_the_push_pause():
    # gen+reward 12 > update 5. Batch 1: 0-12, update 12-17, push 17-18. Batch 2 (needs v0): 12-25,
    # paused 17-18; update 25-30, push 30-31. Batch 3 (needs v1, served from 18): 25-38 (paused
    # 30-31); update 38-43, push 43-44.
    p = proj.async_mode(proj.PhaseCosts(10, 2, 5, 1), steps=3, max_staleness=1)
    assert p.total_s == 44 and p.steady_step_s == 13 == max(12, 5) + 1
    assert p.fill_s == 5  # the first update, which nothing overlaps
    assert p.learner_busy == pytest.approx(18 / 44) and p.fleet_busy == pytest.approx(39 / 44)


def test_async_learner_bound_steps_take_update_plus_push_after_a_fill():
    # gen+reward 3 < update 10. Batch 1: 0-3, update 3-13, push 13-14. Batch 2: 3-6, update 14-24,
    # push 24-25. Batch 3 (needs v1, served from 14): 14-17, update 25-35, push 35-36.
    costs = proj.PhaseCosts(2, 1, 10, 1)
    p = proj.async_mode(costs, steps=3, max_staleness=1)
    assert p.total_s == 36 and p.steady_step_s == 11 and p.fill_s == 3
    # A looser bound cannot help a learner-bound pipeline.
    assert proj.async_mode(costs, steps=3, max_staleness=2).total_s == 36


def test_async_with_no_staleness_is_the_sync_loop():
    costs = proj.PhaseCosts(7, 3, 11, 2)
    assert proj.async_mode(costs, steps=5, max_staleness=0).total_s == proj.sync_mode(costs, steps=5).total_s == 115


def test_async_with_a_push_every_second_update():
    # Batch 1: 0-4, update 4-7 (no push). Batch 2: 4-8, update 8-11, push 11-12 (v2). Batch 3 needs
    # v1 or later: v2 from 12, so 12-16; update 16-19. Batch 4 (needs v2): 16-20, update 20-23, push 23-24.
    p = proj.async_mode(proj.PhaseCosts(4, 0, 3, 1), steps=4, max_staleness=1, sync_interval=2)
    assert p.total_s == 24 and p.steady_step_s == 6  # (24 - 12) / 2
    with pytest.raises(ValueError, match="max_staleness 0 < sync_interval - 1 = 1"):
        proj.async_mode(proj.PhaseCosts(4, 0, 3, 1), steps=4, max_staleness=0, sync_interval=2)


def test_generation_stands_still_during_each_push():
    run = proj._run_through_pauses
    assert run(0.0, 5.0, []) == 5.0
    assert run(0.0, 5.0, [(2.0, 3.0)]) == 6.0  # a pause inside the work
    assert run(2.5, 5.0, [(2.0, 3.0)]) == 8.0  # begun during a pause: waits for its end
    assert run(0.0, 5.0, [(2.0, 3.0), (4.0, 6.0), (9.0, 10.0)]) == 8.0  # two pauses, the third is after
    assert run(3.0, 1.0, [(1.0, 2.0)]) == 4.0  # a pause before the work


def test_bad_costs_and_shapes_are_refused():
    with pytest.raises(ValueError, match="phase cost update must be a number >= 0"):
        proj.PhaseCosts(1, 1, -1, 1)
    with pytest.raises(ValueError, match="phase cost gen"):
        proj.PhaseCosts(float("nan"), 1, 1, 1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        proj.sync_mode(proj.PhaseCosts(1, 1, 1, 1), steps=0)
    with pytest.raises(ValueError, match="max_staleness must be >= 0"):
        proj.async_mode(proj.PhaseCosts(1, 1, 1, 1), steps=2, max_staleness=-1)


def _write_run(tmp_path, spans, overrides):
    from medix_ray.config import load_config, to_yaml

    (tmp_path / "timeline.jsonl").write_text("".join(json.dumps(s.to_json()) + "\n" for s in spans))
    (tmp_path / "config.yaml").write_text(to_yaml(load_config("configs/tiny_cpu.yaml", overrides)))


def _step(step: int, t: float, gen: float, update: float) -> list[Span]:
    """One step: two replicas generating at once (one finishing 1 s earlier), score 1 s, update, push 0.5 s."""
    return [
        Span("rollout", "generate", t, t + gen - 1, step, lane="rollout/a", replica="a"),
        Span("rollout", "generate", t, t + gen, step, lane="rollout/b", replica="b"),
        Span("reward", "score", t + gen, t + gen + 1, step),
        Span("learner", "logprobs", t + gen + 1, t + gen + 2, step),
        Span("learner", "update", t + gen + 2, t + gen + 1 + update, step),
        Span("sync", "push", t + gen + 1 + update, t + gen + 1.5 + update, step),
    ]


def test_costs_from_a_timeline_are_medians_after_the_warm_up_and_scale_to_the_recipe(tmp_path, capsys):
    spans = [Span("sync", "push", 0.0, 1.0, 0)]  # the push before training: not a step
    spans += _step(1, 1.0, gen=50, update=90)  # the warm-up: left out
    spans += _step(2, 200.0, gen=4, update=10)
    spans += _step(3, 300.0, gen=6, update=14)
    spans += _step(4, 400.0, gen=5, update=12)
    spans.append(Span("learner", "save", 500.0, 530.0, 4))  # checkpoints are left out
    spans.append(Span("rollout", "validate", 530.0, 540.0, 4, lane="rollout/a", replica="a"))
    _write_run(tmp_path, spans, ["trainer.prompts_per_step=2", "rollout.n=4"])
    measured = proj.costs_from_timeline(tmp_path / "timeline.jsonl")
    assert measured.steps == 3
    assert measured.costs == proj.PhaseCosts(gen=5, reward=1, update=12, sync=0.5)  # replicas' union: 5, not 9
    assert measured.step_s == 5 + 1 + 12 + 0.5
    assert measured.costs.scaled(320) == proj.PhaseCosts(1600, 320, 3840, 0.5)

    proj.main(["--timeline", str(tmp_path / "timeline.jsonl"), "--staleness", "1", "--steps", "10"])
    out = capsys.readouterr().out
    assert "3 step(s) at 2x4 = 8 completions" in out and "scaled x320.0 to the recipe's 2560 completions" in out
    # 8B shape: G+R 1920, U 3840, S 0.5: sync 5760.5 a step; async 3840.5 after a 1920 s fill.
    assert "| sync | - | 5760.5 | 0.0 | 57605 | 1.00x |" in out
    assert "| async | 1 | 3840.5 | 1920.0 | 40325 | 1.43x |" in out


def test_a_timeline_without_training_steps_is_refused(tmp_path):
    _write_run(tmp_path, [Span("sync", "push", 0.0, 1.0, 0)], [])
    with pytest.raises(ValueError, match="no training step in the timeline"):
        proj.costs_from_timeline(tmp_path / "timeline.jsonl")


def test_the_sweep_tabulates_the_speed_up_against_the_ratio_of_generation_to_update():
    text = proj.sweep([0.5, 2.0], update=400, sync=10, steps=200, sync_interval=1, max_staleness=1)
    # 0.5: sync 200 + 400 + 10 = 610 s; async max(200, 400) + 10 = 410 s, total 200 x 410 + the 200 s fill.
    assert "| 0.5 | 610.0 | 410.0 | 1.48x |" in text  # 122000 / 82200
    # 2: the fleet bounds it: max(800, 400) + 10 = 810 s; total 200 x 810 + the 400 s fill.
    assert "| 2 | 1210.0 | 810.0 | 1.49x |" in text  # 242000 / 162400
