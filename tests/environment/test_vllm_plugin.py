"""The vLLM plugin: idle queue readers do not spin on a small CPU node (medix_ray/environment/vllm_plugin.py)."""

import json
import os
import subprocess
import sys

import pytest

from medix_ray.environment import vllm_plugin


def test_the_spin_follows_the_node(monkeypatch):
    monkeypatch.delenv(vllm_plugin.SPIN_ENV, raising=False)
    assert vllm_plugin.reader_spin_s(cpu_count=2, on_cpu=True) == 0.0
    assert vllm_plugin.reader_spin_s(cpu_count=64, on_cpu=True) is None  # vLLM's own default
    assert vllm_plugin.reader_spin_s(cpu_count=2, on_cpu=False) is None  # a GPU node


def test_the_environment_sets_the_spin(monkeypatch):
    monkeypatch.setenv(vllm_plugin.SPIN_ENV, "1")
    assert vllm_plugin.reader_spin_s(cpu_count=2, on_cpu=True) == 1.0
    monkeypatch.setenv(vllm_plugin.SPIN_ENV, "0.05")
    assert vllm_plugin.reader_spin_s(cpu_count=64, on_cpu=False) == 0.05
    for bad in ("soon", "-1"):
        monkeypatch.setenv(vllm_plugin.SPIN_ENV, bad)
        with pytest.raises(ValueError, match=f"{vllm_plugin.SPIN_ENV}='{bad}'"):
            vllm_plugin.reader_spin_s()


# Loads vLLM's general plugins the way each vLLM process does, then builds a queue reader's wait condition.
PROBE = """
import json, zmq
from vllm.plugins import load_general_plugins
from vllm.distributed.device_communicators import shm_broadcast as shm
load_general_plugins()
reader = shm.SpinCondition(is_reader=True, context=zmq.Context(), notify_address="ipc:///tmp/medix-probe-notify")
print(json.dumps({"spin": reader.busy_loop_s, "recheck_ms": shm.SHM_READER_RECHECK_INTERVAL_MS}))
"""


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) > 4, reason="the default applies to nodes of at most 4 cores")
@pytest.mark.slow
def test_vllm_loads_the_plugin_and_its_readers_do_not_spin():
    env = {k: v for k, v in os.environ.items() if k != vllm_plugin.SPIN_ENV}
    assert _probe(env) == {"spin": 0.0, "recheck_ms": vllm_plugin.RECHECK_MS}
    # vLLM's own behaviour, by the environment: 1 s of spinning, a re-read every 5 s.
    assert _probe({**env, vllm_plugin.SPIN_ENV: "1"}) == {"spin": 1.0, "recheck_ms": 5000}
