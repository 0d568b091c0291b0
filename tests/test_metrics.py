"""Tests for shark_hf.metrics and the evaluate module metrics/shark_metrics (hand-computed expectations)."""

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from shark_hf.metrics import (
    accuracy_at_k,
    compute_metrics,
    macro_auc,
    macro_f1,
    micro_auc,
    micro_f1,
    precision_at_k,
    recall_at_k,
    top_k_indices,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Ranking case, C = 5. Row 0: |Y| = 2 (< k for k >= 3). Row 1: |Y| = 4 (> k for k <= 3). Row 2: empty Y.
RANK_SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.1, 0.0],  # order 0, 1, 2, 3, 4
        [0.2, 0.4, 0.6, 0.8, 1.0],  # order 4, 3, 2, 1, 0
        [0.5, 0.4, 0.3, 0.2, 0.1],  # excluded: no true label
    ]
)
RANK_LABELS = np.array([[1, 0, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
# hits (row 0, row 1): k=1 (1, 0); k=2 (1, 1); k=3 (2, 2); k>=5 (2, 4)
RANK_EXPECTED = {
    "P@1": (1 / 1 + 0 / 1) / 2,
    "R@1": (1 / 2 + 0 / 4) / 2,
    "Acc@1": (1 + 0) / 6,
    "P@2": (1 / 2 + 1 / 2) / 2,
    "R@2": (1 / 2 + 1 / 4) / 2,
    "Acc@2": (1 + 1) / 6,
    "P@3": (2 / 2 + 2 / 3) / 2,  # row 0: |Y| = 2 < k = 3, the denominator is |Y|
    "R@3": (2 / 2 + 2 / 4) / 2,
    "Acc@3": (2 + 2) / 6,
    "P@10": 1.0,  # k > C: the top-k is all 5 labels
    "R@10": 1.0,
    "Acc@10": 1.0,
}

# AUC / F1 case, C = 4, every row has a true label. Hand computation:
# col 0: pos {0.5, 0.9} vs neg {0.5, 0.2}: pairs 0.5 (tie) + 1 + 1 + 1 -> AUC 3.5 / 4; decisions >= 0.5:
#        [1, 1, 0, 1] -> tp 2, fp 1, fn 0 -> F1 4 / 5.
# col 1: all scores 0.5 -> AUC 0.5; decisions [1, 1, 1, 1] vs [0, 1, 1, 0] -> tp 2, fp 2 -> F1 4 / 6.
# col 2: no positive -> AUC skipped; nothing predicted -> F1 0/0 skipped.
# col 3: no positive -> AUC skipped; one false positive (0.6) -> F1 0, kept.
# micro AUC: positives {0.5, 0.5, 0.5, 0.9}, negatives {0.5, 0.2, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0, 0, 0}:
#        each 0.5 beats 8 and ties 3 -> 9.5; 0.9 beats 12 -> (3 * 9.5 + 12) / (4 * 12) = 40.5 / 48.
# micro F1: tp 4, fp 1 + 2 + 1 = 4, fn 0 -> 8 / 12.
AUC_SCORES = np.array(
    [
        [0.5, 0.5, 0.1, 0.6],
        [0.5, 0.5, 0.2, 0.0],
        [0.2, 0.5, 0.3, 0.0],
        [0.9, 0.5, 0.4, 0.0],
    ]
)
AUC_LABELS = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]])
AUC_EXPECTED = {
    "micro_auc": 40.5 / 48,
    "macro_auc": (3.5 / 4 + 0.5) / 2,
    "macro_auc_labels_skipped": 2,
    "micro_f1": 8 / 12,
    "macro_f1": (4 / 5 + 4 / 6 + 0) / 3,
    "macro_f1_labels_skipped": 1,
}


def test_ranking_metrics_hand_computed():
    result = compute_metrics(RANK_SCORES, RANK_LABELS, ks=(1, 2, 3, 10))
    for key, expected in RANK_EXPECTED.items():
        assert result[key] == pytest.approx(expected, abs=1e-12), key
    assert result["num_samples"] == 2
    assert result["num_excluded_empty"] == 1
    for k in (1, 2, 3, 10):
        assert precision_at_k(RANK_SCORES, RANK_LABELS, k) == result[f"P@{k}"]
        assert recall_at_k(RANK_SCORES, RANK_LABELS, k) == result[f"R@{k}"]
        assert accuracy_at_k(RANK_SCORES, RANK_LABELS, k) == result[f"Acc@{k}"]


def test_k_larger_than_num_labels_takes_all_labels():
    assert top_k_indices(RANK_SCORES, 10).tolist() == [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]
    assert compute_metrics(RANK_SCORES, RANK_LABELS, ks=(5, 6))["P@6"] == 1.0


def test_ties_go_to_the_lower_column_index():
    scores = np.array([[0.5, 0.5, 0.5, 0.5]])
    assert precision_at_k(scores, [[0, 0, 1, 1]], 2) == 0.0  # top-2 = columns 0, 1
    assert precision_at_k(scores, [[0, 0, 1, 1]], 3) == 0.5  # top-3 = columns 0, 1, 2: one hit of min(3, 2)
    assert precision_at_k(scores, [[1, 1, 0, 0]], 2) == 1.0
    row = np.array([[0.3, 0.7, 0.3, 0.7, 0.1]])
    assert top_k_indices(row, 2).tolist() == [[1, 3]]
    assert top_k_indices(row, 3).tolist() == [[1, 3, 0]]  # the 3rd place is tied between columns 0 and 2
    assert top_k_indices(row, 4).tolist() == [[1, 3, 0, 2]]


def test_top_k_indices_equals_stable_argsort_on_heavily_tied_scores():
    rng = np.random.default_rng(0)
    for _ in range(30):
        num_rows, num_cols = rng.integers(1, 40), rng.integers(1, 25)
        scores = rng.integers(0, 4, size=(num_rows, num_cols)).astype(np.float32)
        reference = np.argsort(-scores, axis=1, kind="stable")
        for k in range(1, num_cols + 3):
            assert np.array_equal(top_k_indices(scores, k), reference[:, :k])


def test_auc_and_f1_hand_computed():
    result = compute_metrics(AUC_SCORES, AUC_LABELS, ks=(1,))
    for key, expected in AUC_EXPECTED.items():
        assert result[key] == pytest.approx(expected, abs=1e-12), key
    assert micro_auc(AUC_SCORES, AUC_LABELS) == result["micro_auc"]
    assert macro_auc(AUC_SCORES, AUC_LABELS) == result["macro_auc"]
    assert micro_f1(AUC_SCORES, AUC_LABELS) == result["micro_f1"]
    assert macro_f1(AUC_SCORES, AUC_LABELS) == result["macro_f1"]


def test_threshold_applies_to_scores_as_given():
    logits = np.log(AUC_SCORES.clip(1e-9) / (1 - AUC_SCORES.clip(1e-9)))  # sigmoid(logits) = AUC_SCORES
    assert micro_f1(logits, AUC_LABELS, threshold=0.0) == pytest.approx(8 / 12)
    # every cell >= -1 is predicted: tp 4, fp 12 -> 8 / 20
    assert micro_f1(AUC_SCORES, AUC_LABELS, threshold=-1) == pytest.approx(8 / 20)


def test_empty_samples_are_excluded_from_every_metric():
    empty_row = np.array([[1.0, 1.0, 1.0, 1.0]])  # would change AUC and F1 if counted as negatives
    scores = np.vstack([empty_row, AUC_SCORES, empty_row])
    labels = np.vstack([[[0, 0, 0, 0]], AUC_LABELS, [[0, 0, 0, 0]]])
    with_empty = compute_metrics(scores, labels, ks=(1, 2))
    without = compute_metrics(AUC_SCORES, AUC_LABELS, ks=(1, 2))
    assert with_empty.pop("num_excluded_empty") == 2
    assert without.pop("num_excluded_empty") == 0
    assert with_empty == without


def test_undefined_auc_is_none_in_compute_metrics_and_an_error_alone():
    scores, labels = [[0.9, 0.1], [0.2, 0.8]], [[1, 1], [1, 1]]  # no negatives anywhere
    result = compute_metrics(scores, labels, ks=(1,))
    assert result["micro_auc"] is None and result["macro_auc"] is None
    assert result["macro_auc_labels_skipped"] == 2
    with pytest.raises(ValueError, match="micro AUC is undefined"):
        micro_auc(scores, labels)
    with pytest.raises(ValueError, match="macro AUC is undefined: none of the 2 labels"):
        macro_auc(scores, labels)


def test_result_is_json_serialisable_plain_python():
    result = compute_metrics(RANK_SCORES.astype(np.float32), RANK_LABELS, ks=[10, 20, 10])
    assert list(result)[:6] == ["P@10", "R@10", "Acc@10", "P@20", "R@20", "Acc@20"]
    assert all(type(v) in (float, int) or v is None for v in result.values())
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(64, 30)).astype(np.float32)
    labels = rng.random((64, 30)) < 0.15
    expected = compute_metrics(scores, labels, ks=(5, 10), threshold=0.0)
    scores_t = torch.from_numpy(scores).requires_grad_(True) * 1.0  # part of an autograd graph
    labels_t = torch.from_numpy(labels)
    for label_input in (labels_t, labels_t.long(), labels_t.float()):
        assert compute_metrics(scores_t, label_input, ks=(5, 10), threshold=0.0) == expected
    for label_input in (labels.astype(np.int32), labels.astype(np.float64), labels.tolist()):
        assert compute_metrics(scores.tolist(), label_input, ks=(5, 10), threshold=0.0) == expected
    half = torch.tensor([[0.5, 0.25, 0.75]], dtype=torch.bfloat16)  # exactly representable values
    expected = compute_metrics([[0.5, 0.25, 0.75]], [[0, 0, 1]], ks=(1,))
    assert compute_metrics(half, [[0, 0, 1]], ks=(1,)) == expected


def test_auc_and_f1_match_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    scores = rng.random((300, 25)).round(1)  # few distinct values: many ties
    labels = rng.random((300, 25)) < np.linspace(0.01, 0.5, 25)
    labels[:, 0] = False  # a label without positives: skipped by macro AUC and macro F1
    labels[:7] = False  # samples without labels: excluded
    result = compute_metrics(scores, labels, ks=(5,), threshold=0.5)
    keep = labels.any(axis=1)
    scores, labels = scores[keep], labels[keep]
    assert result["num_excluded_empty"] == int((~keep).sum()) > 0
    assert result["micro_auc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels.ravel(), scores.ravel()))
    both = [c for c in range(25) if 0 < labels[:, c].sum() < len(labels)]
    assert result["macro_auc_labels_skipped"] == 25 - len(both) > 0
    per_label = [sklearn_metrics.roc_auc_score(labels[:, c], scores[:, c]) for c in both]
    assert result["macro_auc"] == pytest.approx(np.mean(per_label))
    predicted = scores >= 0.5
    assert result["micro_f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted, average="micro"))
    expected_macro = sklearn_metrics.f1_score(labels, predicted, average="macro", zero_division=np.nan)
    assert result["macro_f1"] == pytest.approx(expected_macro)


@pytest.mark.parametrize("bad_k", [0, -3, 2.5, True, "10", None])
def test_bad_k_is_named(bad_k):
    with pytest.raises(ValueError, match=rf"k must be a positive integer, got k={bad_k!r}"):
        precision_at_k(RANK_SCORES, RANK_LABELS, bad_k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        compute_metrics(RANK_SCORES, RANK_LABELS, ks=(10, bad_k))


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros((3, 4)), np.zeros((3, 5)), r"scores shape \(3, 4\) and labels shape \(3, 5\) differ"),
        (np.zeros((4, 3)), np.zeros((3, 4)), r"scores shape \(4, 3\) and labels shape \(3, 4\) differ"),
        (np.zeros(4), np.zeros(4), r"scores must be 2-D \[N, C\], got shape \(4,\)"),
        (np.zeros((0, 4)), np.zeros((0, 4)), r"no samples to evaluate: scores has shape \(0, 4\)"),
        ([[0.1, np.nan], [0.2, 0.3]], [[1, 0], [0, 1]], r"1 NaN value\(s\), the first at row 0, column 1"),
        ([[0.1, 0.2], [0.3, 0.4]], [[1, 0], [0, 2]], r"multi-hot 0/1; found 2 at row 1, column 1"),
        ([[0.1, 0.2], [0.3, 0.4]], [[1, 0.5], [0, 1]], r"multi-hot 0/1; found 0.5 at row 0, column 1"),
        ([[0.1, 0.2], [0.3, 0.4]], [[0, 0], [0, 0]], r"all 2 samples have an empty label set"),
        ([[0.1, 0.2], [0.3]], [[1, 0], [1]], r"scores is not a rectangular \[N, C\] array"),
        ([["a", "b"]], [[1, 0]], r"scores must be real numbers, got dtype <U1"),
    ],
)
def test_bad_inputs_name_what_is_wrong(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(scores, labels)


def test_bad_ks_and_threshold():
    with pytest.raises(ValueError, match="ks must name at least one k"):
        compute_metrics(RANK_SCORES, RANK_LABELS, ks=())
    with pytest.raises(ValueError, match="threshold must be a real number, got threshold=nan"):
        compute_metrics(RANK_SCORES, RANK_LABELS, threshold=float("nan"))
    assert compute_metrics(RANK_SCORES, RANK_LABELS, ks=2)["P@2"] == RANK_EXPECTED["P@2"]


def test_evaluate_module_loads_offline_and_matches(monkeypatch):
    """Loads from its folder with every socket blocked; returns exactly compute_metrics' numbers."""
    evaluate = pytest.importorskip("evaluate")

    def no_network(*args, **kwargs):
        raise OSError("network access attempted while loading a local evaluate module")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(REPO_ROOT)  # evaluate resolves "metrics/shark_metrics" against the working directory
    scores = np.vstack([RANK_SCORES, np.full((1, 5), 0.25)]).astype(np.float32)
    labels = np.vstack([RANK_LABELS, [[0, 1, 0, 0, 1]]])
    ks = (1, 2, 3, 10)
    expected = compute_metrics(scores, labels, ks=ks)
    assert expected["num_excluded_empty"] == 1

    relative = evaluate.load("metrics/shark_metrics", ks=ks, keep_in_memory=True)
    assert relative.name == "shark_metrics"
    assert relative.compute(predictions=scores.tolist(), references=labels.tolist()) == expected

    absolute = evaluate.load(str(REPO_ROOT / "metrics" / "shark_metrics"), keep_in_memory=True)
    result = absolute.compute(
        predictions=torch.from_numpy(scores), references=labels.astype(bool), ks=list(ks)
    )
    assert result == expected
    for i in range(0, len(scores), 2):
        absolute.add_batch(predictions=scores[i : i + 2], references=labels[i : i + 2])
    assert absolute.compute(ks=ks) == expected
    assert absolute.compute(predictions=scores, references=labels)["P@10"] == 1.0  # default ks (10, 20)


def test_binary_auc_hand_computed():
    from shark_hf.metrics import binary_auc

    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5 -> 1/2, 0.5>0.1) = 3.5 / 4
    assert binary_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    with pytest.raises(ValueError, match="both positives and negatives"):
        binary_auc([0.1, 0.2], [1, 1])
