"""`ray job submit` the way README.md and docs/training.md show it: a cluster started with `ray start`
(token authentication on, the venv not on the cluster's PATH), the repository uploaded with
`--working-dir .`, and three jobs: the training dry-run, a 1-step training run, a 2-item evaluation.
The jobs judge with the test session's judge server (one vLLM engine fewer each): a second judge in
the job's cluster, beside the session's engines, took the machine past Ray's memory threshold.

The cluster gets its own ports and temp dir. It is stopped by the process ids this module started
(never `ray stop`, which stops every Ray cluster on the machine, other users' included)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the interpreter running the tests: the venv's (not resolved)
VENV_PYTHON = str(VENV_BIN / "python")
RAY = str(VENV_BIN / "ray")

# Small settings for the 1-step job on a 4-CPU cluster (the plan needs 3.25 CPUs).
SMALL_TRAINING = [
    "trainer.steps=1",
    "trainer.prompts_per_step=2",
    "trainer.checkpoint_interval=1",
    "trainer.val_interval=0",
    "rollout.n=2",
    "rollout.max_tokens=24",
    "algorithm.overlong_buffer=8",
    "algorithm.dynamic_sampling=none",
    "learner.micro_batch_size=2",
    "learner.cpus_per_worker=1",
    "rollout.num_cpus_per_replica=0.25",
    "serve.judge_num_cpus=0.25",
    "serve.embedder_num_cpus=0.25",
    "serve.embedder_max_replicas=1",
    "serve.ingress_max_replicas=1",
]
TRAIN_CONFIG = "configs/tiny_cpu.yaml"


def _free_ports(n: int) -> list[int]:
    """Returns `n` distinct ports that were free a moment ago (all sockets held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _without_venv(path: str) -> str:
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and Path(p) != VENV_BIN)


class JobCluster:
    """A head node started with `ray start --head --block`, and the job CLI pointed at its dashboard."""

    def __init__(self, root: Path):
        self.root = root
        self.token_path = root / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        gcs, dash, client, nm, om, agent_http, agent_grpc, rt_agent, metrics, serve = _free_ports(10)
        self.address = f"http://127.0.0.1:{dash}"
        self.serve_port = serve
        # The cluster's environment is a user's shell without the venv activated: `ray` by its path,
        # so the job's bare `python` is not the venv's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "VIRTUAL_ENV"}
        env["PATH"] = _without_venv(env.get("PATH", ""))
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        self.client_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.client_env.update(
            RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path), RAY_ADDRESS=self.address
        )
        cmd = [
            RAY, "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1", "--num-cpus=4", f"--temp-dir={root / 'ray'}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
            f"--port={gcs}", f"--ray-client-server-port={client}", f"--node-manager-port={nm}",
            f"--object-manager-port={om}", f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_agent}",
            f"--metrics-export-port={metrics}",
        ]  # fmt: skip
        self.log = open(root / "ray_start.log", "w")
        self.head = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def cli(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY, *args], env=env or self.client_env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.head.poll() is not None:
                raise RuntimeError(f"ray start exited {self.head.returncode}: {self.tail()}")
            if self.cli("job", "list", timeout=60).returncode == 0:
                return
            time.sleep(3)
        raise TimeoutError(f"the dashboard at {self.address} did not answer in {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return (self.root / "ray_start.log").read_text()[-3000:]

    def submit(self, *entrypoint: str, runtime_env: dict | None = None) -> str:
        """`ray job submit --working-dir . --no-wait [--runtime-env-json ...] -- ENTRYPOINT`; returns the job id."""
        job_id = f"medix-test-{secrets.token_hex(4)}"
        extra = ["--runtime-env-json", json.dumps(runtime_env)] if runtime_env else []
        r = self.cli(
            "job", "submit", "--working-dir", ".", "--submission-id", job_id, "--no-wait", *extra, "--", *entrypoint
        )
        assert r.returncode == 0, f"submit failed: {r.stdout}\n{r.stderr}"
        return job_id

    def wait(self, job_id: str, timeout: float) -> tuple[str, str]:
        """Waits for the job to end (its status through the SDK: `ray job status` prints prose); returns
        (status, `ray job logs`). A job still running at `timeout` is stopped."""
        code = (
            "import sys, time\n"
            "from ray.job_submission import JobSubmissionClient\n"
            "client, deadline = JobSubmissionClient(), time.monotonic() + float(sys.argv[2])\n"
            "while not (s := client.get_job_status(sys.argv[1])).is_terminal() and time.monotonic() < deadline:\n"
            "    time.sleep(5)\n"
            "print('STATUS', s.value)\n"
        )
        r = subprocess.run(
            [VENV_PYTHON, "-c", code, job_id, str(timeout)],
            env=self.client_env, capture_output=True, text=True, timeout=timeout + 120,
        )  # fmt: skip
        found = re.findall(r"^STATUS (\w+)$", r.stdout, re.MULTILINE)
        status = found[-1] if found else f"unknown ({r.stderr[-1000:]})"
        if status in ("PENDING", "RUNNING"):
            self.cli("job", "stop", job_id, timeout=120)
        logs = self.cli("job", "logs", job_id, timeout=120)
        return status, logs.stdout + logs.stderr

    def processes(self) -> list[int]:
        """Ids of the processes of this cluster: the head's session, and any process whose command line or
        working directory names this cluster's temp dir (workers, job drivers, their engines)."""
        marker = str(self.root)
        sid = self.head.pid
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(entry / "cwd")
                session = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
            except (OSError, ValueError, IndexError):
                continue
            if session == sid or marker in cmdline or cwd.startswith(marker):
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Stops the head (it takes its raylet, GCS and workers down), then kills what is left, by id."""
        if self.head.poll() is None:
            self.head.send_signal(signal.SIGTERM)
            try:
                self.head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.head.kill()
        deadline = time.monotonic() + 30
        while self.processes() and time.monotonic() < deadline:
            time.sleep(2)
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20  # killed processes leave /proc once their parent reaps them
        while self.processes() and time.monotonic() < deadline:
            time.sleep(1)
        self.log.close()


@pytest.fixture(scope="module")
def cluster():
    # A short path: Ray's unix sockets live under the temp dir, and socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="mxjob-", dir="/tmp"))
    c = JobCluster(root)
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()
        assert not c.processes(), "cluster processes survived the teardown"


def _marked(logs: str, tag: str):
    """The JSON the job printed after `tag`."""
    (line,) = [ln for ln in logs.splitlines() if ln.startswith(tag + " ")]
    return json.loads(line[len(tag) + 1 :])


def test_the_client_needs_token_mode(cluster):
    """Ray 2.60 clusters from `ray start` check a token: a client that does not set RAY_AUTH_MODE=token
    is refused even with the token file at hand (the message users see)."""
    env = {k: v for k, v in cluster.client_env.items() if k != "RAY_AUTH_MODE"}
    r = cluster.cli("job", "list", env=env)
    assert r.returncode != 0
    assert "authentication" in (r.stdout + r.stderr).lower()
    assert cluster.cli("job", "list").returncode == 0


def test_a_bare_python_entrypoint_is_the_clusters_python(cluster):
    """The entrypoint runs with the cluster's PATH: a bare `python` is not the venv's when the cluster was
    started without it, so the project's imports fail there. The other jobs name the venv's python by its path."""
    code = "import omegaconf, medix_ray, sys; print('PY', sys.executable)"
    job = cluster.submit("python", "-c", code)
    status, logs = cluster.wait(job, timeout=300)
    assert status == "FAILED", logs
    assert "No module named 'omegaconf'" in logs
    # The runtime env's PATH (`${PATH}` is the cluster's) puts the venv first for the entrypoint.
    job = cluster.submit("python", "-c", code, runtime_env={"env_vars": {"PATH": f"{VENV_BIN}:${{PATH}}"}})
    status, logs = cluster.wait(job, timeout=300)
    assert status == "SUCCEEDED", logs
    assert f"PY {VENV_PYTHON}" in logs


def test_train_dry_run_job_sees_the_uploaded_code_without_venv_or_runs(cluster):
    # Without the script's own folder on sys.path (as for `python jobs/train.py`), medix_ray must come
    # from the job's PYTHONPATH, i.e. the uploaded copy, not the editable install of the repository.
    probe = (
        "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
        "import json, os, medix_ray; "
        "print('UPLOADED', json.dumps({'entries': sorted(os.listdir('.')), 'cwd': os.getcwd(), "
        "'medix_ray': medix_ray.__file__}))"
    )
    # The CLI shell-quotes each entrypoint word (shlex.join), so a shell `&&` needs `bash -c`.
    dry_run = [VENV_PYTHON, "jobs/train.py", "--config", TRAIN_CONFIG, "--dry-run", *SMALL_TRAINING]
    job = cluster.submit("bash", "-c", f"{shlex.join([VENV_PYTHON, '-c', probe])} && {shlex.join(dry_run)}")
    status, logs = cluster.wait(job, timeout=300)
    assert status == "SUCCEEDED", logs
    uploaded = _marked(logs, "UPLOADED")
    # .gitignore is honoured: the virtualenv and the run folders stay home; the code travels.
    assert {"jobs", "medix_ray", "configs", "pyproject.toml"} <= set(uploaded["entries"])
    assert not {".venv", "runs"} & set(uploaded["entries"])
    assert not uploaded["cwd"].startswith(str(REPO)) and uploaded["cwd"].startswith(str(cluster.root))
    assert Path(uploaded["medix_ray"]).resolve().is_relative_to(Path(uploaded["cwd"]).resolve())
    assert "plan OK" in logs and "checked against the cluster at auto" in logs
    assert '"CPU": 4.0' in logs


def test_one_step_training_job_writes_its_run_folder(cluster, judge_url, tmp_path):
    # The session's judge server (127.0.0.1) judges: one vLLM engine fewer to start in the job's cluster.
    out = tmp_path / "run"
    job = cluster.submit(
        VENV_PYTHON, "jobs/train.py", "--verbose", "--config", TRAIN_CONFIG, *SMALL_TRAINING,
        f"trainer.output_dir={out}", f"serve.port={cluster.serve_port}", f"reward.judge.base_url={judge_url}",
    )  # fmt: skip
    status, logs = cluster.wait(job, timeout=1200)
    assert status == "SUCCEEDED", logs[-6000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]
    assert rows[0]["policy/version"] == 1.0 and rows[0]["time/update_s"] > 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
    assert (out / "config.yaml").is_file()
    checkpoints = [p for p in (out / "checkpoints" / "learner").glob("checkpoint_*") if p.is_dir()]
    assert len(checkpoints) == 1 and any(checkpoints[0].iterdir())
    assert "trained 1 steps" in logs
    # --verbose brings the workers' output back (the console's quiet default is tests/test_console.py's)
    assert "ServeReplica" in logs or "RayTrainWorker" in logs, logs[-3000:]


def test_two_item_evaluation_job_writes_its_report(cluster, judge_url, tmp_path):
    # The session's judge server judges (as for training): the job's cluster starts the candidate only.
    out = tmp_path / "eval"
    job = cluster.submit(
        VENV_PYTHON, "jobs/evaluate.py", "--model", "smollm2-135m-instruct",
        "eval.tasks=[mmlu_anatomy,medqa]", "eval.data_dir=tests/eval/fixtures", "eval.limit=1",
        "eval.max_tokens=16", "eval.judge_structured=true", f"eval.judge={judge_url}", f"eval.output_dir={out}",
    )  # fmt: skip
    status, logs = cluster.wait(job, timeout=900)
    assert status == "SUCCEEDED", logs[-6000:]
    (report_md,) = out.glob("*/report/report.md")
    model_dir = report_md.parent.parent
    generations = [
        json.loads(line) for part in sorted((model_dir / "generations").glob("part-*.jsonl"))
        for line in part.read_text().splitlines()
    ]  # fmt: skip
    assert sorted(g["id"] for g in generations) == ["medqa_0", "mmlu_anatomy_0"]
    report = model_dir / "report"
    for name in ("report.md", "scores.csv", "scores.json", "submission.zip"):
        assert (report / name).is_file(), name
    scores = json.loads((report / "scores.json").read_text())
    assert "medqa" in json.dumps(scores) and "mmlu_anatomy" in json.dumps(scores)
