import math

import pytest
import torch

from medix_ray.algorithms.advantages import group_advantages


def test_grpo_uses_the_unbiased_std():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # mean 0.25; unbiased std = sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
    assert adv[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)


def test_a_minor_component_difference_is_as_loud_as_correctness_under_grpo():
    # docs/method.md §3.3: one response lost only its modality tag
    adv = group_advantages(torch.tensor([[0.145, 0.145, 0.145, 0.145, 0.10]]))
    assert adv[0, 4].item() == pytest.approx(-1.7889, abs=1e-3)
    floored = group_advantages(torch.tensor([[0.145, 0.145, 0.145, 0.145, 0.10]]), std_floor=0.1)
    assert floored[0, 4].item() == pytest.approx(-0.36, abs=1e-5)


def test_dr_grpo_does_not_divide_by_std():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), "dr_grpo")
    assert adv[0].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_all_equal_group_has_zero_advantage():
    for mode in ("grpo", "dr_grpo"):
        assert group_advantages(torch.full((2, 5), 0.3), mode).abs().max().item() == 0.0


def test_invalid_responses_are_left_out_of_the_group():
    rewards = torch.tensor([[1.0, 0.0, float("nan"), 0.0]])
    adv = group_advantages(rewards)
    third = 1 / math.sqrt(3)  # std of [1, 0, 0] is sqrt(1/3)
    assert adv[0].tolist() == pytest.approx([(2 / 3) / third, -(1 / 3) / third, 0.0, -(1 / 3) / third], abs=1e-5)
    masked = group_advantages(torch.tensor([[1.0, 0.0, 5.0]]), valid=torch.tensor([[True, True, False]]))
    assert masked[0, 2].item() == 0.0 and masked[0, 0].item() == pytest.approx(1 / math.sqrt(0.5) * 0.5, abs=1e-5)


def test_group_with_one_valid_response_has_zero_advantage():
    adv = group_advantages(torch.tensor([[0.7, float("nan")], [0.9, 0.1]]))
    assert adv[0].tolist() == [0.0, 0.0]
    assert group_advantages(torch.tensor([[0.4]])).item() == 0.0


def test_bad_shapes_and_modes_are_rejected():
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        group_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="unknown advantage mode"):
        group_advantages(torch.zeros(1, 2), "ppo")
