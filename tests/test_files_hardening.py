"""The run's files (issue 13): weights-only checkpoint loads, folder names, confined image paths, torn logs,
the resume config check, and unreadable data files named in a clear error (exit 2)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from medix_ray.cli import main
from medix_ray.config import all_keys, load_config, to_yaml
from medix_ray.data.paths import PathEscapeError, confine
from medix_ray.data.readers import DataFileError, check_readable
from medix_ray.data.schema import SAMPLE_SCHEMA, SampleError, validate_row
from medix_ray.eval.report import UnsafeNameError, folder_safe
from medix_ray.learner.export import read_client_state
from medix_ray.learner.safe_load import FORCE_ENV, CheckpointError, load_weights_only, weights_only_loads
from medix_ray.trainer.metrics import MetricsFileError, MetricsLog, read_metrics
from medix_ray.trainer.resume import OPERATIONAL, ResumeConfigError, check_resume

FIXTURES = Path(__file__).parent / "eval" / "fixtures"


def _row(**kw):
    return {"id": "s1", "problem": "What is shown?", "solution": "<X_RAY> pneumonia", "image": [], **kw}


class _Payload:
    """Stands in for a malicious object: a full unpickle would rebuild it (and run its code)."""

    def __reduce__(self):
        return (os.getcwd, ())


# ---- weights-only loads ---------------------------------------------------------------------------------------


def test_a_checkpoint_file_that_pickles_code_is_refused_by_export(tmp_path):
    state = tmp_path / "ckpt" / "state"
    state.mkdir(parents=True)
    torch.save({"module": {}, "model_path": "x", "payload": _Payload()}, state / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="weights-only") as info:
        read_client_state(tmp_path / "ckpt")
    assert str(tmp_path / "ckpt") in str(info.value) and "getcwd" in str(info.value)


def test_a_plain_checkpoint_reads_its_client_state(tmp_path):
    state = tmp_path / "ckpt" / "state"
    state.mkdir(parents=True)
    torch.save({"module": {"w": torch.ones(2)}, "model_path": "m", "step": 3}, state / "mp_rank_00_model_states.pt")
    assert read_client_state(tmp_path / "ckpt") == {"model_path": "m", "step": 3}


def test_weights_only_loads_overrides_an_explicit_weights_only_false_and_restores_the_env(tmp_path):
    path = tmp_path / "p.pt"
    torch.save({"payload": _Payload()}, path)
    before = os.environ.get(FORCE_ENV)
    with pytest.raises(CheckpointError, match="getcwd"):
        with weights_only_loads(tmp_path):
            torch.load(path, weights_only=False)  # what DeepSpeed's checkpoint engine calls
    assert os.environ.get(FORCE_ENV) == before
    with pytest.raises(CheckpointError, match=str(path)):
        load_weights_only(path)


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    from medix_ray.learner.worker import _restore_rng, _save_rng

    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    _save_rng(tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    _restore_rng(tmp_path / "rng.pt")
    got = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "rng.pt") == []


# ---- folder names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", "../", ".", "a/..", "/", "", "x\\.."])
def test_folder_safe_refuses_names_without_a_usable_last_component(name):
    with pytest.raises(UnsafeNameError, match="no usable folder name"):
        folder_safe(name)


def test_folder_safe_keeps_the_last_component():
    assert folder_safe("../models/MediX-R1-8B") == "MediX-R1-8B"
    assert folder_safe("...") == "..."  # a real name, not a parent


def test_evaluate_with_model_dotdot_exits_2_and_writes_nothing(tmp_path, capsys):
    rc = main(
        ["evaluate", "--model", "../", "--tasks", "medqa", "--data-dir", str(FIXTURES), "--output-dir", str(tmp_path)]
    )
    assert rc == 2
    assert "model name '../'" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["logs"])  # at most the console's log folder
    assert not (tmp_path.parent / "generations").exists()


# ---- image paths --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["../secret.png", "img/../../secret.png", "/etc/hostname", "img/.."])
def test_a_path_traversing_image_is_refused_naming_sample_and_path(tmp_path, path):
    with pytest.raises(SampleError) as info:
        validate_row(_row(image=[path]), base_dir=str(tmp_path / "data"))
    assert info.value.sample_id == "s1" and info.value.field == "image[0]"
    assert repr(path) in str(info.value)


def test_an_image_inside_the_data_folder_resolves(tmp_path, make_png):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(make_png())
    out = validate_row(_row(image=["img/./a.png"]), base_dir=str(tmp_path))
    assert out["image"][0]["path"] == str(tmp_path / "img" / "a.png")


def test_a_path_only_image_without_a_data_folder_is_refused():
    with pytest.raises(SampleError, match="no data folder"):
        validate_row(_row(image=["a.png"]))


def test_confine_joins_and_refuses():
    assert confine("/data/x", "a/b.png") == "/data/x/a/b.png"
    assert confine("/data/x", "a/../b.png") == "/data/x/b.png"
    assert confine("/data/x", "../x/a.png") == "/data/x/a.png"  # up and back in: still inside
    for bad in ("../y/a.png", "/data/x/a.png", "../xy/a.png", ".."):
        with pytest.raises(PathEscapeError):
            confine("/data/x", bad)


# ---- torn logs ----------------------------------------------------------------------------------------------


def test_a_torn_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path, caplog):
    rows = [{"step": s, "reward/mean": s / 10} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "rew')
    (tmp_path / "rollouts.jsonl").write_text(json.dumps({"step": 1, "text": "a"}) + "\n" + '{"step": 2, "te')
    with caplog.at_level(logging.WARNING, logger="medix_ray.trainer.metrics"):
        log = MetricsLog(tmp_path, resume_step=2, tensorboard=False)
    assert "metrics.jsonl" in caplog.text and "torn last line" in caplog.text
    log.write(3, {"reward/mean": 0.5})
    log.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [*rows[:2], {"step": 3, "reward/mean": 0.5}]
    assert read_metrics(tmp_path / "rollouts.jsonl") == [{"step": 1, "text": "a"}]


def test_a_bad_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(MetricsFileError, match=r"metrics.jsonl: line 2"):
        read_metrics(path)


# ---- resume config ------------------------------------------------------------------------------------------


def _checkpointed_run(tmp_path, overrides=()):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}", *overrides])
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    (tmp_path / "checkpoints" / "learner" / "checkpoint_2026-01-01_00-00-00.000000").mkdir(parents=True)
    return cfg


def test_a_config_change_on_resume_is_refused_listing_each_change(tmp_path):
    _checkpointed_run(tmp_path)
    new = load_config(None, [f"trainer.output_dir={tmp_path}", "algorithm.clip_high=0.3", "rollout.n=8"])
    with pytest.raises(ResumeConfigError) as info:
        check_resume(tmp_path, new)
    assert "algorithm.clip_high: 0.28 -> 0.3" in str(info.value) and "rollout.n: 5 -> 8" in str(info.value)
    assert "--force" in str(info.value)


def test_operational_changes_resume_and_force_allows_math_changes(tmp_path, caplog):
    _checkpointed_run(tmp_path)
    steps = load_config(None, [f"trainer.output_dir={tmp_path}", "trainer.steps=50", "rollout.replicas=3"])
    assert {c.key for c in check_resume(tmp_path, steps)} == {"trainer.steps", "rollout.replicas"}
    lr = load_config(None, [f"trainer.output_dir={tmp_path}", "learner.lr=1e-5"])
    with caplog.at_level(logging.WARNING, logger="medix_ray.trainer.resume"):
        changes = check_resume(tmp_path, lr, force=True)
    assert [(c.key, c.old, c.new) for c in changes] == [("learner.lr", 1e-6, 1e-5)]
    assert "learner.lr" in caplog.text


def test_a_run_without_a_checkpoint_is_not_compared(tmp_path):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    (tmp_path / "config.yaml").write_text(to_yaml(load_config(None, ["learner.lr=1"])))
    assert check_resume(tmp_path, cfg) == []


def test_medix_ray_train_refuses_the_resume_with_exit_2(tmp_path, capsys):
    _checkpointed_run(tmp_path)
    assert main(["train", f"trainer.output_dir={tmp_path}", "algorithm.kl_coef=0.1"]) == 2
    assert "algorithm.kl_coef: 0.0 -> 0.1" in capsys.readouterr().err


def test_every_operational_key_is_a_config_key():
    keys = all_keys()
    for op in OPERATIONAL:
        assert any(k.startswith(op) for k in keys) if op.endswith(".") else op in keys, op


# ---- unreadable data files ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_corrupt_parquet_file_is_named_in_the_error_with_exit_2(tmp_path, capsys):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist([_row()], schema=SAMPLE_SCHEMA), good)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(good.read_bytes()[:-20])  # truncated: the footer is gone
    rc = main(["data", "validate", f"data.train={broken}", "--split", "train"])
    err = capsys.readouterr().err
    assert rc == 2 and f"data file {broken} cannot be read" in err and "parquet" in err
    assert "Traceback" not in err


def test_a_folder_names_its_corrupt_file(tmp_path):
    pq.write_table(pa.Table.from_pylist([_row()], schema=SAMPLE_SCHEMA), tmp_path / "a.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.raises(DataFileError) as info:
        check_readable(str(tmp_path), "parquet")
    assert info.value.path == str(tmp_path / "sub" / "b.parquet")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"id": "a"}\n{"id": "b", "pro', "line 2 is not valid JSON"),
        (b'{"id": "a"}\n\xff\xfe{"id": 1}\n', "line 2 is not UTF-8"),
        (b'{"id": "a"}\n\n[1, 2]\n', "line 3 is a JSON list"),
    ],
)
def test_an_undecodable_jsonl_line_is_named_with_its_number(tmp_path, content, reason):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=reason) as info:
        check_readable(str(path), "jsonl")
    assert info.value.path == str(path)


def test_a_truncated_arrow_file_is_named(tmp_path):
    import datasets

    from medix_ray.data.readers import load_from_disk

    datasets.Dataset.from_list([_row(image=[]) for _ in range(50)]).save_to_disk(str(tmp_path / "ds"))
    arrow = next((tmp_path / "ds").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(DataFileError) as info:
        load_from_disk(str(tmp_path / "ds"))
    assert info.value.path == str(arrow)


def test_an_evaluation_image_path_leaving_the_task_folder_is_an_item_error(tmp_path, make_png):
    from medix_ray.eval.task_images import read_image
    from medix_ray.eval.tasks import load_registry

    spec = load_registry()["slake_vqa"]
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(make_png())
    (tmp_path / "secret.png").write_bytes(make_png())
    data, _, error = read_image(spec, "a.png", tmp_path / "imgs")
    assert data is not None and error == ""
    data, where, error = read_image(spec, "../secret.png", tmp_path / "imgs")
    assert data is None and where == "../secret.png" and "leaves the data folder" in error


def test_medix_ray_train_names_a_corrupt_data_file_before_starting(tmp_path, capsys):
    broken = tmp_path / "train.jsonl"
    broken.write_bytes(b'{"id": "a", "problem": "q", "solution": "<X_RAY> a"}\n{"id": "b", "probl')
    assert main(["train", f"data.train={broken}", f"trainer.output_dir={tmp_path / 'run'}"]) == 2
    assert f"data file {broken} cannot be read: line 2 is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing started (the console may open its log folder)
