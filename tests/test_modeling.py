"""SharkConfig and SharkForDiagnosisPrediction: padding, attention alignment, HF integration, errors."""

import ast
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from shark_hf import modeling_shark
from shark_hf.configuration_shark import SharkConfig
from shark_hf.embeddings import CodeEmbeddings
from shark_hf.modeling_shark import SharkForDiagnosisPrediction, SharkOutput
from shark_hf.tokenization_shark import SharkTokenizer

CODES = [
    "ICD9CM:4019",
    "ICD9CM:25000",
    "ICD9CM:4280",
    "ICD9CM:42731",
    "ICD9CM:5849",
    "ICD9CM:2724",
    "ICD9CM:41401",
    "ICD9CM:5990",
    "ICD9CM:53081",
    "ICD9CM:2449",
    "ICD9CM:486",
    "ICD9CM:2859",
]
LABELS = {
    "98": "Essential hypertension",
    "49": "Diabetes mellitus without complication",
    "108": "Heart failure",
}


@pytest.fixture(scope="module", autouse=True)
def register_auto_classes() -> None:
    """What `import shark_hf` does; here so these tests do not depend on the package's `__init__`."""
    AutoConfig.register("shark", SharkConfig, exist_ok=True)
    AutoModel.register(SharkConfig, SharkForDiagnosisPrediction, exist_ok=True)
    AutoModelForSequenceClassification.register(SharkConfig, SharkForDiagnosisPrediction, exist_ok=True)


def make_model(seed: int = 0, **kwargs) -> SharkForDiagnosisPrediction:
    fields = {"num_levels": 2, "codebook_size": 8, "embed_dim": 4, "hidden_size": 5, "num_labels": 6}
    fields.update(kwargs)
    torch.manual_seed(seed)
    return SharkForDiagnosisPrediction(SharkConfig(**fields)).eval()


def encode(
    patients: list[list[list[tuple[int, ...]]]], visits: int = 0, codes: int = 0
) -> dict[str, torch.Tensor]:
    """Tokenizer stand-in: patients of visits of id tuples -> padded `input_ids`, `code_mask`, `visit_mask`.

    `visits` / `codes` pad to at least that many slots.
    """
    num_levels = len(patients[0][0][0])
    num_visits = max(visits, *(len(patient) for patient in patients))
    num_codes = max(codes, *(len(visit) for patient in patients for visit in patient))
    input_ids = torch.zeros(len(patients), num_visits, num_codes, num_levels, dtype=torch.long)
    code_mask = torch.zeros(len(patients), num_visits, num_codes, dtype=torch.bool)
    visit_mask = torch.zeros(len(patients), num_visits, dtype=torch.bool)
    for b, patient in enumerate(patients):
        for v, visit in enumerate(patient):
            visit_mask[b, v] = True
            for c, ids in enumerate(visit):
                input_ids[b, v, c] = torch.tensor(ids)
                code_mask[b, v, c] = True
    return {"input_ids": input_ids, "code_mask": code_mask, "visit_mask": visit_mask}


PATIENT = [[(1, 2), (3, 0)], [(7, 7)], [(0, 5), (2, 2), (6, 1)]]  # 3 visits, L = 2
LONGER = [[(4, 4)] * 6, [(5, 1), (2, 3)], [(1, 1)], [(3, 3), (0, 0)], [(6, 6)]]  # 5 visits, 6 codes
SHORT = [[(2, 6)]]


# ------------------------------------------------------------------------------------------ padding


@pytest.mark.parametrize(
    "options",
    [{}, {"composition": "concat"}, {"code_representation": "learned", "num_codes": 8, "num_levels": 1}],
    ids=["sum", "concat", "learned"],
)
def test_same_patient_alone_or_with_longer_patients_gives_same_logits(options):
    model = make_model(**options)
    levels = model.config.num_levels
    trim = lambda patient: [[ids[:levels] for ids in visit] for visit in patient]  # noqa: E731
    alone = model(**encode([trim(PATIENT)]))
    batch = model(**encode([trim(LONGER), trim(PATIENT), trim(SHORT)], visits=7, codes=9))
    assert torch.allclose(alone.logits[0], batch.logits[1], atol=1e-6, rtol=0)
    assert torch.allclose(alone.visit_attention[0], batch.visit_attention[1, :3], atol=1e-6, rtol=0)
    assert torch.allclose(alone.feature_attention[0], batch.feature_attention[1, :3], atol=1e-6, rtol=0)
    assert batch.visit_attention[1, 3:].eq(0).all() and batch.feature_attention[1, 3:].eq(0).all()


def test_padded_slots_are_ignored_whatever_they_hold():
    model = make_model()
    clean = encode([PATIENT], visits=5, codes=4)
    dirty = {key: value.clone() for key, value in clean.items()}
    generator = torch.Generator().manual_seed(1)
    dirty["input_ids"][0, 3:] = torch.randint(0, 8, (2, 4, 2), generator=generator)  # padded visits
    dirty["code_mask"][0, 3:] = True  # codes "present" in padded visits must still be ignored
    dirty["input_ids"][0, 1, 1:] = torch.randint(0, 8, (3, 2), generator=generator)  # padded codes
    expected, output = model(**clean), model(**dirty)
    assert torch.equal(expected.logits, output.logits)
    assert torch.equal(output.visit_attention[0, 3:], torch.zeros(2))


def test_permuting_codes_inside_a_visit_changes_nothing():
    model = make_model()
    permuted = [list(reversed(visit)) for visit in PATIENT]
    permuted[2] = [PATIENT[2][1], PATIENT[2][2], PATIENT[2][0]]
    expected, output = model(**encode([PATIENT, LONGER])), model(**encode([permuted, LONGER]))
    assert torch.allclose(expected.logits, output.logits, atol=1e-6, rtol=0)
    assert torch.allclose(expected.visit_attention, output.visit_attention, atol=1e-6, rtol=0)


@pytest.mark.parametrize("composition", ["sum", "concat"])
def test_dense_and_embedding_bag_lookups_agree(composition, monkeypatch):
    model = make_model(composition=composition)
    batch = encode([LONGER, PATIENT, SHORT], codes=7)
    dense = model(**batch).logits
    monkeypatch.setattr(modeling_shark, "_DENSE_TABLE_LIMIT", 0)
    assert torch.allclose(model(**batch).logits, dense, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------ attention


def direct_retain(model: SharkForDiagnosisPrediction, patient) -> dict[str, torch.Tensor]:
    """SHARK/RETAIN for one patient written out step by step, with an explicitly reversed visit list."""
    table = model.code_embeddings.weight  # [L*K, d], level l in rows l*K .. l*K+K-1
    size = model.config.codebook_size

    def code_vector(ids):
        codewords = [table[level * size + i] for level, i in enumerate(ids)]
        return sum(codewords) if model.config.composition == "sum" else torch.cat(codewords)

    visits = [torch.stack([code_vector(ids) for ids in visit]).mean(0) for visit in patient]  # oldest first
    reversed_visits = torch.stack(visits[::-1]).unsqueeze(1)  # [T, 1, D], newest first
    g, _ = model.alpha_gru(reversed_visits)
    h, _ = model.beta_gru(reversed_visits)
    alpha_reversed = torch.softmax(model.alpha_proj(g[:, 0]).squeeze(-1), dim=0)  # [T], newest first
    beta_reversed = torch.tanh(model.beta_proj(h[:, 0]))  # [T, D]
    context = (alpha_reversed[:, None] * beta_reversed * reversed_visits[:, 0]).sum(0)
    return {
        "alpha": alpha_reversed.flip(0),  # back to chronological order
        "beta": beta_reversed.flip(0),
        "logits": model.classifier(context),
    }


@pytest.mark.parametrize("composition", ["sum", "concat"])
def test_attention_belongs_to_the_visit_it_was_computed_for(composition):
    model = make_model(seed=5, composition=composition)
    with torch.no_grad():
        model.alpha_proj.weight.mul_(3.0)  # make alpha clearly non-uniform so a misalignment cannot hide
    expected = direct_retain(model, PATIENT)
    assert (expected["alpha"] - expected["alpha"].flip(0)).abs().max() > 0.2, expected["alpha"]
    output = model(**encode([LONGER, PATIENT, SHORT], visits=6))
    assert torch.allclose(output.visit_attention[1, :3], expected["alpha"], atol=1e-6, rtol=0)
    assert torch.allclose(output.feature_attention[1, :3], expected["beta"], atol=1e-6, rtol=0)
    assert torch.allclose(output.logits[1], expected["logits"], atol=1e-6, rtol=0)
    assert torch.equal(output.visit_attention[1, 3:], torch.zeros(3))  # padding: exactly zero weight
    assert torch.allclose(output.visit_attention.sum(1), torch.ones(3), atol=1e-6, rtol=0)
    assert output.visit_attention[2, 0] == 1.0 and output.visit_attention[2, 1:].eq(0).all()


def test_single_visit_patient_gets_all_the_attention():
    model = make_model()
    output = model(**encode([SHORT], visits=3))
    assert output.visit_attention[0].tolist() == [1.0, 0.0, 0.0]


def test_loss_is_paper_eq6_sum_over_labels_mean_over_patients():
    model = make_model()
    labels = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 1, 1, 1, 0, 0]], dtype=torch.float32)
    output = model(**encode([PATIENT, SHORT]), labels=labels)
    p = torch.sigmoid(output.logits.double())
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).sum() / 2
    assert math.isclose(output.loss.item(), expected.item(), rel_tol=1e-6)
    assert isinstance(output, SharkOutput)
    loss, logits, alpha, beta = model(**encode([PATIENT, SHORT]), labels=labels, return_dict=False)
    assert torch.equal(logits, output.logits) and torch.equal(alpha, output.visit_attention)
    assert beta.shape == (2, 3, 4)


# ------------------------------------------------------------------------------------------ config


def test_config_defaults_and_widths():
    config = SharkConfig(num_labels=283)
    assert (config.num_levels, config.codebook_size, config.embed_dim, config.hidden_size) == (4, 128, 16, 16)
    assert config.visit_dim == 16 and config.problem_type == "multi_label_classification"
    assert SharkConfig(composition="concat").visit_dim == 64
    learned = SharkConfig(code_representation="learned", num_codes=3874)
    assert (learned.num_levels, learned.codebook_size, learned.visit_dim) == (1, 3874, 16)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"composition": "mean"},
            StrictDataclassFieldValidationError,
            "expected one of \\('sum', 'concat'\\)",
        ),
        ({"code_representation": "bert"}, StrictDataclassFieldValidationError, "'semantic_id', 'random_id'"),
        ({"code_representation": "learned"}, StrictDataclassClassValidationError, "needs num_codes >= 1"),
        (
            {"code_representation": "learned", "num_codes": 10, "num_levels": 4},
            StrictDataclassClassValidationError,
            "needs num_levels=1 and codebook_size=num_codes=10",
        ),
        ({"dropout": 1.0}, StrictDataclassClassValidationError, "dropout must be in \\[0, 1\\), got 1.0"),
        (
            {"embed_dim": 0},
            StrictDataclassClassValidationError,
            "embed_dim must be a positive integer, got 0",
        ),
        ({"tokenizer_kind": "index"}, StrictDataclassClassValidationError, "produces 'learned' ids"),
    ],
)
def test_config_rejects_invalid_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        SharkConfig(**kwargs)


def test_config_from_tokenizer_fills_what_the_tokenizer_knows():
    tokenizer = SharkTokenizer.random_ids(CODES, num_levels=3, codebook_size=16, seed=0)
    config = SharkConfig.from_tokenizer(tokenizer, LABELS, embed_dim=8, label_space="ccs")
    assert (config.num_levels, config.codebook_size, config.code_representation) == (3, 16, "random_id")
    assert config.tokenizer_fingerprint == tokenizer.fingerprint and config.tokenizer_kind == "random"
    assert config.id2label == {0: "98", 1: "49", 2: "108"} and config.label2id == {"98": 0, "49": 1, "108": 2}
    assert config.label_descriptions == LABELS and config.embed_dim == 8

    index = SharkConfig.from_tokenizer(SharkTokenizer.index(CODES), ["98", "49"])
    assert (index.code_representation, index.num_codes, index.codebook_size, index.num_levels) == (
        "learned",
        len(CODES),
        len(CODES),
        1,
    )
    assert index.label_descriptions is None and index.num_labels == 2

    with pytest.raises(
        ValueError, match="num_levels=4 was passed, but the tokenizer and label_names determine"
    ):
        SharkConfig.from_tokenizer(tokenizer, LABELS, num_levels=4)
    with pytest.raises(ValueError, match="duplicated labels: \\['98'\\]"):
        SharkConfig.from_tokenizer(tokenizer, ["98", "49", "98"])
    with pytest.raises(ValueError, match="label_names is empty"):
        SharkConfig.from_tokenizer(tokenizer, [])


# ------------------------------------------------------------------------------------------ input errors


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda b: b.update(input_ids=b["input_ids"][..., 0]),
            r"input_ids must have shape \[batch, visits, codes, num_levels=2\], got \(2, 5, 6\)",
        ),
        (
            lambda b: b.update(input_ids=b["input_ids"].float()),
            r"input_ids must be a torch.int64 \(or int32\) tensor, got torch.float32",
        ),
        *[
            (
                lambda b, dtype=dtype: b.update(input_ids=b["input_ids"].to(dtype)),
                rf"input_ids must be a torch.int64 \(or int32\) tensor, got torch.{dtype_name}: pass the "
                r"tokenizer's input_ids unchanged \(a narrower integer type can wrap ids around\)",
            )
            for dtype, dtype_name in [(torch.int8, "int8"), (torch.uint8, "uint8"), (torch.int16, "int16")]
        ],
        (
            lambda b: b.update(code_mask=b["code_mask"][:, :, :2]),
            r"code_mask must have shape \[batch, visits, codes\] = \(2, 5, 6\) like input_ids, got \(2, 5, 2",
        ),
        (
            lambda b: b.update(visit_mask=b["visit_mask"][:1]),
            r"visit_mask must have shape \[batch, visits\] = \(2, 5\) like input_ids, got \(1, 5\)",
        ),
        (
            lambda b: b["input_ids"].__setitem__((1, 2, 1, 1), 8),
            r"input_ids contains id 8 at level 1, outside \[0, codebook_size=8\)",
        ),
        (lambda b: b["input_ids"].__setitem__((0, 0, 0, 0), -1), "contains id -1 at level 0"),
        (
            lambda b: b["visit_mask"].__setitem__((1, slice(None)), False),
            r"patients at batch index \[1\] have no",
        ),
        (lambda b: b["visit_mask"].__setitem__((1, 0), False), r"visit_mask rows \[1\] are not left-aligned"),
    ],
)
def test_bad_inputs_give_clear_errors(change, match):
    model = make_model()
    batch = encode([LONGER, PATIENT])
    change(batch)
    with pytest.raises(ValueError, match=match):
        model(**batch)


def test_int32_input_ids_give_the_int64_logits():
    model = make_model()
    batch = encode([LONGER, PATIENT])
    expected = model(**batch).logits
    assert torch.equal(model(**{**batch, "input_ids": batch["input_ids"].int()}).logits, expected)


def test_nan_weights_are_refused_when_loaded_and_by_predict(tmp_path):
    tokenizer = SharkTokenizer.random_ids(CODES, num_levels=2, codebook_size=8, seed=0)
    model = SharkForDiagnosisPrediction(SharkConfig.from_tokenizer(tokenizer, LABELS))
    with torch.no_grad():
        model.classifier.weight[1, 0] = float("nan")
    batch = tokenizer([[["401.9"], ["428.0"]], [["ICD9CM:486"]]])
    with pytest.raises(
        ValueError,
        match=r"^the model scores patients at batch index \[0, 1\] as NaN: its parameters "
        r"\['classifier.weight'\] hold NaN/inf; reload the weights \(the file may be damaged\) or "
        "train again$",
    ):
        model.predict(batch)
    model.save_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(tmp_path))}: the weights \['classifier.weight'\] hold NaN/inf values: "
        "the weights file is damaged or the training diverged; download the model again or retrain it$",
    ):
        SharkForDiagnosisPrediction.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["{tmp}/missing/model", "./missing_model", "~/missing_shark_model", "a/b/c"])
def test_from_pretrained_on_a_missing_folder_names_it(tmp_path, name):
    name = name.format(tmp=tmp_path)
    with pytest.raises(
        FileNotFoundError,
        match=rf"^{re.escape(name)} is not a model folder: no such directory \(pass a folder written by "
        r"save_pretrained or `shark-hf train`, or a Hub repo id such as 'org/model'\)$",
    ):
        SharkForDiagnosisPrediction.from_pretrained(name)


def test_labels_outside_the_label_space_give_clear_errors():
    model = make_model()
    batch = encode([PATIENT])
    with pytest.raises(
        ValueError, match=r"labels must have shape \[batch, num_labels\] = \(1, 6\) \(label space"
    ):
        model(**batch, labels=torch.zeros(1, 7))
    with pytest.raises(ValueError, match="labels must be multi-hot: every entry 0 or 1"):
        model(**batch, labels=torch.tensor([[0.0, 2.0, 0.0, 0.0, 1.0, 0.0]]))


# ------------------------------------------------------------------------------------------ tokenizers


def semantic_tokenizer(codes=CODES, seed: int = 0) -> SharkTokenizer:
    vectors = torch.randn(len(codes), 6, generator=torch.Generator().manual_seed(seed))
    embeddings = CodeEmbeddings(codes=list(codes), vectors=vectors, model_id="test-vectors", text="external")
    return SharkTokenizer.fit(embeddings, num_levels=2, codebook_size=4, seed=seed)


def test_mismatched_tokenizer_is_rejected_unless_allowed(tmp_path, caplog):
    tokenizer = SharkTokenizer.random_ids(CODES, num_levels=2, codebook_size=8, seed=0)
    other = SharkTokenizer.random_ids(CODES, num_levels=2, codebook_size=8, seed=1)
    torch.manual_seed(0)
    model = SharkForDiagnosisPrediction(SharkConfig.from_tokenizer(tokenizer, LABELS))
    model.check_tokenizer(tokenizer)
    with pytest.raises(
        ValueError, match=r"tokenizer mismatch: tokenizer fingerprint \w{12}\.\.\. .* differs"
    ):
        model.check_tokenizer(other)
    with caplog.at_level(logging.WARNING):
        model.check_tokenizer(other, allow_mismatch=True)
    assert "allowed by allow_mismatch=True" in caplog.text
    with pytest.raises(
        ValueError, match="tokenizer kind 'semantic' produces 'semantic_id' ids but the model was"
    ):
        model.check_tokenizer(semantic_tokenizer())
    with pytest.raises(ValueError, match="cannot be used with this model: num_levels 3 != model's 2"):
        model.check_tokenizer(
            SharkTokenizer.random_ids(CODES, num_levels=3, codebook_size=8), allow_mismatch=True
        )

    model.save_pretrained(tmp_path)
    assert SharkForDiagnosisPrediction.from_pretrained(tmp_path, tokenizer=tokenizer) is not None
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        SharkForDiagnosisPrediction.from_pretrained(tmp_path, tokenizer=other)
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        AutoModel.from_pretrained(tmp_path, tokenizer=other)
    SharkForDiagnosisPrediction.from_pretrained(tmp_path, tokenizer=other, allow_tokenizer_mismatch=True)


def test_semantic_tokenizer_with_added_codes_stays_compatible():
    tokenizer = semantic_tokenizer(CODES[:10])
    model = SharkForDiagnosisPrediction(SharkConfig.from_tokenizer(tokenizer, LABELS))
    new = CodeEmbeddings(CODES[10:], torch.randn(2, 6), model_id="test-vectors", text="external")
    tokenizer.add_codes(new)
    assert tokenizer.fingerprint != model.config.tokenizer_fingerprint
    model.check_tokenizer(tokenizer)  # same codebooks: the ids of the added codes mean the same
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        model.check_tokenizer(semantic_tokenizer(CODES[:10], seed=1))


# ------------------------------------------------------------------------------------------ training


def small_cohort(seed: int = 0, patients: int = 32) -> tuple[list[list[list[str]]], torch.Tensor]:
    """Patients whose next-visit labels are a function of their codes, so a model can learn them."""
    generator = torch.Generator().manual_seed(seed)
    cohort, labels = [], torch.zeros(patients, len(LABELS))
    for p in range(patients):
        visits = [
            [CODES[i] for i in torch.randperm(len(CODES), generator=generator)[: 1 + p % 4].tolist()]
            for _ in range(1 + p % 3)
        ]
        cohort.append(visits)
        last = set(visits[-1])
        labels[p, 0] = float("ICD9CM:4019" in last or "ICD9CM:2724" in last)
        labels[p, 1] = float("ICD9CM:25000" in last)
        labels[p, 2] = float(len(visits) > 1)
    return cohort, labels


@pytest.mark.parametrize(
    "tokenizer_factory",
    [
        semantic_tokenizer,
        lambda: SharkTokenizer.random_ids(CODES, 4, 16, seed=0),
        lambda: SharkTokenizer.index(CODES),
    ],
    ids=["semantic_id", "random_id", "learned"],
)
def test_each_code_representation_trains(tokenizer_factory):
    tokenizer = tokenizer_factory()
    cohort, labels = small_cohort()
    batch = dict(tokenizer(cohort))
    torch.manual_seed(0)
    model = SharkForDiagnosisPrediction(SharkConfig.from_tokenizer(tokenizer, LABELS, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(losses[-5:]) < sum(losses[:5])


# ------------------------------------------------------------------------------------------ init, predict


def test_init_weights():
    model = make_model(hidden_size=5, num_levels=4, codebook_size=128, embed_dim=16)
    for gru in (model.alpha_gru, model.beta_gru):
        assert gru.bias_ih_l0.eq(0).all() and gru.bias_hh_l0.eq(0).all()
        w = gru.weight_hh_l0  # [3H, H] with orthonormal columns
        assert torch.allclose(w.T @ w, torch.eye(5), atol=1e-5)
    assert model.classifier.bias.eq(0).all()
    assert abs(model.code_embeddings.weight.std().item() - 0.5) < 0.03  # N(0, 1/L) with L = 4
    assert torch.equal(
        make_model(hidden_size=5).classifier.weight, make_model(hidden_size=5).classifier.weight
    )


def test_predict_returns_named_top_k_and_visit_attention():
    tokenizer = SharkTokenizer.random_ids(CODES, num_levels=2, codebook_size=8, seed=0)
    torch.manual_seed(0)
    model = SharkForDiagnosisPrediction(SharkConfig.from_tokenizer(tokenizer, LABELS)).train()
    batch = tokenizer([[["401.9", "250.00"], ["428.0"]], [["ICD9CM:486"]]])
    results = model.predict(batch, top_k=2)
    assert model.training  # mode restored
    logits = model.eval()(**batch).logits
    assert len(results) == 2 and len(results[0]["labels"]) == 2
    for row, result in enumerate(results):
        top = torch.sigmoid(logits[row]).topk(2)
        assert [entry["label"] for entry in result["labels"]] == [
            model.config.id2label[i] for i in top.indices.tolist()
        ]
        assert [entry["probability"] for entry in result["labels"]] == pytest.approx(
            top.values.tolist(), abs=1e-7
        )
        assert all(entry["name"] == LABELS[entry["label"]] for entry in result["labels"])
    assert len(results[0]["visit_attention"]) == 2 and sum(results[0]["visit_attention"]) == pytest.approx(
        1.0
    )
    assert results[1]["visit_attention"] == [1.0]
    assert len(model.predict(batch, top_k=50)[0]["labels"]) == 3
    with pytest.raises(ValueError, match="top_k must be >= 1, got 0"):
        model.predict(batch, top_k=0)


# ------------------------------------------------------------------------------------------ save / load


def test_save_pretrained_round_trips_through_auto_classes(tmp_path):
    model = make_model(seed=5, composition="concat", label_descriptions={"LABEL_0": "first"})
    batch = encode([LONGER, PATIENT, SHORT])
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)

    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["config.json", "configuration_shark.py", "model.safetensors", "modeling_shark.py"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_shark.SharkConfig",
        "AutoModel": "modeling_shark.SharkForDiagnosisPrediction",
    }
    assert config["model_type"] == "shark" and config["composition"] == "concat"

    for loader in (SharkForDiagnosisPrediction, AutoModel, AutoModelForSequenceClassification):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is SharkForDiagnosisPrediction
        assert torch.equal(loaded(**batch).logits, expected)
        assert loaded.config.label_descriptions == {"LABEL_0": "first"}


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["shark_hf"] = None  # shark_hf is installed in this venv: make it unimportable
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    model_dir, tensors = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    batch = load_file(tensors)
    batch["code_mask"], batch["visit_mask"] = batch["code_mask"].bool(), batch["visit_mask"].bool()
    save_file({"logits": model(**batch).logits.contiguous()}, tensors + ".out")
    print(type(model).__module__)
    """
)


def test_trust_remote_code_load_without_shark_hf(tmp_path):
    model = make_model(seed=7)
    batch = encode([LONGER, PATIENT, SHORT])
    expected = model(**batch).logits
    model.save_pretrained(tmp_path / "saved")
    folder = shutil.copytree(tmp_path / "saved", tmp_path / "elsewhere" / "shark_model")
    tensors = str(tmp_path / "batch.safetensors")
    save_file({key: value.to(torch.int64) for key, value in batch.items()}, tensors)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(folder), tensors],
        cwd=tmp_path / "elsewhere",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("transformers_modules.")
    assert torch.equal(load_file(tensors + ".out")["logits"], expected)


def test_remote_code_files_need_nothing_from_shark_hf():
    """Only relative imports of the package, except optional ones guarded by try/except ImportError."""
    for name in ("modeling_shark.py", "configuration_shark.py"):
        tree = ast.parse((Path(modeling_shark.__file__).parent / name).read_text())
        guarded = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.Try)
            and any(_catches_import_error(handler) for handler in block.handlers)
            for statement in block.body
            for node in ast.walk(statement)
        }
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("shark_hf") for alias in node.names), name
            elif isinstance(node, ast.ImportFrom):
                assert node.level > 0 or not node.module.startswith("shark_hf"), (name, node.module)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


# ------------------------------------------------------------------------------------------ repeat head

# Logits of make_model(seed=3) on encode([LONGER, PATIENT, SHORT]), computed before the repeat head existed:
# repeat_head=False must stay the paper's equations exactly.
PAPER_LOGITS = {
    "sum": [
        [-0.05720211938, 0.04399951175, 0.06712359190, -0.09762167931, 0.01616855711, -0.06962023675],
        [0.02623612061, -0.02791199274, 0.07082881033, -0.08602575958, -0.03999955580, -0.01306451671],
        [0.02652996406, -0.04488779604, 0.36516672373, -0.58504438400, -0.10874193906, -0.19209158421],
    ],
    "concat": [
        [0.08299709857, 0.05977585912, 0.00429428555, 0.02828953415, -0.02019367181, -0.08303336054],
        [0.00992034283, -0.09025828540, -0.25674888491, -0.14591042697, -0.33717501163, 0.10703039170],
        [-0.07470803708, 0.01802756079, 0.00219016825, 0.19788120688, -0.64182698727, -0.15834616124],
    ],
}
# Label history of LONGER (5 visits), PATIENT (3) and SHORT (1) over 6 labels, -1 = no label / padding.
CODE_LABELS = [
    [[0, 0, 0, 0, 0, 0], [1, 3], [1], [-1, 2], [5]],
    [[2, -1], [3], [2, 2, 4]],
    [[-1]],
]


def pad_code_labels(patients: list, visits: int = 0, codes: int = 0) -> torch.Tensor:
    num_visits = max(visits, *(len(p) for p in patients))
    num_codes = max(codes, *(len(v) for p in patients for v in p))
    out = torch.full((len(patients), num_visits, num_codes), -1, dtype=torch.long)
    for b, patient in enumerate(patients):
        for v, visit in enumerate(patient):
            out[b, v, : len(visit)] = torch.tensor(visit)
    return out


@pytest.mark.parametrize("composition", ["sum", "concat"])
def test_repeat_head_off_is_the_paper_model_exactly(composition):
    model = make_model(seed=3, composition=composition)
    assert model.history is None and not any("history" in name for name, _ in model.named_parameters())
    logits = model(**encode([LONGER, PATIENT, SHORT])).logits
    assert torch.allclose(logits, torch.tensor(PAPER_LOGITS[composition]), atol=1e-7, rtol=0)
    # code_labels are ignored without the head
    batch = {**encode([LONGER, PATIENT, SHORT]), "code_labels": pad_code_labels(CODE_LABELS)}
    assert torch.equal(model(**batch).logits, logits)


def test_repeat_head_features_are_hand_computed():
    model = make_model(repeat_head=True)
    features = model.history.features(
        pad_code_labels(CODE_LABELS), encode([LONGER, PATIENT, SHORT])["visit_mask"]
    )
    assert features.shape == (3, 6, 4)
    # PATIENT: label 2 in visits 0 and 2 (ages 2, 0), label 3 in visit 1 (age 1), label 4 in visit 2.
    # Features: [in last visit, sum of 0.5^age, share of visits, ever]; lambda starts at sigmoid(0) = 0.5.
    expected = torch.zeros(6, 4)
    expected[2] = torch.tensor([1.0, 1.25, 2 / 3, 1.0])
    expected[3] = torch.tensor([0.0, 0.5, 1 / 3, 1.0])
    expected[4] = torch.tensor([1.0, 1.0, 1 / 3, 1.0])
    assert torch.allclose(features[1], expected, atol=1e-7, rtol=0)
    # LONGER: label 0 at age 4 (six codes, counted once), 1 at ages 3 and 2, 3 at 3, 2 at 1, 5 at 0.
    assert torch.allclose(
        features[0],
        torch.tensor(
            [
                [0.0, 1 / 16, 0.2, 1.0],
                [0.0, 1 / 8 + 1 / 4, 0.4, 1.0],
                [0.0, 0.5, 0.2, 1.0],
                [0.0, 1 / 8, 0.2, 1.0],
                [0.0, 0.0, 0.0, 0.0],
                [1.0, 1.0, 0.2, 1.0],
            ]
        ),
        atol=1e-7,
        rtol=0,
    )
    assert features[2].eq(0).all()  # SHORT's only code has no label


def test_repeat_head_adds_its_initial_score_to_the_paper_logits():
    paper, repeat = make_model(seed=3), make_model(seed=3, repeat_head=True)
    batch = encode([LONGER, PATIENT, SHORT])
    history = repeat.history.features(pad_code_labels(CODE_LABELS), batch["visit_mask"])
    logits = repeat(**batch, code_labels=pad_code_labels(CODE_LABELS)).logits
    # At initialisation every feature weighs 1 (HISTORY_INIT), per-label and context terms are 0.
    assert modeling_shark.HISTORY_INIT == (1.0, 1.0, 1.0, 1.0)
    assert torch.allclose(logits, paper(**batch).logits + history.sum(-1), atol=1e-6, rtol=0)
    assert repeat.history.label_weight.eq(0).all() and repeat.history.context_weight.eq(0).all()


def test_repeat_head_is_padding_invariant():
    model = make_model(seed=1, repeat_head=True)
    with torch.no_grad():  # make every term of the head matter
        model.history.label_weight.normal_()
        model.history.context_weight.normal_()
        model.history.decay_logit.fill_(0.3)
    alone = model(**encode([PATIENT]), code_labels=pad_code_labels([CODE_LABELS[1]])).logits
    batch = encode([LONGER, PATIENT, SHORT], visits=7, codes=9)
    batch["code_labels"] = pad_code_labels(CODE_LABELS, visits=7, codes=11)
    batch["code_labels"][2, 3:, :] = 4  # labels in padded visits are ignored
    together = model(**batch).logits
    assert torch.allclose(together[1], alone[0], atol=1e-6, rtol=0)


def test_repeat_head_needs_valid_code_labels():
    model = make_model(repeat_head=True)
    batch = encode([PATIENT, SHORT])
    with pytest.raises(ValueError, match=r"repeat_head=True and needs code_labels .*VisitCollator"):
        model(**batch)
    with pytest.raises(ValueError, match=r"code_labels must have shape \[batch, visits, codes\] with"):
        model(**batch, code_labels=torch.zeros(2, 2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="code_labels must be an integer tensor"):
        model(**batch, code_labels=torch.zeros(2, 3, 1))
    with pytest.raises(ValueError, match=r"code_labels holds 6, outside \[-1, num_labels=6\)"):
        model(**batch, code_labels=torch.full((2, 3, 1), 6))
    with pytest.raises(ValueError, match=r"code_labels holds -2"):
        model(**batch, code_labels=torch.full((2, 3, 1), -2))


def test_repeat_head_round_trips_and_predicts(tmp_path):
    model = make_model(seed=5, repeat_head=True)
    with torch.no_grad():
        model.history.label_weight.normal_()
    batch = {**encode([LONGER, PATIENT, SHORT]), "code_labels": pad_code_labels(CODE_LABELS)}
    expected = model(**batch).logits
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["repeat_head"] is True
    for loader in (SharkForDiagnosisPrediction, AutoModel):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert loaded.config.repeat_head and torch.equal(loaded(**batch).logits, expected)
    top = model.predict(batch, top_k=3)
    assert [entry["label"] for entry in top[0]["labels"]] == [
        model.config.id2label[i] for i in expected[0].topk(3).indices.tolist()
    ]
