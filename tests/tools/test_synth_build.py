"""The generator of the shipped sample set (tools/synth/build.py): its text items, and that it rebuilds the
shipped files exactly."""

import json

import pyarrow.parquet as pq

from medix_ray.data.bundled import bundled_path
from tools.synth import build


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
        assert shipped.equals(rebuilt[split]), f"{split}: run `make data` (python -m tools.synth.build)"


def test_check_mode_fails_on_a_tampered_file(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.parquet").write_bytes(bundled_path(split).read_bytes())
    assert build.main(["--check", "--out", str(tmp_path)]) == 0
    table = pq.read_table(tmp_path / "test.parquet")
    pq.write_table(table.slice(1), tmp_path / "test.parquet")
    assert build.main(["--check", "--out", str(tmp_path)]) == 1
