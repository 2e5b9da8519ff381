import json

import pytest

from medix_ray.trainer.metrics import MetricsLog, plot_curves, read_metrics, window_means


@pytest.mark.timeout(300)
def test_stream_resumes_exactly_and_crosses_epochs(ray_cluster):
    from medix_ray.config import load_config
    from medix_ray.data.readers import read_samples_from_config
    from medix_ray.trainer.stream import PromptStream

    cfg = load_config("configs/tiny_cpu.yaml")
    ds, report = read_samples_from_config(cfg.data, "test")
    stream = PromptStream(ds, report, seed=3, shuffle_window=16)
    first = [s.id for s in stream.take(5)]
    state = stream.state()
    assert state == {"epoch": 0, "position": 5}
    rest = [s.id for s in stream.take(7)]

    again = PromptStream(ds, report, seed=3, shuffle_window=16)
    again.restore(state)
    assert [s.id for s in again.take(7)] == rest
    # A checkpoint with prompts in flight: the pending ones come again, in order, the others before the
    # cursor are skipped (trained on), then the stream goes on past the cursor.
    resumed = PromptStream(ds, report, seed=3, shuffle_window=16)
    resumed.restore(state, pending=[[0, 4], [0, 2]])
    taken = resumed.take_indexed(4)
    assert [c for c, _ in taken] == [(0, 2), (0, 4), (0, 6), (0, 7)]
    assert [s.id for _, s in taken] == [first[1], first[3], rest[0], rest[1]]
    with pytest.raises(ValueError, match=r"pending stream coordinates \[\(0, 9\)\] lie after the saved cursor"):
        resumed.restore(state, pending=[(0, 9)])
    # The epoch is a permutation: every test id once before the next epoch starts.
    total = len(set(first + rest)) + len({s.id for s in stream.take(0)})
    epoch = first + rest + [s.id for s in stream.take(200)]
    n = len(set(epoch))
    assert sorted(epoch[:n]) == sorted(set(epoch)) and total == 12
    assert stream.epoch >= 1
    # A different seed gives a different order.
    other = PromptStream(ds, report, seed=4, shuffle_window=16)
    assert [s.id for s in other.take(12)] != first + rest


def test_metrics_log_truncates_on_resume_and_plots(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=True)
    for step in range(1, 7):
        log.write(step, {"reward/mean": step / 10, "reward/format": 0.0, "val/reward_mean": None})
    log.close()
    resumed = MetricsLog(tmp_path, resume_step=4)
    resumed.write(5, {"reward/mean": 0.55})
    resumed.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["reward/mean"] == 0.55
    first, last = window_means(rows, "reward/mean", 2)
    assert first == pytest.approx(0.15) and last == pytest.approx(0.475)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    pngs = plot_curves(tmp_path / "metrics.jsonl", tmp_path)
    assert [p.name for p in pngs] == ["reward.png", "components.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    with pytest.raises(ValueError, match="no step has the metric 'missing'"):
        window_means(rows, "missing", 5)
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
