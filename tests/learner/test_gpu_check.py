"""bench/gpu_learner_check.py runs on CPU at tiny dimensions, exact in fp32, importing no project dependency
beyond torch and transformers (it must run on a bare GPU machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_DEPS = ("ray", "deepspeed", "vllm", "omegaconf", "trl")  # transformers may load pandas if installed


@pytest.mark.slow  # a learner step in a child process: ~20-40 s here
def test_gpu_learner_check_runs_tiny_on_cpu_with_torch_and_transformers_only(tmp_path):
    out = tmp_path / "check.json"
    script = ROOT / "bench" / "gpu_learner_check.py"
    code = (
        "import runpy, sys; "
        f"sys.argv = [{str(script)!r}, '--tiny', '--repeats', '0', '--out', {str(out)!r}]; "
        "code = 0\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & set({PROJECT_DEPS!r})))\n"
        "sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOADED []" in proc.stdout
    report = json.loads(out.read_text())
    assert report["exact"] is True and report["tiny"] is True
    fp32 = report["fp32"]
    assert fp32["logp_max_abs_diff"] < 1e-4 and fp32["grad_max_rel_diff"] < 1e-4
    assert fp32["rows"] == 20 and fp32["attention"] == "sdpa/dense-block-mask"
