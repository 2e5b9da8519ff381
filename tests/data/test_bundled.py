"""The shipped sample set: its size, coverage, split, and that the generator rebuilds it exactly."""

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from medix_ray.data.bundled import bundled_path
from medix_ray.data.modality import MODALITY_TAGS, TEXT_ONLY_TAG
from medix_ray.data.schema import split_solution, validate_row
from medix_ray.data.synth import build


@pytest.fixture(scope="module")
def splits():
    return {s: pq.read_table(bundled_path(s)).to_pylist() for s in ("train", "test")}


def test_at_least_300_text_items_tagged_as_the_reference(splits):
    rows = splits["train"] + splits["test"]
    text = [r for r in rows if not r["image"]]
    assert len(text) >= 300
    assert {split_solution(r["solution"])[0] for r in text} == {TEXT_ONLY_TAG}


def test_every_modality_has_image_items_in_both_splits(splits):
    for split, rows in splits.items():
        tags = Counter(split_solution(r["solution"])[0] for r in rows if r["image"])
        assert set(tags) == set(MODALITY_TAGS), split
        assert all(len(r["image"]) == 1 for r in rows if r["image"])


def test_every_row_validates_and_ids_are_unique_across_splits(splits):
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids))
    for rows in splits.values():
        for r in rows:
            validate_row(r)


def test_paraphrase_prone_items_exist():
    items = [json.loads(line) for line in build.TEXT_QA.read_text().splitlines()]
    with_alts = [i for i in items if i["alt_answers"]]
    assert len(with_alts) >= 60
    by_answer = {i["answer"].lower(): [a.lower() for a in i["alt_answers"]] for i in items}
    assert "heart attack" in by_answer.get("myocardial infarction", [])


def test_generator_rebuilds_the_shipped_files_exactly():
    rebuilt = build.build_splits()
    for split in ("train", "test"):
        shipped = pq.read_table(bundled_path(split))
        assert shipped.equals(rebuilt[split]), f"{split}: run `python -m medix_ray.data.synth.build`"


def test_check_mode_fails_on_a_tampered_file(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.parquet").write_bytes(bundled_path(split).read_bytes())
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    table = pq.read_table(tmp_path / "test.parquet")
    pq.write_table(table.slice(1), tmp_path / "test.parquet")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1
