"""Non-learned baselines: exact scores, the validation choice of `history`'s settings and hand-computed P@k.

The label space is 11 CCS labels L0..L10, so P@10 leaves out exactly one label per sample (the lowest
score; among equal scores the highest column): a sample's P@10 is 1 unless that label is a target.
"""

import datasets
import numpy as np
import pyarrow as pa
import pytest

from shark_hf.baselines import (
    BASELINES,
    HISTORY_GRID,
    baseline_summary,
    evaluate_baselines,
    fit_baselines,
    label_history,
    label_prior,
    multi_hot,
    select_history_settings,
)

LABELS = ["98", "49", "101", "108", "106", "157", "122", "53", "159", "48", "138"]  # L0 .. L10
CODE = {  # one ICD-9-CM code per label: CODE[i] has label LABELS[i]
    0: "ICD9CM:4019",
    1: "ICD9CM:25000",
    2: "ICD9CM:41401",
    3: "ICD9CM:4280",
    4: "ICD9CM:42731",
    5: "ICD9CM:5849",
    6: "ICD9CM:486",
    7: "ICD9CM:2724",
    8: "ICD9CM:5990",
    9: "ICD9CM:2449",
    10: "ICD9CM:53081",
}
UNLABELLED = "ICD9CM:V5861"  # CCS 257, not among LABELS: ignored
SAME_LABEL_AS_10 = "ICD9CM:5301"  # also CCS 138: counts once with CODE[10] in one visit
GRID = ((0.5, 0.1), (0.5, 4.0), (1.0, 0.1), (1.0, 4.0))

# Training targets: L0 in 4/4 samples, L1 in 2/4, L2 in 1/4 -> prior [1, .5, .25, 0, ..., 0].
TRAIN = [
    {"visits": [[CODE[3]]], "labels": ["98", "49", "101"]},
    {"visits": [[CODE[4]]], "labels": ["98", "49"]},
    {"visits": [[CODE[5]]], "labels": ["98"]},
    {"visits": [[CODE[6]]], "labels": ["98", "257"]},  # 257 is outside LABELS: left out
]
# Sample A (T = 3): L10 in the two older visits, L1..L9 in the last one, L0 never.
# history(d, w): L0 = w, L1 = 1 + w/2, L2 = 1 + w/4, L3..L9 = 1, L10 = d^2 + d.
A_VISITS = [[CODE[10], SAME_LABEL_AS_10, UNLABELLED], [CODE[10]], [CODE[i] for i in range(1, 10)]]
A = {"visits": A_VISITS, "labels": ["98", "138"]}
# Sample B (T = 1): L0 only. history(d, w): L0 = 1 + w, L1 = w/2, L2 = w/4, the rest 0.
B = {"visits": [[CODE[0]]], "labels": ["98", "48"]}


def _dataset(rows):
    return datasets.Dataset.from_list(rows)


def test_codes_of_the_fixture_have_the_labels_the_expectations_assume():
    from shark_hf.codes import to_label

    assert [to_label(CODE[i]) for i in range(11)] == LABELS
    assert to_label(UNLABELLED) == "257" and to_label(SAME_LABEL_AS_10) == "138"


def test_label_history_of_sample_a():
    history = label_history([A_VISITS], LABELS, "ccs")
    assert history.sample.tolist() == [0, 0, 0]
    assert history.steps_back.tolist() == [2, 1, 0]
    pairs = sorted(zip(history.visit.tolist(), history.label.tolist(), strict=True))
    assert pairs == [(0, 10), (1, 10)] + [(2, c) for c in range(1, 10)]


def test_label_history_accepts_lists_arrow_and_datasets_alike():
    rows = [A, B]
    expected = label_history([r["visits"] for r in rows], LABELS, "ccs")
    column = pa.array([r["visits"] for r in rows], pa.list_(pa.list_(pa.string())))
    for source in (column, pa.chunked_array([column.slice(0, 1), column.slice(1)]), _dataset(rows)):
        history = label_history(source, LABELS, "ccs")
        for name in ("visit", "label", "sample", "steps_back"):
            assert getattr(history, name).tolist() == getattr(expected, name).tolist()
        assert history.num_samples == 2


def test_prior_and_targets_leave_out_labels_outside_the_space():
    np.testing.assert_array_equal(label_prior(_dataset(TRAIN), LABELS), [1, 0.5, 0.25] + [0] * 8)
    assert multi_hot([["257", "138"]], LABELS).nonzero()[1].tolist() == [10]


def test_exact_scores_of_each_baseline():
    baselines = fit_baselines(_dataset(TRAIN), _dataset([A]), LABELS, "ccs", GRID)
    rows = [A["visits"], B["visits"]]
    rest = [0.0] * 8
    expected = {
        "most_frequent": [[1, 0.5, 0.25, *rest]] * 2,
        "last_visit": [[0.5, 1.25, 1.125] + [1.0] * 7 + [0.0], [1.5, 0.25, 0.125, *rest]],
        "history": [[4, 3, 2] + [1.0] * 7 + [2.0], [5, 2, 1, *rest]],  # decay 1, prior_weight 4
    }
    for name in BASELINES:
        scores = baselines.scores(name, rows)
        assert scores.dtype == np.float32 and scores.shape == (2, 11)
        np.testing.assert_array_equal(scores, np.array(expected[name], dtype=np.float32), err_msg=name)


def test_history_settings_chosen_on_validation_p_at_10():
    prior = label_prior(TRAIN, LABELS)
    history = label_history([A_VISITS], LABELS, "ccs")
    # Left out: (.5, .1) L0 = .1; (.5, 4) L10 = .75; (1, .1) L0 = .1; (1, 4) L9 (ties at 1 with L3..L8).
    chosen, table = select_history_settings(history, multi_hot([["98", "138"]], LABELS), prior, GRID)
    assert chosen == (1.0, 4.0)
    assert list(table.values()) == [0.5, 0.5, 0.5, 1.0]
    assert list(table) == [
        "decay=0.5,prior_weight=0.1",
        "decay=0.5,prior_weight=4",
        "decay=1,prior_weight=0.1",
        "decay=1,prior_weight=4",
    ]
    # Target L9 only: P@10 = 1, 1, 1, 0 -> the first setting of the grid among equals.
    chosen, table = select_history_settings(history, multi_hot([["48"]], LABELS), prior, GRID)
    assert chosen == (0.5, 0.1) and list(table.values()) == [1.0, 1.0, 1.0, 0.0]


def test_default_grid_is_decay_major():
    assert HISTORY_GRID[0] == (0.25, 0.25) and HISTORY_GRID[1] == (0.25, 0.5)
    assert HISTORY_GRID[-1] == (1.0, 8.0)


def test_evaluate_baselines_hand_computed_p_at_k_and_best_on_validation():
    cohort = {"train": _dataset(TRAIN), "validation": _dataset([A]), "test": _dataset([A, B])}
    baselines = fit_baselines(cohort["train"], cohort["validation"], LABELS, "ccs", GRID)
    report = evaluate_baselines(baselines, cohort, ("validation", "test"), ks=(1, 10))
    results = report["baselines"]
    # Validation (A: targets L0, L10): most_frequent and last_visit leave out L10, history(1, 4) L9.
    assert [results[n]["validation"]["P@10"] for n in BASELINES] == [0.5, 0.5, 1.0]
    assert report["best_baseline"] == "history"
    assert results["history"]["settings"] == {"decay": 1.0, "prior_weight": 4.0}
    assert results["last_visit"]["settings"] == {}
    # Test: A as above; B (targets L0, L9) leaves out L10 under every baseline: P@10 = 1.
    assert [results[n]["test"]["P@10"] for n in BASELINES] == [0.75, 0.75, 1.0]
    # Top-1: most_frequent L0, L0; last_visit L1 (A, a miss), L0; history L0, L0.
    assert [results[n]["test"]["P@1"] for n in BASELINES] == [1.0, 0.5, 1.0]
    # Acc@1 = hits / all targets (4).
    assert [results[n]["test"]["Acc@1"] for n in BASELINES] == [0.5, 0.25, 0.5]


def test_baseline_summary_gives_the_model_lift_over_the_best():
    cohort = {"train": _dataset(TRAIN), "validation": _dataset([A]), "test": _dataset([A, B])}
    baselines = fit_baselines(cohort["train"], cohort["validation"], LABELS, "ccs", GRID)
    report = evaluate_baselines(baselines, cohort, ks=(1, 10))
    summary = baseline_summary(report, {"P@10": 0.875, "P@1": 0.5, "Acc@1": 0.25, "loss": 3.0})
    assert summary["best_baseline"] == "history"
    assert summary["lift_over_best_baseline"] == {"P@1": -0.5, "P@10": -0.125, "Acc@1": -0.25}


def test_unknown_baseline_name_is_an_error():
    baselines = fit_baselines(_dataset(TRAIN), _dataset([A]), LABELS, "ccs", GRID)
    with pytest.raises(ValueError, match=r"unknown baseline 'tifu'; expected one of \('most_frequent'"):
        baselines.scores("tifu", [A_VISITS])


def test_codes_without_a_label_in_the_space_are_ignored():
    # ccsr is defined for ICD-10-CM only: every ICD-9-CM code is without a label there.
    history = label_history([[["ICD9CM:4019"], ["ICD10CM:I10"]]], ["CIR007"], "ccsr")
    assert history.label.tolist() == [0] and history.visit.tolist() == [1]
    assert history.steps_back.tolist() == [1, 0]
