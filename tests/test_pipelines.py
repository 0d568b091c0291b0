"""The "diagnosis-prediction" transformers pipeline and `load_model_and_tokenizer`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from shark_hf import load_model_and_tokenizer
from shark_hf.codes import label_names
from shark_hf.configuration_shark import SharkConfig
from shark_hf.data.collator import VisitCollator
from shark_hf.embeddings import CodeEmbeddings
from shark_hf.hub import push_model_and_tokenizer
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.pipelines import DiagnosisPredictionPipeline
from shark_hf.tokenization_shark import SharkTokenizer

ROOT = Path(__file__).resolve().parents[1]
CODES = ["ICD9CM:4019", "ICD9CM:25000", "ICD9CM:41401", "ICD9CM:4280", "ICD9CM:42731", "ICD9CM:5849"]
LABELS = ["98", "49", "101", "108", "106", "157", "53", "122", "100", "59", "55", "131"]  # 12 CCS categories
PATIENT = [["401.9", "250.00"], ["414.01", "428.0", "427.31"], ["584.9"]]
SHORT = [["ICD9CM:4280"]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A SHARK model with the label-history head (needs `code_labels`), its tokenizer in tokenizer/."""
    folder = tmp_path_factory.mktemp("pipeline") / "model"
    vectors = torch.randn(len(CODES), 6, generator=torch.Generator().manual_seed(0))
    tokenizer = SharkTokenizer.fit(
        CodeEmbeddings(CODES, vectors, "test/random-vectors", "external"), num_levels=2, codebook_size=4
    )
    names = label_names("ccs")
    config = SharkConfig.from_tokenizer(
        tokenizer, {label: names[label] for label in LABELS}, embed_dim=4, hidden_size=5, repeat_head=True
    )
    torch.manual_seed(3)
    model = SharkForDiagnosisPrediction(config)
    with torch.no_grad():
        for parameter in model.parameters():  # far from the initial zeros: distinct, ordered scores
            parameter.normal_(0, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder


def expected(model_dir: Path, patients: list, top_k: int, unknown: str = "error") -> list[dict]:
    """`model.predict` on the patients collated together, as the pipeline should report it."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    collator = VisitCollator.for_model(tokenizer, model.config, unknown=unknown)
    batch = collator([{"visits": visits} for visits in patients])
    assert "code_labels" in batch
    return [
        {
            "labels": [
                {"label": top["label"], "name": top["name"], "score": top["probability"]}
                for top in prediction["labels"]
            ],
            "visit_attention": prediction["visit_attention"],
        }
        for prediction in model.predict(batch, top_k=top_k)
    ]


def test_pipeline_gives_model_predict_scores_for_one_patient(model_dir):
    predict = pipeline("diagnosis-prediction", model=str(model_dir), device="cpu")
    assert isinstance(predict, DiagnosisPredictionPipeline)
    result = predict(PATIENT)
    (want,) = expected(model_dir, [PATIENT], top_k=10)
    assert result == want["labels"] and len(result) == 10  # default top_k
    scores = [entry["score"] for entry in result]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 10
    assert result[0]["name"] == label_names("ccs")[result[0]["label"]]
    assert predict(PATIENT, top_k=50) == expected(model_dir, [PATIENT], top_k=12)[0]["labels"]  # capped


def test_pipeline_on_a_list_of_patients_with_visit_attention(model_dir):
    predict = pipeline("diagnosis-prediction", model=model_dir, device="cpu", top_k=3)
    results = predict([PATIENT, SHORT], return_visit_attention=True)
    assert results == expected(model_dir, [PATIENT, SHORT], top_k=3)
    assert [len(result["visit_attention"]) for result in results] == [3, 1]
    assert results[1]["visit_attention"] == [1.0]
    # One patient per forward pass: same labels, scores equal up to float rounding of the padding.
    alone = predict([PATIENT, SHORT], batch_size=1)
    assert [[e["label"] for e in r] for r in alone] == [[e["label"] for e in r["labels"]] for r in results]
    for got, want in zip(alone, results, strict=True):
        assert [e["score"] for e in got] == pytest.approx([e["score"] for e in want["labels"]], abs=1e-6)


def test_codes_in_any_spelling_and_unknown_codes(model_dir):
    predict = pipeline("diagnosis-prediction", model=model_dir, device="cpu")
    canonical = [["ICD9CM:4019", "ICD9CM:25000"], ["ICD9CM:41401", "ICD9CM:4280", "ICD9CM:42731"], ["584.9"]]
    assert predict(canonical) == predict(PATIENT)
    with pytest.raises(KeyError, match="ICD9CM:486"):
        predict([["401.9", "486"]])
    # Skipped by the tokenizer, the code still counts in the label history (`code_labels`) of the repeat head.
    skipped = predict([["401.9", "486"]], unknown="skip")
    assert skipped == expected(model_dir, [[["401.9", "486"]]], top_k=10, unknown="skip")[0]["labels"]
    assert skipped != predict([["401.9"]])


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            [PATIENT, []],
            r"patient 1: expected a non-empty list of visits, each a non-empty list of code strings",
        ),
        ([PATIENT, [["401.9"], [401]]], r"patient 1: expected a non-empty list of visits"),
        (
            "401.9",
            r"expected one patient \(a list of visits, each a list of code strings\) or a non-empty list",
        ),
        ([], r"expected one patient"),
    ],
)
def test_malformed_input_names_the_patient(model_dir, inputs, message):
    predict = pipeline("diagnosis-prediction", model=model_dir, device="cpu")
    with pytest.raises(ValueError, match=message):
        predict(inputs)


def test_bad_options_are_refused(model_dir):
    predict = pipeline("diagnosis-prediction", model=model_dir, device="cpu")
    with pytest.raises(ValueError, match="top_k must be an integer >= 1, got 0"):
        predict(PATIENT, top_k=0)
    with pytest.raises(ValueError, match=r"unknown must be one of \('error', 'skip', 'embed'\), got 'drop'"):
        predict(PATIENT, unknown="drop")


def test_a_model_folder_without_its_tokenizer_is_an_error_naming_it(model_dir, tmp_path):
    model = SharkForDiagnosisPrediction.from_pretrained(model_dir)
    model.save_pretrained(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "bare" / "tokenizer")):
        pipeline("diagnosis-prediction", model=tmp_path / "bare", device="cpu")
    # An explicit tokenizer is used as given.
    tokenizer = SharkTokenizer.from_pretrained(model_dir / "tokenizer")
    predict = pipeline("diagnosis-prediction", model=model, tokenizer=tokenizer, device="cpu")
    assert predict(PATIENT) == expected(model_dir, [PATIENT], top_k=10)[0]["labels"]


def test_load_model_and_tokenizer_checks_the_pair(model_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(model_dir)
    assert not model.training and tokenizer.fingerprint == model.config.tokenizer_fingerprint
    other = SharkTokenizer.random_ids(CODES, num_levels=2, codebook_size=4)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="tokenizer"):
        load_model_and_tokenizer(model_dir, tokenizer=tmp_path / "other")


SCRIPT = """
import json, sys
{imports}
predict = pipeline("diagnosis-prediction", model=sys.argv[1], device="cpu")
print(json.dumps(predict(json.loads(sys.argv[2]), top_k=4)))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import shark_hf\nfrom transformers import pipeline",
        "from transformers import pipeline\nimport shark_hf",
        # shark_hf.pipelines is the first to import transformers.pipelines: no import cycle
        "import shark_hf\nshark_hf.load_model_and_tokenizer\nfrom transformers import pipeline",
    ],
    ids=["shark-first", "pipeline-first", "shark-pipelines-first"],
)
def test_import_shark_hf_registers_the_task_in_a_fresh_interpreter(model_dir, imports):
    command = [sys.executable, "-c", SCRIPT.format(imports=imports), str(model_dir), json.dumps(PATIENT)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected(model_dir, [PATIENT], top_k=4)[0]["labels"]


def test_pipeline_on_a_model_pulled_from_the_hub(local_hub, model_dir):
    push_model_and_tokenizer(model_dir, "org/shark-pipeline")
    predict = pipeline("diagnosis-prediction", model="org/shark-pipeline", device="cpu")
    assert predict(PATIENT, top_k=5) == expected(model_dir, [PATIENT], top_k=5)[0]["labels"]
