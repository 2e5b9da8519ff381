"""A judge URL with credentials is written into no report file."""

import zipfile

from medix_ray.eval.report import write_report
from medix_ray.eval.score import score_records


def test_judge_url_credentials_reach_no_written_file(tmp_path):
    rows = [
        {"id": "a", "task": "medqa", "kind": "binary", "group": "llm", "modality": "", "protocol": "paper",
         "status": "scored", "score": 1.0, "rounds": [], "error": ""}
    ]  # fmt: skip
    judge = "https://alice:sk-user-secret@judge.example.org/v1?api_key=sk-query-secret"
    samples = [{"id": "a", "task": "medqa", "question": "q", "answer": "x", "prediction": "x", "score": 1.0}]
    files = write_report(
        tmp_path, score_records(rows, n_boot=20), model="m", protocol="paper", judge=judge, samples=samples
    )
    texts = [files[name].read_text() for name in ("report", "json", "csv")]
    with zipfile.ZipFile(files["zip"]) as zf:
        texts += [zf.read(member).decode() for member in zf.namelist()]
    written = "\n".join(texts)
    assert "judge.example.org/v1" in files["report"].read_text() and "judge.example.org/v1" in files["json"].read_text()
    assert "sk-" not in written and "alice" not in written
