"""The metric on hand-computed toy cases: strict-greater ranks, ties, the r_max clip, ratio of sums."""

import math

import pytest
import torch

from rsr.metric import R_MAX, TrajectoryStats, dataset_rsr, trajectory_rsr
from rsr.score.student import token_ranks_surprisals


def test_rank_is_strictly_greater_count_plus_one_and_surprisal_is_natural_log():
    logits = torch.tensor([[2.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [5.0, 4.0, 3.0, 2.0]])
    targets = torch.tensor([1, 3, 0])
    ranks, surprisals = token_ranks_surprisals(logits, targets)
    # row 0: only logit 2.0 beats the target's 1.0; the tie at index 3 does not count.
    assert ranks.tolist() == [2, 1, 1]
    expected0 = math.log(math.exp(2) + math.exp(1) + 1 + math.exp(1)) - 1.0
    assert surprisals[0].item() == pytest.approx(expected0, rel=1e-6)
    assert surprisals[1].item() == pytest.approx(math.log(4), rel=1e-6)  # all tied: uniform
    assert surprisals[2].item() == pytest.approx(math.log(sum(math.exp(v) for v in (5, 4, 3, 2))) - 5, rel=1e-6)


def test_trajectory_rsr_is_a_ratio_of_sums_with_ranks_clipped_at_r_max():
    ranks = torch.tensor([1, 3, 250])
    surprisals = torch.tensor([0.5, 1.5, 2.0])
    stats = TrajectoryStats.from_tokens(ranks, surprisals)
    assert stats.sum_rank == 1 + 3 + R_MAX
    assert stats.sum_rank_unclipped == 254
    assert stats.rsr == pytest.approx((1 + 3 + 100) / 4.0)
    assert trajectory_rsr(ranks, surprisals) == pytest.approx(stats.rsr)
    assert stats.mean_rank == pytest.approx(104 / 3)
    assert stats.mean_surprisal == pytest.approx(4 / 3)
    assert stats.mean_rank_unclipped == pytest.approx(254 / 3)
    assert trajectory_rsr(ranks, surprisals, r_max=10) == pytest.approx((1 + 3 + 10) / 4.0)


def test_dataset_rsr_is_sum_of_mean_ranks_over_sum_of_mean_surprisals():
    a = TrajectoryStats.from_tokens(torch.tensor([1, 1]), torch.tensor([1.0, 1.0]))  # mean rank 1, mean s 1
    b = TrajectoryStats.from_tokens(torch.tensor([4]), torch.tensor([0.5]))  # mean rank 4, mean s 0.5
    assert dataset_rsr([a, b]) == pytest.approx((1 + 4) / (1 + 0.5))
    # Not the mean of per-trajectory RSRs ((1 + 8) / 2 = 4.5): that would weigh outliers differently.
    assert dataset_rsr([a, b]) != pytest.approx((a.rsr + b.rsr) / 2)


def test_zero_surprisal_has_no_finite_rsr():
    stats = TrajectoryStats.from_tokens(torch.tensor([1]), torch.tensor([0.0]))
    assert math.isnan(stats.rsr)
    assert math.isnan(dataset_rsr([]))


def test_surprisal_profile_is_the_share_of_surprisal_in_each_tenth_of_the_response():
    from rsr.metric import surprisal_profile

    s = torch.tensor([1.0] * 10 + [3.0] * 10)  # 20 tokens: two per tenth, the second half three times as surprising
    profile = surprisal_profile(s)
    assert profile == pytest.approx([0.05] * 5 + [0.15] * 5) and sum(profile) == pytest.approx(1.0)
    assert surprisal_profile(torch.tensor([2.0, 2.0, 4.0]), bins=3) == pytest.approx([0.25, 0.25, 0.5])
    assert surprisal_profile(torch.tensor([])) == [] and surprisal_profile(torch.zeros(4)) == []
