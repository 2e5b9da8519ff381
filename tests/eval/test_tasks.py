"""The task registry: the 17 benchmarks, selection, question building per source layout, local loading, images."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from medix_ray.eval import tasks
from medix_ray.eval.tasks import TaskDataError, build_question, load_registry, load_task, select_tasks

FIXTURES = Path(__file__).parent / "fixtures"
PAPER_TASKS = [
    "mmlu_clinical_knowledge",
    "mmlu_college_biology",
    "mmlu_college_medicine",
    "mmlu_medical_genetics",
    "mmlu_professional_medicine",
    "mmlu_anatomy",
    "medmcqa",
    "medqa",
    "usmle_sa",
    "pubmedqa",
    "mimic_cxr_report_summarization",
    "slake_vqa",
    "rad_vqa",
    "path_vqa",
    "pmc_vqa",
    "pmc_vqa_hard",
    "mimic_cxr_report_generation",
]
VLM_TASKS = ["slake_vqa", "rad_vqa", "path_vqa", "pmc_vqa", "pmc_vqa_hard", "mimic_cxr_report_generation"]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _copy_fixture(task: str, tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / task, tmp_path / task)
    return tmp_path


def _build_module():
    spec = importlib.util.spec_from_file_location("build_fixtures", FIXTURES / "build_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- registry ------------------------------------------------------------------------------------------------


def test_registry_holds_exactly_the_17_paper_tasks_in_order(registry):
    assert list(registry) == PAPER_TASKS
    assert load_registry(tasks.REGISTRY_PATH) == registry


def test_registry_groups_kinds_and_templates(registry):
    assert [n for n, s in registry.items() if s.group == "vlm"] == VLM_TASKS
    rubric = {"mimic_cxr_report_summarization", "mimic_cxr_report_generation"}
    assert {n for n, s in registry.items() if s.kind == "rubric"} == rubric
    assert {n for n, s in registry.items() if s.template == "mimic"} == rubric
    assert registry["slake_vqa"].filters == (("q_lang", "en"),)
    assert registry["slake_vqa"].modality_column == "modality"
    assert {registry[f"mmlu_{c}"].config for c in ("anatomy", "medical_genetics")} == {"anatomy", "medical_genetics"}
    assert registry["medmcqa"].split == "validation" and registry["usmle_sa"].split == "train"
    # The reference's PubMedQA answer (final_decision + LONG_ANSWER) is the default; null is our fix.
    assert registry["pubmedqa"].answer_detail == "LONG_ANSWER"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"hub_id": "x/y", "split": "test", "kind": "binary", "template": "base", "group": "llm", "answer": "a",
          "question": "q", "prompt": "p"}, "'demo': unknown key 'prompt'"),
        ({"hub_id": "x/y", "split": "test", "kind": "score", "template": "base", "group": "llm", "answer": "a",
          "question": "q"}, "'demo': key 'kind' is 'score'"),
        ({"split": "test", "kind": "binary", "template": "base", "group": "llm", "answer": "a", "question": "q"},
         "'demo': key 'hub_id' is required"),
        ({"hub_id": "x/y", "split": "test", "kind": "binary", "template": "base", "group": "vlm", "answer": "a",
          "question": "q"}, "'demo': key 'image'"),
        ({"hub_id": "x/y", "split": "test", "kind": "binary", "template": "base", "group": "llm", "answer": "a",
          "question": "q", "answer_format": "index"}, "'demo': key 'answer_format'"),
        ({"hub_id": "x/y", "split": "test", "kind": "binary", "template": "judge", "group": "llm", "answer": "a",
          "question": "q"}, "'demo': key 'template'"),
    ],
)  # fmt: skip
def test_registry_rejects_a_bad_entry_naming_task_and_key(tmp_path, entry, message):
    path = tmp_path / "tasks.yaml"
    path.write_text(json.dumps({"tasks": {"demo": entry}}))  # JSON is YAML
    with pytest.raises(TaskDataError, match=message):
        load_registry(path)


def test_registry_rejects_an_unknown_top_level_key(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("task:\n  demo: {}\n")
    with pytest.raises(ValueError, match="top-level"):
        load_registry(path)


# ---- selection -----------------------------------------------------------------------------------------------


def test_select_all_llm_vlm(registry):
    assert [s.name for s in select_tasks(["all"], registry)] == PAPER_TASKS
    assert [s.name for s in select_tasks("vlm", registry)] == VLM_TASKS
    assert [s.name for s in select_tasks(["llm"], registry)] == [n for n in PAPER_TASKS if n not in VLM_TASKS]


def test_select_names_and_comma_lists_in_registry_order(registry):
    assert [s.name for s in select_tasks(["slake_vqa", "medqa"], registry)] == ["medqa", "slake_vqa"]
    assert [s.name for s in select_tasks("pubmedqa, medqa", registry)] == ["medqa", "pubmedqa"]
    picked = [s.name for s in select_tasks(["vlm,medqa", "medqa"], registry)]
    assert picked == ["medqa", *VLM_TASKS]


def test_select_unknown_name_lists_the_valid_ones(registry):
    # One error class for the CLI to catch; still a ValueError.
    assert issubclass(TaskDataError, ValueError)
    with pytest.raises(TaskDataError, match="unknown task 'medqa4'") as info:
        select_tasks("medqa,medqa4", registry)
    assert "mmlu_anatomy" in str(info.value) and "vlm" in str(info.value)
    with pytest.raises(ValueError, match="no task selected"):
        select_tasks([""], registry)


# ---- question building, one row per source layout ------------------------------------------------------------


def test_list_choices_with_index_answer(registry):
    row = {"question": "Which bone forms the heel?", "choices": ["Talus", "Navicular", "Cuboid", "Calcaneus"],
           "answer": 3, "subject": "anatomy"}  # fmt: skip
    question, answer, choices, letter = build_question(registry["mmlu_anatomy"], row)
    assert question == "Which bone forms the heel?\n\nChoices:\nA. Talus\nB. Navicular\nC. Cuboid\nD. Calcaneus"
    assert (answer, choices, letter) == ("Calcaneus", ("Talus", "Navicular", "Cuboid", "Calcaneus"), "D")


def test_option_columns_with_index_answer(registry):
    row = {"question": "Koplik spots are seen in:", "opa": "Mumps", "opb": "Rubella", "opc": "Measles",
           "opd": "Chickenpox", "cop": 2}  # fmt: skip
    question, answer, _, letter = build_question(registry["medmcqa"], row)
    assert question == "Koplik spots are seen in:\n\nChoices:\nA. Mumps\nB. Rubella\nC. Measles\nD. Chickenpox"
    assert (answer, letter) == ("Measles", "C")
    medqa_row = {"sent1": "Q?", "sent2": "", "ending0": "w", "ending1": "x", "ending2": "y", "ending3": "z", "label": 0}
    assert build_question(registry["medqa"], medqa_row) == (
        "Q?\n\nChoices:\nA. w\nB. x\nC. y\nD. z",
        "w",
        ("w", "x", "y", "z"),
        "A",
    )


def test_none_option_is_skipped_but_lettering_stays_aligned(registry):
    row = {"question": "Antidote for heparin overdose is:", "opa": "Vitamin K", "opb": None,
           "opc": "Desmopressin", "opd": "Protamine sulphate", "cop": 3}  # fmt: skip
    question, answer, choices, letter = build_question(registry["medmcqa"], row)
    assert question.endswith("Choices:\nA. Vitamin K\nC. Desmopressin\nD. Protamine sulphate")
    assert (answer, choices, letter) == (
        "Protamine sulphate",
        ("Vitamin K", "", "Desmopressin", "Protamine sulphate"),
        "D",
    )
    with pytest.raises(TaskDataError, match="names no option"):
        build_question(registry["medmcqa"], {**row, "cop": 1})  # the index of the None option


def test_dict_options_with_text_answer(registry):
    options = {"A": "Insulin glargine", "B": "Metformin", "C": "Glipizide", "D": None, "E": "Acarbose",
               "F": None, "G": None, "H": None, "I": None}  # fmt: skip
    row = {"question": "First-line drug for type 2 diabetes?", "options": options, "answer": "Metformin",
           "answer_idx": "B"}  # fmt: skip
    question, answer, choices, letter = build_question(registry["usmle_sa"], row)
    assert question == (
        "First-line drug for type 2 diabetes?\n\nChoices:\nA. Insulin glargine\nB. Metformin\nC. Glipizide\nE. Acarbose"
    )
    assert (answer, letter) == ("Metformin", "B")
    assert choices == ("Insulin glargine", "Metformin", "Glipizide", "", "Acarbose")  # trailing None letters dropped


def test_letter_answer_format(registry):
    spec = replace(registry["usmle_sa"], answer="answer_idx", answer_format="letter")
    row = {"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "y", "answer_idx": "b"}
    assert build_question(spec, row) == ("Q?\n\nChoices:\nA. x\nB. y", "y", ("x", "y"), "B")


def test_pubmedqa_uses_the_first_context_fixed_choices_and_the_long_answer(registry):
    row = {"QUESTION": "Does X lower Y?", "CONTEXTS": ["First paragraph.", "Second paragraph."],
           "final_decision": "no", "LONG_ANSWER": "X did not lower Y."}  # fmt: skip
    question, answer, choices, letter = build_question(registry["pubmedqa"], row)
    assert question == ("Contexts: First paragraph.\nQuestion: Does X lower Y?\n\nChoices:\nA. yes\nB. no\nC. maybe")
    assert (answer, choices, letter) == ("no\nX did not lower Y.", ("yes", "no", "maybe"), "B")
    # Our fix of weakness 5: final_decision only, every context paragraph.
    fixed = replace(registry["pubmedqa"], answer_detail=None, context_entries="all")
    question, answer, _, _ = build_question(fixed, row)
    assert question.startswith("Contexts: First paragraph.\nSecond paragraph.\nQuestion: Does X lower Y?")
    assert answer == "no"


def test_open_vqa_has_no_choices(registry):
    for name in ("rad_vqa", "path_vqa", "pmc_vqa_hard"):
        row = {"question": "Is the heart enlarged?", "answer": "yes", "image": None}
        assert build_question(registry[name], row) == ("Is the heart enlarged?", "yes", (), "")


def test_mimic_instructions(registry):
    summarization = registry["mimic_cxr_report_summarization"]
    row = {"report": "FINDINGS: Clear lungs. IMPRESSION: Normal.", "summary": "Normal chest."}
    question, answer, choices, _ = build_question(summarization, row)
    # Our wording of the reference's "write a short summary of the following report", then the report.
    assert (
        question == "Write a brief summary of the radiology report below.\n\nFINDINGS: Clear lungs. IMPRESSION: Normal."
    )
    assert (answer, choices) == ("Normal chest.", ())
    generation = registry["mimic_cxr_report_generation"]
    question, answer, _, _ = build_question(generation, {"image_path": "files/a.jpg", "report": "Normal chest."})
    # Our wording of the reference's "generate a detailed report based on the scan"; the image carries the input.
    assert question == "Write a detailed radiology report for this scan."
    assert answer == "Normal chest."


def test_a_wrong_column_mapping_names_the_column_and_the_columns_there(registry):
    spec = replace(registry["medqa"], question="prompt")
    with pytest.raises(TaskDataError, match="task 'medqa': column 'prompt'") as info:
        build_question(spec, {"sent1": "Q?", "label": 0})
    assert "label, sent1" in str(info.value)
    with pytest.raises(TaskDataError, match="column 'prompt'") as info:
        load_task(spec, FIXTURES)
    assert "ending0" in str(info.value)


# ---- loading local copies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "marker", "n"),
    [
        ("medmcqa", "validation-00000-of-00001.parquet", 4),  # parquet
        ("medqa", "test.jsonl", 3),  # jsonl
        ("slake_vqa", "test.json", 3),  # json list (SLAKE's own file), after filtering
        ("mmlu_medical_genetics", "state.json", 3),  # save_to_disk Dataset
        ("pmc_vqa", "state.json", 3),  # save_to_disk Dataset with an Image feature
        ("pubmedqa", "dataset_dict.json", 3),  # save_to_disk DatasetDict
        ("rad_vqa", "test/metadata.jsonl", 3),  # image folder
    ],
)
def test_each_local_layout_loads(registry, task, marker, n):
    assert (FIXTURES / task / marker).is_file()
    items = load_task(registry[task], FIXTURES)
    assert [it.id for it in items] == [f"{task}_{k}" for k in range(n)]
    assert all(not it.error and it.question and it.answer for it in items)


def test_every_fixture_task_loads_clean_items(registry):
    for spec in registry.values():
        items = load_task(spec, FIXTURES)
        assert len(items) >= 3, spec.name
        for it in items:
            assert not it.error, it.error
            assert (it.task, it.kind, it.template, it.group) == (spec.name, spec.kind, spec.template, spec.group)
            assert (it.image is not None) == (spec.group == "vlm")
            if it.choices:
                assert it.answer_letter and it.choices["ABCDEFGHIJ".index(it.answer_letter)] in it.answer


def test_images_come_back_as_encoded_bytes_that_pil_opens(registry):
    for name in VLM_TASKS:
        for it in load_task(registry[name], FIXTURES):
            assert isinstance(it.image, bytes)
            with Image.open(io.BytesIO(it.image)) as image:
                assert image.size == (32, 32)


def test_slake_keeps_english_rows_and_numbers_ids_after_filtering(registry):
    items = load_task(registry["slake_vqa"], FIXTURES)
    assert [it.id for it in items] == ["slake_vqa_0", "slake_vqa_1", "slake_vqa_2"]
    assert [it.question for it in items] == [
        "What modality is used to take this image?",
        "Does the lung look healthy?",  # source row 2: row 1 is Chinese
        "Which organ is the largest in this image?",
    ]
    assert [it.modality for it in items] == ["CT", "X-Ray", "MRI"]
    assert items[1].image_path.endswith("slake_vqa/imgs/xmlab2/source.jpg")
    limited = load_task(registry["slake_vqa"], FIXTURES, limit=2)
    assert [it.question for it in limited] == [it.question for it in items[:2]]


def test_missing_local_dataset_names_the_path_and_the_layouts(registry, tmp_path):
    with pytest.raises(TaskDataError, match="task 'medqa': no local copy at") as info:
        load_task(registry["medqa"], tmp_path)
    assert str(tmp_path / "medqa") in str(info.value) and "parquet" in str(info.value)
    (tmp_path / "medqa").mkdir()
    with pytest.raises(TaskDataError, match="holds no readable data"):
        load_task(registry["medqa"], tmp_path)


def test_local_copy_reads_only_the_task_split(registry, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "medmcqa"
    folder.mkdir()
    rows = pq.read_table(FIXTURES / "medmcqa" / "validation-00000-of-00001.parquet").to_pylist()
    pq.write_table(pa.Table.from_pylist(rows[:1]), folder / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[1:]), folder / "validation-00000-of-00001.parquet")
    assert len(load_task(registry["medmcqa"], tmp_path)) == 3
    (folder / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(TaskDataError, match="none for split 'validation'"):
        load_task(registry["medmcqa"], tmp_path)


def test_a_row_problem_is_kept_on_its_item_not_raised(registry, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "medmcqa"
    folder.mkdir()
    rows = pq.read_table(FIXTURES / "medmcqa" / "validation-00000-of-00001.parquet").to_pylist()
    rows[1]["cop"] = 7
    pq.write_table(pa.Table.from_pylist(rows), folder / "validation.parquet")
    items = load_task(registry["medmcqa"], tmp_path)
    assert [bool(it.error) for it in items] == [False, True, False, False]
    assert "answer 7" in items[1].error and items[1].id == "medmcqa_1"


# ---- images: missing, undecodable, archived, fetched ---------------------------------------------------------


def test_a_missing_image_becomes_an_item_error(registry, tmp_path):
    data_dir = _copy_fixture("slake_vqa", tmp_path)
    missing = data_dir / "slake_vqa" / "imgs" / "xmlab2" / "source.jpg"
    missing.unlink()
    items = load_task(registry["slake_vqa"], data_dir)
    assert [bool(it.error) for it in items] == [False, True, False]
    assert items[1].error == f"image file missing: {missing}"
    assert items[1].image is None and items[1].question  # still recorded, with its question


def test_an_undecodable_image_becomes_an_item_error(registry, tmp_path):
    data_dir = _copy_fixture("rad_vqa", tmp_path)
    (data_dir / "rad_vqa" / "test" / "img_0.png").write_bytes(b"not a png")
    items = load_task(registry["rad_vqa"], data_dir)
    assert items[0].error.startswith("image decode error:") and "img_0.png" in items[0].error
    assert not items[1].error


def test_image_cells_of_every_kind_become_bytes(registry, tmp_path, make_png):
    spec = registry["rad_vqa"]
    png = make_png()
    (tmp_path / "x.png").write_bytes(png)
    assert tasks._image(spec, {"bytes": png, "path": None}, tmp_path) == (png, "", "")
    assert tasks._image(spec, {"bytes": None, "path": "x.png"}, tmp_path)[0] == png
    assert tasks._image(spec, str(tmp_path / "x.png"), Path("/elsewhere"))[0] == png
    pil_bytes, _, error = tasks._image(spec, Image.open(io.BytesIO(png)), tmp_path)
    assert not error and Image.open(io.BytesIO(pil_bytes)).size == (64, 64)
    assert tasks._image(spec, None, tmp_path)[2] == "no image in column 'image'"


@pytest.mark.parametrize("inner", ["imgs/", ""])
def test_slake_images_are_unpacked_from_imgs_zip(registry, tmp_path, inner):
    data_dir = _copy_fixture("slake_vqa", tmp_path)
    folder = data_dir / "slake_vqa"
    with zipfile.ZipFile(folder / "imgs.zip", "w") as zf:
        for f in sorted((folder / "imgs").rglob("*.jpg")):
            zf.write(f, inner + f.relative_to(folder / "imgs").as_posix())
    shutil.rmtree(folder / "imgs")
    items = load_task(registry["slake_vqa"], data_dir)
    assert all(it.image and not it.error for it in items)
    assert (folder / "imgs" / "xmlab1" / "source.jpg").is_file()


class _PhysioNet(BaseHTTPRequestHandler):
    """Serves any path as a PNG to user 'alice' with password 'pw-s3cret-77', after a basic-auth challenge."""

    png = b""
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        expected = "Basic " + base64.b64encode(b"alice:pw-s3cret-77").decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="PhysioNet"')
            self.end_headers()
            return
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)

    def log_message(self, *args):
        pass


@pytest.fixture
def physionet(make_png):
    _PhysioNet.png = make_png(size=(32, 32))
    _PhysioNet.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PhysioNet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/files/mimic-cxr-jpg/2.1.0/"
    server.shutdown()
    server.server_close()


def _mimic_without_first_image(registry, tmp_path, url):
    data_dir = _copy_fixture("mimic_cxr_report_generation", tmp_path)
    row = json.loads((data_dir / "mimic_cxr_report_generation" / "test.jsonl").read_text().splitlines()[0])
    (data_dir / "mimic_cxr_report_generation" / row["image_path"]).unlink()
    return replace(registry["mimic_cxr_report_generation"], image_url=url), data_dir, row["image_path"]


def test_mimic_images_are_fetched_with_credentials_from_the_environment(registry, tmp_path, physionet, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("PHYSIONET_USERNAME", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "pw-s3cret-77")
    spec, data_dir, relative = _mimic_without_first_image(registry, tmp_path, physionet)
    items = load_task(spec, data_dir)
    assert all(not it.error and it.image for it in items)
    assert _PhysioNet.seen == [f"/files/mimic-cxr-jpg/2.1.0/{relative}"]  # only the missing one
    assert (data_dir / "mimic_cxr_report_generation" / relative).read_bytes() == _PhysioNet.png  # kept for next time


def test_credentials_never_appear_in_errors_or_logs(registry, tmp_path, physionet, monkeypatch, caplog):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("PHYSIONET_USERNAME", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "wrong-pw-9911")
    spec, data_dir, relative = _mimic_without_first_image(registry, tmp_path, physionet)
    items = load_task(spec, data_dir)
    assert "401" in items[0].error and relative in items[0].error
    # An exception whose text carries the password (e.g. from a proxy) is redacted too.
    monkeypatch.setattr(
        tasks.urllib.request.OpenerDirector,
        "open",
        lambda self, url, timeout=None: (_ for _ in ()).throw(OSError("refused for alice:wrong-pw-9911")),
    )
    items += load_task(spec, data_dir)
    assert "***" in items[-3].error
    text = " ".join(it.error for it in items) + caplog.text
    assert "wrong-pw-9911" not in text
    monkeypatch.delenv("PHYSIONET_PASSWORD")
    error = load_task(spec, data_dir)[0].error
    assert "PHYSIONET_USERNAME and PHYSIONET_PASSWORD" in error and error.startswith("image file missing:")


def test_a_hub_failure_says_how_to_run_offline(registry, monkeypatch):
    import datasets

    def refuse(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(TaskDataError, match=r"task 'medqa': cannot load GBaker/MedQA-USMLE-4-options-hf .*data_dir"):
        load_task(registry["medqa"])


# ---- the fixture builder -------------------------------------------------------------------------------------


def test_builder_makes_a_larger_copy_with_n_items_per_task(registry, tmp_path):
    data_dir = _build_module().build(tmp_path / "bench", rows_per_task=5)
    for spec in registry.values():
        items = load_task(spec, data_dir)
        assert [it.id for it in items] == [f"{spec.name}_{k}" for k in range(5)], spec.name
        assert not any(it.error for it in items)
