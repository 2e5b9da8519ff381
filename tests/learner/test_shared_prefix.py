"""The shared-prefix layout gives the per-row layout's log-probs and gradients (fp32, 1e-5), for text
policies and Qwen-VL policies with 1 and 2 images per prompt, with groups split across micro-batches,
and under DeepSpeed ZeRO-2/3 on 2 gloo ranks."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from test_engine import _flat, _port  # the 2-rank helpers of the ZeRO engine tests

import medix_ray.learner.logprobs as logprobs_module
from medix_ray.config import AlgorithmConfig, LearnerConfig
from medix_ray.learner.batch import build_batch
from medix_ray.learner.logprobs import Layout, batch_logprobs, pack, rope_index
from medix_ray.learner.packing import dense_mask, plan_micro_batches
from medix_ray.learner.update import minibatch_update
from medix_ray.trajectory import PolicyBatch
from tests.learner.engines import GradientOnlyEngine

# (prompt length, response lengths) per group: unequal responses, one single-response group
TEXT_GROUPS = [(7, [3, 9, 1, 5]), (12, [4, 2]), (3, [6]), (5, [8, 2, 7])]


def tiny_llama(seed=0, vocab=96):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(cfg)


def text_batch(groups=TEXT_GROUPS, vocab=96, seed=1) -> PolicyBatch:
    g = torch.Generator().manual_seed(seed)
    prompts, responses = [], []
    for plen, rlens in groups:
        prompt = torch.randint(1, vocab, (plen,), generator=g).tolist()
        for r in rlens:
            prompts.append(prompt)
            responses.append(torch.randint(1, vocab, (r,), generator=g).tolist())
    advantages = torch.linspace(-1.0, 1.0, len(prompts))
    return build_batch(prompts, responses, advantages, pad_id=0)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def assert_same_gradient(model, batch, budgets, algo=None):
    """One update's gradient in the shared-prefix layout equals the per-row one (relative 1e-5)."""
    algo = algo or AlgorithmConfig()
    batch.old_logp = batch_logprobs(model.eval(), batch, Layout.per_row(batch.size)) + 0.05 * batch.loss_mask
    model.train()
    minibatch_update(GradientOnlyEngine(model), batch, algo, layout=Layout.per_row(2), norm_length=16)
    reference = _grads(model).clone()
    model.zero_grad(set_to_none=True)
    assert reference.norm() > 0
    for budget in budgets:
        engine = GradientOnlyEngine(model)
        stats = minibatch_update(engine, batch, algo, layout=Layout.shared(budget), norm_length=16)
        shared = _grads(model).clone()
        model.zero_grad(set_to_none=True)
        assert (shared - reference).abs().max() / reference.norm() < 1e-5, f"budget {budget}"
        assert stats.attention == "sdpa/dense-block-mask"


# -- the plan and the mask, by hand -----------------------------------------------------------


def test_token_budget_packs_groups_and_splits_a_long_one():
    prompt_lens = torch.tensor([4, 4, 4, 2, 2])
    row_lens = torch.tensor([7, 6, 9, 5, 3])  # prompt + response
    groups = torch.tensor([0, 0, 0, 1, 1])
    # costs: row 0 = 7 (prompt + 3), row 1 = 2 more, row 2 = 5 more (over 12: a new micro-batch repeats the prompt)
    assert plan_micro_batches(prompt_lens, row_lens, groups, 12) == ([(0, 2), (2, 3), (3, 5)], 0)
    assert plan_micro_batches(prompt_lens, row_lens, groups, 100) == ([(0, 5)], 0)
    # rows longer than the budget run alone and are counted
    assert plan_micro_batches(prompt_lens, row_lens, groups, 6) == ([(0, 1), (1, 2), (2, 3), (3, 5)], 2)
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch"):
        plan_micro_batches(prompt_lens, row_lens, groups, 0)


def test_mask_lets_each_response_see_its_prompt_and_itself_only():
    # [p0 p1 | r1: a b | r2: c] of one group, then [q0 | s1: d] of another
    group = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    segment = torch.tensor([0, 0, 1, 1, 2, 0, 1])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(dense_mask(group, segment)[0, 0], expected)


def test_packed_layout_holds_each_prompt_once_with_continued_positions():
    batch = text_batch([(3, [2, 4]), (2, [1])])
    model = tiny_llama()
    packed = pack(model, batch)
    assert packed.length == 3 + 2 + 4 + 2 + 1  # against 3 rows x 7 columns per row
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5, 6, 0, 1, 2]
    # every response token is scored once, in its row's [N, T - 1] column
    assert packed.targets.numel() == int(batch.loss_mask.sum())
    assert torch.equal(packed.targets, batch.input_ids[packed.row, packed.col + 1])


def test_rows_of_one_group_must_share_their_prompt():
    batch = build_batch([[1, 2, 3], [1, 2, 4]], [[5], [6]], [1.0, -1.0], pad_id=0, group_ids=[0, 0])
    with pytest.raises(ValueError, match="share group id 0 but not their prompt"):
        batch_logprobs(tiny_llama(), batch, Layout.shared(100))


# -- exactness: text policies ---------------------------------------------------------------


@pytest.mark.parametrize("budget", [10_000, 24, 9])
def test_tiny_llama_logprobs_equal_per_row(budget):
    model = tiny_llama().eval()
    batch = text_batch()
    reference = batch_logprobs(model, batch, Layout.per_row(3))
    shared = batch_logprobs(model, batch, Layout.shared(budget))
    spans, _ = Layout.shared(budget).spans(batch)
    if budget < 100:
        assert any(a > 0 and batch.group_ids[a] == batch.group_ids[a - 1] for a, _ in spans)  # a group was split
    assert (shared - reference).abs().max() < 1e-5
    assert reference.abs().sum() > 0


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_tiny_llama_gradient_equals_per_row(loss_agg):
    assert_same_gradient(
        tiny_llama(), text_batch(), budgets=[10_000, 24], algo=AlgorithmConfig(loss_agg=loss_agg, kl_coef=0.0)
    )


def test_a_wrong_mask_is_caught(monkeypatch):
    """The exactness check has teeth: plain causal attention across responses changes the log-probs."""
    model = tiny_llama().eval()
    batch = text_batch()
    reference = batch_logprobs(model, batch, Layout.per_row(3))
    monkeypatch.setattr(
        logprobs_module, "dense_mask", lambda g, s: torch.ones(len(g), len(g), dtype=torch.bool).tril()[None, None]
    )
    assert (batch_logprobs(model, batch, Layout.shared(10_000)) - reference).abs().max() > 1e-3


def test_ranks_with_fewer_micro_batches_split_and_pad_without_changing_the_gradient(monkeypatch):
    model = tiny_llama()
    batch = text_batch()
    batch.old_logp = batch_logprobs(model.eval(), batch, Layout.per_row(4))
    model.train()
    minibatch_update(GradientOnlyEngine(model), batch, AlgorithmConfig(), layout=Layout.shared(10_000))
    reference = _grads(model).clone()
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr(logprobs_module, "_max_over_ranks", lambda count: count + 11)  # another rank has 12
    plan = Layout.shared(10_000).plan(batch)
    assert batch.size == 10 and len(plan.spans) == 12 and plan.padding == 2  # 10 one-row spans, 2 repeats
    stats = minibatch_update(GradientOnlyEngine(model), batch, AlgorithmConfig(), layout=Layout.shared(10_000))
    assert stats.micro_batches == 12
    assert (_grads(model) - reference).abs().max() / reference.norm() < 1e-5
    assert torch.allclose(
        batch_logprobs(model.eval(), batch, Layout.shared(10_000)),
        batch_logprobs(model, batch, Layout.per_row(3)),
        atol=1e-5,
    )


def test_smollm2_logprobs_and_gradient_equal_per_row(smollm2_path):
    """Real text (log-probs of natural answers). With random token ids (log-probs near -19) the two layouts
    differ by up to 1.5e-5, 8 float32 ulps at that magnitude; the per-row path differs from itself by
    6e-6 between micro-batches of 5 and 1 rows on one machine, 1.3e-5 on another (other CPU kernels): the
    bound is 1e-5 or twice the per-row path's own variation, whichever is larger (docs/learner.md)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    groups = {
        "Which organ pumps blood through the body? Answer briefly.": [
            " The heart.",
            " It is the heart, a muscular organ in the chest.",
            " Heart",
        ],
        "A chest X-ray shows a blunted costophrenic angle. What does it suggest?": [
            " A pleural effusion, fluid in the pleural space.",
            " Effusion.",
        ],
    }
    prompts, responses = [], []
    for question, answers in groups.items():
        for answer in answers:
            prompts.append(tok(question)["input_ids"])
            responses.append(tok(answer)["input_ids"])
    batch = build_batch(prompts, responses, torch.linspace(-1, 1, len(prompts)), pad_id=0)
    reference = batch_logprobs(model.eval(), batch, Layout.per_row(5))
    noise = (batch_logprobs(model, batch, Layout.per_row(1)) - reference).abs().max().item()
    bound = max(1e-5, 2 * noise)
    for budget in (10_000, 40):
        assert (batch_logprobs(model, batch, Layout.shared(budget)) - reference).abs().max() < bound, noise
    assert_same_gradient(model, batch, budgets=[40])


# -- exactness: Qwen-VL policies ------------------------------------------------------------


def vlm_batch(path, make_png) -> PolicyBatch:
    """Groups with 1 image, 2 images (of different sizes) and none, 3 / 2 / 2 responses of unequal lengths."""
    import io

    from PIL import Image
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(path)
    g = torch.Generator().manual_seed(0)
    specs = [
        ([((200, 0, 0), (112, 112))], [3, 7, 2]),
        ([((0, 0, 200), (56, 112)), ((0, 200, 0), (112, 56))], [4, 1]),
        ([], [5, 2]),
    ]
    prompts, responses, pixels, grids, per_row = [], [], [], [], []
    for images, lengths in specs:
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": "What colour is it?"}]
        text = proc.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        pil = [Image.open(io.BytesIO(make_png(color, size))) for color, size in images]
        enc = proc(text=[text], images=pil or None, return_tensors="pt")
        for n in lengths:
            prompts.append(enc["input_ids"][0].tolist())
            responses.append(torch.randint(10, 1000, (n,), generator=g).tolist())
            per_row.append(len(images))
            if images:
                pixels.append(enc["pixel_values"])
                grids.append(enc["image_grid_thw"])
    batch = build_batch(prompts, responses, torch.linspace(-1, 1, len(prompts)), pad_id=0)
    batch.pixel_values, batch.image_grid_thw, batch.images_per_row = torch.cat(pixels), torch.cat(grids), per_row
    return batch


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_qwen_vl_logprobs_and_gradient_equal_per_row(name, make_png):
    from transformers import AutoModelForImageTextToText

    from medix_ray.models import prepare_model

    path = str(prepare_model(name))
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    batch = vlm_batch(path, make_png)
    # the per-row reference uses the model's own mrope positions of each full row
    index = rope_index(model)
    full = index(batch.input_ids, batch.image_grid_thw, batch.attention_mask)
    assert not torch.equal(full[1], full[0])  # the image tokens' 3-D positions differ from 1-D ones
    packed = pack(model, batch.select(0, 3))
    row0 = batch.select(0, 1)
    assert torch.equal(packed.position_ids[:, 0, : row0.input_ids.shape[1]], full[:, 0, : row0.input_ids.shape[1]])
    assert packed.pixel_values.shape[0] == row0.pixel_values.shape[0]  # the group's image once, not 3 times
    reference = batch_logprobs(model.eval(), batch, Layout.per_row(2))
    for budget in (100_000, 60):
        assert (batch_logprobs(model, batch, Layout.shared(budget)) - reference).abs().max() < 1e-5
    assert_same_gradient(model, batch, budgets=[100_000, 60])


# -- ZeRO-2 / ZeRO-3 on 2 gloo ranks --------------------------------------------------------


def _zero_rank(rank, world, port, stage, out_dir):
    import deepspeed

    from medix_ray.learner.engine import DeepSpeedTrainEngine

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    batch = text_batch()
    # rank 0: the first two groups (6 rows), rank 1: the other two (4 rows): their micro-batch counts differ
    mine = batch.select(0, 6) if rank == 0 else batch.select(6, batch.size)
    base = tiny_llama()
    mine.old_logp = batch_logprobs(base.eval(), mine, Layout.per_row(6)) + 0.05 * mine.loss_mask
    for name, layout in (("per_row", Layout.per_row(2)), ("shared", Layout.shared(20))):
        engine = DeepSpeedTrainEngine(tiny_llama(), LearnerConfig(zero_stage=stage, lr=1e-3, micro_batch_size=2))
        stats = minibatch_update(engine, mine, AlgorithmConfig(), layout=layout)
        logp = batch_logprobs(engine.module, mine, layout)
        with deepspeed.zero.GatheredParameters(list(engine.model.parameters()), enabled=stage == 3):
            if rank == 0:
                torch.save({"params": _flat(engine.model), "micro": stats.micro_batches}, f"{out_dir}/{name}.pt")
        torch.save(logp, f"{out_dir}/{name}_logp_rank{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_ranks_leave_the_same_parameters_with_and_without_the_shared_prefix(stage, tmp_path):
    mp.spawn(_zero_rank, args=(2, _port(), stage, str(tmp_path)), nprocs=2, join=True)
    per_row, shared = torch.load(tmp_path / "per_row.pt"), torch.load(tmp_path / "shared.pt")
    assert not torch.allclose(per_row["params"], _flat(tiny_llama()), atol=1e-4)  # the update moved them
    # Adam's first step is about lr·sign(g) (1e-3 here); where a gradient element is near zero its float
    # rounding is amplified, so the parameters agree to 0.5% of one step (measured: 1.1e-6 on 1 of 24,736)
    assert torch.allclose(shared["params"], per_row["params"], atol=5e-6)
    assert shared["micro"] >= 2  # rank 0 needed 2+ micro-batches under the 20-token budget
    for rank in (0, 1):
        a = torch.load(tmp_path / f"per_row_logp_rank{rank}.pt")
        b = torch.load(tmp_path / f"shared_logp_rank{rank}.pt")
        assert (a - b).abs().max() < 1e-5
