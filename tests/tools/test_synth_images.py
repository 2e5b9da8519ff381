"""Tests for the procedurally drawn synthetic image items (tools.synth.images)."""

from __future__ import annotations

import io
import re
import struct
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from medix_ray.data.modality import MODALITY_TAGS
from tools.synth.images import SyntheticImageItem, generate_items

PER_MODALITY = 10


@pytest.fixture(scope="module")
def items() -> list[SyntheticImageItem]:
    return generate_items(PER_MODALITY, seed=0)


@pytest.fixture(scope="module")
def by_modality(items: list[SyntheticImageItem]) -> dict[str, list[SyntheticImageItem]]:
    groups: dict[str, list[SyntheticImageItem]] = defaultdict(list)
    for item in items:
        groups[item.modality].append(item)
    return groups


def _pixels(item: SyntheticImageItem) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(item.png)).convert("RGB"), dtype=np.int16)


def _png_chunk_types(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, types = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        types.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return types


# --- structure -------------------------------------------------------------------------------


def test_all_modalities_present_in_tag_order(items: list[SyntheticImageItem]) -> None:
    assert len(items) == len(MODALITY_TAGS) * PER_MODALITY
    order = list(dict.fromkeys(item.modality for item in items))
    assert order == list(MODALITY_TAGS)
    for tag in MODALITY_TAGS:
        assert sum(item.modality == tag for item in items) == PER_MODALITY


def test_ids_unique_and_formatted(by_modality: dict[str, list[SyntheticImageItem]]) -> None:
    ids = [item.id for group in by_modality.values() for item in group]
    assert len(ids) == len(set(ids))
    for modality, group in by_modality.items():
        for index, item in enumerate(group):
            assert item.id == f"img_{modality.lower()}_{index:03d}"
            assert re.fullmatch(r"img_[a-z_]+_\d{3}", item.id)


def test_same_arguments_give_identical_bytes(items: list[SyntheticImageItem]) -> None:
    again = generate_items(PER_MODALITY, seed=0)
    assert again == items  # frozen dataclasses: compares every field, PNG bytes included


def test_different_seed_gives_different_images(items: list[SyntheticImageItem]) -> None:
    other = generate_items(PER_MODALITY, seed=1)
    assert [i.id for i in other] == [i.id for i in items]
    assert all(a.png != b.png for a, b in zip(items, other, strict=True))


def test_zero_per_modality_is_empty() -> None:
    assert generate_items(0) == []


def test_pngs_decode_to_224_rgb_without_metadata(items: list[SyntheticImageItem]) -> None:
    for item in items:
        img = Image.open(io.BytesIO(item.png))
        img.load()
        assert img.format == "PNG"
        assert img.size == (224, 224)
        assert img.mode == "RGB"
        # Only image data: no text, time or gamma chunks that could vary between runs.
        assert set(_png_chunk_types(item.png)) == {b"IHDR", b"IDAT", b"IEND"}


def test_sizes_stay_small(items: list[SyntheticImageItem]) -> None:
    sizes = [len(item.png) for item in items]
    assert sum(sizes) < 5_000_000
    assert max(sizes) < 48_000
    assert sum(size < 40_000 for size in sizes) >= 0.9 * len(sizes)


def test_images_are_not_flat(items: list[SyntheticImageItem]) -> None:
    for item in items:
        rgb = _pixels(item).reshape(-1, 3).astype(np.int32)
        # One int per colour: np.unique over rows (axis=0) is ~50x slower than over a flat array.
        colours, counts = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2], return_counts=True)
        assert len(colours) > 20, item.id
        # Black surroundings (fan, field stop) may be uniform, but never most of the picture.
        assert counts.max() < 0.5 * counts.sum(), item.id


# --- questions and answers -------------------------------------------------------------------


def _check_answer_text(text: str, where: str) -> None:
    assert text == text.strip() and text, where
    assert ":" not in text and "?" not in text and "__" not in text, where
    assert len(text) > 1, where
    assert 1 <= len(text.split()) <= 6, where


def test_answers_obey_the_rules(items: list[SyntheticImageItem]) -> None:
    for item in items:
        _check_answer_text(item.answer, item.id)
        assert isinstance(item.alt_answers, tuple)
        for alt in item.alt_answers:
            _check_answer_text(alt, f"{item.id} alt {alt!r}")
        assert item.answer not in item.alt_answers


def test_questions_end_with_question_mark(items: list[SyntheticImageItem]) -> None:
    for item in items:
        assert item.question.endswith("?"), item.id
        assert item.question[0].isupper(), item.id


def test_questions_do_not_leak_answers(items: list[SyntheticImageItem]) -> None:
    for item in items:
        q = item.question.lower()
        if " or " in q:
            continue  # either/or questions name both options by design
        assert item.answer.lower() not in q, item.id


def test_each_modality_has_varied_questions_and_answers(
    by_modality: dict[str, list[SyntheticImageItem]],
) -> None:
    for modality, group in by_modality.items():
        assert len({item.answer for item in group}) >= 2, modality
        assert len({item.question for item in group}) >= 2, modality


def test_every_question_type_gets_several_answers() -> None:
    # With ~10 items per question type, no question should always have the same answer.
    answers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in generate_items(30, seed=0):
        answers[(item.modality, item.question)].add(item.answer)
    for key, seen in answers.items():
        assert len(seen) >= 2, key


# --- the answer matches the pixels -----------------------------------------------------------


def _items_asking(group: list[SyntheticImageItem], fragment: str) -> list[SyntheticImageItem]:
    chosen = [item for item in group if fragment in item.question]
    assert chosen, f"no item asks {fragment!r}"
    return chosen


def test_x_ray_opacity_side_matches_pixels(by_modality: dict[str, list[SyntheticImageItem]]) -> None:
    # Radiological convention: the patient's right lung is on the image's left.
    for item in _items_asking(by_modality["X_RAY"], "left or the right lung"):
        gray = _pixels(item)[:, :, 0]
        image_left = gray[60:170, 46:92].mean()
        image_right = gray[60:170, 134:180].mean()
        assert item.answer in ("Right lung", "Left lung")
        if item.answer == "Right lung":
            assert image_left > image_right + 4, item.id
        else:
            assert image_right > image_left + 4, item.id


def test_mri_lesion_side_matches_pixels(by_modality: dict[str, list[SyntheticImageItem]]) -> None:
    yy, xx = np.mgrid[0:224, 0:224]
    brain = ((xx - 112) / 58) ** 2 + ((yy - 112) / 80) ** 2 <= 1
    for item in _items_asking(by_modality["MRI_SCAN"], "left or the right hemisphere"):
        bright = (_pixels(item)[:, :, 0] > 185) & brain
        on_image_left = int(bright[:, :110].sum())
        on_image_right = int(bright[:, 114:].sum())
        assert item.answer in ("Right hemisphere", "Left hemisphere")
        if item.answer == "Right hemisphere":
            lesion_side, other = on_image_left, on_image_right
        else:
            lesion_side, other = on_image_right, on_image_left
        assert lesion_side > 20 and lesion_side > 3 * other, item.id


def test_ecg_beat_count_matches_pixels(by_modality: dict[str, list[SyntheticImageItem]]) -> None:
    for item in _items_asking(by_modality["OTHER"], "How many heartbeats"):
        px = _pixels(item)
        trace = px.max(axis=2) < 90  # the ink is near-black; grid lines are pink
        has_ink = trace.any(axis=0)
        top = np.where(has_ink, trace.argmax(axis=0), 224)
        baseline = int(np.median(top[has_ink]))
        tall = top < baseline - 30  # only R waves rise this far above the baseline
        # Count runs of columns that hold an R wave.
        peaks = int(tall[0]) + int(np.sum(tall[1:] & ~tall[:-1]))
        expected = int(item.answer.split()[0])
        assert peaks == expected, item.id


def test_fundus_disc_side_matches_pixels(by_modality: dict[str, list[SyntheticImageItem]]) -> None:
    for item in _items_asking(by_modality["FUNDUS_PHOTOGRAPHY"], "optic disc on the left or the right"):
        px = _pixels(item)
        yellow = (px[:, :, 0] > 220) & (px[:, :, 1] > 190) & (px[:, :, 2] > 110)
        assert yellow.sum() > 100, item.id
        centre_x = float(np.nonzero(yellow)[1].mean())
        assert item.answer in ("Right side", "Left side")
        assert (centre_x > 112) == (item.answer == "Right side"), item.id


_COLOUR_PROTOTYPES = {
    "Red": (220, 50, 50),
    "Blue": (45, 100, 215),
    "Green": (40, 160, 70),
    "Orange": (240, 150, 30),
    "Purple": (135, 60, 170),
    "Grey": (120, 120, 120),
}


def test_graphics_tallest_bar_colour_matches_pixels(by_modality: dict[str, list[SyntheticImageItem]]) -> None:
    for item in _items_asking(by_modality["GRAPHICS"], "colour is the tallest bar"):
        plot = _pixels(item)[18:190, 40:206]
        ink = np.abs(plot - 250).max(axis=2) > 60  # anything clearly darker than paper and grid
        rows = np.nonzero(ink.sum(axis=1) >= 10)[0]
        top_row = plot[rows[0] + 2][ink[rows[0] + 2]]  # a row just inside the tallest bar
        colour = np.median(top_row, axis=0)
        nearest = min(_COLOUR_PROTOTYPES, key=lambda k: float(np.sum((colour - _COLOUR_PROTOTYPES[k]) ** 2)))
        assert nearest == item.answer, item.id


def test_spect_hot_spot_side_matches_pixels(by_modality: dict[str, list[SyntheticImageItem]]) -> None:
    # Anterior view: the patient's right is on the image's left.
    for item in _items_asking(by_modality["SPECT"], "patient's left or right side"):
        dark = _pixels(item)[:, :, 0] < 70
        assert dark.sum() > 10, item.id
        centre_x = float(np.nonzero(dark)[1].mean())
        assert item.answer in ("Right side", "Left side")
        if item.answer == "Right side":
            assert centre_x < 104, item.id
        else:
            assert centre_x > 120, item.id
