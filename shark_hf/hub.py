"""Publishing a trained model and its tokenizer as one Hub repository.

Layout of the repository (what `shark-hf push` and `SharkForDiagnosisPrediction.push_to_hub` write):

```
README.md                         the SHARK model card (hub_cards/model_card.md), with model-index results
config.json  model.safetensors    the model (`SharkForDiagnosisPrediction.from_pretrained(repo)`)
configuration_shark.py            remote code, so `AutoModel.from_pretrained(repo, trust_remote_code=True)`
modeling_shark.py                   works where shark_hf is not installed
metrics.json  training_curves.png aggregate metrics of the training run (no patient rows)
tokenizer/                        `SharkTokenizer.from_pretrained(repo, subfolder="tokenizer")`
```

Only an allow-list of files is staged and uploaded: checkpoints (optimizer and RNG states), logs and any
other file of the training folder never leave the machine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "configuration_shark.py",
    "modeling_shark.py",
    "metrics.json",
    "training_curves.png",
)
TOKENIZER_FILES = ("tokenizer_config.json", "codebooks.safetensors", "README.md")
TOKENIZER_SUBFOLDER = "tokenizer"


def stage_repository(
    model_dir: str | Path,
    staging_dir: str | Path,
    repo_id: str,
    tokenizer_dir: str | Path | None = None,
    license: str | None = None,
    gated: bool = True,
) -> Path:
    """Copy the publishable files of a trained model folder into `staging_dir` and render its card.

    Raises:
        FileNotFoundError: `model_dir` lacks `config.json` or `model.safetensors`, or the tokenizer folder
            lacks one of its files (each message names the folder and the file).
    """
    from .cards import model_card

    model_dir, staging = Path(model_dir), Path(staging_dir)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else model_dir / TOKENIZER_SUBFOLDER
    for required in ("config.json", "model.safetensors"):
        if not (model_dir / required).is_file():
            raise FileNotFoundError(f"{model_dir} is not a trained model folder: {required} is missing")
    for name in MODEL_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, staging / name)
    (staging / TOKENIZER_SUBFOLDER).mkdir()
    for name in TOKENIZER_FILES:
        if not (tokenizer_dir / name).is_file():
            raise FileNotFoundError(f"{tokenizer_dir} is not a SharkTokenizer folder: {name} is missing")
        shutil.copy2(tokenizer_dir / name, staging / TOKENIZER_SUBFOLDER / name)
    config = json.loads((model_dir / "config.json").read_text())
    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    tokenizer_config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    card = model_card(config, tokenizer_config, metrics, repo_id=repo_id, license=license, gated=gated)
    card.save(staging / "README.md")
    return staging


def push_model_and_tokenizer(
    model_dir: str | Path,
    repo_id: str,
    tokenizer_dir: str | Path | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    license: str | None = None,
    gated: bool = True,
    commit_message: str = "Upload SHARK model and tokenizer",
) -> str:
    """Push a trained model folder (and its tokenizer) to `repo_id` in one commit; returns the commit URL.

    The repository is created if missing; `revision` names a branch, created from `main` if missing.
    The local folders are only read: a failed upload leaves them as they were.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shark-hf-push-") as tmp:
        staging = stage_repository(model_dir, tmp, repo_id, tokenizer_dir, license=license, gated=gated)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=staging, revision=revision, commit_message=commit_message
        )
    return commit.commit_url
