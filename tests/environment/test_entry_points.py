"""The entry points start or join Ray through init_ray (medix_ray/environment/ray_init.py), and size a local
CPU cluster with the node rule (medix_ray/environment/node.py:local_cpus)."""

import math
import os
import sys
import types
from pathlib import Path

import pytest

from medix_ray.config import load_config
from medix_ray.data import readers
from medix_ray.environment.node import local_cpus
from medix_ray.trainer import run
from medix_ray.trainer.plan import resource_plan

ROOT = Path(__file__).resolve().parents[2]


class Stop(Exception):
    pass


@pytest.fixture
def no_ray(monkeypatch):
    """A `ray` module with no cluster joined, whose calls are recorded."""
    calls: list[str] = []
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: False
    fake.cluster_resources = lambda: calls.append("cluster_resources") or {"CPU": 8.0, "GPU": 0.0}
    fake.shutdown = lambda: calls.append("shutdown")
    monkeypatch.setitem(sys.modules, "ray", fake)
    return calls


def test_reading_data_starts_ray_with_worker_output_on_the_console(monkeypatch, tmp_path):
    started: list[dict] = []

    def init_ray(*args, **kwargs):
        started.append({"args": args, **kwargs})
        raise Stop

    monkeypatch.setattr(readers, "init_ray", init_ray)
    source = tmp_path / "rows.jsonl"
    source.write_text('{"problem": "q", "solution": "a"}\n')
    with pytest.raises(Stop):
        readers.read_samples(str(source))
    assert started == [{"args": (), "log_to_driver": True}]


def test_a_dry_run_joins_the_given_cluster_and_leaves_it(monkeypatch, no_ray):
    joined: list[tuple] = []
    monkeypatch.setattr(run, "init_ray", lambda *args, **kwargs: joined.append((args, kwargs)))
    assert run.cluster_resources("auto") == {"CPU": 8.0, "GPU": 0.0}
    assert joined == [(("auto",), {})]
    assert no_ray == ["cluster_resources", "shutdown"]
    assert run.cluster_resources(None) is None  # nothing runs and nothing was given: nothing is started
    assert len(joined) == 1


def test_a_dry_run_on_a_cpu_plan_checks_the_local_cluster_train_would_start(monkeypatch, no_ray, capsys):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cfg = load_config(str(ROOT / "configs" / "tiny_cpu.yaml"))
    plan_cpus = resource_plan(cfg).totals()["CPU"]
    assert resource_plan(cfg).totals()["GPU"] == 0
    run.dry_run(cfg)
    out = capsys.readouterr().out
    assert "checked against the local cluster medix-ray train would start" in out
    expected = max(4, math.ceil(plan_cpus))
    assert local_cpus(plan_cpus) == expected
    assert f'"CPU": {float(expected)}' in out
