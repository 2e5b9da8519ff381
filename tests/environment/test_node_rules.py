"""The node rules (medix_ray/environment/node.py): a small CPU node, a local cluster's size and dashboard."""

import os
from pathlib import Path

import pytest

from medix_ray.environment.node import is_small_cpu_node, local_cpus, local_dashboard, worker_env
from medix_ray.environment.switches import DASHBOARD

DASHBOARD_ENV = DASHBOARD.name


def test_a_small_node_has_at_most_four_cores():
    assert is_small_cpu_node(2) and is_small_cpu_node(4)
    assert not is_small_cpu_node(5)


def test_a_local_cluster_has_the_cores_at_least_four_and_at_least_the_plan(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert local_cpus() == 4
    assert local_cpus(4.25) == 5
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert local_cpus(4.25) == 16
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert local_cpus() == 4
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="cpus_needed is"):
            local_cpus(bad)


def test_a_small_node_starts_no_dashboard_and_a_large_one_does(monkeypatch):
    monkeypatch.delenv(DASHBOARD_ENV, raising=False)
    assert local_dashboard(cpu_count=2) is False
    assert local_dashboard(cpu_count=4) is False
    assert local_dashboard(cpu_count=16) is True


def test_the_environment_decides(monkeypatch):
    monkeypatch.setenv(DASHBOARD_ENV, "1")
    assert local_dashboard(cpu_count=2) is True
    monkeypatch.setenv(DASHBOARD_ENV, "0")
    assert local_dashboard(cpu_count=64) is False
    monkeypatch.setenv(DASHBOARD_ENV, "yes")
    with pytest.raises(ValueError, match=f"{DASHBOARD_ENV}='yes'"):
        local_dashboard()


def test_workers_import_the_repository(monkeypatch):
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert worker_env() == {"PYTHONPATH": root}
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    assert worker_env() == {"PYTHONPATH": f"{root}{os.pathsep}/elsewhere"}
    assert (Path(root) / "medix_ray").is_dir() and (Path(root) / "deployments").is_dir()
