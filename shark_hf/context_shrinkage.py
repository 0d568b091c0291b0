"""Shrinkage of the context logits toward the label prior, chosen on validation (repeat-head models).

A repeat-head model scores label c as `b_c + (W_c . context) + repeat_c`: the label prior (the head's bias,
started at the training log-odds), the paper's context logits and the label-history (repeat) path. Where a
cohort's next visits are mostly repeats, the context logits carry little signal beyond the history and their
noise can rank a patient's own labels below what the history alone would (built-in high-repetition variants:
0.7 P@10 below the last visit's labels). After training, `shrink_context_logits` therefore scales W by the
factor of `SCALES` with the best validation P@10 — a one-parameter blend of the full model (1) and the
history-plus-prior predictor (0), the way the heuristics' settings are chosen on validation only. Ties keep
the larger factor, so a cohort where the context helps keeps the trained model unchanged.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .evaluation import evaluate_split
from .metrics import SELECTION_METRIC

# Candidate factors of the context logits, the trained model (1) first: ties keep the earlier one.
SCALES: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)


@torch.no_grad()
def shrink_context_logits(
    model, validation: DataLoader, accelerator: Accelerator
) -> tuple[float, dict[float, float]]:
    """Scale `model.classifier.weight` in place by the factor of `SCALES` with the best validation P@10.

    Args:
        model: a prepared `SharkForDiagnosisPrediction` with `config.repeat_head`.
        validation: the prepared validation loader.

    Returns:
        The chosen factor and the validation P@10 (fraction) of every factor tried.
    """
    head = accelerator.unwrap_model(model).classifier.weight
    trained = head.detach().clone()
    scores: dict[float, float] = {}
    for scale in SCALES:
        head.copy_(trained * scale)
        scores[scale] = evaluate_split(model, validation, accelerator)[SELECTION_METRIC]
    best = max(SCALES, key=lambda scale: (scores[scale], -SCALES.index(scale)))
    head.copy_(trained * best)
    return best, scores
