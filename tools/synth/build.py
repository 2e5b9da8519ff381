"""Builds the bundled sample set (train/test parquet) from the text QA items and the image generator.

    python -m tools.synth.build           # rewrite medix_ray/data/bundled/*.parquet
    python -m tools.synth.build --check   # rebuild in memory, compare with the shipped files

Run from the repository root (`make data`): this is a build tool, not part of the installed package.
Deterministic: the same code gives the same rows and bit-identical PNG bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medix_ray.data.bundled import BUNDLED_DIR, SPLITS
from medix_ray.data.modality import TEXT_ONLY_TAG, tag_token
from medix_ray.data.schema import SAMPLE_SCHEMA
from tools.synth.images import generate_items

TEXT_QA = Path(__file__).parent / "text_qa.jsonl"
IMAGES_PER_MODALITY = 10
TEST_IMAGES_PER_MODALITY = 2  # the last two items of each modality
TEXT_TEST_EVERY = 7  # every 7th text item goes to test


def text_rows() -> list[dict]:
    """Returns the text-only rows, tagged <OTHER> as the reference tags image-less items' modality."""
    rows = []
    for line in TEXT_QA.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        rows.append(
            {
                "id": item["id"],
                "problem": item["question"],
                "solution": f"{tag_token(TEXT_ONLY_TAG)} {item['answer']}",
                "image": [],
                "source": f"medix-ray-synthetic/text/{item['topic']}",
            }
        )
    return rows


def image_rows() -> list[dict]:
    """Returns the image rows, one PNG each, in generate_items order."""
    return [
        {
            "id": item.id,
            "problem": item.question,
            "solution": f"{tag_token(item.modality)} {item.answer}",
            "image": [{"bytes": item.png, "path": None}],
            "source": f"medix-ray-synthetic/image/{item.modality.lower()}",
        }
        for item in generate_items(per_modality=IMAGES_PER_MODALITY, seed=0)
    ]


def build_splits() -> dict[str, pa.Table]:
    """Returns the train and test tables."""
    train, test = [], []
    for i, row in enumerate(text_rows()):
        (test if i % TEXT_TEST_EVERY == TEXT_TEST_EVERY - 1 else train).append(row)
    for i, row in enumerate(image_rows()):
        (test if i % IMAGES_PER_MODALITY >= IMAGES_PER_MODALITY - TEST_IMAGES_PER_MODALITY else train).append(row)
    return {
        "train": pa.Table.from_pylist(train, schema=SAMPLE_SCHEMA),
        "test": pa.Table.from_pylist(test, schema=SAMPLE_SCHEMA),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare a rebuild with the shipped files")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR)
    args = parser.parse_args(argv)
    tables = build_splits()
    if args.check:
        bad = [s for s in SPLITS if not pq.read_table(args.out / f"{s}.parquet").equals(tables[s])]
        for s in bad:
            print(f"{s}: shipped data differs from a rebuild", file=sys.stderr)
        if not bad:
            print("bundled data matches a rebuild: " + ", ".join(f"{s} {tables[s].num_rows} rows" for s in SPLITS))
        return 1 if bad else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for split, table in tables.items():
        pq.write_table(table, args.out / f"{split}.parquet", compression="zstd")
        print(f"wrote {args.out / f'{split}.parquet'}: {table.num_rows} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
