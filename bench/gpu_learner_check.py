"""GPU check of the shared-prefix learner: bf16 exactness and speed-up at Qwen2.5-VL-7B-like dimensions.

    python bench/gpu_learner_check.py [--layers 2] [--groups 4] [--n 5] [--out runs/bench/gpu_learner_check.json]
    python bench/gpu_learner_check.py --tiny      # small dimensions, any device (the CPU test runs this)

Needs nothing but torch and transformers (and this repository's medix_ray/learner, which imports
only torch), so it runs on a bare GPU machine. Random weights: a Qwen2.5-VL with the 7B's text
dimensions (hidden 3584, 28 heads / 4 KV heads, MLP 18944, vocabulary 152064) and vision tower widths
(1280, 16 heads, out 3584), `--layers` text layers and as many vision blocks. Each of `--groups`
prompts holds one 504 x 504 image (324 image tokens) and 64 text tokens; `--n` responses of 128-384
tokens each. Measured: one forward + backward of the per-row layout (one group per micro-batch) and
of the shared-prefix layout (same token budget); tokens/s counts the per-row layout's tokens on both
sides; peak GPU memory of each.

Exactness (bf16, the same weights): the shared-prefix log-probs against the per-row ones,
max |diff| <= 0.25 and mean |diff| <= 0.02 nats (bf16 keeps 8 bits of mantissa: a log-prob near -12 is
rounded to 1/16); gradients: max |diff| / |grad| <= 2e-2. The fp32 part (--tiny, or --fp32-check on
GPU) must agree within 1e-4. Finishes in well under 5 minutes on one H100/H200 at the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BF16_MAX, BF16_MEAN, BF16_GRAD = 0.25, 0.02, 2e-2
FP32_MAX = 1e-4


def build_model(tiny: bool, layers: int, dtype: torch.dtype, device: str, attention: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if tiny:
        text = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
        text["rope_parameters"] = {"mrope_section": [2, 3, 3], "rope_theta": 10000.0, "rope_type": "default"}
        vision = dict(hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
        special = dict(image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503)
    else:
        text = dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4)
        text.update(vocab_size=152064)
        text["rope_parameters"] = {"mrope_section": [16, 24, 24], "rope_theta": 1000000.0, "rope_type": "default"}
        vision = dict(hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584)
        special = {}
    text.update(num_hidden_layers=layers, max_position_embeddings=32768, layer_types=["full_attention"] * layers)
    vision.update(depth=layers, fullatt_block_indexes=[layers - 1], window_size=112, spatial_merge_size=2)
    vision.update(patch_size=14, temporal_patch_size=2, tokens_per_second=2)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
    config._attn_implementation = attention
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).to(device=device, dtype=dtype)
    model.set_attn_implementation(attention)
    return model


def build_batch(model, groups: int, n: int, grid_side: int, prompt_text: int, response_range, seed: int = 0):
    from medix_ray.learner.batch import build_batch as build_rows

    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    vocab = cfg.text_config.vocab_size
    image_tokens = (grid_side // 2) ** 2
    patch_dim = 3 * 2 * 14 * 14
    prompts, responses, pixels, grids = [], [], [], []
    for _ in range(groups):
        text = torch.randint(0, min(vocab, 400), (prompt_text,), generator=g).tolist()
        prompt = [cfg.vision_start_token_id] + [cfg.image_token_id] * image_tokens + [cfg.vision_end_token_id] + text
        pixel = torch.randn(grid_side * grid_side, patch_dim, generator=g)
        for _ in range(n):
            length = int(torch.randint(response_range[0], response_range[1] + 1, (1,), generator=g))
            prompts.append(prompt)
            responses.append(torch.randint(0, min(vocab, 400), (length,), generator=g).tolist())
            pixels.append(pixel)
            grids.append(torch.tensor([[1, grid_side, grid_side]]))
    batch = build_rows(prompts, responses, torch.linspace(-1, 1, len(prompts)), pad_id=0)
    batch.pixel_values, batch.image_grid_thw = torch.cat(pixels), torch.cat(grids)
    batch.images_per_row = [1] * len(prompts)
    return batch


def run_layout(model, batch, layout, device: str):
    """Returns (log-probs [N, T - 1], flat gradient, seconds, peak memory GiB) of one forward + backward."""
    from medix_ray.learner.logprobs import forward_logprobs

    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    out = torch.zeros(batch.loss_mask.shape, device=device)
    for a, b in layout.spans(batch)[0]:
        micro = batch.select(a, b)  # the model casts pixel_values to the vision tower's dtype
        logp = forward_logprobs(model, micro, 1.0, layout.shared_prefix)
        (logp * micro.loss_mask.to(device)).sum().backward()
        out[a:b, : logp.shape[1]] = logp.detach().float()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.monotonic() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return out.cpu(), grad.cpu(), seconds, peak


def compare(model, batch, device, repeats: int):
    from medix_ray.learner.logprobs import Layout, attention_backend

    widest = int(batch.attention_mask.sum(dim=1).max())
    n = int((batch.group_ids == batch.group_ids[0]).sum())
    per_row, shared = Layout.per_row(n), Layout.shared(n * widest)
    results = {}
    for name, layout in (("per_row", per_row), ("shared", shared)):
        runs = [run_layout(model, batch, layout, device) for _ in range(repeats + 1)]  # first: warm-up
        logp, grad = runs[-1][0], runs[-1][1]
        seconds = sorted(r[2] for r in runs[1:])[len(runs[1:]) // 2] if repeats else runs[0][2]
        results[name] = {"logp": logp, "grad": grad, "s": seconds, "peak_gib": max(r[3] for r in runs)}
    tokens = int(batch.attention_mask.sum())
    diff = (results["shared"]["logp"] - results["per_row"]["logp"]).abs()[batch.loss_mask.bool()]
    grad_rel = float(
        (results["shared"]["grad"] - results["per_row"]["grad"]).abs().max() / results["per_row"]["grad"].norm()
    )
    return {
        "attention": attention_backend(model, True),
        "rows": batch.size,
        "tokens_per_row_layout": tokens,
        "per_row_tokens_per_s": tokens / results["per_row"]["s"],
        "shared_tokens_per_s": tokens / results["shared"]["s"],
        "speedup": results["per_row"]["s"] / results["shared"]["s"],
        "per_row_peak_gib": results["per_row"]["peak_gib"],
        "shared_peak_gib": results["shared"]["peak_gib"],
        "logp_max_abs_diff": float(diff.max()),
        "logp_mean_abs_diff": float(diff.mean()),
        "grad_max_rel_diff": grad_rel,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small dimensions (CPU test)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", default="auto", help="auto: flex_attention on GPU when available, else sdpa")
    parser.add_argument("--fp32-check", action="store_true", help="also check fp32 exactness on the GPU")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/bench/gpu_learner_check.json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.tiny and device != "cuda":
        print("no GPU here: run with --tiny for the small-dimension check", file=sys.stderr)
        return 2
    attention = args.attention
    if attention == "auto":
        attention = "flex_attention" if device == "cuda" else "sdpa"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    shape = (
        dict(grid_side=8, prompt_text=16, response_range=(8, 24))
        if args.tiny
        else dict(grid_side=36, prompt_text=64, response_range=(128, 384))
    )
    report: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "tiny": args.tiny}
    checks = []
    dtypes = [("fp32", torch.float32)] if args.tiny else [("bf16", torch.bfloat16)]
    if args.fp32_check and not args.tiny:
        dtypes.append(("fp32", torch.float32))
    for name, dtype in dtypes:
        try:
            model = build_model(args.tiny, args.layers, dtype, device, attention)
        except (ValueError, ImportError) as exc:  # flex_attention unavailable: the fallback
            print(f"attention {attention} unavailable ({exc}); using sdpa", file=sys.stderr)
            model = build_model(args.tiny, args.layers, dtype, device, "sdpa")
        batch = build_batch(model, args.groups, args.n, **shape)
        r = compare(model, batch, device, args.repeats)
        report[name] = r
        if name == "bf16":
            ok = r["logp_max_abs_diff"] <= BF16_MAX and r["logp_mean_abs_diff"] <= BF16_MEAN
            ok = ok and r["grad_max_rel_diff"] <= BF16_GRAD
        else:
            ok = r["logp_max_abs_diff"] <= FP32_MAX and r["grad_max_rel_diff"] <= 1e-4
        checks.append(ok)
        print(f"{name}: {json.dumps(r)}", flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    report["exact"] = all(checks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"exact": report["exact"]}))
    return 0 if report["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
