"""Non-learned next-visit baselines: what a model must beat on the same split.

Three predictors score every label of a label space for cohort rows (rows as `build_cohort` produces:
`visits` = the input visits, oldest first, each a list of canonical codes; `labels` = the target labels).
A code's label is `shark_hf.codes.to_label(code, label_space)`; codes without a label are ignored. With
`prior[c]` = the fraction of TRAINING samples whose target holds label c (in [0, 1]), and for a sample with
T input visits, `x[v, c]` = 1 when visit v (0 = oldest) holds a code of label c:

- `most_frequent`: `score[c] = prior[c]` (the same ranking for every sample);
- `last_visit`: `score[c] = x[T-1, c] + prior[c] / 2`: the last visit's labels first (1 <= score), then the
  others (score <= 1/2), each group ordered by training frequency;
- `history`: `score[c] = sum_v decay^(T-1-v) x[v, c] + prior_weight * prior[c]` (P-TopFreq / TIFU-KNN style
  repeat score with a population prior). `decay` and `prior_weight` are chosen on the VALIDATION split only,
  by P@10 over `HISTORY_GRID` (decay-major order); ties keep the first setting of the grid.

Scores are float32 `[N, C]`, columns in the order of `label_names`; ties in a row are broken by
`shark_hf.metrics` (stable sort: the lower column first).

API (stable; other modules build on it):

>>> baselines = fit_baselines(cohort["train"], cohort["validation"], label_names, label_space)
>>> scores = baselines.scores("history", cohort["test"])            # [N, C] float32
>>> report = evaluate_baselines(baselines, cohort, ("validation", "test"))
>>> report["best_baseline"], report["baselines"]["history"]["test"]["P@10"]
>>> summary = baseline_summary(report, model_test_metrics)           # for metrics.json / the card

`rows` arguments take a `datasets.Dataset`, a pyarrow list<list<string>> column of visits, or a Python
sequence of visits (one list of visits per sample); `labels` arguments take a `datasets.Dataset`, a
sequence of row dicts with "labels", or a sequence of label lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .codes import to_label
from .metrics import DEFAULT_KS, SELECTION_METRIC, compute_metrics, precision_at_k

BASELINES: tuple[str, ...] = ("most_frequent", "last_visit", "history")
DECAYS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9, 1.0)
PRIOR_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
HISTORY_GRID: tuple[tuple[float, float], ...] = tuple(itertools.product(DECAYS, PRIOR_WEIGHTS))


# ------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class LabelHistory:
    """The label sets of the input visits of N samples.

    Attributes:
        visit: `[E]` int64 and label: `[E]` int64: visit `visit[e]` holds a code of label `label[e]` (each
            pair once; visits numbered over all samples, V in all).
        sample: `[V]` int64, the sample of each visit (visits of a sample are contiguous, oldest first).
        steps_back: `[V]` int64, T-1-v: 0 for a sample's last input visit.
        num_samples: N. num_labels: C.
    """

    visit: np.ndarray
    label: np.ndarray
    sample: np.ndarray
    steps_back: np.ndarray
    num_samples: int
    num_labels: int

    def weighted(self, weights: np.ndarray) -> np.ndarray:
        """`[N, C]` float64: per sample, the sum over its visits v holding label c of `weights[v]` (`[V]`)."""
        cells = self.sample[self.visit] * self.num_labels + self.label
        size = self.num_samples * self.num_labels
        out = np.bincount(cells, weights=weights[self.visit], minlength=size)
        return out.reshape(self.num_samples, self.num_labels)


def _visits_column(rows: Any) -> pa.ListArray:
    """The visits of every sample as one pyarrow list<list<string>> array."""
    if not isinstance(rows, pa.Array | pa.ChunkedArray) and hasattr(rows, "column_names"):  # Dataset
        rows = rows.data.column("visits")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks() if rows.num_chunks else pa.array([], pa.list_(pa.list_(pa.string())))
    if not isinstance(rows, pa.Array):
        rows = pa.array(list(rows), pa.list_(pa.list_(pa.string())))
    return rows


def _lengths(lists: pa.ListArray) -> np.ndarray:
    """`[n]` int64 length of each list (a null list counts 0)."""
    return np.asarray(pc.fill_null(pc.list_value_length(lists), 0), dtype=np.int64)


def _label_of_codes(codes: pa.Array, column: Mapping[str, int], label_space: str) -> np.ndarray:
    """`[U]` int64 column of each (distinct) code's label, -1 for a code without a label in `column`."""
    out = np.full(len(codes), -1, dtype=np.int64)
    for i, code in enumerate(codes.to_pylist()):
        try:
            out[i] = column.get(to_label(code, label_space), -1)
        except (KeyError, ValueError):
            continue
    return out


def label_history(rows: Any, label_names: Iterable[str], label_space: str) -> LabelHistory:
    """The `LabelHistory` of `rows` (see the module docstring for accepted types) over `label_names`."""
    column = {label: i for i, label in enumerate(label_names)}
    visits = _visits_column(rows)
    num_samples = len(visits)
    visit_counts = _lengths(visits)
    flat_visits = visits.flatten()
    codes_per_visit = _lengths(flat_visits)
    encoded = pc.dictionary_encode(flat_visits.flatten())
    labels = _label_of_codes(encoded.dictionary, column, label_space)[np.asarray(encoded.indices)]
    visit_of_code = np.repeat(np.arange(len(flat_visits), dtype=np.int64), codes_per_visit)
    keep = labels >= 0
    pairs = np.unique(visit_of_code[keep] * len(column) + labels[keep])  # a label counts once per visit
    sample = np.repeat(np.arange(num_samples, dtype=np.int64), visit_counts)
    ends = np.repeat(np.cumsum(visit_counts), visit_counts)
    steps_back = ends - 1 - np.arange(len(sample))
    return LabelHistory(
        pairs // max(len(column), 1),
        pairs % max(len(column), 1),
        sample,
        steps_back,
        num_samples,
        len(column),
    )


def _label_lists(labels: Any) -> list[Sequence[str]]:
    if hasattr(labels, "column_names"):  # datasets.Dataset
        return labels["labels"]
    return [row["labels"] if isinstance(row, Mapping) else row for row in labels]


def multi_hot(labels: Any, label_names: Iterable[str]) -> np.ndarray:
    """`[N, C]` bool targets; labels outside `label_names` are left out (they cannot be predicted)."""
    column = {label: i for i, label in enumerate(label_names)}
    lists = _label_lists(labels)
    out = np.zeros((len(lists), len(column)), dtype=bool)
    for i, row in enumerate(lists):
        out[i, [column[label] for label in row if label in column]] = True
    return out


def label_prior(train_labels: Any, label_names: Iterable[str]) -> np.ndarray:
    """`[C]` float64: the fraction of training samples whose target holds each label."""
    targets = multi_hot(train_labels, label_names)
    if not len(targets):
        raise ValueError("the training split has no samples: no label frequency to estimate")
    return targets.mean(axis=0)


# ------------------------------------------------------------------------------------------- scores


def most_frequent_scores(history: LabelHistory, prior: np.ndarray) -> np.ndarray:
    """`[N, C]` float32: `prior` for every sample."""
    return np.broadcast_to(prior.astype(np.float32), (history.num_samples, len(prior))).copy()


def last_visit_scores(history: LabelHistory, prior: np.ndarray) -> np.ndarray:
    """`[N, C]` float32: `[label in the last input visit] + prior / 2`."""
    last = history.weighted((history.steps_back == 0).astype(np.float64))
    return (last + prior / 2).astype(np.float32)


def history_scores(history: LabelHistory, prior: np.ndarray, decay: float, prior_weight: float) -> np.ndarray:
    """`[N, C]` float32: `sum_v decay^(T-1-v) [label in visit v] + prior_weight * prior`."""
    counts = history.weighted(np.power(float(decay), history.steps_back.astype(np.float64)))
    return (counts + prior_weight * prior).astype(np.float32)


def select_history_settings(
    history: LabelHistory,
    targets: np.ndarray,
    prior: np.ndarray,
    grid: Sequence[tuple[float, float]] = HISTORY_GRID,
) -> tuple[tuple[float, float], dict[str, float]]:
    """The `(decay, prior_weight)` of `grid` with the best P@10 of `history` against `targets` `[N, C]`.

    Meant for the validation split (never test).

    Returns:
        The chosen setting (the first of the grid among equals) and `{"decay=..,prior_weight=..": P@10}`.
    """
    table: dict[str, float] = {}
    best, best_value = None, -np.inf
    for decay, weight in grid:
        value = precision_at_k(history_scores(history, prior, decay, weight), targets, 10)
        table[f"decay={decay:g},prior_weight={weight:g}"] = value
        if value > best_value:
            best, best_value = (float(decay), float(weight)), value
    return best, table


@dataclass(frozen=True)
class FittedBaselines:
    """The three baselines fitted on a cohort: the training prior and the validation-chosen settings.

    Attributes:
        label_names: the label columns, in order. label_space: "ccs", "ccsr" or "code".
        prior: `[C]` float64 training label frequency. decay, prior_weight: `history`'s settings.
        validation_grid: P@10 on validation of every grid setting (how they were chosen).
    """

    label_names: list[str]
    label_space: str
    prior: np.ndarray
    decay: float
    prior_weight: float
    validation_grid: dict[str, float] = field(default_factory=dict)

    def history(self, rows: Any) -> LabelHistory:
        return label_history(rows, self.label_names, self.label_space)

    def scores(self, name: str, rows: Any, history: LabelHistory | None = None) -> np.ndarray:
        """`[N, C]` float32 scores of baseline `name` (one of `BASELINES`) for `rows`."""
        history = history if history is not None else self.history(rows)
        if name == "most_frequent":
            return most_frequent_scores(history, self.prior)
        if name == "last_visit":
            return last_visit_scores(history, self.prior)
        if name == "history":
            return history_scores(history, self.prior, self.decay, self.prior_weight)
        raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")

    def settings(self, name: str) -> dict[str, float]:
        """The JSON settings of baseline `name`."""
        return {"decay": self.decay, "prior_weight": self.prior_weight} if name == "history" else {}


def fit_baselines(
    train: Any,
    validation: Any,
    label_names: Iterable[str],
    label_space: str,
    grid: Sequence[tuple[float, float]] = HISTORY_GRID,
) -> FittedBaselines:
    """The training prior, and `history`'s settings chosen on `validation` (Datasets with visits, labels)."""
    label_names = list(label_names)
    prior = label_prior(train, label_names)
    history = label_history(validation, label_names, label_space)
    (decay, weight), table = select_history_settings(history, multi_hot(validation, label_names), prior, grid)
    return FittedBaselines(label_names, label_space, prior, decay, weight, table)


# ------------------------------------------------------------------------------------------- report


def evaluate_baselines(
    baselines: FittedBaselines,
    cohort: Mapping[str, Any],
    splits: Sequence[str] = ("validation", "test"),
    ks: int | Iterable[int] = DEFAULT_KS,
) -> dict[str, Any]:
    """`compute_metrics` of every baseline on every split, and the best one on validation P@10.

    Returns:
        `{"baselines": {name: {"settings": {...}, split: metrics, ...}}, "best_baseline": name | None}`;
        the best is chosen by `validation` P@10 (the first of `BASELINES` among equals) and is None when
        `validation` is not among `splits`.
    """
    out: dict[str, dict[str, Any]] = {name: {"settings": baselines.settings(name)} for name in BASELINES}
    for split in splits:
        history = baselines.history(cohort[split])
        targets = multi_hot(cohort[split], baselines.label_names)
        for name in BASELINES:
            scores = baselines.scores(name, None, history)
            out[name][split] = compute_metrics(scores, targets, ks=ks, threshold=0.5)
    best = None
    if "validation" in splits:
        best = max(BASELINES, key=lambda n: (out[n]["validation"][SELECTION_METRIC], -BASELINES.index(n)))
    return {"baselines": out, "best_baseline": best}


def baseline_summary(
    report: Mapping[str, Any], model_test: Mapping[str, Any], keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """`report` plus the model's test lift over the best baseline: `model_test[k] - best_test[k]`.

    `keys` default to the ranking metrics (`P@k`, `Acc@k`, `R@k`) present in both.
    """
    best = report["best_baseline"]
    best_test = report["baselines"][best]["test"]
    if keys is None:
        keys = [k for k in best_test if k[:2] in ("P@", "R@") or k.startswith("Acc@")]
    lift = {k: model_test[k] - best_test[k] for k in keys if k in model_test}
    return {**report, "lift_over_best_baseline": lift}


def format_baselines(report: Mapping[str, Any], split: str, keys: Sequence[str]) -> list[str]:
    """Table rows `name  k1  k2 ...` (values x100, 2 decimals) of every baseline on `split`, best marked."""
    rows = []
    for name in BASELINES:
        values = "  ".join(f"{100 * report['baselines'][name][split][k]:6.2f}" for k in keys)
        mark = " (best on validation)" if name == report["best_baseline"] else ""
        rows.append(f"{name:<14} {values}{mark}")
    return rows
