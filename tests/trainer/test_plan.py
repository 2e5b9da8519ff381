import subprocess
import sys
from pathlib import Path

import pytest

from medix_ray.config import load_config
from medix_ray.trainer.plan import batch_problems, parse_cluster, resource_plan
from medix_ray.trainer.sync_step import trim_groups

ROOT = Path(__file__).resolve().parents[2]
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))


def test_plan_counts_every_role_of_the_cpu_default():
    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml")
    plan = resource_plan(cfg)
    names = [r.name for r in plan.roles]
    assert names == ["learner", "rollout", "judge", "embedder", "reward ingress", "data"]
    assert plan.totals()["GPU"] == 0
    assert plan.check({"CPU": 6, "GPU": 0}) == []
    assert any("needs" in p and "CPU" in p for p in plan.check({"CPU": 1}))


def test_external_judge_needs_no_judge_replicas():
    cfg = load_config(ROOT / "configs" / "tiny_cpu.yaml", ["reward.judge.base_url=http://127.0.0.1:9/v1"])
    assert "judge" not in [r.name for r in resource_plan(cfg).roles]


def test_the_plan_reserves_room_for_the_ray_data_stream():
    """0.75 free CPU stalled the prompt stream forever (a read task needs 1, the validator 0.25)."""
    (data,) = [r for r in resource_plan(load_config(ROOT / "configs" / "tiny_cpu.yaml")).roles if r.name == "data"]
    assert data.cpus >= 1.25


def test_batch_problems_name_the_keys():
    cfg = load_config(None, ["trainer.prompts_per_step=3", "rollout.n=5", "learner.num_workers=2"])
    (problem,) = [p for p in batch_problems(cfg) if "cannot split" in p]
    assert "trainer.prompts_per_step x rollout.n = 15" in problem and "learner.num_workers (2)" in problem
    cfg = load_config(None, ["rollout.n=1"])
    assert any("rollout.n must be at least 2" in p for p in batch_problems(cfg))


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_recipes_fit_the_cluster_their_header_names(path):
    header = path.read_text().splitlines()[1]
    cluster = parse_cluster(header.split("--assume-cluster")[1].strip())
    cfg = load_config(path)
    assert cfg.trainer.prompts_per_step == 512 and cfg.rollout.n == 5 and cfg.learner.lr == 1e-6
    assert resource_plan(cfg).check(cluster) == []
    # Half the GPUs is not enough.
    assert resource_plan(cfg).check({"CPU": cluster["CPU"], "GPU": cluster["GPU"] / 2})


def _dry_run(config: str, cluster: str) -> subprocess.CompletedProcess:
    command = ["train", "--config", str(ROOT / config), "--dry-run", "--assume-cluster", cluster]
    return subprocess.run(
        [sys.executable, "-m", "medix_ray.cli", *command], capture_output=True, text=True, timeout=120
    )


def test_dry_run_cli_checks_a_paper_recipe_here():
    out = _dry_run("configs/paper/dapo_8b.yaml", "CPU=128,GPU=16")
    assert out.returncode == 0, out.stderr
    assert "plan OK" in out.stdout and "rollout" in out.stdout and "judge" in out.stdout
    bad = _dry_run("configs/paper/dapo_8b.yaml", "CPU=128,GPU=4")
    assert bad.returncode == 1 and "the plan needs 10.5 GPU but the cluster has 4" in bad.stdout


def test_parse_cluster_errors_name_the_part():
    assert parse_cluster("CPU=8, GPU=2") == {"CPU": 8.0, "GPU": 2.0}
    with pytest.raises(ValueError, match="'GPU' is not of the form"):
        parse_cluster("GPU")
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_cluster("GPU=x")


def test_trim_groups_keeps_rows_divisible():
    assert trim_groups(4, 4, 2) == 4
    assert trim_groups(3, 5, 4) == 0 or (trim_groups(3, 5, 4) * 5) % 4 == 0
    assert trim_groups(7, 2, 4) == 6
    assert trim_groups(1, 3, 2) == 0
