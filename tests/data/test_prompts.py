import pytest

from medix_ray.data.modality import MODALITY_TAGS
from medix_ray.data.output_format import OutputFormat
from medix_ray.data.prompts import chat_messages, instructions, render_prompt
from medix_ray.data.schema import ImageRef, Sample, SampleError

TEXT = Sample("t1", "  Which nerve supplies the diaphragm?  ", "<OTHER> Phrenic nerve")


def _image_sample(make_png, n=1):
    return Sample(
        "i1",
        "Which lung shows the opacity?",
        "<X_RAY> Left lung",
        tuple(ImageRef(data=make_png()) for _ in range(n)),
    )


def test_instructions_list_every_tag_and_the_steps():
    text = instructions()
    for tag in MODALITY_TAGS:
        assert f"<{tag}>" in text
    assert "between <think> and </think>" in text and "between <answer> and </answer>" in text
    assert "Write nothing outside these tags" in text
    assert text.endswith("Question:")


def test_tag_names_are_configurable():
    text = instructions(OutputFormat(think_tag="thinking", modalities=("X_RAY", "CT_SCAN")))
    assert "<thinking> and </thinking>" in text and "<think>" not in text
    assert "<X_RAY>, <CT_SCAN>" in text and "<MRI_SCAN>" not in text


def test_text_message_is_a_plain_string_with_the_trimmed_question():
    (msg,) = chat_messages(TEXT, multimodal=False)
    assert msg["role"] == "user"
    assert msg["content"].endswith("Question: Which nerve supplies the diaphragm?")


def test_image_sits_between_question_label_and_question_text(make_png):
    (msg,) = chat_messages(_image_sample(make_png, n=2))
    parts = msg["content"]
    assert [p["type"] for p in parts] == ["text", "image", "image", "text"]
    assert parts[0]["text"].endswith("Question: ")
    assert parts[-1]["text"] == "Which lung shows the opacity?"


def test_text_only_policy_rejects_an_image_sample(make_png):
    with pytest.raises(SampleError, match=r"sample 'i1': field 'image': has 1 image\(s\) but the policy is text-only"):
        chat_messages(_image_sample(make_png), multimodal=False)


def test_rendered_through_smollm2_chat_template(smollm2_path):
    from transformers import AutoTokenizer

    prompt = render_prompt(TEXT, AutoTokenizer.from_pretrained(smollm2_path))
    assert prompt.startswith("<|im_start|>")
    assert "Question: Which nerve supplies the diaphragm?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_rendered_through_qwen_vl_processor(tiny_vl_path, make_png):
    from transformers import AutoProcessor

    prompt = render_prompt(_image_sample(make_png), AutoProcessor.from_pretrained(tiny_vl_path))
    assert "Question: <|vision_start|><|image_pad|><|vision_end|>Which lung shows the opacity?" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
