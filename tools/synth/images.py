"""Procedurally drawn, answerable "medical-looking" images, one renderer per modality tag.

Each item is a 224x224 RGB cartoon of one of the 16 modalities together with a question whose
answer is decided by what was drawn (which side, how many, what colour, which shape, ...). The
images are synthetic and not for clinical use; they exist so that a vision-language model can
actually learn something from the pixels during RL smoke tests, with no downloaded data.

Orientation conventions (questions and answers rely on them):
- Views of a patient's body (X_RAY, CT_SCAN, MRI_SCAN, PET_SCAN, SPECT) use the radiological
  convention: the patient's right is drawn on the image's left. "Right lung" therefore means
  the lung on the image's left half. SPECT and PET questions say "anterior view" explicitly.
- Images without a patient frame (ANGIOGRAPHY, ULTRASOUND, FUNDUS_PHOTOGRAPHY, OCT_SCAN,
  ENDOSCOPY, GRAPHICS) phrase left/right and upper/lower as seen on the image.

Determinism: every item draws from its own `numpy.random.default_rng`, seeded by a CRC-32 of
`"{seed}:{modality}:{index}"`, pixels are rounded to uint8 before encoding, and PNGs carry no
metadata, so the same arguments give byte-identical PNGs (see generate_items for the limits).
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["SyntheticImageItem", "generate_items", "RENDERERS"]

SIZE = 224

_YY, _XX = np.mgrid[0:SIZE, 0:SIZE]

_NUMBER_WORDS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")


@dataclass(frozen=True)
class SyntheticImageItem:
    """One synthetic image with its question and reference answer."""

    id: str
    modality: str
    question: str
    answer: str
    alt_answers: tuple[str, ...]
    png: bytes


@dataclass(frozen=True)
class _Drawn:
    """What a renderer returns: the picture and the question it answers."""

    image: Image.Image
    question: str
    answer: str
    alt_answers: tuple[str, ...] = ()


# A renderer gets its own RNG and a question-type selector (the item index; each renderer
# reduces it modulo its number of question types, so every type appears in turn).
Renderer = Callable[[np.random.Generator, int], _Drawn]

Point = tuple[float, float]


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _derive_seed(seed: int, modality: str, index: int) -> int:
    # CRC-32 rather than hash(): Python salts str hashes per process, which would break
    # reproducibility across runs.
    return zlib.crc32(f"{seed}:{modality}:{index}".encode())


def _box(cx: float, cy: float, rx: float, ry: float | None = None) -> tuple[float, float, float, float]:
    """Bounding box of an ellipse centred on (cx, cy), as PIL wants it."""
    ry = rx if ry is None else ry
    return (cx - rx, cy - ry, cx + rx, cy + ry)


def _grain(rng: np.random.Generator, amp: float, cells: int = 48) -> np.ndarray:
    """Smooth noise field (int16, zero-mean) of roughly +-amp.

    Drawn at low resolution and upsampled: it reads as film/tissue texture, and PNG compresses
    it far better than per-pixel noise, which keeps items small.
    """
    low = np.clip(np.rint(rng.normal(128.0, amp, (cells, cells))), 0, 255).astype(np.uint8)
    up = Image.fromarray(low, "L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(up, dtype=np.int16) - 128


def _as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def _to_image(arr: np.ndarray) -> Image.Image:
    """Array (H, W) or (H, W, 3) -> RGB image, rounded and clipped to uint8."""
    u8 = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if u8.ndim == 2:
        u8 = np.repeat(u8[:, :, None], 3, axis=2)
    return Image.fromarray(u8, "RGB")


def _gray(arr: np.ndarray) -> Image.Image:
    """Array (H, W) -> single-channel image, rounded and clipped to uint8."""
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def _sample_where(
    rng: np.random.Generator, sample: Callable[[np.random.Generator], Point], keep: Callable[[Point], bool]
) -> Point:
    """First point from sample() that satisfies keep()."""
    for _ in range(5000):
        p = sample(rng)
        if keep(p):
            return p
    raise RuntimeError("no sample satisfied the constraint")


def _finish(img: Image.Image, rng: np.random.Generator, amp: float, cells: int = 48) -> Image.Image:
    """Adds the same luminance grain to every channel and returns an RGB image."""
    arr = _as_array(img)
    grain = _grain(rng, amp, cells)
    arr = arr + (grain if arr.ndim == 2 else grain[:, :, None])
    return _to_image(arr)


def _layer(shapes: Sequence[tuple[float, float, float, float]], value: int, blur: float) -> np.ndarray:
    """Soft blobs: ellipses (cx, cy, rx, ry) filled with value, blurred, as an int16 array."""
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    for cx, cy, rx, ry in shapes:
        d.ellipse(_box(cx, cy, rx, ry), fill=value)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return _as_array(img)


def _place(
    rng: np.random.Generator,
    n: int,
    sample: Callable[[np.random.Generator], Point],
    min_dist: float,
    avoid: Sequence[Point] = (),
    avoid_dist: float = 0.0,
) -> list[Point]:
    """n points from sample(), pairwise at least min_dist apart and away from `avoid`.

    Counting questions are only answerable if the counted things never overlap, so this
    rejects overlaps instead of hoping.
    """
    points: list[Point] = []
    for _ in range(5000):
        if len(points) == n:
            return points
        p = sample(rng)
        if all(math.dist(p, q) >= min_dist for q in points) and all(math.dist(p, q) >= avoid_dist for q in avoid):
            points.append(p)
    if len(points) == n:
        return points
    raise RuntimeError(f"could not place {n} non-overlapping objects")


def _count_answer(n: int, singular: str, plural: str) -> tuple[str, tuple[str, ...]]:
    noun = singular if n == 1 else plural
    return f"{n} {noun}", (f"{_NUMBER_WORDS[n]} {noun}", _NUMBER_WORDS[n])


def _patient_side(on_image_left: bool) -> str:
    # Radiological convention: the patient's right is shown on the image's left.
    return "Right" if on_image_left else "Left"


def _yes_no(present: bool, yes_alts: tuple[str, ...], no_alts: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    return ("Yes", yes_alts) if present else ("No", no_alts)


def _bezier(p0: Point, p1: Point, p2: Point, t: np.ndarray) -> np.ndarray:
    """Points of a quadratic Bezier curve at parameters t, shape (len(t), 2)."""
    t = t[:, None]
    a, b, c = np.array(p0), np.array(p1), np.array(p2)
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def _tube(d: ImageDraw.ImageDraw, points: np.ndarray, radii: np.ndarray, fill: int | tuple[int, ...]) -> None:
    """Draws a tube of varying width as overlapping discs along a path (vessels, bones)."""
    for (x, y), r in zip(points, radii, strict=True):
        d.ellipse(_box(float(x), float(y), float(r)), fill=fill)


def _encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # No pnginfo, fixed compression settings: the bytes depend on the pixels only.
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------------------------

# Image-left lung (the patient's right lung) and image-right lung, as ellipse boxes.
_XR_LUNGS = ((40, 42, 106, 188), (118, 42, 184, 188))
_XR_LUNG_CX = (73, 151)


def _render_x_ray(rng: np.random.Generator, kind: int) -> _Drawn:
    """PA chest radiograph: bright soft tissue and spine, two dark lung fields, faint ribs.

    Questions: which lung holds the opacity (patient's side; image left = patient's right),
    whether the opacity is in the upper or lower zone, and how many nodules there are.
    """
    img = Image.new("L", (SIZE, SIZE), 6)
    d = ImageDraw.Draw(img)
    d.rectangle((92, 0, 132, 40), fill=96)  # neck
    d.rounded_rectangle((10, 26, 214, 260), radius=70, fill=92)  # thorax, runs off the bottom
    for box in _XR_LUNGS:
        d.ellipse(box, fill=36)
    lung_mask = np.zeros((SIZE, SIZE), dtype=bool)
    for box in _XR_LUNGS:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        rx, ry = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
        lung_mask |= ((_XX - cx) / rx) ** 2 + ((_YY - cy) / ry) ** 2 <= 1
    d.rectangle((103, 14, 121, 224), fill=150)  # spine / mediastinum
    d.ellipse((94, 112, 132, 176), fill=132)  # heart, kept central so both lung fields stay comparable
    for sign in (-1, 1):
        d.line((112, 40, 112 + sign * 74, 30), fill=150, width=6)  # clavicles

    ribs = Image.new("L", (SIZE, SIZE), 0)
    rd = ImageDraw.Draw(ribs)
    for i in range(7):
        y = 62 + 19 * i
        rd.arc((42, y - 22, 182, y + 22), 180, 270, fill=30, width=3)
        rd.arc((42, y - 22, 182, y + 22), 270, 360, fill=30, width=3)
    arr = _as_array(img) + np.where(lung_mask, _as_array(ribs), 0)
    img = _gray(arr).filter(ImageFilter.GaussianBlur(1.5))
    arr = _as_array(img)

    qtype = kind % 3
    if qtype == 0:
        image_left = bool(rng.integers(2))
        cx = _XR_LUNG_CX[0 if image_left else 1] + int(rng.integers(-6, 7))
        cy = int(rng.integers(72, 158))
        r = int(rng.integers(13, 19))
        arr = arr + _layer([(cx, cy, r, r * 1.1)], 95, 5)
        side = _patient_side(image_left)
        question = "Is the opacity in the left or the right lung?"
        answer, alts = f"{side} lung", (side, f"{side} side", f"The {side.lower()} lung")
    elif qtype == 1:
        upper = bool(rng.integers(2))
        image_left = bool(rng.integers(2))
        cx = _XR_LUNG_CX[0 if image_left else 1] + int(rng.integers(-6, 7))
        cy = int(rng.integers(64, 90)) if upper else int(rng.integers(136, 162))
        r = int(rng.integers(12, 16))
        arr = arr + _layer([(cx, cy, r, r)], 95, 5)
        zone = "Upper" if upper else "Lower"
        question = "Is the opacity in the upper or the lower zone of the lung?"
        answer, alts = f"{zone} zone", (zone, f"{zone} lung zone", f"{zone} lung")
    else:
        n = int(rng.integers(1, 5))

        def sample(g: np.random.Generator) -> Point:
            cx = _XR_LUNG_CX[int(g.integers(2))] + float(g.integers(-16, 17))
            return cx, float(g.integers(60, 168))

        spots = _place(rng, n, sample, min_dist=28, avoid=[(113, 144)], avoid_dist=34)
        arr = arr + _layer([(x, y, 6, 6) for x, y in spots], 115, 1.5)
        question = "How many nodules are visible in the lungs?"
        answer, alts = _count_answer(n, "nodule", "nodules")
    return _Drawn(_finish(_gray(arr), rng, 9), question, answer, alts)


_STAINS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "Purple": ((100, 40, 140), ("Violet", "Purple-blue")),
    "Brown": ((115, 62, 28), ("Dark brown",)),
    "Blue": ((35, 60, 175), ("Dark blue",)),
}


def _render_microscopy(rng: np.random.Generator, kind: int) -> _Drawn:
    """Light micrograph: pale pink field with round cells and stained nuclei, or a blood smear.

    Questions: how many cells are in the field, what colour the stained nuclei are, and whether
    the red blood cells are round or sickle-shaped.
    """
    qtype = kind % 3
    if qtype in (0, 1):
        bg = (236, 208, 222)
        img = Image.new("RGB", (SIZE, SIZE), bg)
        d = ImageDraw.Draw(img)
        if qtype == 0:
            n = int(rng.integers(2, 8))
            stain = "Purple"
        else:
            n = int(rng.integers(3, 6))
            stain = list(_STAINS)[int(rng.integers(len(_STAINS)))]
        nucleus = _STAINS[stain][0]
        r_max = 22

        def sample(g: np.random.Generator) -> Point:
            lo, hi = r_max + 6, SIZE - r_max - 6  # whole cells only, so they can be counted
            return float(g.integers(lo, hi)), float(g.integers(lo, hi))

        for cx, cy in _place(rng, n, sample, min_dist=2 * r_max + 8):
            r = int(rng.integers(17, r_max + 1))
            d.ellipse(_box(cx, cy, r, r * 0.92), fill=(226, 158, 194), outline=(196, 118, 160), width=2)
            nr = r * 0.42
            ox, oy = rng.integers(-3, 4, size=2)
            d.ellipse(_box(cx + ox, cy + oy, nr, nr * 0.9), fill=nucleus)
        if qtype == 0:
            question = "How many cells are in the field of view?"
            answer, alts = _count_answer(n, "cell", "cells")
        else:
            question = "What colour are the stained nuclei?"
            answer, alts = stain, _STAINS[stain][1]
        img = img.filter(ImageFilter.GaussianBlur(0.8))
        return _Drawn(_finish(img, rng, 5), question, answer, alts)

    # Blood smear: sickle cells are drawn as crescents (a disc minus an offset disc).
    sickle = bool(rng.integers(2))
    arr = np.empty((SIZE, SIZE, 3), dtype=np.int16)
    arr[:] = (240, 226, 216)
    n = int(rng.integers(7, 12))

    def sample_rbc(g: np.random.Generator) -> Point:
        return float(g.integers(18, SIZE - 18)), float(g.integers(18, SIZE - 18))

    for cx, cy in _place(rng, n, sample_rbc, min_dist=32):
        r = float(rng.integers(11, 14))
        disc = (_XX - cx) ** 2 + (_YY - cy) ** 2 <= r * r
        if sickle:
            theta = float(rng.uniform(0, 2 * math.pi))
            ox, oy = cx + 0.55 * r * math.cos(theta), cy + 0.55 * r * math.sin(theta)
            disc &= (_XX - ox) ** 2 + (_YY - oy) ** 2 > (0.9 * r) ** 2
            arr[disc] = (196, 58, 60)
        else:
            arr[disc] = (200, 64, 64)
            pale = (_XX - cx) ** 2 + (_YY - cy) ** 2 <= (0.42 * r) ** 2
            arr[pale] = (226, 132, 124)  # central pallor of a normal biconcave disc
    img = _to_image(arr).filter(ImageFilter.GaussianBlur(0.8))
    question = "Are the red blood cells round or sickle-shaped?"
    if sickle:
        answer, alts = "Sickle-shaped", ("Sickle", "Sickle cells", "Crescent-shaped")
    else:
        answer, alts = "Round", ("Round cells", "Normal round cells", "Discoid")
    return _Drawn(_finish(img, rng, 5), question, answer, alts)


_SKIN_TONES = ((236, 194, 166), (224, 174, 142), (200, 146, 110), (241, 206, 182))
_LESION_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "Red": ((186, 40, 48), ("Bright red", "Erythematous")),
    "Dark brown": ((78, 46, 28), ("Brown", "Dark")),
    "White": ((250, 246, 240), ("Pale", "Depigmented", "White patch")),
}


def _irregular_polygon(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[Point]:
    """A lumpy outline: radius jitters by up to +-40 percent around the circle."""
    k = 18
    radii = r * rng.uniform(0.6, 1.4, k)
    angles = np.linspace(0, 2 * math.pi, k, endpoint=False)
    return [(cx + float(q) * math.cos(a), cy + float(q) * math.sin(a)) for q, a in zip(radii, angles, strict=True)]


def _render_clinical_photography(rng: np.random.Generator, kind: int) -> _Drawn:
    """Close-up photograph of a skin patch under uneven lighting with one or more lesions.

    Questions: what colour the lesion is, whether its border is regular or irregular, and how
    many lesions there are.
    """
    tone = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))]
    arr = np.empty((SIZE, SIZE, 3), dtype=np.int16)
    arr[:] = tone
    # A lighting gradient so the photo is not a flat colour field.
    angle = float(rng.uniform(0, 2 * math.pi))
    ramp = ((_XX - 112) * math.cos(angle) + (_YY - 112) * math.sin(angle)) / 112 * 12
    arr = arr + np.rint(ramp).astype(np.int16)[:, :, None]
    img = _to_image(arr)
    mask = Image.new("L", (SIZE, SIZE), 0)
    md = ImageDraw.Draw(mask)

    qtype = kind % 3
    if qtype == 0:
        name = list(_LESION_COLOURS)[int(rng.integers(len(_LESION_COLOURS)))]
        colour, alts = _LESION_COLOURS[name]
        cx, cy = (float(v) for v in rng.integers(80, 145, size=2))
        r = float(rng.integers(20, 32))
        md.ellipse(_box(cx, cy, r, r * float(rng.uniform(0.75, 1.0))), fill=255)
        question = "What colour is the skin lesion?"
        answer = name
    elif qtype == 1:
        irregular = bool(rng.integers(2))
        colour = _LESION_COLOURS["Dark brown"][0]
        cx, cy = (float(v) for v in rng.integers(85, 140, size=2))
        r = float(rng.integers(24, 34))
        if irregular:
            md.polygon(_irregular_polygon(rng, cx, cy, r), fill=255)
        else:
            md.ellipse(_box(cx, cy, r, r * float(rng.uniform(0.85, 1.0))), fill=255)
        question = "Is the border of the lesion regular or irregular?"
        if irregular:
            answer, alts = "Irregular", ("Irregular border", "Ragged")
        else:
            answer, alts = "Regular", ("Regular border", "Smooth", "Smooth border")
    else:
        n = int(rng.integers(1, 6))
        colour = _LESION_COLOURS["Dark brown"][0] if rng.integers(2) else _LESION_COLOURS["Red"][0]

        def sample(g: np.random.Generator) -> Point:
            return float(g.integers(26, SIZE - 26)), float(g.integers(26, SIZE - 26))

        for cx, cy in _place(rng, n, sample, min_dist=44):
            r = float(rng.integers(8, 13))
            md.ellipse(_box(cx, cy, r, r * float(rng.uniform(0.8, 1.0))), fill=255)
        question = "How many lesions are visible on the skin?"
        answer, alts = _count_answer(n, "lesion", "lesions")
    mask = mask.filter(ImageFilter.GaussianBlur(1.2))  # soft edges, as in a photo
    img = Image.composite(Image.new("RGB", (SIZE, SIZE), colour), img, mask)
    return _Drawn(_finish(img, rng, 6, cells=75), question, answer, alts)


# Image-left kidney (patient's right) and image-right kidney centres on the CT slice.
_CT_KIDNEYS = ((72.0, 150.0), (152.0, 150.0))


def _render_ct_scan(rng: np.random.Generator, kind: int) -> _Drawn:
    """Axial abdominal CT: body ellipse, liver on the image left, spleen, spine, kidneys.

    Questions: how many hypodense liver lesions, which kidney holds the stone, and which kidney
    is larger (patient's side; image left = patient's right).
    """
    qtype = kind % 3
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    d.ellipse((16, 38, 208, 194), fill=62)  # subcutaneous fat
    d.ellipse((27, 48, 197, 184), fill=104)  # muscle and viscera
    d.ellipse((36, 58, 122, 142), fill=132)  # liver
    d.ellipse((156, 66, 190, 118), fill=124)  # spleen
    d.ellipse((122, 60, 158, 98), fill=18)  # gas in the stomach
    d.ellipse(_box(122, 134, 7), fill=160)  # aorta
    d.ellipse(_box(101, 134, 6), fill=140)  # IVC
    d.ellipse(_box(112, 160, 15), fill=225)  # vertebral body
    d.ellipse(_box(112, 160, 9), fill=175)
    d.ellipse(_box(112, 180, 5), fill=40)  # spinal canal
    d.rectangle((108, 184, 116, 194), fill=215)

    small = -1
    if qtype == 2:
        small = int(rng.integers(2))
    for i, (kx, ky) in enumerate(_CT_KIDNEYS):
        scale = 0.6 if i == small else 1.0
        d.ellipse(_box(kx, ky, 14 * scale, 20 * scale), fill=150)
        d.ellipse(_box(kx + (4 if i == 0 else -4) * scale, ky, 5 * scale, 8 * scale), fill=95)  # renal sinus

    if qtype == 0:
        n = int(rng.integers(1, 5))

        def sample(g: np.random.Generator) -> Point:
            return float(g.integers(52, 108)), float(g.integers(70, 122))

        spots = _place(rng, n, sample, min_dist=22)
        for x, y in spots:
            r = float(rng.integers(5, 8))
            d.ellipse(_box(x, y, r), fill=66)
        question = "How many hypodense lesions are in the liver?"
        answer, alts = _count_answer(n, "lesion", "lesions")
    elif qtype == 1:
        image_left = bool(rng.integers(2))
        kx, ky = _CT_KIDNEYS[0 if image_left else 1]
        d.ellipse(_box(kx + float(rng.integers(-5, 6)), ky + float(rng.integers(-9, 10)), 4), fill=252)
        side = _patient_side(image_left)
        question = "Is the kidney stone in the left or the right kidney?"
        answer, alts = f"{side} kidney", (side, f"{side} side", f"The {side.lower()} kidney")
    else:
        side = _patient_side(small == 1)  # the larger kidney is the other one
        question = "Which kidney is larger, the left or the right?"
        answer, alts = f"{side} kidney", (side, f"The {side.lower()} kidney", f"{side} side")
    img = img.filter(ImageFilter.GaussianBlur(1.0))
    return _Drawn(_finish(img, rng, 7), question, answer, alts)


_BAR_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "Red": ((214, 48, 49), ()),
    "Blue": ((45, 98, 214), ()),
    "Green": ((38, 158, 72), ()),
    "Orange": ((242, 148, 28), ()),
    "Purple": ((136, 62, 172), ("Violet",)),
    "Grey": ((120, 120, 120), ("Gray",)),
}

# Plot area of the charts: x from 30 to 212, y from 16 (top) to 196 (baseline).
_PLOT = (30, 16, 212, 196)


def _axes(d: ImageDraw.ImageDraw) -> None:
    """Chart axes with tick marks and light horizontal grid lines."""
    x0, y0, x1, y1 = _PLOT
    for k in range(1, 5):
        y = y1 - k * (y1 - y0) / 4.5
        d.line((x0, y, x1, y), fill=(222, 222, 222), width=1)
        d.line((x0 - 4, y, x0, y), fill=(40, 40, 40), width=1)
    d.line((x0, y0, x0, y1), fill=(30, 30, 30), width=2)
    d.line((x0, y1, x1, y1), fill=(30, 30, 30), width=2)


def _render_graphics(rng: np.random.Generator, kind: int) -> _Drawn:
    """A figure from a paper: bar chart with a dashed threshold, coloured bars, or a line chart.

    Questions: how many bars exceed the dashed threshold line, what colour the tallest bar is,
    and whether the plotted line is rising or falling.
    """
    img = Image.new("RGB", (SIZE, SIZE), (252, 252, 250))
    d = ImageDraw.Draw(img)
    _axes(d)
    x0, y0, x1, y1 = _PLOT
    qtype = kind % 3
    if qtype in (0, 1):
        n = int(rng.integers(5, 8)) if qtype == 0 else int(rng.integers(4, 6))
        slot = (x1 - x0 - 8) / n
        top, base = y0 + 6, y1
        if qtype == 0:
            threshold = int(rng.integers(70, 130))
            above = int(rng.integers(1, n))
            flags = [True] * above + [False] * (n - above)
            rng.shuffle(flags)
            # Keep every bar at least 14 px from the line so none is ambiguous.
            heights_y = [
                int(rng.integers(top, threshold - 14)) if f else int(rng.integers(threshold + 14, base - 12))
                for f in flags
            ]
            colours = [(70, 110, 170)] * n
        else:
            names = [list(_BAR_COLOURS)[int(i)] for i in rng.permutation(len(_BAR_COLOURS))[:n]]
            tallest = int(rng.integers(n))
            tall_y = int(rng.integers(top, top + 30))
            heights_y = [tall_y if i == tallest else int(rng.integers(tall_y + 24, base - 14)) for i in range(n)]
            colours = [_BAR_COLOURS[name][0] for name in names]
        for i, (hy, colour) in enumerate(zip(heights_y, colours, strict=True)):
            bx = x0 + 8 + i * slot
            d.rectangle((bx + slot * 0.15, hy, bx + slot * 0.85, base - 1), fill=colour)
        if qtype == 0:
            for xs in range(x0, x1, 10):
                d.line((xs, threshold, min(xs + 6, x1), threshold), fill=(200, 30, 30), width=2)
            question = "How many bars exceed the dashed threshold line?"
            answer, alts = _count_answer(above, "bar", "bars")
        else:
            question = "What colour is the tallest bar?"
            name = names[tallest]
            answer, alts = name, _BAR_COLOURS[name][1]
    else:
        rising = bool(rng.integers(2))
        k = 8
        xs = np.linspace(x0 + 12, x1 - 10, k)
        start, end = (170.0, 45.0) if rising else (45.0, 170.0)
        ys = np.linspace(start, end, k) + rng.uniform(-12, 12, k)
        pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        d.line(pts, fill=(30, 90, 190), width=3, joint="curve")
        for x, y in pts:
            d.ellipse(_box(x, y, 3.5), fill=(30, 90, 190))
        question = "Is the plotted line rising or falling overall?"
        if rising:
            answer, alts = "Rising", ("Increasing", "Upward")
        else:
            answer, alts = "Falling", ("Decreasing", "Downward")
    return _Drawn(_finish(img, rng, 2), question, answer, alts)


def _branch_path(start: Point, angle_deg: float, length: float, n: int = 160) -> np.ndarray:
    """A gently curving vessel path leaving `start` downwards at angle_deg from vertical."""
    a = math.radians(angle_deg)
    mid = (start[0] + 0.5 * length * math.sin(a * 0.6), start[1] + 0.5 * length * math.cos(a * 0.6))
    end = (start[0] + length * math.sin(a), start[1] + length * math.cos(a))
    return _bezier(start, mid, end, np.linspace(0.0, 1.0, n))


def _render_angiography(rng: np.random.Generator, kind: int) -> _Drawn:
    """Digital subtraction angiogram: dark contrast-filled vessel tree on a grey background.

    Questions: how many branches arise from the main vessel, which branch (on the image) has
    the stenosis, and whether any branch is occluded.
    """
    img = Image.new("L", (SIZE, SIZE), 188)
    d = ImageDraw.Draw(img)
    vessel = 34
    fork = (112.0 + float(rng.integers(-8, 9)), float(rng.integers(56, 76)))
    trunk = _bezier((112.0, -4.0), (fork[0], fork[1] * 0.5), fork, np.linspace(0, 1, 80))
    _tube(d, trunk, np.full(len(trunk), 7.0), vessel)
    t = np.linspace(0.0, 1.0, 160)
    taper = 5.0 - 2.8 * t

    qtype = kind % 3
    if qtype == 0:
        n = int(rng.integers(2, 5))
        spread = 50.0
        angles = np.linspace(-spread, spread, n) + rng.uniform(-5, 5, n)
        for a in angles:
            path = _branch_path(fork, float(a), float(rng.integers(120, 150)))
            _tube(d, path, taper, vessel)
        question = "How many branches arise from the main vessel?"
        answer, alts = _count_answer(n, "branch", "branches")
    elif qtype == 1:
        left = bool(rng.integers(2))
        t0 = float(rng.uniform(0.3, 0.6))
        for a in (-float(rng.integers(32, 50)), float(rng.integers(32, 50))):
            path = _branch_path(fork, a, float(rng.integers(125, 150)))
            radii = taper.copy()
            # x grows with sin(a), so the branch with a < 0 is the one on the image's left.
            if (a < 0) == left:
                radii *= 1 - 0.8 * np.exp(-(((t - t0) / 0.035) ** 2))
            _tube(d, path, radii, vessel)
        side = "Left" if left else "Right"
        question = "On the image, is the stenosis in the left or the right branch?"
        answer, alts = f"{side} branch", (side, f"The {side.lower()} branch", f"{side} side")
    else:
        occluded = bool(rng.integers(2))
        which = int(rng.integers(3))
        for i, a in enumerate(np.linspace(-45.0, 45.0, 3) + rng.uniform(-5, 5, 3)):
            path = _branch_path(fork, float(a), float(rng.integers(125, 150)))
            if occluded and i == which:
                # An occlusion is an abrupt blunt cut-off where contrast stops.
                stop = int(len(path) * float(rng.uniform(0.3, 0.45)))
                _tube(d, path[:stop], taper[:stop], vessel)
            else:
                _tube(d, path, taper, vessel)
        question = "Is any branch occluded?"
        answer, alts = _yes_no(occluded, ("Yes, occluded", "Occlusion present"), ("No occlusion", "None"))
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    return _Drawn(_finish(img, rng, 8), question, answer, alts)


def _hot_lut() -> list[int]:
    """The 'hot' colour map (black -> red -> yellow -> white) as a PIL point() table."""
    v = np.arange(256)
    r = np.clip(3 * v, 0, 255)
    g = np.clip(3 * v - 255, 0, 255)
    b = np.clip(3 * v - 510, 0, 255)
    return [int(x) for x in np.concatenate([r, g, b])]


_HOT = _hot_lut()


def _render_pet_scan(rng: np.random.Generator, kind: int) -> _Drawn:
    """Whole-body PET (anterior MIP, hot colour map): dim body, hot brain and bladder, lesions.

    Questions: how many focal hot spots are in the torso (bladder excluded), on which side of
    the patient the hot spot is (image left = patient's right), and whether it is in the upper
    or lower half of the torso.
    """
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    body = 42
    d.ellipse((94, 6, 130, 46), fill=body)
    d.ellipse((98, 10, 126, 40), fill=185)  # brain: physiological uptake
    d.rectangle((104, 42, 120, 60), fill=body)
    d.rounded_rectangle((66, 56, 158, 202), radius=24, fill=body)
    d.rounded_rectangle((46, 62, 62, 172), radius=8, fill=body - 6)
    d.rounded_rectangle((162, 62, 178, 172), radius=8, fill=body - 6)
    d.rectangle((72, 196, 108, 224), fill=body)
    d.rectangle((116, 196, 152, 224), fill=body)
    d.ellipse((70, 118, 118, 152), fill=64)  # liver, mildly avid
    bladder = (112.0, 186.0)
    d.ellipse(_box(*bladder, 11, 8), fill=215)

    qtype = kind % 3
    if qtype == 0:
        n = int(rng.integers(1, 5))

        def sample(g: np.random.Generator) -> Point:
            return float(g.integers(76, 149)), float(g.integers(68, 166))

        spots = _place(rng, n, sample, min_dist=24, avoid=[bladder], avoid_dist=28)
        question = "How many focal hot spots are in the torso, not counting the bladder?"
        answer, alts = _count_answer(n, "hot spot", "hot spots")
    elif qtype == 1:
        image_left = bool(rng.integers(2))
        x = float(rng.integers(78, 94)) if image_left else float(rng.integers(130, 147))
        spots = [(x, float(rng.integers(70, 160)))]
        side = _patient_side(image_left)
        question = "On this anterior view, is the hot spot on the patient's left or right side?"
        answer, alts = f"{side} side", (side, f"Patient's {side.lower()}", f"The {side.lower()} side")
    else:
        upper = bool(rng.integers(2))
        y = float(rng.integers(70, 108)) if upper else float(rng.integers(148, 166))
        spots = [(float(rng.integers(80, 145)), y)]
        half = "Upper" if upper else "Lower"
        question = "Is the hot spot in the upper or the lower half of the torso?"
        answer, alts = f"{half} half", (half, f"{half} torso", f"{half} half of the torso")
    for x, y in spots:
        r = float(rng.integers(5, 8))
        d.ellipse(_box(x, y, r), fill=255)
    img = img.filter(ImageFilter.GaussianBlur(2.5))
    # The grain goes on before the colour map, like counting noise in the measured activity.
    return _Drawn(_finish(img, rng, 6).point(_HOT), question, answer, alts)


_US_APEX = (112.0, 6.0)
_US_HALF_ANGLE = 0.62


def _us_polar() -> tuple[np.ndarray, np.ndarray]:
    dx, dy = _XX - _US_APEX[0], _YY - _US_APEX[1]
    return np.hypot(dx, dy), np.arctan2(dx, dy)


def _us_point(depth: float, theta: float) -> Point:
    return _US_APEX[0] + depth * math.sin(theta), _US_APEX[1] + depth * math.cos(theta)


def _render_ultrasound(rng: np.random.Generator, kind: int) -> _Drawn:
    """B-mode ultrasound: fan-shaped speckle image with cysts or a solid mass.

    Cysts are anechoic (black) with posterior enhancement; a solid mass has an echogenic rim
    around a darker speckled interior and casts a posterior shadow. Questions: whether the lesion is cystic or
    solid, how many cysts there are, and which of two cysts is larger (as seen on the image).
    """
    radius, theta = _us_polar()
    fan = (radius >= 14) & (radius <= 212) & (np.abs(theta) <= _US_HALF_ANGLE)
    speckle = rng.rayleigh(1.0, (112, 112))
    speckle_img = _gray(speckle * 60)
    tissue = _as_array(speckle_img.resize((SIZE, SIZE), Image.Resampling.BILINEAR)).astype(np.float64)
    gain = 1.15 - 0.45 * (radius / 212)  # depth attenuation, partly compensated
    tissue *= gain
    tissue += 40 * np.exp(-(((radius - 30) / 4) ** 2))  # bright subcutaneous interface

    # Lesions as (depth, theta, r, cystic) in fan coordinates.
    lesions: list[tuple[float, float, float, bool]] = []
    qtype = kind % 3
    if qtype == 0:
        cystic = bool(rng.integers(2))
        depth, th = float(rng.integers(70, 150)), float(rng.uniform(-0.3, 0.3))
        lesions.append((depth, th, float(rng.integers(15, 22)), cystic))
        question = "Is the lesion cystic or solid?"
        if cystic:
            answer, alts = "Cystic", ("Cyst", "Cystic lesion", "Anechoic cyst")
        else:
            answer, alts = "Solid", ("Solid mass", "Solid lesion")
    elif qtype == 1:
        n = int(rng.integers(1, 4))

        def sample(g: np.random.Generator) -> Point:
            return _us_point(float(g.integers(60, 170)), float(g.uniform(-0.38, 0.38)))

        for x, y in _place(rng, n, sample, min_dist=40):
            dx, dy = x - _US_APEX[0], y - _US_APEX[1]
            lesions.append((math.hypot(dx, dy), math.atan2(dx, dy), float(rng.integers(11, 16)), True))
        question = "How many cysts are visible?"
        answer, alts = _count_answer(n, "cyst", "cysts")
    else:
        left_larger = bool(rng.integers(2))
        depth = float(rng.integers(90, 150))
        small = float(rng.integers(9, 12))
        for th, larger in ((-0.3, left_larger), (0.3, not left_larger)):
            # theta < 0 lies on the image's left (x = apex + depth * sin(theta)).
            lesions.append((depth, th, small * 1.75 if larger else small, True))
        side = "Left" if left_larger else "Right"
        question = "On the image, which cyst is larger, the left or the right one?"
        answer, alts = f"{side} cyst", (side, f"The {side.lower()} one", f"The {side.lower()} cyst")

    for depth, th, r, cystic in lesions:
        cx, cy = _us_point(depth, th)
        dist = np.hypot(_XX - cx, _YY - cy)
        # The tissue straight behind the lesion along the beam: enhanced or shadowed.
        behind = (np.abs(theta - th) * radius <= r * 0.8) & (radius > depth + 0.5 * r)
        if cystic:
            tissue = np.where(behind, tissue * 1.4, tissue)
            tissue = np.where(dist <= r, 6.0, tissue)
        else:
            # Solid: echogenic rim around a darker, still speckled interior, then a shadow.
            tissue = np.where(behind & (dist > r + 3), tissue * 0.5, tissue)
            tissue = np.where((dist > r) & (dist <= r + 3), tissue * 1.5 + 40, tissue)
            tissue = np.where(dist <= r, tissue * 0.45 + 25, tissue)
    tissue = np.where(fan, tissue, 0.0)
    img = _gray(tissue)
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    return _Drawn(img.convert("RGB"), question, answer, alts)


def _render_mri_scan(rng: np.random.Generator, kind: int) -> _Drawn:
    """Axial FLAIR-like brain MRI: bright scalp, grey brain, dark ventricles, bright lesions.

    Questions: in which hemisphere the lesion is (patient's side; image left = patient's right),
    how many lesions there are, and whether the lesion is in the anterior (top) or posterior half.
    """
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    d.ellipse((38, 16, 186, 208), fill=168)  # scalp fat
    d.ellipse((44, 22, 180, 202), fill=22)  # skull
    d.ellipse((50, 28, 174, 196), fill=112)  # cortex
    d.ellipse((64, 46, 160, 178), fill=94)  # white matter
    d.line((112, 28, 112, 62), fill=30, width=3)  # interhemispheric fissure
    d.line((112, 162, 112, 196), fill=30, width=3)
    for sign in (-1, 1):
        d.ellipse(_box(112 + sign * 12, 104, 10, 26), fill=26)  # lateral ventricles

    qtype = kind % 3
    if qtype == 0:
        image_left = bool(rng.integers(2))
        cx = float(rng.integers(68, 92)) if image_left else float(rng.integers(132, 156))
        spots = [(cx, float(rng.integers(56, 168)))]
        side = _patient_side(image_left)
        question = "Is the bright lesion in the left or the right hemisphere?"
        answer, alts = f"{side} hemisphere", (side, f"{side} side", f"The {side.lower()} hemisphere")
    elif qtype == 1:
        n = int(rng.integers(1, 5))

        def sample(g: np.random.Generator) -> Point:
            side = int(g.integers(2))
            x = float(g.integers(66, 94)) if side == 0 else float(g.integers(130, 158))
            return x, float(g.integers(50, 174))

        spots = _place(rng, n, sample, min_dist=26)
        question = "How many bright lesions are visible?"
        answer, alts = _count_answer(n, "lesion", "lesions")
    else:
        anterior = bool(rng.integers(2))
        y = float(rng.integers(48, 80)) if anterior else float(rng.integers(140, 172))
        spots = [(float(rng.integers(70, 155)), y)]
        half = "Anterior" if anterior else "Posterior"
        question = "Is the lesion in the anterior or the posterior half of the brain?"
        front = "Front" if anterior else "Back"
        answer, alts = f"{half} half", (half, front, f"{half} part")
    for x, y in spots:
        r = float(rng.integers(7, 12))
        d.ellipse(_box(x, y, r, r * 0.85), fill=238)
    img = img.filter(ImageFilter.GaussianBlur(1.3))
    return _Drawn(_finish(img, rng, 7), question, answer, alts)


def _render_fundus_photography(rng: np.random.Generator, kind: int) -> _Drawn:
    """Colour fundus photo: orange retina disc, yellow optic disc, vessel arcades, macula.

    Questions: on which side of the image the optic disc is, how many haemorrhages there are,
    and whether hard exudates are present.
    """
    disc_right = bool(rng.integers(2))
    sign = 1 if disc_right else -1
    disc = (112.0 + sign * float(rng.integers(46, 58)), 112.0 + float(rng.integers(-8, 9)))
    macula = (112.0 - sign * 10, 114.0)
    rr = np.hypot(_XX - 112, _YY - 112)
    shade = np.clip(1 - 0.45 * (rr / 100) ** 2, 0, 1)
    arr = np.empty((SIZE, SIZE, 3), dtype=np.float64)
    arr[:] = (208, 96, 46)
    arr *= shade[:, :, None]
    macula_dark = 0.25 * np.exp(-(((_XX - macula[0]) ** 2 + (_YY - macula[1]) ** 2) / (2 * 14**2)))
    arr *= (1 - macula_dark)[:, :, None]
    img = _to_image(arr)
    d = ImageDraw.Draw(img)

    t = np.linspace(0, 1, 120)
    for vy in (-1, 1):
        # Temporal arcades curve around the macula; nasal vessels head for the rim.
        dx, dy = disc
        temporal = _bezier(disc, (dx - sign * 40, dy + vy * 55), (dx - sign * 125, dy + vy * 40), t)
        nasal = _bezier(disc, (dx + sign * 22, dy + vy * 30), (dx + sign * 40, dy + vy * 80), t)
        for path in (temporal, nasal):
            _tube(d, path, 2.6 - 1.4 * t, (150, 36, 26))
    d.ellipse(_box(*disc, 15), fill=(250, 222, 150))
    d.ellipse(_box(disc[0] + sign * 2, disc[1], 7), fill=(255, 240, 196))  # optic cup

    qtype = kind % 3
    if qtype == 0:
        side = "Right" if disc_right else "Left"
        question = "Is the optic disc on the left or the right side of the image?"
        answer, alts = f"{side} side", (side, f"On the {side.lower()}", f"{side} of the image")
    elif qtype == 1:
        n = int(rng.integers(1, 6))

        def sample(g: np.random.Generator) -> Point:
            ang, dist = float(g.uniform(0, 2 * math.pi)), float(g.uniform(15, 78))
            return 112 + dist * math.cos(ang), 112 + dist * math.sin(ang)

        for x, y in _place(rng, n, sample, min_dist=26, avoid=[disc], avoid_dist=32):
            rx, ry = rng.uniform(4.5, 7.5, size=2)
            d.ellipse(_box(x, y, float(rx), float(ry)), fill=(112, 14, 10))
        question = "How many haemorrhages are visible?"
        answer, alts = _count_answer(n, "haemorrhage", "haemorrhages")
        alts = (*alts, _count_answer(n, "hemorrhage", "hemorrhages")[0])
    else:
        present = bool(rng.integers(2))
        if present:
            cx, cy = macula[0] + float(rng.integers(-12, 13)), macula[1] + float(rng.integers(-30, 31))
            for _ in range(int(rng.integers(7, 13))):
                x, y = cx + float(rng.normal(0, 10)), cy + float(rng.normal(0, 8))
                d.ellipse(_box(x, y, float(rng.uniform(1.8, 3.2))), fill=(246, 222, 84))
        question = "Are hard exudates present?"
        answer, alts = _yes_no(present, ("Present", "Exudates present"), ("Absent", "None", "No exudates"))
    img = img.filter(ImageFilter.GaussianBlur(0.9))
    arr8 = _as_array(_finish(img, rng, 4))
    arr8[rr > 100] = 0  # the camera's circular field stop
    return _Drawn(_to_image(arr8), question, answer, alts)


def _render_oct_scan(rng: np.random.Generator, kind: int) -> _Drawn:
    """OCT B-scan through the macula: layered retinal bands, foveal pit, bright RPE line.

    Fluid pockets are dark, rounded spaces inside the retina. Questions: whether a fluid pocket
    is present, on which side of the foveal pit (on the image) it lies, and how many there are.
    """
    fovea_x = 112.0 + float(rng.integers(-10, 11))
    x = np.arange(SIZE, dtype=np.float64)
    pit = np.exp(-(((x - fovea_x) / 20) ** 2))
    rpe = 150 + 0.0006 * (x - 112) ** 2  # slight curvature of the eye wall
    inner_t = 44 * (1 - 0.85 * pit)  # inner retina thins out at the pit
    outer_t = 30.0
    top = rpe - outer_t - inner_t
    depth = _YY - top[None, :]
    frac = depth / inner_t[None, :]
    img = np.zeros((SIZE, SIZE), dtype=np.float64) + 8
    inner_bands = ((0.0, 0.2, 170), (0.2, 0.42, 108), (0.42, 0.62, 140), (0.62, 0.8, 62), (0.8, 1.0, 128))
    for lo, hi, v in inner_bands:
        img[(frac >= lo) & (frac < hi)] = v
    below = _YY - (rpe - outer_t)[None, :]
    img[(below >= 0) & (below < 22)] = 50  # outer nuclear layer
    img[(below >= 22) & (below < 26)] = 118  # ellipsoid zone
    img[(below >= 26) & (below < 30)] = 80
    rpe_d = _YY - rpe[None, :]
    img[(rpe_d >= 0) & (rpe_d < 7)] = 236
    choroid = (rpe_d >= 7) & (rpe_d < 46)
    img[choroid] = (120 - 2.2 * rpe_d)[choroid]

    def pocket_y(px: float) -> float:
        # The middle of the retina at column px, where intraretinal fluid collects.
        i = int(round(px))
        return float((top[i] + rpe[i] - 10) / 2)

    qtype = kind % 3
    slots_left = [fovea_x - 72, fovea_x - 40]
    slots_right = [fovea_x + 40, fovea_x + 72]
    if qtype == 0:
        present = bool(rng.integers(2))
        xs = [float(rng.choice(slots_left + slots_right))] if present else []
        question = "Is there a fluid pocket within the retina?"
        answer, alts = _yes_no(present, ("Fluid present", "Yes, fluid"), ("No fluid", "Absent", "Dry"))
    elif qtype == 1:
        left = bool(rng.integers(2))
        xs = [float(rng.choice(slots_left if left else slots_right))]
        side = "Left" if left else "Right"
        question = "On the image, is the fluid pocket to the left or the right of the foveal pit?"
        answer, alts = f"{side} of the fovea", (side, f"{side} side", f"To the {side.lower()}")
    else:
        n = int(rng.integers(1, 4))
        xs = [float(v) for v in rng.choice(slots_left + slots_right, size=n, replace=False)]
        question = "How many fluid pockets are in the retina?"
        answer, alts = _count_answer(n, "pocket", "pockets")
        alts = (*alts, _count_answer(n, "fluid pocket", "fluid pockets")[0])
    for px in xs:
        px += float(rng.integers(-4, 5))
        rx, ry = float(rng.integers(10, 14)), float(rng.integers(8, 11))
        inside = ((_XX - px) / rx) ** 2 + ((_YY - pocket_y(px)) / ry) ** 2 <= 1
        img[inside] = 4
    out = _gray(img)
    out = out.filter(ImageFilter.GaussianBlur(1.0))
    return _Drawn(_finish(out, rng, 8, cells=64), question, answer, alts)


def _render_endoscopy(rng: np.random.Generator, kind: int) -> _Drawn:
    """Colonoscopy frame: pink mucosa with folds around a dark lumen, polyps or bleeding.

    Questions: how many polyps there are, whether the polyp is in the upper or lower half of the
    image, and whether there is active bleeding.
    """
    lumen = (112.0 + float(rng.integers(-12, 13)), 112.0 + float(rng.integers(-12, 13)))
    dist = np.hypot(_XX - lumen[0], _YY - lumen[1])
    light = np.clip(dist / 85, 0.12, 1.0)
    folds = 1 - 0.1 * (np.sin(dist / 7.5) > 0.6)
    arr = np.empty((SIZE, SIZE, 3), dtype=np.float64)
    arr[:] = (226, 128, 116)
    arr *= (light * folds)[:, :, None]
    img = _to_image(arr)
    d = ImageDraw.Draw(img)

    def sample(g: np.random.Generator) -> Point:
        ang, r = float(g.uniform(0, 2 * math.pi)), float(g.uniform(48, 88))
        return lumen[0] + r * math.cos(ang), lumen[1] + r * math.sin(ang)

    def polyp(cx: float, cy: float) -> None:
        r = float(rng.integers(11, 16))
        d.ellipse(_box(cx + 2, cy + 3, r), fill=(120, 50, 45))  # shadow below the bump
        d.ellipse(_box(cx, cy, r), fill=(206, 86, 80))
        d.ellipse(_box(cx - r * 0.35, cy - r * 0.35, r * 0.3, r * 0.22), fill=(250, 214, 204))

    qtype = kind % 3
    if qtype == 0:
        n = int(rng.integers(1, 4))
        for cx, cy in _place(rng, n, sample, min_dist=38):
            polyp(cx, cy)
        question = "How many polyps are visible?"
        answer, alts = _count_answer(n, "polyp", "polyps")
    elif qtype == 1:
        upper = bool(rng.integers(2))
        # Keep clear of the midline so "upper" and "lower" are never borderline.
        polyp(*_sample_where(rng, sample, lambda p: p[1] < 92 if upper else p[1] > 132))
        half = "Upper" if upper else "Lower"
        question = "Is the polyp in the upper or the lower half of the image?"
        answer, alts = f"{half} half", (half, f"{half} part", f"The {half.lower()} half")
    else:
        bleeding = bool(rng.integers(2))
        if bleeding:
            cx, cy = sample(rng)
            for _ in range(int(rng.integers(4, 7))):
                ox, oy = rng.normal(0, 6, size=2)
                d.ellipse(_box(cx + float(ox), cy + float(oy), float(rng.uniform(5, 9))), fill=(124, 6, 12))
            # A trickle running from the pool towards the lumen.
            tx, ty = cx + (lumen[0] - cx) * 0.5, cy + (lumen[1] - cy) * 0.5
            d.line((cx, cy, tx, ty), fill=(124, 6, 12), width=5)
        question = "Is there active bleeding?"
        answer, alts = _yes_no(bleeding, ("Bleeding present", "Yes, bleeding"), ("No bleeding", "Absent"))
    for _ in range(int(rng.integers(3, 6))):  # specular glints from the scope light
        gx, gy = sample(rng)
        d.ellipse(_box(gx, gy, 1.6, 1.1), fill=(255, 250, 246))
    img = img.filter(ImageFilter.GaussianBlur(1.0))
    arr8 = _as_array(_finish(img, rng, 4))
    arr8[np.hypot(_XX - 112, _YY - 112) > 106] = 0  # circular endoscope field
    return _Drawn(_to_image(arr8), question, answer, alts)


def _render_mammography(rng: np.random.Generator, kind: int) -> _Drawn:
    """MLO mammogram: breast outline from the chest wall, pectoral muscle, fibroglandular texture.

    Questions: whether the mass is round or spiculated, whether microcalcifications are present,
    and whether the mass is in the upper or lower half of the breast.
    """
    cy = 112.0 + float(rng.integers(-6, 7))
    rx, ry = 176.0, 102.0
    breast = (_XX / rx) ** 2 + ((_YY - cy) / ry) ** 2 <= 1
    texture = _grain(rng, 28, cells=18).astype(np.float64)
    density = 70 + 55 * np.clip(1 - _XX / rx, 0, 1) + texture
    arr = np.where(breast, density, 0.0)
    pectoral = _XX < 62 * (1 - _YY / 104)
    arr = np.where(pectoral & breast, 158.0, arr)
    # Blur before drawing findings: soft parenchyma, but crisp masses and calcifications.
    img = _gray(arr).filter(ImageFilter.GaussianBlur(2.5))
    d = ImageDraw.Draw(img)

    def draw_mass(mx: float, my: float, spiculated: bool) -> None:
        if spiculated:
            r = float(rng.integers(9, 12))
            for a in np.linspace(0, 2 * math.pi, int(rng.integers(11, 15)), endpoint=False):
                a += float(rng.uniform(-0.15, 0.15))
                length = r + float(rng.integers(9, 17))
                d.line((mx, my, mx + length * math.cos(a), my + length * math.sin(a)), fill=205, width=2)
            d.ellipse(_box(mx, my, r), fill=215)
        else:
            r = float(rng.integers(11, 16))
            d.ellipse(_box(mx, my, r, r * float(rng.uniform(0.85, 1.0))), fill=215)

    qtype = kind % 3
    if qtype == 0:
        spiculated = bool(rng.integers(2))
        draw_mass(float(rng.integers(70, 120)), cy + float(rng.integers(-40, 41)), spiculated)
        question = "Is the mass round or spiculated?"
        if spiculated:
            answer, alts = "Spiculated", ("Spiculated mass", "Stellate")
        else:
            answer, alts = "Round", ("Round mass", "Circumscribed", "Oval")
    elif qtype == 1:
        present = bool(rng.integers(2))
        if present:
            ccx, ccy = float(rng.integers(70, 125)), cy + float(rng.integers(-40, 41))
            for _ in range(int(rng.integers(7, 13))):
                x, y = ccx + float(rng.normal(0, 6)), ccy + float(rng.normal(0, 6))
                d.ellipse(_box(x, y, float(rng.uniform(1.2, 1.9))), fill=255)
        question = "Are microcalcifications present?"
        answer, alts = _yes_no(present, ("Present", "Calcifications present"), ("Absent", "None"))
    else:
        upper = bool(rng.integers(2))
        my = cy - float(rng.integers(24, 56)) if upper else cy + float(rng.integers(24, 56))
        draw_mass(float(rng.integers(70, 115)), my, False)
        half = "Upper" if upper else "Lower"
        question = "Is the mass in the upper or the lower half of the breast?"
        answer, alts = f"{half} half", (half, f"{half} breast", f"The {half.lower()} half")
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    if rng.integers(2):
        # Either breast: mirroring swaps the chest wall side and leaves every answer unchanged.
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _Drawn(_finish(img, rng, 3), question, answer, alts)


def _render_fluoroscopy(rng: np.random.Generator, kind: int) -> _Drawn:
    """Barium swallow: bright contrast-filled oesophagus inside a round image-intensifier field.

    Questions: whether there is a stricture, whether the stricture is in the upper or lower
    half of the oesophagus, and how many diverticula arise from the contrast column.
    """
    y = np.arange(SIZE, dtype=np.float64)
    phase = float(rng.uniform(0, 2 * math.pi))
    centre = 100 + 6 * np.sin(y / 30 + phase)
    half_w = 10 + 2 * np.sin(y / 17 + phase)
    arr = np.full((SIZE, SIZE), 118.0) - 0.12 * np.abs(_XX - 112)
    for vy in range(6, SIZE, 24):  # faint vertebral bodies behind
        arr[vy : vy + 18, 118:148] += 22

    qtype = kind % 3
    stricture_y: float | None = None
    pouches: list[tuple[float, float, float]] = []
    if qtype == 0:
        present = bool(rng.integers(2))
        if present:
            stricture_y = float(rng.integers(50, 175))
        question = "Is there a stricture of the oesophagus?"
        answer, alts = _yes_no(present, ("Stricture present", "Yes, stricture"), ("No stricture", "Absent"))
    elif qtype == 1:
        upper = bool(rng.integers(2))
        stricture_y = float(rng.integers(42, 88)) if upper else float(rng.integers(136, 182))
        half = "Upper" if upper else "Lower"
        question = "Is the stricture in the upper or the lower half of the oesophagus?"
        answer, alts = f"{half} half", (half, f"{half} oesophagus", f"The {half.lower()} half")
    else:
        n = int(rng.integers(1, 4))
        ys = _place(rng, n, lambda g: (0.0, float(g.integers(36, 190))), min_dist=42)
        for _, py in ys:
            side = 1 if rng.integers(2) else -1
            r = float(rng.integers(8, 12))
            i = int(py)
            pouches.append((centre[i] + side * (half_w[i] + r - 3), py, r))
        question = "How many diverticula arise from the contrast column?"
        answer, alts = _count_answer(n, "diverticulum", "diverticula")
    if stricture_y is not None:
        half_w = half_w * (1 - 0.72 * np.exp(-(((y - stricture_y) / 6) ** 2)))
    column = np.abs(_XX - centre[:, None]) <= half_w[:, None]
    arr = np.where(column, 232.0, arr)
    for px, py, r in pouches:
        arr = np.where((_XX - px) ** 2 + (_YY - py) ** 2 <= r * r, 232.0, arr)
    img = _gray(arr)
    img = img.filter(ImageFilter.GaussianBlur(1.4))
    arr8 = _as_array(_finish(img, rng, 7))
    arr8[np.hypot(_XX - 112, _YY - 112) > 110] = 0
    return _Drawn(_to_image(arr8), question, answer, alts)


_ECG_BASELINE = 132


def _ecg_trace(beats: Sequence[float], amplitude: float) -> np.ndarray:
    """Trace height (pixels above baseline) at every column: P, QRS and T waves per beat."""
    x = np.arange(SIZE, dtype=np.float64)
    h = np.zeros(SIZE)
    for b in beats:
        h += 6 * np.exp(-(((x - (b - 11)) / 2.6) ** 2))  # P wave
        h -= 5 * np.exp(-(((x - (b - 2.5)) / 1.0) ** 2))  # Q
        h += amplitude * np.exp(-(((x - b) / 1.3) ** 2))  # R
        h -= 12 * np.exp(-(((x - (b + 2.8)) / 1.2) ** 2))  # S
        h += 10 * np.exp(-(((x - (b + 14)) / 3.6) ** 2))  # T wave
    return h


def _render_other(rng: np.random.Generator, kind: int) -> _Drawn:
    """A rhythm strip on pink ECG paper (a stand-in for 'other' medical images).

    Questions: how many heartbeats (QRS complexes) are on the strip, and whether the rhythm is
    regular or irregular.
    """
    img = Image.new("RGB", (SIZE, SIZE), (255, 238, 238))
    d = ImageDraw.Draw(img)
    for g in range(0, SIZE, 8):
        colour = (236, 150, 150) if g % 40 == 0 else (247, 200, 200)
        d.line((g, 0, g, SIZE), fill=colour, width=1)
        d.line((0, g, SIZE, g), fill=colour, width=1)

    qtype = kind % 2
    if qtype == 0:
        n = int(rng.integers(3, 8))
        rr = 190 / n
        first = 22 + float(rng.uniform(0, rr - 14))
        beats = [first + i * rr + float(rng.uniform(-2, 2)) for i in range(n)]
        question = "How many heartbeats are shown on the strip?"
        answer, alts = _count_answer(n, "beat", "beats")
        alts = (
            *alts,
            _count_answer(n, "QRS complex", "QRS complexes")[0],
            _count_answer(n, "heartbeat", "heartbeats")[0],
        )
    else:
        regular = bool(rng.integers(2))
        n = int(rng.integers(5, 8))
        if regular:
            gaps = np.full(n - 1, 1.0)
        else:
            # Half short, half long RR intervals in random order: obviously irregular, not subtle.
            gaps = np.where(np.arange(n - 1) % 2 == 0, 0.6, 1.4) * rng.uniform(0.9, 1.1, n - 1)
            rng.shuffle(gaps)
        gaps = gaps / gaps.sum() * 170
        start = 24 + float(rng.uniform(0, 14))
        beats = [start] + list(start + np.cumsum(gaps))
        question = "Is the rhythm regular or irregular?"
        if regular:
            answer, alts = "Regular", ("Regular rhythm",)
        else:
            answer, alts = "Irregular", ("Irregular rhythm", "Irregularly irregular")
    h = _ecg_trace(beats, float(rng.uniform(52, 64)))
    pts = [(float(x), float(_ECG_BASELINE - v)) for x, v in enumerate(h)]
    d.line(pts, fill=(20, 20, 28), width=2, joint="curve")
    return _Drawn(_finish(img, rng, 2), question, answer, alts)


def _bone_segments() -> dict[str, list[tuple[Point, Point, float]]]:
    """Cartoon skeleton (anterior view) as line segments (start, end, width), grouped by bone."""
    segs: dict[str, list[tuple[Point, Point, float]]] = {
        "spine": [((112, 44), (112, 140), 9)],
        "ribs": [],
        "humerus": [((78, 48), (66, 112), 6), ((146, 48), (158, 112), 6)],
        "forearm": [((66, 112), (60, 162), 4), ((158, 112), (164, 162), 4)],
        "femur": [((98, 164), (94, 222), 7), ((126, 164), (130, 222), 7)],
        "clavicle": [((112, 46), (80, 44), 4), ((112, 46), (144, 44), 4)],
    }
    for i in range(7):
        yy = 56 + 10 * i
        for sign in (-1, 1):
            segs["ribs"].append(((112 + sign * 6, yy), (112 + sign * 42, yy + 12), 3))
    return segs


_BONES = _bone_segments()
_PELVIS = (112.0, 150.0, 28.0, 16.0)  # ellipse outline: cx, cy, rx, ry


def _bone_point(rng: np.random.Generator, bone: str, side: int | None = None) -> Point:
    """A random point on a bone; side -1/+1 restricts paired bones to the image left/right."""
    if bone == "pelvis":
        cx, cy, rx, ry = _PELVIS

        def on_rim(g: np.random.Generator) -> Point:
            a = float(g.uniform(0, 2 * math.pi))
            return cx + rx * math.cos(a), cy + ry * math.sin(a)

        return _sample_where(rng, on_rim, lambda p: side is None or (p[0] - 112) * side >= 20)
    segs = [s for s in _BONES[bone] if side is None or (s[1][0] - 112) * side > 0]
    (x0, y0), (x1, y1), _ = segs[int(rng.integers(len(segs)))]
    t = float(rng.uniform(0.45, 1.0)) if bone == "ribs" else float(rng.uniform(0.1, 0.9))
    return x0 + t * (x1 - x0), y0 + t * (y1 - y0)


def _render_spect(rng: np.random.Generator, kind: int) -> _Drawn:
    """Whole-body bone scintigraphy (anterior view, inverted grey): skeleton with hot spots.

    Questions: how many focal hot spots there are, on which side of the patient the hot spot is
    (anterior view: image left = patient's right), and whether it is in the ribs or the pelvis.
    """
    uptake = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(uptake)
    d.ellipse((96, 4, 128, 42), outline=95, width=6)  # skull
    for segs in _BONES.values():
        for p0, p1, w in segs:
            d.line((*p0, *p1), fill=95, width=int(w))
    cx, cy, rx, ry = _PELVIS
    d.ellipse(_box(cx, cy, rx, ry), outline=95, width=6)

    qtype = kind % 3
    if qtype == 0:
        n = int(rng.integers(1, 6))
        bones = ["spine", "ribs", "humerus", "femur", "pelvis"]
        spots = _place(rng, n, lambda g: _bone_point(g, bones[int(g.integers(len(bones)))]), min_dist=20)
        question = "How many focal hot spots are visible on the skeleton?"
        answer, alts = _count_answer(n, "hot spot", "hot spots")
    elif qtype == 1:
        image_left = bool(rng.integers(2))
        bone = ["ribs", "humerus", "femur", "pelvis"][int(rng.integers(4))]
        spots = [_bone_point(rng, bone, -1 if image_left else 1)]
        side = _patient_side(image_left)
        question = "On this anterior view, is the hot spot on the patient's left or right side?"
        answer, alts = f"{side} side", (side, f"Patient's {side.lower()}", f"The {side.lower()} side")
    else:
        bone = "ribs" if rng.integers(2) else "pelvis"
        spots = [_bone_point(rng, bone)]
        question = "Is the hot spot in the ribs or in the pelvis?"
        if bone == "ribs":
            answer, alts = "Ribs", ("Rib", "In the ribs", "Rib cage")
        else:
            answer, alts = "Pelvis", ("Pelvic bone", "In the pelvis")
    for x, y in spots:
        d.ellipse(_box(x, y, 5.5), fill=235)
    uptake = uptake.filter(ImageFilter.GaussianBlur(1.8))
    display = 248 - _as_array(uptake)  # bone scans are shown as dark uptake on white
    return _Drawn(_finish(_gray(display), rng, 6), question, answer, alts)


# Modality name -> renderer, in the tag order of medix_ray.data.modality.MODALITY_TAGS.
RENDERERS: dict[str, Renderer] = {
    "X_RAY": _render_x_ray,
    "MICROSCOPY": _render_microscopy,
    "CLINICAL_PHOTOGRAPHY": _render_clinical_photography,
    "CT_SCAN": _render_ct_scan,
    "GRAPHICS": _render_graphics,
    "ANGIOGRAPHY": _render_angiography,
    "PET_SCAN": _render_pet_scan,
    "ULTRASOUND": _render_ultrasound,
    "MRI_SCAN": _render_mri_scan,
    "FUNDUS_PHOTOGRAPHY": _render_fundus_photography,
    "OCT_SCAN": _render_oct_scan,
    "ENDOSCOPY": _render_endoscopy,
    "MAMMOGRAPHY": _render_mammography,
    "FLUOROSCOPY": _render_fluoroscopy,
    "OTHER": _render_other,
    "SPECT": _render_spect,
}


def generate_items(per_modality: int = 10, seed: int = 0) -> list[SyntheticImageItem]:
    """Returns per_modality items for each of the 16 modalities, in a fixed order; same args ->
    byte-identical PNGs.

    Byte identity holds within one environment: the encoded bytes also depend on the zlib that
    Pillow links, and numpy's vectorised exp/sin may round differently on other CPUs.

    Items come grouped by modality (in RENDERERS order) and by index within a modality. Question
    types rotate with the index, so any per_modality >= the number of types covers them all;
    the drawn content (and hence the answer) comes from the item's own seeded RNG.
    """
    if per_modality < 0:
        raise ValueError("per_modality must be non-negative")
    items: list[SyntheticImageItem] = []
    for modality, render in RENDERERS.items():
        for index in range(per_modality):
            rng = np.random.default_rng(_derive_seed(seed, modality, index))
            drawn = render(rng, index)
            items.append(
                SyntheticImageItem(
                    id=f"img_{modality.lower()}_{index:03d}",
                    modality=modality,
                    question=drawn.question,
                    answer=drawn.answer,
                    alt_answers=drawn.alt_answers,
                    png=_encode_png(drawn.image),
                )
            )
    return items
