import importlib.util
from pathlib import Path

from medix_ray.setup_env import _MARKER, guard_registrations

SOURCE = """import torch
import torchvision

@torch.library.register_fake("torchvision::roi_align")
def meta_roi_align(x):
    return x

@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    return dets

@torch.library.register_fake("torchvision::qnms")
def meta_qnms(dets, scores, iou_threshold):
    return dets
"""


def test_only_nms_and_qnms_are_guarded():
    patched, count = guard_registrations(SOURCE)
    assert count == 2
    assert patched.startswith(_MARKER)
    assert '@torch.library.register_fake("torchvision::roi_align")' in patched
    assert (
        '@(torch.library.register_fake("torchvision::nms") if torchvision.extension._has_ops() else (lambda f: f))'
        in patched
    )
    compile(patched, "meta", "exec")  # still valid Python


def test_guarding_twice_changes_nothing():
    patched, _ = guard_registrations(SOURCE)
    again, count = guard_registrations(patched)
    assert count == 0 and again == patched


def test_installed_torchvision_imports_with_transformers_vision_classes():
    # The install must have left a torchvision that imports next to CPU torch (the trap in docs/cpu_notes.md §4).
    import torch
    import torchvision
    from transformers import Qwen2VLImageProcessor  # noqa: F401

    if torch.version.cuda is None:
        src = Path(importlib.util.find_spec("torchvision").origin).parent / "_meta_registrations.py"
        assert _MARKER in src.read_text() or torchvision.extension._has_ops()
    assert importlib.util.find_spec("torchaudio") is None or torch.version.cuda is not None
