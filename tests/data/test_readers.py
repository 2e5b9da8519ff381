import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medix_ray.data.readers import DataSourceError, detect_format, read_samples, take_samples
from medix_ray.data.schema import SAMPLE_SCHEMA, SampleError

pytestmark = pytest.mark.timeout(300)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bundled_splits_read_completely_with_decodable_images(ray_cluster):
    for split in ("train", "test"):
        ds, report = read_samples("bundled", split=split)
        samples = take_samples(ds, report)
        summary = report.summary()
        assert summary["read"] == summary["valid"] == len(samples) > 0
        assert summary["skipped"] == 0
        assert len({s.id for s in samples}) == len(samples)
        with_images = [s for s in samples if s.images]
        assert with_images, "bundled data must have image items"
        for s in with_images:
            for img in s.load_images():
                assert img.mode == "RGB" and min(img.size) > 0


def test_jsonl_with_relative_image_paths(ray_cluster, tmp_path, make_png):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(make_png((0, 0, 255)))
    path = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "id": "a",
                "problem": "Colour?",
                "solution": "<CLINICAL_PHOTOGRAPHY> Blue",
                "image": ["imgs/a.png"],
                "source": "x",
            },
            {"id": "b", "problem": "Antidote?", "solution": "<OTHER> Naloxone", "image": [], "source": "x"},
        ],
    )
    ds, report = read_samples(str(path))
    samples = sorted(take_samples(ds, report), key=lambda s: s.id)
    assert [s.id for s in samples] == ["a", "b"]
    assert samples[0].load_images()[0].getpixel((0, 0)) == (0, 0, 255)
    assert samples[1].images == ()


def _bad_table(tmp_path, make_png):
    rows = [
        {
            "id": "good",
            "problem": "Q?",
            "solution": "<X_RAY> Left lung",
            "image": [{"bytes": make_png(), "path": None}],
            "source": "",
        },
        {"id": "bad_tag", "problem": "Q?", "solution": "<XRAY> Left lung", "image": [], "source": ""},
        {
            "id": "bad_img",
            "problem": "Q?",
            "solution": "<CT_SCAN> Liver",
            "image": [{"bytes": b"\x89PNGjunk", "path": None}],
            "source": "",
        },
    ]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path)
    return path


def test_skip_mode_counts_and_names_every_bad_sample(ray_cluster, tmp_path, make_png):
    ds, report = read_samples(str(_bad_table(tmp_path, make_png)), on_bad_sample="skip")
    samples = take_samples(ds, report)
    assert [s.id for s in samples] == ["good"]
    summary = report.summary()
    assert summary["read"] == 3 and summary["valid"] == 1 and summary["skipped"] == 2
    assert summary["reasons"] == {"solution": 1, "image": 1}
    assert any("bad_tag" in e and "unknown modality tag <XRAY>" in e for e in summary["examples"])
    assert any("bad_img" in e and "cannot be decoded" in e for e in summary["examples"])


def test_error_mode_raises_the_sample_error_by_name(ray_cluster, tmp_path, make_png):
    ds, report = read_samples(str(_bad_table(tmp_path, make_png)), on_bad_sample="error")
    with pytest.raises(SampleError, match=r"sample 'bad_tag': field 'solution': unknown modality tag <XRAY>"):
        take_samples(ds, report)


def test_missing_column_is_reported_with_the_configured_key(ray_cluster, tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "question": "Q?", "solution": "<OTHER> A", "image": []}])
    ds, report = read_samples(str(path))
    with pytest.raises(SampleError, match=r"sample 'a': field 'problem': missing column"):
        take_samples(ds, report)
    ds, report = read_samples(str(path), prompt_key="question")
    assert [s.problem for s in take_samples(ds, report)] == ["Q?"]


def test_text_only_excludes_image_rows_and_counts_them(ray_cluster, tmp_path, make_png):
    path = _write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "t", "problem": "Q?", "solution": "<OTHER> A", "image": []},
        ],
    )
    (tmp_path / "i.png").write_bytes(make_png())
    with open(path, "a") as f:
        f.write(json.dumps({"id": "i", "problem": "Q?", "solution": "<X_RAY> A", "image": ["i.png"]}) + "\n")
    ds, report = read_samples(str(path), text_only=True)
    assert [s.id for s in take_samples(ds, report)] == ["t"]
    assert report.summary()["excluded"] == 1 and report.summary()["skipped"] == 0


def test_hf_save_to_disk_folder_with_image_feature(ray_cluster, tmp_path, make_png):
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "problem": datasets.Value("string"),
            "solution": datasets.Value("string"),
            "image": datasets.Sequence(datasets.Image()),
            "source": datasets.Value("string"),
        }
    )
    rows = {
        "id": ["h1", "h2"],
        "problem": ["Q1?", "Q2?"],
        "solution": ["<MRI_SCAN> Left", "<OTHER> B12"],
        "image": [[{"bytes": make_png((0, 255, 0)), "path": None}], []],
        "source": ["s", "s"],
    }
    dsd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})
    dsd.save_to_disk(str(tmp_path / "hf"))
    assert detect_format(str(tmp_path / "hf")) == "hf_disk"
    ds, report = read_samples(str(tmp_path / "hf"), split="train")
    samples = sorted(take_samples(ds, report), key=lambda s: s.id)
    assert samples[0].load_images()[0].getpixel((1, 1)) == (0, 255, 0)
    with pytest.raises(DataSourceError, match="no split 'test'"):
        read_samples(str(tmp_path / "hf"), split="test")


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(DataSourceError, match="not found"):
        detect_format(str(tmp_path / "missing.parquet"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataSourceError, match="unknown file type '.csv'"):
        detect_format(str(tmp_path / "x.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="folder holds no parquet"):
        detect_format(str(tmp_path / "empty"))
    assert detect_format("MBZUAI/medix-rl-data") == "hub"
