"""The universal tokenizer: the folder shipped as `shark_hf.UNIVERSAL_TOKENIZER`, its rebuild script, and the
privacy statements that set it apart from cohort-fitted tokenizers (issue 12)."""

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

import shark_hf
from shark_hf.codes import all_codes
from shark_hf.embeddings import CodeEmbeddings
from shark_hf.hub import stage_repository
from shark_hf.tokenization_shark import CONFIG_NAME, TENSORS_NAME, SharkTokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_universal_tokenizer.py"


@pytest.fixture(scope="module")
def universal() -> SharkTokenizer:
    return SharkTokenizer.from_pretrained(shark_hf.UNIVERSAL_TOKENIZER)


def build_script():
    spec = importlib.util.spec_from_file_location("build_universal_tokenizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_folder_is_small_pickle_free_and_names_its_provenance():
    folder = Path(shark_hf.UNIVERSAL_TOKENIZER)
    assert folder == Path(shark_hf.__file__).parent / "resources" / "universal_tokenizer"
    files = sorted(path.name for path in folder.iterdir())
    assert files == ["README.md", TENSORS_NAME, CONFIG_NAME]
    assert sum((folder / name).stat().st_size for name in files) <= 5_000_000
    for name in files:  # no pickle (0x80 protocol byte) and no torch.save zip
        head = (folder / name).read_bytes()[:4]
        assert head[:1] != b"\x80" and head != b"PK\x03\x04"
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert (config["kind"], config["num_levels"], config["codebook_size"], config["seed"]) == (
        "semantic",
        4,
        128,
        0,
    )
    assert (config["embedding_model"], config["embedding_text"], config["deduplicated"]) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        "description",
        False,
    )
    card = (folder / "README.md").read_text()
    assert 'SharkTokenizer.from_code_systems(["ICD9CM", "ICD10CM"], model=None, text="description"' in card
    assert "scripts/build_universal_tokenizer.py --check" in card
    assert "so it says nothing\nabout any cohort" in card
    assert "## Collisions" in card and "## ICD-9-CM to ICD-10-CM alignment" in card


def test_shipped_tokenizer_encodes_every_icd9_and_icd10_code(universal):
    codes = all_codes("ICD9CM") + all_codes("ICD10CM")
    assert universal.codes == codes and len(universal) == 90_293
    assert universal.ids.shape == (90_293, 4) and int(universal.ids.max()) < 128
    batch = universal([[codes[:3], [codes[-1]]], [["401.9", "I10", "E11.9"]]])
    assert batch["input_ids"].shape == (2, 2, 3, 4)
    assert torch.equal(batch["input_ids"][1, 0, 1], torch.tensor(universal.encode("ICD10CM:I10")))
    with pytest.raises(KeyError, match="1 codes not in the tokenizer: \\[ICD9CM:4018\\]"):
        universal([[["401.8"]]])  # a well-formed non-billable code: never embedded unless asked


def test_shipped_tokenizer_figures_match_its_table(universal):
    stats = universal.table_stats()
    assert stats["code_systems"] == ["ICD9CM", "ICD10CM"]
    collisions = stats["collisions"]
    assert collisions["num_codes"] == 90_293
    assert collisions["prefix_collision_rates"][-1] == pytest.approx(universal.collision_rate, abs=0)
    gem = stats["gem_alignment"]
    assert gem["num_pairs"] > 14_000 and gem["same_level1"] > 10 * gem["shuffled_level1"]


def test_rebuild_of_a_subset_is_byte_identical(tmp_path):
    """The script's build, on 300 codes of both systems (the full build reads ~90k cached vectors: run
    `python scripts/build_universal_tokenizer.py --check` by hand)."""
    script = build_script()
    subset = all_codes("ICD9CM")[:150] + all_codes("ICD10CM")[:150]
    first = script.build(tmp_path / "a", show_progress=False, codes=subset)
    script.build(tmp_path / "b", show_progress=False, codes=subset)
    assert script.differences(tmp_path / "a", tmp_path / "b") == []
    assert first.codes == subset and (first.num_levels, first.codebook_size) == (4, 128)
    (tmp_path / "b" / "README.md").write_text("changed\n")
    assert script.differences(tmp_path / "a", tmp_path / "b") == ["README.md"]
    # A subset is not universal: its card says it lists the codes it was fitted on.
    assert (
        "**This tokenizer lists the codes it was fitted on.**" in (tmp_path / "a" / "README.md").read_text()
    )


def test_from_code_systems_refuses_codes_outside_the_systems():
    with pytest.raises(ValueError, match="codes outside the systems \\['ICD9CM'\\]: \\[ICD10CM:I10\\]"):
        SharkTokenizer.from_code_systems(["ICD9CM"], codes=["401.9", "ICD10CM:I10"])
    with pytest.raises(TypeError, match="systems must be a list of code systems, got the string 'ICD9CM'"):
        SharkTokenizer.from_code_systems("ICD9CM")


def cohort_tokenizer() -> SharkTokenizer:
    codes = ["ICD9CM:4019", "ICD9CM:25000", "ICD9CM:4280", "ICD9CM:41401"]
    vectors = torch.eye(4)
    return SharkTokenizer.fit(
        CodeEmbeddings(codes, vectors, "m", "description"), num_levels=1, codebook_size=2
    )


def test_cohort_fitted_card_says_it_lists_the_cohort_codes(tmp_path):
    cohort_tokenizer().save_pretrained(tmp_path)
    text = ModelCard.load(tmp_path / "README.md").text
    assert "**This tokenizer lists the codes it was fitted on.**" in text
    assert "publishing it publishes that list" in text
    assert "`shark_hf.UNIVERSAL_TOKENIZER`" in text
    assert "Fitted on a list of 4 codes chosen by whoever built it" in text


def test_publishing_a_cohort_tokenizer_warns_and_names_the_universal_one(tmp_path, caplog):
    model_dir = tmp_path / "model"  # the warning comes before the model is read: a bare folder is enough
    tokenizer = cohort_tokenizer()
    tokenizer.save_pretrained(model_dir / "tokenizer")
    (model_dir / "config.json").write_text("{}")
    save_file({"weight": torch.zeros(1)}, str(model_dir / "model.safetensors"))  # passes the content check
    (tmp_path / "staging").mkdir()
    with (
        caplog.at_level(logging.WARNING, logger="shark_hf.hub"),
        pytest.raises(ValueError, match="num_levels 1 != model's 4"),  # a bare config: defaults L=4
    ):
        stage_repository(model_dir, tmp_path / "staging", "org/x")
    assert (
        f"publishing {model_dir / 'tokenizer'} to org/x: this tokenizer lists the 4 codes it was fitted on, "
        "so publishing it publishes which diagnoses occur in that cohort; the universal tokenizer "
        "shark_hf.UNIVERSAL_TOKENIZER (every ICD-9-CM and ICD-10-CM code, no cohort input) shares nothing "
        "of the cohort"
    ) in caplog.messages


def test_publishing_the_universal_tokenizer_does_not_warn(universal, caplog, monkeypatch):
    pushed = []
    monkeypatch.setattr(
        "huggingface_hub.ModelHubMixin.push_to_hub", lambda self, repo_id, **kwargs: pushed.append(repo_id)
    )
    with caplog.at_level(logging.WARNING, logger="shark_hf.tokenization_shark"):
        universal.push_to_hub("org/universal")
        cohort_tokenizer().push_to_hub("org/cohort")
    assert pushed == ["org/universal", "org/cohort"]
    assert [message.split(":")[0] for message in caplog.messages] == ["pushing to org/cohort"]
