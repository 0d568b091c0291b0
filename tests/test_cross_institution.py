"""examples/cross_institution.py end to end at tiny scale, against the local Hub (HF_ENDPOINT): hospital A
publishes an ICD-9 model, hospital B fine-tunes it on ICD-10 codes A never saw and pushes a branch."""

import json
import os
import subprocess
import sys
from pathlib import Path

from huggingface_hub import ModelCard, hf_hub_download

from shark_hf.cards import HEADLINE_METRICS
from shark_hf.hub import public_metrics
from shark_hf.tokenization_shark import SharkTokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "cross_institution.py"
REPO = "hospital-a/shark-mimic3"


def test_cross_institution_workflow(local_hub, tmp_path):
    work = tmp_path / "work"
    command = [sys.executable, str(SCRIPT), "--repo", REPO, "--work", str(work), "--seed", "0"]
    command += ["--patients-a", "30", "--patients-b", "120", "--tokenizer", "cohort"]
    command += ["--num-levels", "3", "--codebook-size", "16"]
    command += ["--epochs-a", "3", "--epochs-b", "2", "--batch-size", "16"]
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((work / "summary.json").read_text())
    a, b = summary["hospital_a"], summary["hospital_b"]
    assert "| B fine-tuned, B's test (ICD-10) |" in result.stdout

    repo = local_hub.hub.repos[REPO]
    # A's main is still A's release: the commit A pushed, with A's files byte for byte.
    assert repo.branches["main"] == a["commit"]
    main_files = repo.commits[a["commit"]].files
    model_a = work / "hospital_a" / "model"
    for name in ("model.safetensors", "config.json"):
        assert main_files[name] == (model_a / name).read_bytes()
    # metrics.json as published: the local one without the folders of the machine that trained it.
    local_metrics = json.loads((model_a / "metrics.json").read_text())
    assert json.loads(main_files["metrics.json"]) == public_metrics(local_metrics)
    assert str(tmp_path).encode() not in main_files["metrics.json"]
    assert (
        main_files["tokenizer/tokenizer_config.json"]
        == (model_a / "tokenizer/tokenizer_config.json").read_bytes()
    )

    # B's revision is a branch on top of A's release, holding B's weights and B's measured results.
    assert repo.branches[b["branch"]] == b["commit"] and repo.commits[b["commit"]].parent == a["commit"]
    model_b = work / "hospital_b" / "model"
    branch_files = repo.commits[b["commit"]].files
    assert branch_files["model.safetensors"] == (model_b / "model.safetensors").read_bytes()
    assert branch_files["model.safetensors"] != main_files["model.safetensors"]  # fine-tuning moved weights
    metrics_b = json.loads((model_b / "metrics.json").read_text())
    card = ModelCard.load(hf_hub_download(REPO, "README.md", revision=b["branch"]))
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {
        (split, name): round(metrics_b[split][name], 6)
        for split in ("validation", "test")
        for name in HEADLINE_METRICS
    }
    assert b["test"] == {key: metrics_b["test"][key] for key in (*HEADLINE_METRICS, "num_samples")}

    # B's tokenizer: A's codebooks, A's codes with A's ids, plus B's ICD-10 codes.
    tokenizer_a = SharkTokenizer.from_pretrained(REPO, revision=a["commit"], subfolder="tokenizer")
    tokenizer_b = SharkTokenizer.from_pretrained(REPO, revision=b["branch"], subfolder="tokenizer")
    assert tokenizer_b.codebook_fingerprint == tokenizer_a.codebook_fingerprint
    assert tokenizer_b.fingerprint != tokenizer_a.fingerprint
    assert tokenizer_b.codes[: len(tokenizer_a)] == tokenizer_a.codes
    assert (tokenizer_b.ids[: len(tokenizer_a)] == tokenizer_a.ids).all()
    new_codes = tokenizer_b.codes[len(tokenizer_a) :]
    assert len(new_codes) == b["codes_added"] == b["unseen_codes"] > 0
    assert all(code.startswith("ICD10CM:") for code in new_codes)
    assert all(code.startswith("ICD9CM:") for code in tokenizer_a.codes)
