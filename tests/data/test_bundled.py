"""The shipped sample set: its size, coverage and split (its generator is tested in tests/tools/)."""

from collections import Counter

import pyarrow.parquet as pq
import pytest

from medix_ray.data.bundled import bundled_path
from medix_ray.data.modality import MODALITY_TAGS, TEXT_ONLY_TAG
from medix_ray.data.schema import split_solution, validate_row


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
