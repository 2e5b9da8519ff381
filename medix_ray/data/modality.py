"""The image-modality tags of MediX-R1: the one place that names them.

The policy opens every answer with exactly one of these tags, and each sample's `solution`
starts with the tag of its image (`<X_RAY> Right lower lobe pneumonia`).
"""

from __future__ import annotations

# The 16 tags in the reference's order (docs/method.md §1.3).
MODALITY_TAGS: tuple[str, ...] = (
    "X_RAY",
    "MICROSCOPY",
    "CLINICAL_PHOTOGRAPHY",
    "CT_SCAN",
    "GRAPHICS",
    "ANGIOGRAPHY",
    "PET_SCAN",
    "ULTRASOUND",
    "MRI_SCAN",
    "FUNDUS_PHOTOGRAPHY",
    "OCT_SCAN",
    "ENDOSCOPY",
    "MAMMOGRAPHY",
    "FLUOROSCOPY",
    "OTHER",
    "SPECT",
)

# Samples without an image carry this tag, the reference's catch-all.
TEXT_ONLY_TAG = "OTHER"


def tag_token(name: str) -> str:
    """Returns the tag as it appears in text: `X_RAY` -> `<X_RAY>`."""
    return f"<{name}>"
