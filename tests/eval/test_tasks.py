"""The task registry: the 18 benchmarks, selection, question building per source layout, local loading, images."""

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

from medix_ray.eval import task_images, tasks
from medix_ray.eval.configs import packaged
from medix_ray.eval.tasks import TaskDataError, build_question, load_registry, load_task, select_tasks

FIXTURES = Path(__file__).parent / "fixtures"
PHYSIONET_JPG = "https://physionet.org/files/mimic-cxr-jpg/2.1.0/"
MMMU_SUBJECTS = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
                 "Public_Health")  # fmt: skip
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
    "mmmu_medical_val",
]
VLM_TASKS = [
    "slake_vqa", "rad_vqa", "path_vqa", "pmc_vqa", "pmc_vqa_hard", "mimic_cxr_report_generation", "mmmu_medical_val"
]  # fmt: skip


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


def test_registry_holds_exactly_the_18_paper_tasks_in_order(registry):
    assert list(registry) == PAPER_TASKS
    resource = packaged(tasks.REGISTRY_FILE)
    assert load_registry(Path(str(resource))) == registry


@pytest.mark.slow  # builds and installs a wheel (about 30 s)
def test_a_non_editable_install_from_the_wheel_finds_the_registry_and_the_leaderboard(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    src = tmp_path / "src"
    for name in ("medix_ray", "deployments"):
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "whl"), str(src)],
                   check=True)  # fmt: skip
    (wheel,) = (tmp_path / "whl").glob("medix_ray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"medix_ray/eval/configs/tasks.yaml", "medix_ray/eval/configs/leaderboard.yaml"} <= names
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    probe = (
        "import medix_ray.eval.tasks as t, medix_ray.eval.score as s; "
        "print(t.__file__, len(t.load_registry()), len(s.load_leaderboard().tasks))"
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True)  # fmt: skip
    path, n_tasks, n_published = run.stdout.split()
    assert path.startswith(str(target)) and (n_tasks, n_published) == ("18", "17")


def test_registry_and_leaderboard_are_package_data_not_repository_files():
    # A wheel carries what is inside the package; the repository's configs/ folder is not installed.
    package = Path(tasks.__file__).parent
    for name in ("tasks.yaml", "leaderboard.yaml"):
        assert Path(str(packaged(name))) == package / "configs" / name
    assert not (package.parents[1] / "configs" / "eval").exists()


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
    assert registry["pubmedqa"].question == ("CONTEXTS", "QUESTION")
    mimic = registry["mimic_cxr_report_generation"]
    assert (mimic.image, mimic.answer, mimic.image_url) == ("image", "report", PHYSIONET_JPG)
    mmmu = registry["mmmu_medical_val"]
    assert (mmmu.hub_id, mmmu.configs, mmmu.split) == ("MMMU/MMMU", MMMU_SUBJECTS, "validation")
    assert (mmmu.kind, mmmu.template, mmmu.answer_format) == ("binary", "base", "letter")
    assert mmmu.filters == (("question_type", "multiple-choice"),)
    assert registry["medqa"].configs == (None,)


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
        ({"hub_id": "x/y", "split": "test", "kind": "binary", "template": "base", "group": "llm", "answer": "a",
          "question": []}, "'demo': key 'question' must be a non-empty list"),
        ({"hub_id": "x/y", "config": ["a", 3], "split": "test", "kind": "binary", "template": "base",
          "group": "llm", "answer": "a", "question": "q"}, "'demo': key 'config' must be a non-empty list"),
        ({"hub_id": "x/y", "split": "test", "kind": "binary", "template": "base", "group": "llm", "answer": "a",
          "question": "q", "list_entries": "some"}, "'demo': key 'list_entries' is 'some'"),
        ({"hub_id": "x/y", "split": "test", "kind": "binary", "template": "base", "group": "vlm", "answer": "a",
          "question": "q", "image": "i", "image_url": "ftp://h/x"}, "'demo': key 'image_url'"),
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


def test_pubmedqa_is_laid_out_as_the_reference_lays_it_out(registry):
    row = {"QUESTION": "Does X lower Y?", "CONTEXTS": ["First paragraph.", "Second paragraph."],
           "final_decision": "no", "LONG_ANSWER": "X did not lower Y."}  # fmt: skip
    question, answer, choices, letter = build_question(registry["pubmedqa"], row)
    # The reference (eval/utils.py) writes "<Column>:\n<value>\n\n" per question column, the first context only.
    assert question == (
        "Contexts:\nFirst paragraph.\n\nQuestion:\nDoes X lower Y?\n\nChoices:\nA. yes\nB. no\nC. maybe"
    )
    assert (answer, choices, letter) == ("no\nX did not lower Y.", ("yes", "no", "maybe"), "B")
    # Our fix of weakness 5: final_decision only, every context paragraph.
    fixed = replace(registry["pubmedqa"], answer_detail=None, list_entries="all")
    question, answer, _, _ = build_question(fixed, row)
    assert question.startswith("Contexts:\nFirst paragraph.\nSecond paragraph.\n\nQuestion:\nDoes X lower Y?")
    assert answer == "no"
    with pytest.raises(TaskDataError, match="question column 'CONTEXTS' is empty"):
        build_question(registry["pubmedqa"], {**row, "CONTEXTS": []})


def test_open_vqa_has_no_choices(registry):
    for name in ("rad_vqa", "path_vqa", "pmc_vqa_hard"):
        row = {"question": "Is the heart enlarged?", "answer": "yes", "image": None}
        assert build_question(registry[name], row) == ("Is the heart enlarged?", "yes", (), "")


def test_mimic_instructions_and_layout(registry):
    summarization = registry["mimic_cxr_report_summarization"]
    row = {"image": PHYSIONET_JPG + "files/p10/p1/s1/a.jpg", "report": "FINDINGS: Clear lungs. IMPRESSION: Normal.",
           "summary": "Normal chest."}  # fmt: skip
    question, answer, choices, _ = build_question(summarization, row)
    # Our wording of the reference's "write a short summary of the following report", then its "Report:\n<report>".
    assert question == (
        "Write a brief summary of the radiology report below.\n\nReport:\nFINDINGS: Clear lungs. IMPRESSION: Normal."
    )
    assert (answer, choices) == ("Normal chest.", ())
    generation = registry["mimic_cxr_report_generation"]
    question, answer, _, _ = build_question(generation, row)
    # Our wording of the reference's "generate a detailed report based on the scan"; the image carries the input.
    assert question == "Write a detailed radiology report for this scan."
    assert answer == "FINDINGS: Clear lungs. IMPRESSION: Normal."


def test_mmmu_options_text_and_letter_answer(registry):
    spec = registry["mmmu_medical_val"]
    row = {"question": "<image 1> Which rhythm?", "options": "['Atrial fibrillation', \"Sinus rhythm\", 'VT']",
           "answer": "B", "image_1": None, "question_type": "multiple-choice"}  # fmt: skip
    assert build_question(spec, row) == (
        "<image 1> Which rhythm?\n\nChoices:\nA. Atrial fibrillation\nB. Sinus rhythm\nC. VT",
        "Sinus rhythm",
        ("Atrial fibrillation", "Sinus rhythm", "VT"),
        "B",
    )
    assert build_question(spec, {**row, "options": '["x", "y"]', "answer": "a"})[1:] == ("x", ("x", "y"), "A")
    with pytest.raises(TaskDataError, match="holds text that is not a list"):
        build_question(spec, {**row, "options": "Atrial fibrillation; Sinus rhythm"})
    with pytest.raises(TaskDataError, match="answer 'E' .* names no option"):
        build_question(spec, {**row, "answer": "E"})


def test_mmmu_keeps_its_multiple_choice_rows_of_every_subject(registry, caplog):
    caplog.set_level("INFO", logger="medix_ray.eval.tasks")
    items = load_task(registry["mmmu_medical_val"], FIXTURES)
    assert [it.id for it in items] == [f"mmmu_medical_val_{k}" for k in range(5)]
    assert [it.answer_letter for it in items] == ["A", "B", "A", "A", "B"]
    assert "Which rhythm is it?" in items[1].question and "heart rate" not in " ".join(it.question for it in items)
    assert "keep 5 of 6 rows" in caplog.text  # the open question the filter left out is counted


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
        ("mmmu_medical_val", "Pharmacy/dataset_dict.json", 5),  # one save_to_disk DatasetDict per hub config
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
    assert task_images.read_image(spec, {"bytes": png, "path": None}, tmp_path) == (png, "", "")
    assert task_images.read_image(spec, {"bytes": None, "path": "x.png"}, tmp_path)[0] == png
    assert task_images.read_image(spec, str(tmp_path / "x.png"), Path("/elsewhere"))[0] == png
    pil_bytes, _, error = task_images.read_image(spec, Image.open(io.BytesIO(png)), tmp_path)
    assert not error and Image.open(io.BytesIO(pil_bytes)).size == (64, 64)
    assert task_images.read_image(spec, None, tmp_path)[2] == "no image in column 'image'"


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
    authorizations: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        expected = "Basic " + base64.b64encode(b"alice:pw-s3cret-77").decode()
        self.authorizations.append(self.headers.get("Authorization") or "")
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="PhysioNet"')
            self.end_headers()
            return
        self.seen.append(self.path)
        body = b"<html>please log in</html>" if self.path.endswith(".html.jpg") else self.png
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def physionet(make_png, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for names in task_images.CREDENTIAL_ENV.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    _PhysioNet.png = make_png(size=(32, 32))
    _PhysioNet.seen = []
    _PhysioNet.authorizations = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PhysioNet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/files/mimic-cxr-jpg/2.1.0/"
    server.shutdown()
    server.server_close()


def _mimic_without_first_image(registry, tmp_path, url):
    """Returns (spec, data dir, the first image's path below image_url): the fixture's URLs point at `url`."""
    data_dir = _copy_fixture("mimic_cxr_report_generation", tmp_path)
    table = data_dir / "mimic_cxr_report_generation" / "test.jsonl"
    table.write_text(table.read_text().replace(PHYSIONET_JPG, url))
    first = json.loads(table.read_text().splitlines()[0])["image"]
    assert first.startswith(url)
    relative = first.removeprefix(url)
    (data_dir / "mimic_cxr_report_generation" / relative).unlink()
    return replace(registry["mimic_cxr_report_generation"], image_url=url), data_dir, relative


@pytest.mark.parametrize(
    "names", [("PHYSIONET_USERNAME", "PHYSIONET_PASSWORD"), ("PHYSIONET_UNAME", "PHYSIONET_PWD")]
)  # ours, the reference's (eval/README.md)
def test_mimic_image_urls_are_fetched_with_credentials_from_the_environment(
    registry, tmp_path, physionet, monkeypatch, names
):
    monkeypatch.setenv(names[0], "alice")
    monkeypatch.setenv(names[1], "pw-s3cret-77")
    spec, data_dir, relative = _mimic_without_first_image(registry, tmp_path, physionet)
    items = load_task(spec, data_dir)
    assert all(not it.error and it.image for it in items)
    assert _PhysioNet.seen == [f"/files/mimic-cxr-jpg/2.1.0/{relative}"]  # only the missing one
    kept = data_dir / "mimic_cxr_report_generation" / relative  # kept at its path below image_url, for next time
    assert kept.read_bytes() == _PhysioNet.png and items[0].image_path == str(kept)
    assert load_task(spec, data_dir)[0].image == _PhysioNet.png and len(_PhysioNet.seen) == 1


def test_our_credential_spelling_wins_over_the_references(registry, tmp_path, physionet, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "pw-s3cret-77")
    monkeypatch.setenv("PHYSIONET_UNAME", "mallory")
    monkeypatch.setenv("PHYSIONET_PWD", "other")
    spec, data_dir, _ = _mimic_without_first_image(registry, tmp_path, physionet)
    assert not load_task(spec, data_dir)[0].error


def test_a_relative_image_path_is_fetched_below_image_url(registry, tmp_path, physionet, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "pw-s3cret-77")
    spec = replace(registry["mimic_cxr_report_generation"], image_url=physionet)
    image, path, error = task_images.read_image(spec, "files/p11/s2/b.jpg", tmp_path)
    assert not error and image == _PhysioNet.png and path == str(tmp_path / "files/p11/s2/b.jpg")
    assert _PhysioNet.seen == ["/files/mimic-cxr-jpg/2.1.0/files/p11/s2/b.jpg"]


def test_credentials_go_to_the_image_url_host_only(registry, tmp_path, physionet, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "pw-s3cret-77")
    spec = replace(registry["mimic_cxr_report_generation"], image_url=physionet)
    elsewhere = physionet.replace("127.0.0.1", "localhost") + "files/p12/c.jpg"  # same server, another host name
    image, path, error = task_images.read_image(spec, elsewhere, tmp_path)
    assert image is None and "401" in error and path == str(tmp_path / elsewhere.split("://")[1])
    assert _PhysioNet.authorizations and not any(_PhysioNet.authorizations)  # asked, and never answered


def test_an_image_url_that_is_not_a_file_path_or_not_an_image(registry, tmp_path, physionet, monkeypatch):
    monkeypatch.setenv("PHYSIONET_USERNAME", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "pw-s3cret-77")
    spec = replace(registry["mimic_cxr_report_generation"], image_url=physionet)
    assert "names no file path" in task_images.read_image(spec, physionet + "files/../../../etc/x.jpg", tmp_path)[2]
    assert "names no file path" in task_images.read_image(spec, physionet, tmp_path)[2]
    image, _, error = task_images.read_image(spec, physionet + "files/login.html.jpg", tmp_path)
    assert image is None and "that are not an image" in error
    assert not (tmp_path / "files" / "login.html.jpg").exists()  # not kept, so the next run asks again


def test_credentials_never_appear_in_errors_or_logs(registry, tmp_path, physionet, monkeypatch, caplog):
    monkeypatch.setenv("PHYSIONET_USERNAME", "alice")
    monkeypatch.setenv("PHYSIONET_PASSWORD", "wrong-pw-9911")
    spec, data_dir, relative = _mimic_without_first_image(registry, tmp_path, physionet)
    items = load_task(spec, data_dir)
    assert "401" in items[0].error and relative in items[0].error
    # An exception whose text carries the password (e.g. from a proxy) is redacted too.
    monkeypatch.setattr(
        task_images.urllib.request.OpenerDirector,
        "open",
        lambda self, url, timeout=None: (_ for _ in ()).throw(OSError("refused for alice:wrong-pw-9911")),
    )
    items += load_task(spec, data_dir)
    assert "***" in items[-3].error
    text = " ".join(it.error for it in items) + caplog.text
    assert "wrong-pw-9911" not in text
    assert not any(b"wrong-pw-9911" in f.read_bytes() for f in data_dir.rglob("*") if f.is_file())
    monkeypatch.delenv("PHYSIONET_PASSWORD")
    error = load_task(spec, data_dir)[0].error
    assert error.startswith("image file missing:")
    assert "PHYSIONET_USERNAME and PHYSIONET_PASSWORD (or PHYSIONET_UNAME and PHYSIONET_PWD)" in error


# ---- every task from a save_to_disk copy of its hub layout; several hub configs -----------------------------


def _item_view(item):
    return (item.id, item.question, item.answer, item.choices, item.answer_letter, item.image, item.modality)


def test_every_task_loads_from_a_save_to_disk_copy_of_its_hub_layout(registry, tmp_path):
    import datasets

    hub = _build_module().build(tmp_path / "hub", layout="hf_disk_dict")
    for spec in registry.values():
        folder = hub / spec.name
        saved = datasets.load_from_disk(str(folder))
        assert list(saved) == [spec.split], spec.name  # a DatasetDict of the task's split, as the hub serves it
        if spec.image and spec.name not in ("slake_vqa", "mimic_cxr_report_generation"):
            assert isinstance(saved[spec.split].features[spec.image], datasets.Image), spec.name
        items = load_task(spec, hub)
        assert not any(it.error for it in items), spec.name
        # The same rows as the committed fixture in its own layout give the same items.
        assert [_item_view(it) for it in items] == [_item_view(it) for it in load_task(spec, FIXTURES)], spec.name
    features = datasets.load_from_disk(str(hub / "mmmu_medical_val"))["validation"].features
    assert features["options"].dtype == "string" and isinstance(features["image_7"], datasets.Image)
    rows = datasets.load_from_disk(str(hub / "mimic_cxr_report_generation"))["test"]
    assert rows[0]["image"].startswith(PHYSIONET_JPG)


def test_a_task_with_several_configs_reads_each_from_the_hub_in_order(registry, monkeypatch):
    import datasets

    calls = []

    def fake_load(hub_id, config, split, revision):
        calls.append((hub_id, config, split))
        row = {"question": f"{config}?", "options": "['x', 'y']", "answer": "B", "question_type": "multiple-choice",
               "image_1": {"bytes": b"", "path": None}}  # fmt: skip
        return datasets.Dataset.from_list([row])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    items = load_task(registry["mmmu_medical_val"])
    assert calls == [("MMMU/MMMU", subject, "validation") for subject in MMMU_SUBJECTS]
    assert [it.question.split("?")[0] for it in items] == list(MMMU_SUBJECTS)
    assert [it.id for it in items] == [f"mmmu_medical_val_{k}" for k in range(5)]


def test_a_partial_per_config_copy_names_the_missing_configs(registry, tmp_path):
    data_dir = _copy_fixture("mmmu_medical_val", tmp_path)
    shutil.rmtree(data_dir / "mmmu_medical_val" / "Pharmacy")
    with pytest.raises(TaskDataError, match=r"folders for configs .* but not \['Pharmacy'\]"):
        load_task(registry["mmmu_medical_val"], data_dir)


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
