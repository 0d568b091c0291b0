"""Diagnosis-prediction metrics of the SHARK paper, as plain numpy functions.

Definitions (pinned; they match the public TRANS / BoxLM evaluation code the paper compares to). For sample
``i`` with true label set ``Y_i`` and its ``k`` highest-scoring labels ``T_i``:

- visit-level precision ``P@k   = mean_i |T_i ∩ Y_i| / min(k, |Y_i|)``
- code-level accuracy   ``Acc@k = Σ_i |T_i ∩ Y_i| / Σ_i |Y_i|`` (micro)
- recall                ``R@k   = mean_i |T_i ∩ Y_i| / |Y_i|``
- micro / macro ROC AUC (Mann-Whitney U, ties counted one half, which equals the average-rank statistic)
- micro / macro F1 of the decisions ``scores >= threshold``.

Conventions shared by every function:

- ``scores``: ``[N, C]`` real numbers, higher = more likely. Ranking metrics and AUC are the same for
  logits and probabilities; F1 thresholds the scores *as given* (the default ``threshold=0.5`` is meant for
  probabilities, pass ``threshold=0.0`` for logits). NaN scores are an error; ``±inf`` is allowed.
- ``labels``: ``[N, C]`` multi-hot, bool or int/float holding only 0 and 1.
- Both may be numpy arrays, torch tensors (any device; detached, never part of the autograd graph) or
  nested lists.
- Samples whose label set is empty are excluded from every metric (their P@k and R@k are undefined) and
  counted: ``compute_metrics`` returns ``num_samples`` (evaluated) and ``num_excluded_empty``. If every
  sample is empty there is nothing to evaluate and a ``ValueError`` is raised.
- Top-k is deterministic: labels are ordered by descending score with a stable sort, so ties go to the lower
  column index, i.e. the first ``k`` columns of ``np.argsort(-scores, axis=1, kind="stable")``. When ``k > C``
  the top-k is all ``C`` labels (so ``P@k = R@k = Acc@k = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

DEFAULT_KS: tuple[int, ...] = (10, 20)

HEADLINE_METRICS: tuple[str, ...] = ("P@10", "P@20", "Acc@10", "Acc@20")
"""The paper's Table 2 columns: what training logs, model cards and result tables report."""

SELECTION_METRIC = "P@10"
"""What every validation-only choice maximises: the best epoch, heuristic settings, context shrinkage."""


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Converts a numpy array, torch tensor or nested list to a numpy array (tensors: detached, on CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # float16 / bfloat16 have no fast numpy path
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except ValueError as err:
        raise ValueError(f"{name} is not a rectangular [N, C] array: {err}") from err


def _validate(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checks shapes and values; returns ``scores`` [N, C] float32/float64 and ``labels`` [N, C] bool."""
    scores, labels = _to_numpy(scores, "scores"), _to_numpy(labels, "labels")
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [N, C], got shape {scores.shape}")
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores shape {scores.shape} and labels shape {labels.shape} differ; both must be [N, C]"
        )
    if scores.shape[0] == 0:
        raise ValueError(f"no samples to evaluate: scores has shape {scores.shape}")
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if scores.dtype.kind != "f" or scores.dtype.itemsize < 4:
        scores = scores.astype(np.float64 if scores.dtype.kind in "iu" else np.float32)
    nan = np.isnan(scores)
    if nan.any():
        row, col = np.argwhere(nan)[0]
        raise ValueError(
            f"scores contain {int(nan.sum())} NaN value(s), the first at row {row}, column {col}"
        )
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iuf":
            raise ValueError(f"labels must be multi-hot 0/1 (bool, int or float), got dtype {labels.dtype}")
        bad = (labels != 0) & (labels != 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"labels must be multi-hot 0/1; found {labels[row, col].item()!r} at row {row}, column {col}"
            )
        labels = labels.astype(bool)
    return scores, labels


def _drop_empty(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Removes samples whose label set is empty; returns the rest and how many were removed."""
    keep = labels.any(axis=1)
    num_empty = int(keep.size - keep.sum())
    if num_empty == keep.size:
        raise ValueError(f"all {num_empty} samples have an empty label set; no metric is defined")
    if num_empty:
        scores, labels = scores[keep], labels[keep]
    return scores, labels, num_empty


def _prepare(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, int]:
    return _drop_empty(*_validate(scores, labels))


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, Integral) or k <= 0:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    return int(k)


def _check_ks(ks: int | Iterable[int]) -> tuple[int, ...]:
    ks = (ks,) if isinstance(ks, Integral) else tuple(ks)
    if not ks:
        raise ValueError("ks must name at least one k, got an empty sequence")
    return tuple(dict.fromkeys(_check_k(k) for k in ks))


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices ``[N, min(k, C)]`` of the highest scores per row, best first.

    ``scores`` is a numpy ``[N, C]`` real array without NaN (the metric functions validate it first).
    The result equals ``np.argsort(-scores, axis=1, kind="stable")[:, :k]`` (ties go to the lower column
    index), computed with an ``argpartition`` and a sort of the ``k`` candidates only; rows whose k-th score
    is tied with a score outside the candidates fall back to the full stable sort.
    """
    num_cols = scores.shape[1]
    k = min(_check_k(k), num_cols)
    if k == num_cols:
        return np.argsort(-scores, axis=1, kind="stable")
    candidates = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    values = np.take_along_axis(scores, candidates, axis=1)
    top = np.take_along_axis(candidates, np.argsort(-values, axis=1, kind="stable"), axis=1)
    kth = values.min(axis=1, keepdims=True)
    tied = np.flatnonzero((scores >= kth).sum(axis=1) > k)
    if tied.size:
        top[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
    return top


def _hits_at_ks(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """``|topk ∩ Y|`` per sample ``[N]`` for every k, from one top-``max(ks)`` selection."""
    top = top_k_indices(scores, max(ks))
    cumulative = np.take_along_axis(labels, top, axis=1).cumsum(axis=1)
    return {k: cumulative[:, min(k, top.shape[1]) - 1] for k in ks}


def _ranking_metrics(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """P@k, R@k and Acc@k for samples that all have a non-empty label set."""
    num_true = labels.sum(axis=1)
    out = {}
    for k, hits in _hits_at_ks(scores, labels, ks).items():
        out[f"P@{k}"] = float(np.mean(hits / np.minimum(k, num_true)))
        out[f"R@{k}"] = float(np.mean(hits / num_true))
        out[f"Acc@{k}"] = float(hits.sum() / num_true.sum())
    return out


def precision_at_k(scores: Any, labels: Any, k: int) -> float:
    """Visit-level P@k = mean over samples of ``|topk(scores) ∩ Y| / min(k, |Y|)``.

    Args:
        scores: ``[N, C]`` float scores (logits or probabilities).
        labels: ``[N, C]`` multi-hot 0/1. Samples with an empty label set are excluded.
        k: positive int; ``k > C`` means all ``C`` labels.
    """
    k = _check_k(k)
    return _ranking_metrics(*_prepare(scores, labels)[:2], (k,))[f"P@{k}"]


def recall_at_k(scores: Any, labels: Any, k: int) -> float:
    """R@k = mean over samples of ``|topk(scores) ∩ Y| / |Y|``. Arguments as in [`precision_at_k`]."""
    k = _check_k(k)
    return _ranking_metrics(*_prepare(scores, labels)[:2], (k,))[f"R@{k}"]


def accuracy_at_k(scores: Any, labels: Any, k: int) -> float:
    """Code-level Acc@k = ``Σ |topk(scores) ∩ Y| / Σ |Y|`` (micro). Arguments as in [`precision_at_k`]."""
    k = _check_k(k)
    return _ranking_metrics(*_prepare(scores, labels)[:2], (k,))[f"Acc@{k}"]


def _binary_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of one score vector ``[n]``: ``P(s_pos > s_neg) + P(s_pos == s_neg) / 2``.

    This is the Mann-Whitney ``U / (n_pos * n_neg)``, identical to the average-rank formula, computed by
    counting for each positive the negatives below it (and half of those equal to it) with a binary search.
    None when ``positive`` lacks one of the two classes.
    """
    negatives = np.sort(scores[~positive])
    pos = np.sort(scores[positive])  # sorted queries make the binary searches below ~10x faster
    if pos.size == 0 or negatives.size == 0:
        return None
    below = np.searchsorted(negatives, pos, side="left")
    below_or_equal = np.searchsorted(negatives, pos, side="right")
    twice_u = int(below.sum()) + int(below_or_equal.sum())  # 2 * (below + equal / 2), exact in integers
    return twice_u / (2 * pos.size * negatives.size)


def binary_auc(scores: Any, targets: Any) -> float:
    """ROC AUC of one score vector ``[n]`` against 0/1 ``targets`` ``[n]`` (higher score = positive).

    Raises ``ValueError`` when the shapes differ or one class is absent (the AUC is then undefined).
    """
    scores = np.asarray(_to_numpy(scores, "scores"), dtype=np.float64).ravel()
    targets = np.asarray(_to_numpy(targets, "targets")).ravel()
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must have the same length")
    auc = _binary_auc(scores, targets.astype(bool))
    if auc is None:
        raise ValueError("AUC is undefined: targets must hold both positives and negatives")
    return auc


def _micro_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    return _binary_auc(scores.ravel(), labels.ravel())


def _macro_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float | None, int]:
    """Mean per-label AUC over labels with both classes present, and how many labels were skipped."""
    num_pos = labels.sum(axis=0)
    usable = np.flatnonzero((num_pos > 0) & (num_pos < labels.shape[0]))
    skipped = labels.shape[1] - usable.size
    if usable.size == 0:
        return None, skipped
    scores_t, labels_t = np.ascontiguousarray(scores.T[usable]), np.ascontiguousarray(labels.T[usable])
    return float(np.mean([_binary_auc(s, y) for s, y in zip(scores_t, labels_t, strict=True)])), skipped


def micro_auc(scores: Any, labels: Any) -> float:
    """ROC AUC over all ``(sample, label)`` cells pooled. Samples with an empty label set are excluded.

    Raises ``ValueError`` when every cell is positive (the AUC is then undefined).
    """
    auc = _micro_auc(*_prepare(scores, labels)[:2])
    if auc is None:
        raise ValueError(
            "micro AUC is undefined: every (sample, label) cell is positive, there are no negatives"
        )
    return auc


def macro_auc(scores: Any, labels: Any) -> float:
    """Mean of per-label ROC AUCs over the labels that have both positive and negative samples.

    Labels lacking one class are skipped (``compute_metrics`` reports how many as
    ``macro_auc_labels_skipped``). Samples with an empty label set are excluded. Raises ``ValueError`` when
    no label has both classes.
    """
    scores, labels, _ = _prepare(scores, labels)
    auc, skipped = _macro_auc(scores, labels)
    if auc is None:
        raise ValueError(
            f"macro AUC is undefined: none of the {skipped} labels has both positives and negatives"
        )
    return auc


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or math.isnan(threshold):
        raise ValueError(f"threshold must be a real number, got threshold={threshold!r}")
    return float(threshold)


def _f1_counts(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """Per-label true positives, false positives and false negatives ``[C]`` of ``scores >= threshold``."""
    predicted = scores >= threshold
    tp = (predicted & labels).sum(axis=0)
    return tp, predicted.sum(axis=0) - tp, labels.sum(axis=0) - tp


def _micro_f1(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    tp, fp, fn = (int(c.sum()) for c in _f1_counts(scores, labels, threshold))
    return 2 * tp / (2 * tp + fp + fn)  # > 0: every kept sample has a positive label


def _macro_f1(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, int]:
    """Mean per-label F1 over labels that are true or predicted somewhere, and how many were skipped."""
    tp, fp, fn = _f1_counts(scores, labels, threshold)
    denominator = 2 * tp + fp + fn
    defined = denominator > 0  # at least one positive label exists, so at least one label is defined
    return float(np.mean(2 * tp[defined] / denominator[defined])), int((~defined).sum())


def micro_f1(scores: Any, labels: Any, threshold: float = 0.5) -> float:
    """F1 of ``scores >= threshold`` pooled over all ``(sample, label)`` cells: ``2TP / (2TP + FP + FN)``.

    The threshold applies to ``scores`` as given: 0.5 for probabilities, 0.0 for logits. Samples with an empty
    label set are excluded.
    """
    threshold = _check_threshold(threshold)
    return _micro_f1(*_prepare(scores, labels)[:2], threshold)


def macro_f1(scores: Any, labels: Any, threshold: float = 0.5) -> float:
    """Mean per-label F1 of ``scores >= threshold``.

    Labels that are neither true nor predicted for any sample (F1 = 0/0) are skipped, as scikit-learn's
    ``f1_score(average="macro", zero_division=np.nan)`` does; ``compute_metrics`` reports how many as
    ``macro_f1_labels_skipped``. Samples with an empty label set are excluded.
    """
    threshold = _check_threshold(threshold)
    return _macro_f1(*_prepare(scores, labels)[:2], threshold)[0]


def compute_metrics(
    scores: Any, labels: Any, ks: int | Iterable[int] = DEFAULT_KS, threshold: float = 0.5
) -> dict[str, float | int | None]:
    """All metrics of this module in one pass, as a JSON-serialisable dict of plain Python numbers.

    Args:
        scores: ``[N, C]`` float scores (logits or probabilities), numpy or torch.
        labels: ``[N, C]`` multi-hot 0/1, numpy or torch.
        ks: the k of P@k / R@k / Acc@k (one top-``max(ks)`` selection serves them all).
        threshold: decision threshold for F1, applied to ``scores`` as given (0.5 for probabilities, 0.0 for
            logits).

    Returns:
        ``{"P@k", "R@k", "Acc@k"}`` for each k, then ``micro_auc``, ``macro_auc`` (None when undefined),
        ``macro_auc_labels_skipped`` (labels without both classes), ``micro_f1``, ``macro_f1``,
        ``macro_f1_labels_skipped`` (labels never true nor predicted), ``num_samples`` (samples evaluated) and
        ``num_excluded_empty`` (samples left out because their label set is empty).
    """
    ks, threshold = _check_ks(ks), _check_threshold(threshold)
    scores, labels, num_empty = _prepare(scores, labels)
    out: dict[str, float | int | None] = dict(_ranking_metrics(scores, labels, ks))
    out["micro_auc"] = _micro_auc(scores, labels)
    out["macro_auc"], out["macro_auc_labels_skipped"] = _macro_auc(scores, labels)
    out["micro_f1"] = _micro_f1(scores, labels, threshold)
    out["macro_f1"], out["macro_f1_labels_skipped"] = _macro_f1(scores, labels, threshold)
    out["num_samples"] = int(scores.shape[0])
    out["num_excluded_empty"] = num_empty
    return out
