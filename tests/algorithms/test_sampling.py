import pytest
import torch

from medix_ray.algorithms.sampling import filter_groups, overlong_penalty

REWARDS = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.145, 0.145, 0.145], [0.0, 0.0, 0.0]])


def test_zero_variance_filter_drops_groups_without_signal():
    r = filter_groups(REWARDS, "zero_variance")
    assert r.keep.tolist() == [False, True, False, False] and (r.kept, r.total) == (1, 4)


def test_reference_mean_range_filter_keeps_zero_variance_groups_in_range():
    r = filter_groups(REWARDS, "mean_range", low=0.01, high=0.99)
    assert r.keep.tolist() == [False, True, True, False] and r.kept == 2


def test_none_keeps_everything_and_bad_mode_is_named():
    assert filter_groups(REWARDS, "none").kept == 4
    with pytest.raises(ValueError, match="unknown dynamic sampling mode"):
        filter_groups(REWARDS, "std")


def test_soft_overlong_punishment():
    lengths = torch.tensor([50, 80, 90, 100, 101])
    assert overlong_penalty(lengths, 100, 20).tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    assert overlong_penalty(lengths, 100, 20, factor=0.5).tolist()[2] == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(lengths, 100, 0)
