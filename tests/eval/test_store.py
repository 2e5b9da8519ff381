"""Phase stores: atomic part files, newest row per id, no half-written lines."""

import json

import numpy as np
import pytest

from medix_ray.eval.store import PhaseStore


def test_rows_are_keyed_by_id_and_the_newest_wins(tmp_path):
    store = PhaseStore(tmp_path / "judge")
    store.write([{"id": "a", "status": "judge_error"}, {"id": "b", "status": "scored"}])
    store.write([{"id": "a", "status": "scored", "score": np.float64(1.0)}])
    rows = store.rows()
    assert list(rows) == ["a", "b"]
    assert rows["a"] == {"id": "a", "status": "scored", "score": 1.0}
    assert sorted(p.name for p in (tmp_path / "judge").iterdir()) == ["part-000001.jsonl", "part-000002.jsonl"]


def test_a_reopened_store_continues_the_numbering_and_drops_stale_temporaries(tmp_path):
    PhaseStore(tmp_path).write([{"id": "a"}])
    (tmp_path / ".part-crash.tmp").write_text('{"id": "half', encoding="utf-8")  # a crash before the rename
    store = PhaseStore(tmp_path)
    assert not (tmp_path / ".part-crash.tmp").exists()
    assert store.write([{"id": "b"}]).name == "part-000002.jsonl"
    assert store.write([]) is None
    assert set(store.rows()) == {"a", "b"}


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    store = PhaseStore(tmp_path)
    with pytest.raises(TypeError, match="image"):
        store.write([{"id": "a", "image": b"\x89PNG"}])
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_part_is_reported_with_its_place(tmp_path):
    store = PhaseStore(tmp_path)
    store.write([{"id": "a"}])
    (tmp_path / "part-000001.jsonl").write_text('{"id": "a"}\n{"id": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"part-000001.jsonl:2"):
        store.rows()


def test_lines_are_plain_json(tmp_path):
    store = PhaseStore(tmp_path)
    path = store.write([{"id": "x", "choices": np.array(["a", "b"]), "text": "ü"}])
    assert json.loads(path.read_text(encoding="utf-8")) == {"id": "x", "choices": ["a", "b"], "text": "ü"}
