"""Membership-inference audit of a trained model.

A released model can reveal whether a patient was in its training data: models tend to fit their training
samples better than unseen ones. The audit runs the simplest such attack, a loss threshold (Yeom et al.,
2018): the attacker guesses "member" when a patient's loss is low. Its ROC AUC over training patients
(members) against held-out test patients (non-members) measures the leak: 0.5 is chance (no signal), 1.0
means the loss separates members perfectly.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import binary_auc


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
        member_losses: `[N_in]` per-sample losses of training patients.
        nonmember_losses: `[N_out]` per-sample losses of held-out patients.
    """
    members = np.asarray(member_losses, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_losses, dtype=np.float64).ravel()
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError(
            f"membership audit needs both members and non-members (got {members.size} and {nonmembers.size})"
        )
    scores = -np.concatenate([members, nonmembers])  # lower loss = more likely a member
    is_member = np.concatenate([np.ones(members.size, bool), np.zeros(nonmembers.size, bool)])
    return binary_auc(scores, is_member)
