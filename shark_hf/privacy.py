"""Membership-inference audit of a trained model.

A released model can reveal whether a patient was in its training data: models tend to fit their training
samples better than unseen ones. The audit runs the simplest such attack, a per-sample loss threshold (Yeom
et al., 2018): the attacker guesses "member" when a sample's loss is low. Its ROC AUC over training samples
(members) against held-out test samples (non-members) measures the leak: 0.5 is chance (no signal), 1.0
means the loss separates members perfectly. It is a lower bound on the leakage: stronger attacks (shadow
models, likelihood-ratio tests, pooling a patient's samples) can only do better, so an AUC near 0.5 does not
show that the weights are private.

The 95% interval is a bootstrap over patients: members and non-members are resampled separately, whole
patients at a time, because the samples of one patient (`sample="all_prefixes"`) are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .metrics import binary_auc

BOOTSTRAP_RESAMPLES = 1000


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each sample, averaged over its labels.

    Args:
        logits: `[N, C]` raw scores.
        labels: `[N, C]` multi-hot targets.

    Returns:
        `[N]` float32 losses in nats per label.
    """
    losses = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), labels.float(), reduction="none"
    )
    return losses.mean(dim=1)


def membership_inference_auc(member_losses, nonmember_losses) -> float:
    """ROC AUC of the loss-threshold attack: P(loss_member < loss_nonmember), ties counted one half.

    Args:
        member_losses: `[N_in]` per-sample losses of training samples.
        nonmember_losses: `[N_out]` per-sample losses of held-out samples.
    """
    members, nonmembers = _losses(member_losses, nonmember_losses)
    scores = -np.concatenate([members, nonmembers])  # lower loss = more likely a member
    is_member = np.concatenate([np.ones(members.size, bool), np.zeros(nonmembers.size, bool)])
    return binary_auc(scores, is_member)


def bootstrap_auc_interval(
    member_losses,
    nonmember_losses,
    member_groups: Sequence | None = None,
    nonmember_groups: Sequence | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `membership_inference_auc`.

    Each resample draws, with replacement, as many member groups as there are (and likewise non-member
    groups) and weights every sample by how often its group was drawn; the AUC of the weighted samples is
    P(loss_member < loss_nonmember) + P(equal) / 2 under those weights.

    Args:
        member_losses, nonmember_losses: `[N_in]`, `[N_out]` per-sample losses.
        member_groups, nonmember_groups: the group (patient id) of each sample, resampled as a whole;
            None: each sample is its own group.
        resamples: bootstrap resamples.
        level: coverage of the interval.
        seed: seed of the resampling (same seed, same interval).

    Returns:
        (low, high): the (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled AUCs.
    """
    members, nonmembers = _losses(member_losses, nonmember_losses)
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    values, inverse = np.unique(np.concatenate([members, nonmembers]), return_inverse=True)
    member_value, nonmember_value = inverse[: members.size], inverse[members.size :]
    member_group, num_member_groups = _group_index(member_groups, members.size)
    nonmember_group, num_nonmember_groups = _group_index(nonmember_groups, nonmembers.size)
    rng = np.random.default_rng(seed)
    aucs = np.empty(resamples)
    for r in range(resamples):
        member_weight = _draw(rng, num_member_groups)[member_group]
        nonmember_weight = _draw(rng, num_nonmember_groups)[nonmember_group]
        at_member = np.bincount(member_value, member_weight, minlength=values.size)  # weight per loss value
        at_nonmember = np.bincount(nonmember_value, nonmember_weight, minlength=values.size)
        nonmember_above = at_nonmember.sum() - np.cumsum(at_nonmember)  # weight of larger losses
        wins = at_member @ (nonmember_above + 0.5 * at_nonmember)
        aucs[r] = wins / (at_member.sum() * at_nonmember.sum())
    low, high = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _losses(member_losses, nonmember_losses) -> tuple[np.ndarray, np.ndarray]:
    members = np.asarray(member_losses, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_losses, dtype=np.float64).ravel()
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError(
            f"membership audit needs both members and non-members (got {members.size} and {nonmembers.size})"
        )
    return members, nonmembers


def _group_index(groups: Sequence | None, size: int) -> tuple[np.ndarray, int]:
    """`[size]` int64 group number of each sample (groups numbered in order of first appearance), and the
    number of groups."""
    if groups is None:
        return np.arange(size), size
    if len(groups) != size:
        raise ValueError(f"{len(groups)} group ids for {size} samples")
    _, first, index = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    number = np.empty(first.size, dtype=np.int64)
    number[np.argsort(first)] = np.arange(first.size)
    return number[index.ravel()], first.size


def _draw(rng: np.random.Generator, num_groups: int) -> np.ndarray:
    """`[num_groups]` float64: how often each group is drawn in `num_groups` draws with replacement."""
    return np.bincount(rng.integers(0, num_groups, num_groups), minlength=num_groups).astype(np.float64)
