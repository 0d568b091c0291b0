"""Hub publishing against the local Hub-compatible server (tests/hub_server.py): round trips of model,
tokenizer and card, pinned revisions, `model.push_to_hub`, the privacy audit of a pushed repository, and
failures (server errors, a dropped connection, a missing token)."""

import csv
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from safetensors import safe_open
from transformers import AutoModel
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from shark_hf import cli
from shark_hf.cards import GATED_FIELDS, GATED_PROMPT, HEADLINE_METRICS, MIMIC_LICENSE_NAME, model_card
from shark_hf.configuration_shark import SharkConfig
from shark_hf.data.cohort import build_cohort
from shark_hf.data.collator import VisitCollator
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.embeddings import CodeEmbeddings
from shark_hf.hub import HubAuthError, HubPushError, push_model_and_tokenizer
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import TrainingArguments, train

# The synthetic MIMIC-III ids (SUBJECT_ID < 100,000, HADM_ID in 100,000-199,999) are short numbers that
# occur by chance inside any float or tensor. The cohort's ids are shifted into distinctive 10-digit
# numbers, so that finding one, as a digit run of its own, anywhere in a pushed file is a real leak.
SUBJECT_OFFSET = 7_310_000_000
HADM_OFFSET = 8_420_000_000

REPO_FILES = {
    ".gitattributes",
    "README.md",
    "config.json",
    "model.safetensors",
    "configuration_shark.py",
    "modeling_shark.py",
    "metrics.json",
    "training_curves.png",
    "tokenizer/README.md",
    "tokenizer/codebooks.safetensors",
    "tokenizer/tokenizer_config.json",
}


def _shift_ids(raw: Path) -> None:
    """Rewrite SUBJECT_ID and HADM_ID of the MIMIC-III files to `offset + id` (all other fields kept)."""
    for name in ("ADMISSIONS.csv", "DIAGNOSES_ICD.csv"):
        with open(raw / name, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["SUBJECT_ID"] = str(SUBJECT_OFFSET + int(row["SUBJECT_ID"]))
            row["HADM_ID"] = str(HADM_OFFSET + int(row["HADM_ID"]))
        with open(raw / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _column(raw: Path, name: str) -> set[str]:
    with open(raw / "ADMISSIONS.csv", newline="") as f:
        return {row[name] for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny trained model: synthetic MIMIC-III cohort (100 patients) with shifted ids, a semantic tokenizer
    fitted on random vectors of its codes (L=2, K=8), 2 epochs of training."""
    root = tmp_path_factory.mktemp("hub")
    raw = write_synthetic_cohort(root / "raw", "mimic3", seed=0, num_patients=100)
    _shift_ids(raw)
    cohort = build_cohort("mimic3", root=raw)
    cohort.save_to_disk(root / "cohort")
    codes = sorted({code for split in cohort.values() for p in split["visits"] for v in p for code in v})
    vectors = torch.randn(len(codes), 12, generator=torch.Generator().manual_seed(0))
    tokenizer = SharkTokenizer.fit(
        CodeEmbeddings(codes, vectors, "test/random-vectors", "external"), num_levels=2, codebook_size=8
    )
    tokenizer.save_pretrained(root / "tokenizer")
    args = TrainingArguments(
        output_dir=str(root / "model"),
        cohort=str(root / "cohort"),
        tokenizer=str(root / "tokenizer"),
        num_epochs=2,
        batch_size=16,
        seed=0,
    )
    train(args)
    patients = [visits for visits in cohort["test"]["visits"][:8]]
    return {
        "root": root,
        "raw": raw,
        "cohort": cohort,
        "model_dir": root / "model",
        "tokenizer": tokenizer,
        "batch": VisitCollator.for_model(tokenizer, SharkConfig.from_pretrained(root / "model"))(
            [{"visits": visits} for visits in patients]
        ),
        "metrics": json.loads((root / "model" / "metrics.json").read_text()),
    }


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _assert_same_tokenizer(pulled: SharkTokenizer, original: SharkTokenizer, tmp_path: Path) -> None:
    assert pulled.codes == original.codes
    assert torch.equal(pulled.ids, original.ids)
    assert pulled.codebooks is not None and torch.equal(pulled.codebooks, original.codebooks)
    assert (pulled.fingerprint, pulled.codebook_fingerprint) == (
        original.fingerprint,
        original.codebook_fingerprint,
    )
    original.save_pretrained(tmp_path / "original")
    pulled.save_pretrained(tmp_path / "pulled")
    for name in ("codebooks.safetensors", "tokenizer_config.json"):
        assert (tmp_path / "pulled" / name).read_bytes() == (tmp_path / "original" / name).read_bytes()


def _digests(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders (paths relative to the folders' common parent)."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _repo_files(hub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    repo = hub.hub.repos[repo_id]
    return repo.commits[repo.branches[revision]].files


# -- round trips ---------------------------------------------------------------------------------------


def test_tokenizer_push_to_hub_round_trip_is_bit_for_bit(local_hub, workspace, tmp_path):
    tokenizer = workspace["tokenizer"]
    commit = tokenizer.push_to_hub("org/codes")
    assert commit.oid == local_hub.hub.repos["org/codes"].branches["main"]
    _assert_same_tokenizer(SharkTokenizer.from_pretrained("org/codes"), tokenizer, tmp_path)


def test_push_model_and_tokenizer_round_trip(local_hub, workspace, tmp_path):
    model_dir = workspace["model_dir"]
    commit = push_model_and_tokenizer(model_dir, "org/shark")
    files = _repo_files(local_hub, "org/shark")
    # Only the allow-list travels: no log.jsonl, no checkpoints/ (optimizer and RNG states).
    assert set(files) == REPO_FILES
    assert files["model.safetensors"] == (model_dir / "model.safetensors").read_bytes()
    assert (
        str(commit) == commit.commit_url and commit.oid == local_hub.hub.repos["org/shark"].branches["main"]
    )

    pulled = SharkTokenizer.from_pretrained("org/shark", subfolder="tokenizer")
    _assert_same_tokenizer(pulled, workspace["tokenizer"], tmp_path)

    local = SharkForDiagnosisPrediction.from_pretrained(model_dir)
    expected = _logits(local, workspace["batch"])
    hub_model = SharkForDiagnosisPrediction.from_pretrained("org/shark", tokenizer=pulled)
    assert torch.equal(_logits(hub_model, workspace["batch"]), expected)
    auto = AutoModel.from_pretrained("org/shark", trust_remote_code=True)
    assert torch.equal(_logits(auto, workspace["batch"]), expected)
    # The repository's own modeling file (remote code), what a user without shark-hf runs.
    remote = get_class_from_dynamic_module("modeling_shark.SharkForDiagnosisPrediction", "org/shark")
    assert remote.__module__.startswith("transformers_modules.")
    assert torch.equal(_logits(remote.from_pretrained("org/shark"), workspace["batch"]), expected)


@pytest.fixture(scope="module")
def retuned_dir(workspace, tmp_path_factory) -> Path:
    """A copy of the trained model folder whose classifier bias is shifted by +1 (other weights)."""
    folder = shutil.copytree(workspace["model_dir"], tmp_path_factory.mktemp("retuned") / "model")
    model = SharkForDiagnosisPrediction.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(folder)
    return folder


def test_pinned_revision_returns_the_older_files(local_hub, workspace, retuned_dir):
    first = push_model_and_tokenizer(workspace["model_dir"], "org/pinned")
    second = push_model_and_tokenizer(retuned_dir, "org/pinned", commit_message="Shift the bias")
    assert first.oid != second.oid

    batch = workspace["batch"]
    original = _logits(SharkForDiagnosisPrediction.from_pretrained(workspace["model_dir"]), batch)
    retuned = _logits(SharkForDiagnosisPrediction.from_pretrained(retuned_dir), batch)
    assert torch.allclose(retuned, original + 1.0, atol=1e-5)
    old = SharkForDiagnosisPrediction.from_pretrained("org/pinned", revision=first.oid)
    new = SharkForDiagnosisPrediction.from_pretrained("org/pinned")
    assert torch.equal(_logits(old, batch), original)
    assert torch.equal(_logits(new, batch), retuned)
    old_weights = hf_hub_download("org/pinned", "model.safetensors", revision=first.oid)
    assert Path(old_weights).read_bytes() == (workspace["model_dir"] / "model.safetensors").read_bytes()
    pinned = SharkTokenizer.from_pretrained("org/pinned", revision=first.oid[:7], subfolder="tokenizer")
    assert pinned.fingerprint == workspace["tokenizer"].fingerprint


def test_card_metadata_holds_the_measured_results_gating_and_licence(local_hub, workspace):
    metrics = workspace["metrics"]
    push_model_and_tokenizer(workspace["model_dir"], "org/carded")
    card = ModelCard.load("org/carded")
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {
        (split, name): round(metrics[split][name], 6)
        for split in ("validation", "test")
        for name in HEADLINE_METRICS
    }
    assert (card.data.license, card.data.license_name) == ("other", MIMIC_LICENSE_NAME)
    assert card.data.extra_gated_prompt == GATED_PROMPT
    assert card.data.extra_gated_fields == GATED_FIELDS
    assert "tokenizer_config.json" not in card.text and workspace["tokenizer"].fingerprint in card.text

    push_model_and_tokenizer(workspace["model_dir"], "org/open", license="apache-2.0", gated=False)
    card = ModelCard.load("org/open")
    assert card.data.license == "apache-2.0"
    assert card.data.get("license_name") is None and card.data.get("extra_gated_prompt") is None


def test_model_push_to_hub_publishes_the_shark_card(local_hub, workspace, tmp_path):
    model = SharkForDiagnosisPrediction.from_pretrained(workspace["model_dir"])
    tokenizer = workspace["tokenizer"]
    model.push_to_hub("org/direct", tokenizer=tokenizer, metrics=workspace["model_dir"] / "metrics.json")
    files = _repo_files(local_hub, "org/direct")
    assert set(files) == REPO_FILES - {"training_curves.png"}
    card = ModelCard.load("org/direct")
    assert "shark" in card.data.tags and "automatically generated" not in card.text
    assert len(card.data.eval_results) == 2 * len(HEADLINE_METRICS)
    _assert_same_tokenizer(
        SharkTokenizer.from_pretrained("org/direct", subfolder="tokenizer"), tokenizer, tmp_path
    )
    pulled = SharkForDiagnosisPrediction.from_pretrained("org/direct")
    assert torch.equal(_logits(pulled, workspace["batch"]), _logits(model, workspace["batch"]))

    # New weights without metrics: the published tokenizer stays and is described; the old metrics.json,
    # which would describe other weights, is deleted, and the card says the model was not evaluated.
    with torch.no_grad():
        model.classifier.bias.sub_(0.5)
    model.push_to_hub("org/direct", commit_message="Retune the bias", tags=["fine-tuned"])
    files = _repo_files(local_hub, "org/direct")
    assert set(files) == REPO_FILES - {"training_curves.png", "metrics.json"}
    card = ModelCard.load("org/direct")
    assert "fine-tuned" in card.data.tags and card.data.eval_results is None
    assert "This model has not been evaluated" in card.text and tokenizer.fingerprint in card.text

    # A first push needs the tokenizer, and fails before anything is created.
    with pytest.raises(ValueError, match=r"org/bare@main has no SharkTokenizer under tokenizer/"):
        model.push_to_hub("org/bare")
    assert "org/bare" not in local_hub.hub.repos


def test_remote_code_push_to_hub_without_shark_hf_keeps_the_published_card(local_hub, workspace, monkeypatch):
    push_model_and_tokenizer(workspace["model_dir"], "org/remote")
    published = ModelCard.load("org/remote")
    remote = get_class_from_dynamic_module("modeling_shark.SharkForDiagnosisPrediction", "org/remote")
    model = remote.from_pretrained("org/remote")
    monkeypatch.setitem(sys.modules, "shark_hf", None)  # as where shark-hf is not installed
    monkeypatch.setitem(sys.modules, "shark_hf.hub", None)
    with pytest.raises(ImportError, match="needs `pip install shark-hf`"):
        model.push_to_hub("org/remote", tokenizer=workspace["tokenizer"])
    with torch.no_grad():
        model.classifier.bias.add_(0.25)
    commit = model.push_to_hub("org/remote", commit_message="Remote-code push")
    assert commit.oid == local_hub.hub.repos["org/remote"].branches["main"]
    # transformers' PushToHubMixin re-saves the card it finds in the repository: still the SHARK card.
    card = ModelCard.load("org/remote")
    assert card.data.eval_results == published.data.eval_results and card.text == published.text
    monkeypatch.undo()
    pulled = SharkForDiagnosisPrediction.from_pretrained("org/remote")
    assert torch.equal(pulled.classifier.bias, model.classifier.bias)


def test_push_refuses_a_tokenizer_the_model_cannot_read(local_hub, workspace, tmp_path):
    other = SharkTokenizer.random_ids(workspace["tokenizer"].codes, num_levels=2, codebook_size=8)
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="tokenizer mismatch: tokenizer kind 'random'"):
        push_model_and_tokenizer(workspace["model_dir"], "org/mismatch", tokenizer_dir=tmp_path / "other")
    model = SharkForDiagnosisPrediction.from_pretrained(workspace["model_dir"])
    with pytest.raises(ValueError, match="tokenizer mismatch: tokenizer kind 'random'"):
        model.push_to_hub("org/mismatch", tokenizer=other)
    assert local_hub.hub.repos == {}


def test_push_to_a_branch_keeps_main(local_hub, workspace, retuned_dir):
    main = push_model_and_tokenizer(workspace["model_dir"], "org/branched")
    branch = push_model_and_tokenizer(retuned_dir, "org/branched", revision="hospital-b")
    repo = local_hub.hub.repos["org/branched"]
    assert (repo.branches["main"], repo.branches["hospital-b"]) == (main.oid, branch.oid)
    assert repo.commits[branch.oid].parent == main.oid
    on_branch = hf_hub_download("org/branched", "model.safetensors", revision="hospital-b")
    assert Path(on_branch).read_bytes() == (retuned_dir / "model.safetensors").read_bytes()
    card = ModelCard.load(hf_hub_download("org/branched", "README.md", revision="hospital-b"))
    assert len(card.data.eval_results) == 2 * len(HEADLINE_METRICS)


# -- privacy -------------------------------------------------------------------------------------------


def test_pushed_repository_holds_no_patient_or_visit_id_and_no_pickle(local_hub, workspace, tmp_path):
    raw, cohort = workspace["raw"], workspace["cohort"]
    subject_ids, visit_ids = _column(raw, "SUBJECT_ID"), _column(raw, "HADM_ID")
    assert {p for split in cohort.values() for p in split["patient_id"]} <= subject_ids
    assert min(map(int, subject_ids)) > SUBJECT_OFFSET and min(map(int, visit_ids)) > HADM_OFFSET
    ids = sorted(subject_ids | visit_ids)
    leak = re.compile(rb"(?<![0-9])(?:" + b"|".join(i.encode() for i in ids) + rb")(?![0-9])")
    # The scan finds every id where they are (the raw files), so an empty result below means something.
    found = set(leak.findall((raw / "ADMISSIONS.csv").read_bytes()))
    assert {f.decode() for f in found} == set(ids)

    push_model_and_tokenizer(workspace["model_dir"], "org/private-audit", private=True, token="hf_test")
    folder = Path(snapshot_download("org/private-audit", token="hf_test", local_dir=tmp_path / "pulled"))
    pulled = sorted(p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert {p.relative_to(folder).as_posix() for p in pulled} == REPO_FILES
    for path in pulled:
        content = path.read_bytes()
        assert not leak.search(content), f"{path.name} contains a patient or visit id"
        assert not (content[:1] == b"\x80" and 2 <= content[1] <= 5), f"{path.name} is a pickle"
        assert not content.startswith(b"PK\x03\x04"), f"{path.name} is a zip (torch.save) archive"
        assert path.suffix not in {".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib"}
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as tensors:
                assert list(tensors.keys())

    privacy = workspace["metrics"]["privacy"]
    low, high = privacy["auc_95ci"]
    readme = (folder / "README.md").read_text()
    assert "A per-sample loss-threshold membership-inference attack" in readme
    assert (
        f"with an ROC AUC of **{privacy['membership_inference_auc']:.3f}** (95% CI {low:.3f} to {high:.3f}, "
        "bootstrap over patients, 1000 resamples); 0.5 is chance. This is a lower bound on the leakage"
    ) in readme
    assert "no patient-level data is in this repository" not in readme


CARD_CONFIG = {
    "label_space": "ccs",
    "id2label": {"0": "98", "1": "49"},
    **dict.fromkeys(("embed_dim", "hidden_size", "composition", "dropout", "code_representation"), 1),
}
CARD_TOKENIZER = {"kind": "random", "codes": ["ICD9CM:4019"], "fingerprint": "f" * 64}


def _card_text(metrics: dict) -> str:
    return model_card(CARD_CONFIG, CARD_TOKENIZER, metrics, "org/card").text


def test_card_renders_the_recorded_task_patients_and_samples_and_the_audit():
    metrics = {
        "cohort": {
            "task": {"source": "mimic3", "label_space": "ccs", "min_visits": 3, "sample": "all_prefixes"},
            "patients": {"train": 70, "validation": 10, "test": 20},
            "samples": {"train": 245, "validation": 31, "test": 66},
        },
        "privacy": {
            "attack": "per-sample loss threshold",
            "membership_inference_auc": 0.5612,
            "auc_95ci": [0.5031, 0.6204],
            "bootstrap": {"resamples": 1000, "unit": "patient", "seed": 0},
            "members": 245,
            "nonmembers": 66,
            "member_patients": 70,
            "nonmember_patients": 20,
        },
        "args": {"cohort": "/data/cohorts/icu_2019", "max_visits": 10},
    }
    text = _card_text(metrics)
    assert "- Source: **icu_2019** (built from mimic3 with shark-hf). Aggregate counts only:\n" in text
    assert (
        "| split | patients | samples |\n|---|---|---|\n| train | 70 | 245 |\n| validation | 10 | 31 |\n"
        "| test | 20 | 66 |\n" in text
    )
    assert (
        "- Task: patients with at least 3 visits; one sample per visit after the first: input = every "
        "visit before it, target = the single-level CCS categories of that visit (a patient gives several "
        "samples). Only the 10 most recent input visits are used.\n" in text
    )
    assert (
        "separates the 245 samples (70 patients) of training from the 66 samples (20 patients) of the "
        "held-out test split with an ROC AUC of **0.561** (95% CI 0.503 to 0.620, bootstrap over patients, "
        "1000 resamples); 0.5 is chance. This is a lower bound on the leakage, not a privacy guarantee"
        in text
    )
    assert "per-patient" not in text and "every visit but the last" not in text

    metrics["cohort"]["task"] |= {"sample": "last", "min_visits": 2}
    assert (
        "- Task: patients with at least 2 visits; one sample per patient: input = every visit but the last, "
        "target = the single-level CCS categories of the last visit. Only the 10" in _card_text(metrics)
    )
    # A cohort that did not record its task, and a run without an audit, are said to be so.
    metrics["cohort"]["task"] = None
    del metrics["privacy"]
    text = _card_text(metrics)
    assert "- Task: how the samples were formed was not recorded with the cohort" in text
    assert "No membership-inference audit was run for this model." in text


def test_pushed_files_hold_no_local_path(local_hub, workspace, tmp_path):
    root = str(workspace["root"])
    local = workspace["metrics"]["args"]
    # The local metrics.json keeps the run's folders (useful on the machine that trained)...
    assert (local["cohort"], local["output_dir"]) == (f"{root}/cohort", f"{root}/model")
    push_model_and_tokenizer(workspace["model_dir"], "org/no-paths")
    files = _repo_files(local_hub, "org/no-paths")
    # ...what is pushed names them only by their last component.
    for name, content in files.items():
        assert root.encode() not in content, f"{name} holds the local path {root}"
        assert str(Path(root).parent).encode() not in content, f"{name} holds a local path"
    published = json.loads(files["metrics.json"])
    assert {key: published["args"][key] for key in ("cohort", "output_dir", "tokenizer")} == {
        "cohort": "cohort",
        "output_dir": "model",
        "tokenizer": "tokenizer",
    }
    assert {k: v for k, v in published.items() if k != "args"} == {
        k: v for k, v in workspace["metrics"].items() if k != "args"
    }


def _copy_model(workspace, tmp_path) -> Path:
    return Path(
        shutil.copytree(
            workspace["model_dir"], tmp_path / "model", ignore=shutil.ignore_patterns("checkpoints")
        )
    )


def test_push_refuses_a_symlink_and_sends_nothing(local_hub, workspace, tmp_path):
    model_dir = _copy_model(workspace, tmp_path)
    (model_dir / "training_curves.png").unlink()
    (model_dir / "training_curves.png").symlink_to(workspace["raw"] / "ADMISSIONS.csv")
    with pytest.raises(ValueError) as error:
        push_model_and_tokenizer(model_dir, "org/symlink")
    assert str(error.value) == (
        f"{model_dir}/training_curves.png is a symbolic link: refusing to publish it (a push sends only the "
        "folder's own files); replace it with the file itself or remove it"
    )
    assert local_hub.hub.repos == {}

    # A tokenizer/ folder that is a link to another folder is refused as well.
    (model_dir / "training_curves.png").unlink()
    shutil.move(model_dir / "tokenizer", tmp_path / "elsewhere")
    (model_dir / "tokenizer").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(model_dir))}/tokenizer is a symbolic link: "):
        push_model_and_tokenizer(model_dir, "org/symlink")
    # A hard-linked copy inside the folder is a regular file of the folder: published (and checked).
    (model_dir / "tokenizer").unlink()
    shutil.move(tmp_path / "elsewhere", model_dir / "tokenizer")
    (model_dir / "training_curves.png").hardlink_to(workspace["model_dir"] / "training_curves.png")
    push_model_and_tokenizer(model_dir, "org/symlink")
    assert set(_repo_files(local_hub, "org/symlink")) == REPO_FILES


CSV_ROW = b"SUBJECT_ID,HADM_ID,ICD9_CODE\n7310000001,8420000001,4019\n"


@pytest.mark.parametrize(
    ("name", "damage", "problem"),
    [
        ("training_curves.png", lambda data: CSV_ROW, "is not a PNG image (no PNG signature)"),
        (
            "metrics.json",
            lambda data: CSV_ROW,
            "is not valid JSON (Expecting value: line 1 column 1 (char 0))",
        ),
        ("metrics.json", lambda data: b"[1, 2]", "is not a JSON object"),
        ("config.json", lambda data: data[:-3], "is not valid JSON"),
        (
            "model.safetensors",
            lambda data: data + CSV_ROW,
            "is not a valid safetensors file (Error while deserializing header: incomplete metadata, "
            "file not fully covered)",
        ),
        (
            "tokenizer/codebooks.safetensors",
            lambda data: CSV_ROW,
            "is not a valid safetensors file (Error while deserializing header: header too large)",
        ),
        ("tokenizer/tokenizer_config.json", lambda data: b"\xff" + data, "is not valid JSON ("),
        (
            "modeling_shark.py",
            lambda data: CSV_ROW,
            "is Python source without class SharkForDiagnosisPrediction",
        ),
        (
            "configuration_shark.py",
            lambda data: b"class SharkConfig(:\n",
            "is not Python source (invalid syntax",
        ),
    ],
)
def test_push_checks_each_file_holds_what_its_name_says(
    local_hub, workspace, tmp_path, name, damage, problem
):
    model_dir = _copy_model(workspace, tmp_path)
    path = model_dir / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError) as error:
        push_model_and_tokenizer(model_dir, "org/damaged")
    message = str(error.value)
    assert message.startswith(f"{path} {problem}")
    assert message.endswith(": refusing to publish it; write it again (shark-hf train, save_pretrained)")
    assert len(message.splitlines()) == 1
    assert local_hub.hub.repos == {}


# -- failures ------------------------------------------------------------------------------------------


def test_server_error_on_commit_is_reported_and_changes_nothing(local_hub, workspace):
    before = _digests(workspace["model_dir"], workspace["root"] / "tokenizer")
    local_hub.hub.fail_next("/commit/", 500)
    with pytest.raises(HubPushError) as error:
        push_model_and_tokenizer(workspace["model_dir"], "org/down")
    message = str(error.value)
    assert message == (
        "push to org/down@main failed while uploading: the Hub answered 500: injected failure "
        "(the local folders are unchanged; pushing again is safe)"
    )
    assert _digests(workspace["model_dir"], workspace["root"] / "tokenizer") == before
    assert set(_repo_files(local_hub, "org/down")) == {".gitattributes"}
    # Pushing again once the server is back publishes everything.
    push_model_and_tokenizer(workspace["model_dir"], "org/down")
    assert set(_repo_files(local_hub, "org/down")) == REPO_FILES


def test_transient_server_error_on_preupload_is_retried(local_hub, workspace):
    local_hub.hub.fail_next("/preupload/", 503)
    push_model_and_tokenizer(workspace["model_dir"], "org/flaky")
    assert [p for m, p in local_hub.hub.requests if "/preupload/" in p] == [
        "/api/models/org/flaky/preupload/main"
    ] * 2
    assert set(_repo_files(local_hub, "org/flaky")) == REPO_FILES


def test_connection_dropped_mid_upload_is_reported_and_changes_nothing(local_hub, workspace):
    before = _digests(workspace["model_dir"], workspace["root"] / "tokenizer")
    local_hub.hub.drop_next("/commit/")
    with pytest.raises(
        HubPushError, match=r"^push to org/cut@main failed while uploading: connection lost: "
    ):
        push_model_and_tokenizer(workspace["model_dir"], "org/cut")
    assert _digests(workspace["model_dir"], workspace["root"] / "tokenizer") == before
    assert set(_repo_files(local_hub, "org/cut")) == {".gitattributes"}


def test_push_without_token_gives_the_hub_message(local_hub, workspace):
    local_hub.hub.require_token = True
    with pytest.raises(HubAuthError, match=r"the Hub answered 401: Invalid username or password\.") as error:
        push_model_and_tokenizer(workspace["model_dir"], "org/locked")
    assert isinstance(error.value, PermissionError)
    assert local_hub.hub.repos == {}
    push_model_and_tokenizer(workspace["model_dir"], "org/locked", token="hf_test")
    assert set(_repo_files(local_hub, "org/locked")) == REPO_FILES


def test_cli_push_failures_print_one_line(local_hub, workspace, capsys):
    local_hub.hub.require_token = True
    code = cli.main(["push", "--model", str(workspace["model_dir"]), "--repo", "org/cli"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == (
        "shark-hf push: error: push to org/cli@main failed while creating the repository: the Hub answered "
        "401: Invalid username or password. (log in with `hf auth login`, or pass a token with write access: "
        "--token / HF_TOKEN)"
    )
    local_hub.hub.require_token = False
    local_hub.hub.fail_next("/commit/", 500)
    assert cli.main(["push", "--model", str(workspace["model_dir"]), "--repo", "org/cli"]) == 1
    assert capsys.readouterr().err.strip() == (
        "shark-hf push: error: push to org/cli@main failed while uploading: the Hub answered 500: injected "
        "failure (the local folders are unchanged; pushing again is safe)"
    )
    assert cli.main(["push", "--model", str(workspace["model_dir"]), "--repo", "org/cli"]) == 0
    assert capsys.readouterr().out.startswith(f"Pushed {workspace['model_dir']} ")
    assert HfApi().model_info("org/cli").sha == local_hub.hub.repos["org/cli"].branches["main"]


def test_card_shows_the_baselines_the_lift_and_an_unconverged_run():
    def scores(p10: float) -> dict:
        return {"P@10": p10, "P@20": 0.5, "Acc@10": 0.25, "Acc@20": 0.125, "num_samples": 66}

    metrics = {
        "best_epoch": 30,
        "best_epoch_at_cap": True,
        "test": scores(0.5),
        "baselines": {"last_visit": {"test": scores(0.375)}, "history": {"test": scores(0.4375)}},
        "best_baseline": "history",
        "lift_over_best_baseline": {"P@10": 0.0625, "P@20": 0.0, "R@10": 0.5},
        "args": {"cohort": "c"},
    }
    text = _card_text(metrics)
    assert "| last_visit | 0.3750 | 0.5000 | 0.2500 | 0.1250 |\n" in text
    assert "| history (best on validation) | 0.4375 | 0.5000 | 0.2500 | 0.1250 |\n" in text
    assert "The model's test lift over `history`: P@10 +0.0625, P@20 +0.0000.\n" in text
    assert "**Warning: the best epoch (30) was the last allowed one: training had not converged" in text
    metrics["best_epoch_at_cap"] = False
    assert "Warning" not in _card_text(metrics)
    assert "baseline" not in _card_text({"test": scores(0.5), "args": {"cohort": "c"}}).split("## Results")[1]
