"""The local Ray cluster medix-ray starts itself (medix_ray/cluster.py)."""

import pytest

from medix_ray.cluster import DASHBOARD_ENV, local_dashboard


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
