"""The judge server's process handling and environment, on real processes (no vLLM: a shell stands in)."""

import subprocess
import time

from medix_ray.rewards.judge_server import judge_server_env, stop_process_group


def _group(script: str) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", script], start_new_session=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def _children_pids(proc: subprocess.Popen, n: int) -> list[int]:
    """Returns the pids of the group's other members, once `n` of them exist."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(proc.pid)], capture_output=True, text=True).stdout
        pids = [int(p) for p in out.split() if int(p) != proc.pid]
        if len(pids) >= n:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"the group of {proc.pid} never had {n} children")


def test_stop_ends_the_whole_group_not_just_its_leader():
    proc = _group("sleep 300 & sleep 300 & wait")
    children = _children_pids(proc, 2)
    stop_process_group(proc, grace_s=5)
    assert proc.returncode is not None
    assert not any(_alive(pid) for pid in children)


def test_children_that_ignore_sigterm_are_killed_after_the_grace_period():
    proc = _group("trap '' TERM; sh -c \"trap '' TERM; sleep 300\" & wait")
    children = _children_pids(proc, 1)
    t0 = time.monotonic()
    stop_process_group(proc, grace_s=1)
    assert time.monotonic() - t0 >= 1  # the grace period was honoured before SIGKILL
    assert not _alive(proc.pid) and not any(_alive(pid) for pid in children)


def test_orphans_of_an_exited_leader_are_still_stopped():
    proc = _group("sleep 300 & exit 0")
    children = _children_pids(proc, 1)
    proc.wait(timeout=10)
    stop_process_group(proc, grace_s=5)
    assert not any(_alive(pid) for pid in children)


def test_stopping_a_finished_group_is_a_no_op():
    proc = _group("exit 3")
    proc.wait(timeout=10)
    stop_process_group(proc, grace_s=1)
    assert proc.returncode == 3


def test_the_server_gets_only_allow_listed_variables_and_no_secrets():
    needed = {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "MEDIX_RAY_HOME": "/cache",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
        "CUDA_VISIBLE_DEVICES": "0",
        "OMP_NUM_THREADS": "2",
        "LD_PRELOAD": "/usr/lib/libtcmalloc.so",
    }
    secrets = ["MEDIX_RAY_JUDGE_API_KEY", "MEDIX_RAY_SERVE_TOKEN", "OPENAI_API_KEY", "HF_TOKEN", "VLLM_API_KEY"]
    secrets += ["AWS_SECRET_ACCESS_KEY", "PHYSIONET_PASSWORD", "GITHUB_TOKEN", "SOME_UNRELATED"]
    assert judge_server_env({**needed, **{name: "value" for name in secrets}}) == needed


_STARTER = """
import subprocess, sys, time
from medix_ray.rewards.judge_server import _die_with_parent
leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True, preexec_fn=_die_with_parent)
subprocess.Popen([sys.executable, "-m", "medix_ray.rewards.judge_server", "--guard", str(leader.pid)],
                 preexec_fn=_die_with_parent)
print(leader.pid, flush=True)
time.sleep(300)
"""


def test_the_guard_ends_the_group_when_its_starter_is_killed():
    """A Serve replica killed with SIGKILL cannot stop its server; the leader gets the parent-death
    signal, but its children (vLLM's engine process) would live on without the guard."""
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    starter = subprocess.Popen([sys.executable, "-c", _STARTER], stdout=subprocess.PIPE, text=True, cwd=root)
    pgid = int(starter.stdout.readline())
    deadline = time.monotonic() + 10
    members: list[int] = []
    while time.monotonic() < deadline and len(members) < 2:
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout
        members = [int(p) for p in out.split()]
        time.sleep(0.05)
    assert len(members) >= 2, members  # the shell and its sleep
    time.sleep(2)  # the guard has started and installed its handler
    os.kill(starter.pid, 9)
    starter.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in members):
        time.sleep(0.2)
    assert not any(_alive(p) for p in members), "the server's group outlived its killed starter"
