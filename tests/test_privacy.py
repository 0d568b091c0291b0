"""The membership-inference audit: loss-threshold AUC and its bootstrap interval over patients."""

import numpy as np
import pytest
import torch

from shark_hf.privacy import bootstrap_auc_interval, membership_inference_auc, per_sample_loss


def test_per_sample_loss_is_the_mean_bce_over_labels():
    logits = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = [np.log(2.0), (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(1.0))) / 2]
    assert per_sample_loss(logits, labels).tolist() == pytest.approx(expected, rel=1e-6)


def test_auc_counts_pairs_with_ties_one_half():
    # Pairs (member < non-member): 0.1 beats 0.3, 0.5 (2); 0.3 ties 0.3 (0.5) and beats 0.5 (1) -> 3.5 / 4.
    assert membership_inference_auc([0.1, 0.3], [0.3, 0.5]) == 0.875
    with pytest.raises(ValueError, match="needs both members and non-members \\(got 0 and 2\\)"):
        membership_inference_auc([], [0.3, 0.5])


def test_bootstrap_interval_is_seeded_and_brackets_the_auc():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.9, 0.2, 300), rng.normal(1.0, 0.2, 200)
    auc = membership_inference_auc(members, nonmembers)
    low, high = bootstrap_auc_interval(members, nonmembers, resamples=400, seed=1)
    assert low < auc < high and high - low < 0.2
    assert bootstrap_auc_interval(members, nonmembers, resamples=400, seed=1) == (low, high)
    assert bootstrap_auc_interval(members, nonmembers, resamples=400, seed=2) != (low, high)
    # One patient on each side: every resample draws the same samples, so the interval is the AUC (ties
    # counted one half as in membership_inference_auc).
    assert bootstrap_auc_interval([0.1, 0.3], [0.3, 0.5], ["a", "a"], ["b", "b"], resamples=20) == (
        0.875,
        0.875,
    )
    # Perfectly separated: every resample has AUC 1.
    assert bootstrap_auc_interval([0.1, 0.2], [0.5, 0.6], resamples=50) == (1.0, 1.0)


def test_bootstrap_resamples_whole_patients():
    """Three identical samples per patient give exactly the interval of one sample per patient (the same
    patients are drawn), and a wider one than treating the 3 copies as independent samples."""
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(0.9, 0.2, 40), rng.normal(1.0, 0.2, 30)
    single = bootstrap_auc_interval(members, nonmembers, resamples=300, seed=5)
    tripled = bootstrap_auc_interval(
        np.repeat(members, 3),
        np.repeat(nonmembers, 3),
        member_groups=np.repeat([f"m{i}" for i in range(40)], 3),
        nonmember_groups=np.repeat([f"n{i}" for i in range(30)], 3),
        resamples=300,
        seed=5,
    )
    assert tripled == pytest.approx(single, abs=1e-12)
    naive = bootstrap_auc_interval(np.repeat(members, 3), np.repeat(nonmembers, 3), resamples=300, seed=5)
    assert naive[1] - naive[0] < 0.75 * (single[1] - single[0])
    with pytest.raises(ValueError, match="2 group ids for 3 samples"):
        bootstrap_auc_interval([0.1, 0.2, 0.3], [0.5], member_groups=["a", "b"])
