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
    return [p for p in _members(proc.pid, n + 1) if p != proc.pid]


def _members(pgid: int, n: int) -> list[int]:
    """Returns the pids of the group `pgid` (its leader included), once `n` of them exist."""
    deadline = time.monotonic() + 10
    members: list[int] = []
    while time.monotonic() < deadline and len(members) < n:
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout
        members = [int(p) for p in out.split()]
        time.sleep(0.05)
    assert len(members) >= n, f"the group of {pgid} never had {n} members: {members}"
    return members


def _all_dead(pids: list[int], timeout_s: float) -> bool:
    """Waits up to `timeout_s` for every process of `pids` to be gone; returns whether they are."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return not any(_alive(p) for p in pids)


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
        "MEDIX_VLLM_READER_SPIN_S": "1",  # medix-ray's vLLM plugin reads it in the server's processes
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
from medix_ray.rewards.judge_server import _die_with_parent, start_guard
leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True, preexec_fn=_die_with_parent)
start_guard(leader.pid)
print(leader.pid, flush=True)
time.sleep(300)
"""


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_the_guard_ends_the_group_when_its_starter_and_its_direct_children_are_killed():
    """A Serve replica killed with SIGKILL cannot stop its server, and Ray then SIGKILLs the replica's direct
    children too (the server's leader among them): the leader's children (vLLM's engine process) would live
    on without the guard, which is no child of the replica."""
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    starter = subprocess.Popen([sys.executable, "-c", _STARTER], stdout=subprocess.PIPE, text=True, cwd=root)
    pgid = int(starter.stdout.readline())
    members = _members(pgid, 2)  # the shell and its sleep
    children = _children_of(starter.pid)
    assert children == [pgid]  # the guard is detached: not the starter's child
    os.kill(starter.pid, 9)
    for pid in children:  # what Ray does to a dead worker's children
        os.kill(pid, 9)
    starter.wait()
    assert _all_dead(members, 30), "the server's group outlived its killed starter"


def test_the_guard_ends_the_group_when_only_the_leader_dies():
    """The leader killed alone (an OOM kill) leaves the engine process: the guard ends the rest."""
    import os

    from medix_ray.rewards.judge_server import start_guard

    leader = _group("sleep 300 & wait")
    members = _members(leader.pid, 2)
    start_guard(leader.pid)
    time.sleep(1)
    os.kill(leader.pid, 9)
    leader.wait()
    assert _all_dead(members, 30), "the leader's children outlived it"


def test_the_guard_leaves_when_the_group_is_stopped():
    leader = _group("sleep 300 & wait")
    from medix_ray.rewards.judge_server import start_guard

    start_guard(leader.pid)
    time.sleep(1)
    guards = _pids_matching(f"--guard {leader.pid} ")
    assert len(guards) == 1
    stop_process_group(leader, grace_s=5)
    assert _all_dead(guards, 10), "the guard outlived the group it guarded"


def _pids_matching(text: str) -> list[int]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if text in line + " "]
