import pytest

from medix_ray.rewards import rules


def test_squeeze_deletes_whitespace_next_to_angle_brackets_and_slashes_everywhere():
    text = "<X_RAY> <thinking> a / b </thinking>\n<answer> and / or </answer>"
    assert rules.squeeze_whitespace(text) == "<X_RAY><thinking>a/b</thinking><answer>and/or</answer>"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("<X_RAY> Right lower lobe pneumonia.", ("<X_RAY>", "Right lower lobe pneumonia")),
        ("<CT_SCAN>...Appendicitis..", ("<CT_SCAN>", "Appendicitis")),
        ("No tag here", ("", "No tag here")),
    ],
)
def test_split_reference(reference, expected):
    assert rules.split_reference(reference) == expected


@pytest.mark.parametrize(
    ("answer", "invalid"),
    [("", True), ("5", True), ("B", True), ("3:1", True), ("is it?", True), ("a__b", True), ("Naloxone", False)],
)
def test_paper_invalid_answer_rule(answer, invalid):
    assert rules.paper_invalid_answer(answer) is invalid


@pytest.mark.parametrize(
    ("answer", "invalid"),
    [("", True), ("...", True), (" ? ", True), ("5", False), ("B", False), ("3:1", False), ("肺炎", False)],
)
def test_medix_invalid_answer_keeps_real_short_answers(answer, invalid):
    assert rules.medix_invalid_answer(answer) is invalid


@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("<X_RAY><thinking>r</thinking><answer>a</answer>", 1.0),
        ("preamble ignored <thinking>r</thinking>  <answer>a</answer>", 1.0),
        ("<thinking>r</thinking><answer>a</answer> trailing", 0.0),
        ("<thinking>r</thinking>", 0.0),
        ("<think>r</think><answer>a</answer>", 0.0),  # wrong tag for the paper preset
        ("<answer>a</answer>", 0.0),
    ],
)
def test_paper_format_reward(response, score):
    assert rules.paper_format_reward(response) == score


@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("<X_RAY><think>r</think><answer>a</answer>", 1.0),
        ("  <X_RAY>\n<think>r</think>\n<answer>a</answer>\n", 1.0),
        ("<think>r</think><answer>a</answer>", 1.0),
        ("Sure! <X_RAY><think>r</think><answer>a</answer>", 0.0),  # text outside the tags
        ("<X_RAY><think>r</think><answer>a</answer><answer>b</answer>", 0.0),  # two answers
        ("<X_RAY><thinking>r</thinking><answer>a</answer>", 0.0),
    ],
)
def test_medix_format_reward(response, score):
    assert rules.medix_format_reward(response) == score


def test_configured_think_tag_in_medix_format():
    assert rules.medix_format_reward("<thinking>r</thinking><answer>a</answer>", think_tag="thinking") == 1.0


def test_paper_modality_needs_the_tag_alone_before_thinking():
    assert rules.paper_modality_reward("<x_ray><thinking>r</thinking>", "<X_RAY>") == 1.0  # case-insensitive
    assert rules.paper_modality_reward("Sure.<X_RAY><thinking>r</thinking>", "<X_RAY>") == 0.0
    assert rules.paper_modality_reward("<CT_SCAN><thinking>", "<X_RAY>") == 0.0


def test_medix_modality_reads_the_first_known_tag_after_a_preamble():
    assert rules.medix_modality_reward("Okay, the image.\n< X_RAY ><think>r</think>", "X_RAY") == 1.0
    assert rules.medix_modality_reward("<b>bold</b><CT_SCAN><think>", "CT_SCAN") == 1.0  # <b> is not a tag
    assert rules.medix_modality_reward("<CT_SCAN><X_RAY><think>", "X_RAY") == 0.0  # first tag counts
    assert rules.medix_modality_reward("<think><X_RAY></think>", "X_RAY") == 0.0  # inside the think block


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("Yes", "Yes", True),
        ("yes, there is an opacity", "Yes", True),
        ("No", "Yes", False),
        ("(B)", "B", True),
        ("Option C", "B", False),
        ("5", "5 mg", True),
        ("5 mg", "5 mg", True),
        ("5 g", "5 mg", False),
        ("4.0", "4", True),
        ("four chambers", "4 chambers", None),  # free text: the judge decides
        ("Naloxone", "Naloxone", None),  # free-text reference
    ],
)
def test_closed_form_match(answer, reference, expected):
    assert rules.closed_form_match(answer, reference) is expected
