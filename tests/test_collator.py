"""VisitCollator: exact padded tensors, multi-hot labels, truncation, errors, a DataLoader over datasets."""

import datasets
import pytest
import torch
from torch.utils.data import DataLoader

from shark_hf.data.collator import VisitCollator
from shark_hf.tokenization_shark import SharkTokenizer

CODES = ["ICD9CM:4019", "ICD9CM:25000", "ICD9CM:4280", "ICD10CM:I10"]
LABELS = {"98": "Essential hypertension", "49": "Diabetes mellitus without complication", "108": "CHF"}
ROWS = [
    {
        "patient_id": "p1",
        "visits": [["ICD9CM:4019"], ["ICD9CM:25000", "ICD9CM:4280"], ["ICD10CM:I10"]],
        "labels": ["108", "98"],
    },
    {"patient_id": "p2", "visits": [["ICD9CM:4280", "ICD9CM:25000", "ICD9CM:4019"]], "labels": ["49"]},
]


@pytest.fixture
def index_tokenizer() -> SharkTokenizer:
    return SharkTokenizer.index(CODES)  # code i has the single ID i


def test_index_tokenizer_batch_is_padded_exactly(index_tokenizer):
    batch = VisitCollator(index_tokenizer, LABELS)(ROWS)
    assert sorted(batch) == ["code_mask", "input_ids", "labels", "visit_mask"]
    # [B=2, V=3, C=3, L=1]: p1 visits [4019], [25000, 4280], [I10]; p2 one visit [4280, 25000, 4019].
    expected_ids = torch.tensor(
        [
            [[[0], [0], [0]], [[1], [2], [0]], [[3], [0], [0]]],
            [[[2], [1], [0]], [[0], [0], [0]], [[0], [0], [0]]],
        ]
    )
    expected_codes = torch.tensor(
        [
            [[True, False, False], [True, True, False], [True, False, False]],
            [[True, True, True], [False, False, False], [False, False, False]],
        ]
    )
    assert batch["input_ids"].dtype == torch.int64 and torch.equal(batch["input_ids"], expected_ids)
    assert batch["code_mask"].dtype == torch.bool and torch.equal(batch["code_mask"], expected_codes)
    assert torch.equal(batch["visit_mask"], torch.tensor([[True, True, True], [True, False, False]]))
    # Columns follow the order of label_names: 98, 49, 108.
    assert batch["labels"].dtype == torch.float32
    assert torch.equal(batch["labels"], torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))


def test_random_id_tokenizer_batch_uses_each_codes_id_tuple():
    tokenizer = SharkTokenizer.random_ids(CODES, num_levels=2, codebook_size=8, seed=0)
    batch = VisitCollator(tokenizer, list(LABELS))(ROWS)
    pad = (0, 0)
    ids = {code: tokenizer.encode(code) for code in CODES}
    expected = torch.tensor(
        [
            [
                [ids["ICD9CM:4019"], pad, pad],
                [ids["ICD9CM:25000"], ids["ICD9CM:4280"], pad],
                [ids["ICD10CM:I10"], pad, pad],
            ],
            [[ids["ICD9CM:4280"], ids["ICD9CM:25000"], ids["ICD9CM:4019"]], [pad] * 3, [pad] * 3],
        ]
    )
    assert batch["input_ids"].shape == (2, 3, 3, 2)
    assert torch.equal(batch["input_ids"], expected)


def test_label_order_comes_from_label_names(index_tokenizer):
    collator = VisitCollator(index_tokenizer, ["108", "49", "98", "259"])
    assert collator.num_labels == 4
    assert torch.equal(collator(ROWS)["labels"], torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))


def test_max_visits_keeps_the_most_recent(index_tokenizer):
    batch = VisitCollator(index_tokenizer, LABELS, max_visits=2)(ROWS)
    # p1 keeps [25000, 4280] and [I10]; p2 keeps its only visit.
    expected = torch.tensor([[[[1], [2], [0]], [[3], [0], [0]]], [[[2], [1], [0]], [[0], [0], [0]]]])
    assert torch.equal(batch["input_ids"], expected)
    assert torch.equal(batch["visit_mask"], torch.tensor([[True, True], [True, False]]))
    assert torch.equal(batch["labels"], torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))


def test_rows_without_labels_give_no_labels(index_tokenizer):
    batch = VisitCollator(index_tokenizer, LABELS)([{"visits": row["visits"]} for row in ROWS])
    assert sorted(batch) == ["code_mask", "input_ids", "visit_mask"]


def test_a_dict_of_columns_collates_like_its_rows(index_tokenizer):
    collator = VisitCollator(index_tokenizer, LABELS)
    columns = {key: [row[key] for row in ROWS] for key in ROWS[0]}
    for key, value in collator(columns).items():
        assert torch.equal(value, collator(ROWS)[key])


def test_unknown_label_names_the_label_and_the_row(index_tokenizer):
    rows = [ROWS[0], {**ROWS[1], "labels": ["49", "2620"]}]
    with pytest.raises(
        ValueError, match=r"row 1 \(patient_id 'p2'\): label '2620' is not in label_names \(3 labels"
    ):
        VisitCollator(index_tokenizer, LABELS)(rows)


def test_bad_rows_and_arguments(index_tokenizer):
    collator = VisitCollator(index_tokenizer, LABELS)
    with pytest.raises(ValueError, match=r"row 1 \(patient_id 'p2'\) has no 'labels' but other rows do"):
        collator([ROWS[0], {"patient_id": "p2", "visits": ROWS[1]["visits"]}])
    with pytest.raises(
        ValueError, match=r"row 0 \(patient_id 'p1'\): 'labels' must be a list of labels, got '98'"
    ):
        collator([{**ROWS[0], "labels": "98"}])
    with pytest.raises(ValueError, match="row 0 has no 'visits'"):
        collator([{"labels": ["98"]}])
    with pytest.raises(ValueError, match="empty batch"):
        collator([])
    with pytest.raises(ValueError, match=r"label_names repeats labels: \['98'\]"):
        VisitCollator(index_tokenizer, ["98", "49", "98"])
    with pytest.raises(ValueError, match="max_visits must be >= 1"):
        VisitCollator(index_tokenizer, LABELS, max_visits=0)


def test_unknown_codes_follow_the_policy(index_tokenizer):
    rows = [{"visits": [["ICD9CM:4019", "ICD9CM:486"]], "labels": ["98"]}]
    with pytest.raises(KeyError, match="ICD9CM:486"):
        VisitCollator(index_tokenizer, LABELS)(rows)
    batch = VisitCollator(index_tokenizer, LABELS, unknown="skip")(rows)
    assert torch.equal(batch["input_ids"], torch.tensor([[[[0]]]]))
    assert torch.equal(batch["code_mask"], torch.tensor([[[True]]]))


def test_dataloader_over_a_ragged_datasets_dataset(index_tokenizer):
    rows = ROWS + [{"patient_id": "p3", "visits": [["ICD9CM:25000"]] * 4, "labels": []}]
    dataset = datasets.Dataset.from_list(rows)  # no with_format("torch"): visits are ragged
    collator = VisitCollator(index_tokenizer, LABELS)
    loader = DataLoader(dataset, batch_size=2, shuffle=False, collate_fn=collator)
    batches = list(loader)
    assert [b["input_ids"].shape for b in batches] == [(2, 3, 3, 1), (1, 4, 1, 1)]
    for batch, chunk in zip(batches, (rows[:2], rows[2:]), strict=True):
        for key, value in collator(chunk).items():
            assert torch.equal(batch[key], value)
    assert torch.equal(batches[1]["labels"], torch.zeros(1, 3))


def test_code_labels_give_the_label_column_of_each_input_code(index_tokenizer):
    batch = VisitCollator(index_tokenizer, LABELS, label_space="ccs")(ROWS)
    assert sorted(batch) == ["code_labels", "code_mask", "input_ids", "labels", "visit_mask"]
    # Columns 98 -> 0, 49 -> 1, 108 -> 2; 4019 and I10 are CCS 98, 25000 is 49, 4280 is 108.
    expected = torch.tensor([[[0, -1, -1], [1, 2, -1], [0, -1, -1]], [[2, 1, 0], [-1, -1, -1], [-1, -1, -1]]])
    assert batch["code_labels"].dtype == torch.int64 and torch.equal(batch["code_labels"], expected)
    # A label outside label_names, or a code without a CCS label, is -1; visits follow max_visits.
    rows = [{"visits": [["ICD9CM:4019"], ["ICD9CM:4280", "ICD9CM:V1046"], ["ICD9CM:25000"]], "labels": []}]
    tokenizer = SharkTokenizer.index([*CODES, "ICD9CM:V1046"])
    batch = VisitCollator(tokenizer, ["49", "108"], max_visits=2, label_space="ccs")(rows)
    assert torch.equal(batch["code_labels"], torch.tensor([[[1, -1], [0, -1]]]))
    assert "code_labels" not in VisitCollator(index_tokenizer, LABELS)(ROWS)
    with pytest.raises(ValueError, match="label_space must be one of"):
        VisitCollator(index_tokenizer, LABELS, label_space="icd")


def test_code_labels_drop_the_visits_the_tokenizer_drops(index_tokenizer):
    rows = [{"visits": [["ICD9CM:486"], [], ["ICD9CM:4280", "ICD9CM:486"]], "labels": ["98"]}]
    batch = VisitCollator(index_tokenizer, LABELS, unknown="skip", label_space="ccs")(rows)
    assert torch.equal(batch["visit_mask"], torch.tensor([[True]]))
    # The kept visit's unknown code (486, pneumonia: CCS 122, not in label_names) still has a slot.
    assert torch.equal(batch["code_labels"], torch.tensor([[[2, -1]]]))
