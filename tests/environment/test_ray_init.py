"""Starting or joining Ray, one policy (medix_ray/environment/ray_init.py:init_ray), against a recording `ray`."""

import os
import sys
import types

import pytest

from medix_ray import console as console_mod
from medix_ray.environment import node, ray_init
from medix_ray.environment.ray_init import init_ray
from medix_ray.environment.switches import DASHBOARD


class RecordingConsole(console_mod.Console):
    def __init__(self, verbose: bool):
        super().__init__(log_dir=None, verbose=verbose)
        self.calls: list[str] = []

    def quiet_libraries(self) -> None:
        self.calls.append("quiet_libraries")

    def link_ray_logs(self) -> None:
        self.calls.append("link_ray_logs")


@pytest.fixture
def fake_ray(monkeypatch):
    """A `ray` module that records ray.init's arguments, and a quiet console; no GPU, no RAY_ADDRESS."""
    inits: list[dict] = []
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: bool(inits)
    fake.init = lambda **kwargs: inits.append(kwargs)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(ray_init, "has_cuda_gpu", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(DASHBOARD.name, raising=False)
    console = RecordingConsole(verbose=False)
    monkeypatch.setattr(console_mod, "_CURRENT", console)
    return types.SimpleNamespace(inits=inits, console=console)


def test_a_local_cluster_is_sized_for_this_machine_and_the_plan(fake_ray, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert init_ray(cpus_needed=6.5) is True
    (kwargs,) = fake_ray.inits
    assert kwargs["address"] is None
    assert kwargs["num_cpus"] == 7  # the plan's 6.5 CPUs, rounded up, over the machine's 2 cores
    assert kwargs["include_dashboard"] is False  # a node of 2 cores
    assert kwargs["runtime_env"] == {"env_vars": node.worker_env()}
    assert kwargs["log_to_driver"] is False  # the quiet console
    assert fake_ray.console.calls == ["quiet_libraries", "link_ray_logs"]


def test_a_small_machine_gets_four_logical_cpus_and_a_given_count_wins(fake_ray, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    init_ray()
    assert fake_ray.inits[-1]["num_cpus"] == 4
    fake_ray.inits.clear()
    init_ray(num_cpus=3, cpus_needed=10)
    assert fake_ray.inits[-1]["num_cpus"] == 3


def test_with_a_gpu_ray_detects_the_cpus(fake_ray, monkeypatch):
    monkeypatch.setattr(ray_init, "has_cuda_gpu", lambda: True)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    init_ray(cpus_needed=8)
    assert fake_ray.inits[-1]["num_cpus"] is None
    assert fake_ray.inits[-1]["include_dashboard"] is True  # a node of 64 cores


def test_a_joined_cluster_keeps_its_own_size_and_dashboard(fake_ray):
    assert init_ray("auto", cpus_needed=100, log_to_driver=True) is True
    (kwargs,) = fake_ray.inits
    assert kwargs == {"address": "auto", "log_to_driver": True, "runtime_env": {"env_vars": node.worker_env()}}


def test_ray_address_in_the_environment_is_a_joined_cluster(fake_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    init_ray()
    assert "num_cpus" not in fake_ray.inits[-1] and "include_dashboard" not in fake_ray.inits[-1]
    fake_ray.inits.clear()
    with pytest.raises(ValueError, match=r"num_cpus=8 sizes a local cluster; the cluster at RAY_ADDRESS=10.0.0.1:6379"):
        init_ray(num_cpus=8)
    with pytest.raises(ValueError, match=r"num_cpus=8 sizes a local cluster; the cluster at auto has its own"):
        init_ray("auto", num_cpus=8)
    assert fake_ray.inits == []


def test_log_to_driver_overrides_the_console(fake_ray, monkeypatch):
    init_ray(log_to_driver=True)
    assert fake_ray.inits[-1]["log_to_driver"] is True
    fake_ray.inits.clear()
    monkeypatch.setattr(console_mod, "_CURRENT", RecordingConsole(verbose=True))
    init_ray(log_to_driver=False)  # evaluation: the engines' output stays in the Ray session logs
    assert fake_ray.inits[-1]["log_to_driver"] is False
    fake_ray.inits.clear()
    init_ray()
    assert fake_ray.inits[-1]["log_to_driver"] is True  # the verbose console


def test_a_connected_process_is_not_connected_again(fake_ray):
    assert init_ray() is True
    fake_ray.console.calls.clear()
    assert init_ray("auto", num_cpus=8) is False  # already connected: nothing is checked or started
    assert len(fake_ray.inits) == 1
    assert fake_ray.console.calls == ["quiet_libraries", "link_ray_logs"]  # a resumed run's new log folder


def test_the_dashboard_switch_reaches_a_local_cluster(fake_ray, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv(DASHBOARD.name, "1")
    init_ray()
    assert fake_ray.inits[-1]["include_dashboard"] is True
