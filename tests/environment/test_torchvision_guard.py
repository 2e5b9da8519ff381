"""The CPU install's torchvision guard (medix_ray/environment/torchvision_guard.py) and the script that
`make install` runs (medix_ray/setup_env.py)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

from medix_ray.environment.torchvision_guard import _MARKER, guard_registrations

ROOT = Path(__file__).resolve().parents[2]

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


def test_the_install_script_runs_as_the_makefile_calls_it():
    out = subprocess.run(
        [sys.executable, "medix_ray/setup_env.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "usage: medix_ray/setup_env.py [-h] [--check-only]" in out.stdout


def test_the_environment_package_imports_no_third_party_library():
    # setup_env runs before the install is complete; vLLM imports the plugin in each of its processes.
    code = (
        "import sys\n"
        "import medix_ray.environment.torchvision_guard, medix_ray.environment.vllm_plugin\n"
        "import medix_ray.environment.ray_init, medix_ray.environment.switches\n"
        "print(sorted(m for m in ('torch', 'ray', 'vllm', 'transformers', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
