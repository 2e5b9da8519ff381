"""The console of the long-running commands: quiet by default (logs in files), everything with --verbose."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from medix_ray import console as console_mod
from medix_ray.console import Console
from medix_ray.trainer.reporting import format_step

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    console_mod._CURRENT = None


def test_quiet_console_keeps_info_in_the_log_file_and_shows_warnings(tmp_path, capfd, restore_logging):
    Console(tmp_path / "logs", verbose=False).start()
    assert f"logs: {tmp_path / 'logs'}" in capfd.readouterr().err
    logging.getLogger("deepspeed").info("accelerator notice")
    logging.getLogger("medix_ray.x").info("step detail")
    logging.getLogger("medix_ray.x").warning("act on this")
    err = capfd.readouterr().err
    assert "act on this" in err and "accelerator notice" not in err and "step detail" not in err
    log = (tmp_path / "logs" / "driver.log").read_text()
    assert "accelerator notice" in log and "step detail" in log and "act on this" in log
    assert console_mod.current().ray_init_kwargs() == {"log_to_driver": False}
    serve_cfg = console_mod.current().serve_logging_config()
    assert serve_cfg.enable_access_log is False and serve_cfg.logs_dir == str((tmp_path / "logs" / "serve").absolute())


def test_verbose_console_shows_everything(tmp_path, capfd, restore_logging):
    Console(tmp_path / "logs", verbose=True).start()
    logging.getLogger("deepspeed").info("accelerator notice")
    assert "accelerator notice" in capfd.readouterr().err
    assert console_mod.current().ray_init_kwargs() == {"log_to_driver": True}
    assert console_mod.current().serve_logging_config().enable_access_log is True


def test_without_an_entry_point_the_console_changes_nothing():
    console_mod._CURRENT = None
    assert console_mod.current().verbose and console_mod.current().log_dir is None


def test_step_line_has_the_figures_that_matter():
    m = {
        "reward/mean": 0.3124,
        "reward/format": 0.1,
        "reward/accuracy_llm": 0.5,
        "groups/kept": 4.0,
        "groups/sampled": 6.0,
        "groups/rounds": 2.0,
        "time/step_s": 28.4,
        "time/rollout_s": 2.5,
        "time/reward_s": 1.0,
        "time/update_s": 21.8,
        "time/sync_s": 0.6,
    }
    line = format_step(3, 15, m)
    assert line == (
        "step 3/15  reward 0.312 (fmt 0.10 llm 0.50)  kept 4/6 in 2 round(s)  "
        "time 28.4 s: rollout 2.5 reward 1.0 update 21.8 sync 0.6"
    )
    assert format_step(0, 15, {"val/reward_mean": 0.25, "time/val_s": 3.0}) == (
        "step 0/15  validation reward 0.250  (3.0 s)"
    )


SMALL = [
    "trainer.prompts_per_step=2",
    "rollout.n=2",
    "rollout.max_tokens=16",
    "algorithm.overlong_buffer=8",
    "algorithm.dynamic_sampling=none",
    "learner.micro_batch_size=2",
    "trainer.checkpoint_interval=0",
]


def _train(tmp_path, judge_url, steps, *flags):
    cmd = [
        sys.executable,
        "-m",
        "medix_ray.cli",
        "train",
        "--config",
        "configs/tiny_cpu.yaml",
        *flags,
        *SMALL,
        f"trainer.steps={steps}",
        f"trainer.output_dir={tmp_path}",
        f"reward.judge.base_url={judge_url}",
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_train_console_is_short_and_names_its_logs(tmp_path, judge_url):
    quiet = _train(tmp_path, judge_url, 3)
    out = quiet.stdout + quiet.stderr
    assert quiet.returncode == 0, out[-3000:]
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) < 100, "\n".join(lines)
    assert f"logs: {tmp_path / 'logs'}" in out
    assert sum(line.startswith("step ") for line in lines) == 3
    assert "CALL generate" not in out and "(ServeReplica" not in out
    assert (tmp_path / "logs" / "driver.log").stat().st_size > 0
    assert any((tmp_path / "logs" / "serve").rglob("*.log")), "Serve's logs are in the run folder"

    # `--verbose` (worker output back on the console) is checked on the job log of the 1-step training job
    # in tests/test_ray_job_submit.py, which runs `jobs/train.py --verbose`: one cluster start fewer here.
