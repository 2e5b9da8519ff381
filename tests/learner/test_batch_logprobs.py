import pytest
import torch

from medix_ray.learner.batch import build_batch
from medix_ray.learner.logprobs import Layout, batch_logprobs, forward_logprobs, token_logprobs_from_logits
from medix_ray.trajectory import PolicyBatch


@pytest.fixture(scope="module")
def tiny_lm():
    from test_update import tiny_lm as build

    return build().eval()


def test_build_batch_places_response_targets_and_old_logprobs():
    b = build_batch(
        [[1, 2, 3], [7]], [[4, 5], [8, 9, 10]], [0.5, -1.0], pad_id=0, old_logp=[[-0.1, -0.2], [-0.3, -0.4, -0.5]]
    )
    assert b.input_ids.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert b.loss_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]  # targets 4, 5 and 8, 9, 10
    assert torch.allclose(b.old_logp, torch.tensor([[0, 0, -0.1, -0.2], [-0.3, -0.4, -0.5, 0]]))
    assert b.response_tokens == 5


def test_build_batch_rejects_mismatches():
    with pytest.raises(ValueError, match="2 prompts, 1 responses"):
        build_batch([[1], [2]], [[3]], [0.0, 0.0], pad_id=0)
    with pytest.raises(ValueError, match="response 0 is empty"):
        build_batch([[1]], [[]], [0.0], pad_id=0)
    with pytest.raises(ValueError, match="row 0: 1 old log-probs for 2 response tokens"):
        build_batch([[1]], [[2, 3]], [0.0], pad_id=0, old_logp=[[-1.0]])


def test_logprobs_from_logits_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    lp = token_logprobs_from_logits(logits, torch.tensor([[0, 1, 0]]))
    assert lp.flatten().tolist() == pytest.approx(
        [torch.log(torch.tensor(0.5)).item(), (1.0 - torch.logsumexp(torch.tensor([1.0, 0.0]), 0)).item()]
    )


def test_padding_does_not_change_a_rows_logprobs(tiny_lm):
    short = build_batch([[1, 2]], [[3, 4]], [1.0], pad_id=0)
    mixed = build_batch([[1, 2], [5, 6, 7, 8, 9]], [[3, 4], [10, 11, 12]], [1.0, 1.0], pad_id=0)
    alone = batch_logprobs(tiny_lm, short, Layout.per_row(4))
    together = batch_logprobs(tiny_lm, mixed, Layout.per_row(4))
    assert torch.allclose(alone[0], together[0, : alone.shape[1]], atol=1e-5)
    assert together[0, alone.shape[1] :].abs().sum() == 0  # nothing off the loss mask


def test_micro_batching_gives_the_same_logprobs(tiny_lm):
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 64, (int(n),), generator=g).tolist() for n in [3, 5, 2, 4, 6]]
    responses = [torch.randint(1, 64, (int(n),), generator=g).tolist() for n in [4, 1, 6, 2, 3]]
    b = build_batch(prompts, responses, [0.0] * 5, pad_id=0)
    full = batch_logprobs(tiny_lm, b, Layout.per_row(5))
    for size in (1, 2, 3):
        assert torch.allclose(full, batch_logprobs(tiny_lm, b, Layout.per_row(size)), atol=1e-5)


def test_forward_logprobs_carries_gradients(tiny_lm):
    b = build_batch([[1, 2]], [[3, 4]], [1.0], pad_id=0)
    lp = forward_logprobs(tiny_lm, b)
    lp.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_lm.parameters())
    tiny_lm.zero_grad()


@pytest.mark.slow
def test_qwen_vl_rows_keep_their_images_through_slicing(tiny_vl_path, make_png):
    import io

    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_vl_path)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vl_path, dtype=torch.float32).eval()
    rows = []
    for color, size in (((200, 0, 0), (112, 112)), ((0, 0, 200), (56, 112))):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
        text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        rows.append(proc(text=[text], images=[Image.open(io.BytesIO(make_png(color, size)))], return_tensors="pt"))
    responses = [[10, 11, 12], [13, 14]]
    text_batch = build_batch([r["input_ids"][0].tolist() for r in rows], responses, [1.0, -1.0], pad_id=0)
    batch = PolicyBatch(
        text_batch.input_ids,
        text_batch.attention_mask,
        text_batch.loss_mask,
        text_batch.advantages,
        pixel_values=torch.cat([r["pixel_values"] for r in rows]),
        image_grid_thw=torch.cat([r["image_grid_thw"] for r in rows]),
        images_per_row=[1, 1],
    )
    second = batch.select(1, 2)
    assert second.pixel_values.shape[0] == int(rows[1]["image_grid_thw"].prod())
    assert torch.equal(second.pixel_values, rows[1]["pixel_values"])
    together = batch_logprobs(model, batch, Layout.per_row(2))
    apart = batch_logprobs(model, batch, Layout.per_row(1))
    assert torch.allclose(together, apart, atol=1e-4)
    assert (together * batch.loss_mask).abs().sum() > 0
