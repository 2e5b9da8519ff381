"""`medix-ray serve-rewards` as a user runs it: its own Ray cluster, the in-cluster vLLM judge, Ctrl-C to stop."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deployments.reward_app import build_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).parents[2]


def test_build_app_takes_serve_run_arguments():
    app = build_app({"config": str(ROOT / "configs/serve/rewards_cpu.yaml"), "serve.port": "8123"})
    assert type(app).__name__ == "Application"
    with pytest.raises(Exception, match="serve.prot"):
        build_app({"config": str(ROOT / "configs/serve/rewards_cpu.yaml"), "serve.prot": "1"})


def test_serve_rewards_cli_with_in_cluster_judge_and_score_url(tmp_path):
    exe = Path(sys.executable).parent / "medix-ray"
    port = 8791
    env = dict(os.environ, MEDIX_RAY_SERVE_TOKEN="")
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [
            str(exe),
            "serve-rewards",
            "--config",
            "configs/serve/rewards_cpu.yaml",
            f"serve.port={port}",
            "serve.embedder_max_replicas=1",
            "serve.ingress_max_replicas=1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail("reward service did not come up:\n" + (tmp_path / "serve.log").read_text()[-3000:])
        src = tmp_path / "in.jsonl"
        src.write_text(
            json.dumps(
                {
                    "id": "a",
                    "question": "What is the medical term for a heart attack?",
                    "response": "<OTHER><think>r</think><answer>Heart attack</answer>",
                    "reference": "<OTHER> Myocardial infarction",
                }
            )
            + "\n"
        )
        out = subprocess.run(
            [str(exe), "score", str(src), str(tmp_path / "out.jsonl"), "--url", url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert row["status"]["accuracy_llm"] == "scored"  # the in-cluster judge gave a verdict
        assert row["overall"] is not None
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
