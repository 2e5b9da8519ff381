import pytest

from medix_ray.data.schema import ImageRef, Sample, SampleError, split_solution, validate_row


def _row(**kw):
    row = {"id": "s1", "problem": "Which lung?", "solution": "<X_RAY> Right lung", "image": [], "source": "t"}
    row.update(kw)
    return row


def test_valid_row_is_normalised(make_png):
    png = make_png()
    out = validate_row(_row(image=[{"bytes": png, "path": None}]))
    assert out == {
        "id": "s1",
        "problem": "Which lung?",
        "solution": "<X_RAY> Right lung",
        "image": [{"bytes": png, "path": None}],
        "source": "t",
    }


def test_split_solution_returns_tag_and_stripped_answer():
    assert split_solution("<CT_SCAN>  Appendicitis ") == ("CT_SCAN", "Appendicitis")


@pytest.mark.parametrize(
    ("solution", "message"),
    [
        ("Right lung", "must start with a modality tag"),
        ("<XRAY> Right lung", r"unknown modality tag <XRAY>"),
        ("<X_RAY>   ", "no answer after it"),
    ],
)
def test_bad_solution_names_sample_and_field(solution, message):
    with pytest.raises(SampleError, match=rf"sample 's1': field 'solution': .*{message}"):
        validate_row(_row(solution=solution))


def test_configured_tag_list_is_enforced():
    with pytest.raises(SampleError, match="unknown modality tag <X_RAY>"):
        validate_row(_row(), tags=["CT_SCAN"])


def test_missing_column_names_the_configured_key():
    row = _row()
    del row["problem"]
    with pytest.raises(SampleError, match=r"field 'problem': missing column"):
        validate_row(row)
    with pytest.raises(SampleError, match=r"field 'question': missing column .*data.prompt_key"):
        validate_row(_row(), prompt_key="question")


def test_custom_column_names_are_mapped():
    row = {"id": "q", "question": "Why?", "answer": "<OTHER> Because", "pics": []}
    out = validate_row(row, prompt_key="question", answer_key="answer", image_key="pics")
    assert out["problem"] == "Why?" and out["solution"] == "<OTHER> Because"


def test_missing_id_names_the_row_position():
    with pytest.raises(SampleError, match=r"sample 'row 4': field 'id': missing"):
        validate_row(_row(id=None), position=4)


def test_empty_problem_is_rejected():
    with pytest.raises(SampleError, match=r"field 'problem': expected a non-empty string"):
        validate_row(_row(problem="  "))


def test_corrupt_image_bytes_are_rejected_at_validation():
    with pytest.raises(SampleError, match=r"sample 's1': field 'image\[0\]': image cannot be decoded"):
        validate_row(_row(image=[{"bytes": b"\x89PNG not really", "path": None}]))


def test_truncated_png_is_rejected(make_png):
    png = make_png()
    with pytest.raises(SampleError, match="cannot be decoded"):
        validate_row(_row(image=[png[: len(png) // 2]]))


def test_missing_image_file_is_rejected(tmp_path):
    with pytest.raises(SampleError, match=r"image file missing: .*nope.png"):
        validate_row(_row(image=["nope.png"]), base_dir=str(tmp_path))


def test_relative_image_path_resolves_against_base_dir(tmp_path, make_png):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(make_png())
    out = validate_row(_row(image=["img/a.png"]), base_dir=str(tmp_path))
    assert out["image"] == [{"bytes": None, "path": str(tmp_path / "img" / "a.png")}]


def test_single_image_not_in_a_list_is_accepted(make_png):
    out = validate_row(_row(image=make_png()))
    assert len(out["image"]) == 1


def test_image_of_wrong_type_is_rejected():
    with pytest.raises(SampleError, match=r"image\[0\]'.*got int"):
        validate_row(_row(image=[3]))


def test_sample_from_row_decodes_lazily_to_rgb(make_png):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (1, 2, 3, 128)).save(buf, format="PNG")
    sample = Sample.from_row(validate_row(_row(image=[buf.getvalue()])))
    assert sample.modality == "X_RAY" and sample.answer == "Right lung"
    (img,) = sample.load_images()
    assert img.mode == "RGB" and img.size == (8, 8)


def test_image_ref_load_errors_name_the_sample(tmp_path):
    with pytest.raises(SampleError, match=r"sample 'z': field 'image': image file missing"):
        ImageRef(path=str(tmp_path / "gone.png")).load("z")
    with pytest.raises(SampleError, match=r"sample 'z': field 'image': image cannot be decoded"):
        ImageRef(data=b"garbage").load("z")
