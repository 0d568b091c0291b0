"""Publishing a trained model and its tokenizer as one Hub repository.

Layout of the repository (what `shark-hf push`, `push_model_and_tokenizer` and
`SharkForDiagnosisPrediction.push_to_hub` write):

```
README.md                         the SHARK model card (hub_cards/model_card.md), with model-index results
config.json  model.safetensors    the model (`SharkForDiagnosisPrediction.from_pretrained(repo)`)
configuration_shark.py            remote code, so `AutoModel.from_pretrained` with `trust_remote_code`
modeling_shark.py                   works where shark_hf is not installed
metrics.json  training_curves.png aggregate metrics of the training run (no patient rows)
tokenizer/                        `SharkTokenizer.from_pretrained(repo, subfolder="tokenizer")`
```

Only an allow-list of files is staged and uploaded: checkpoints (optimizer and RNG states), logs and any
other file of the training folder never leave the machine. Each allow-listed file must be a regular file of
its folder (a symbolic link, or a path resolving outside the folder, is refused) and hold what its name says
(`check_publishable`: safetensors with a valid header, JSON objects, a PNG, the remote-code classes);
`metrics.json` is published without local paths (`public_metrics`) and both cards are rendered afresh.

A push is one commit (`HfApi.create_commit`): it adds the staged files and deletes the files of the
allow-list that the revision holds but the push does not (a `metrics.json` left from earlier weights would
describe the wrong model). Other files of the repository are left alone.

`push_space` publishes the same files under `model/` of a Gradio Space, with the web app (`shark_hf.app`)
as its `app.py`, a `requirements.txt` and a Space card:

```
README.md  app.py  requirements.txt    the Space: card (sdk: gradio), `launch(build_app("model"))`, shark-hf
model/                                 the model repository's files as above (card, weights, tokenizer/, ...)
```

Failures raise `HubPushError` (`HubAuthError` when the Hub refuses the credentials) with one line naming the
repository, the step and the Hub's message. The local folders are only read, so they are intact; pushing
again is safe because the Hub skips files that did not change.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    SpaceCard,
    SpaceCardData,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError

from . import __version__
from .cards import model_card
from .configuration_shark import SharkConfig
from .tokenization_shark import CARD_NAME as TOKENIZER_CARD_NAME
from .tokenization_shark import CONFIG_NAME, TENSORS_NAME, SharkTokenizer
from .tokenizer_stats import cohort_table_warning
from .utils import TOKENIZER_SUBFOLDER, is_local_path

logger = logging.getLogger(__name__)

MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "configuration_shark.py",
    "modeling_shark.py",
    "metrics.json",
    "training_curves.png",
)
_MODEL_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
TOKENIZER_FILES = (CONFIG_NAME, TENSORS_NAME, TOKENIZER_CARD_NAME)
"""What a push owns under `tokenizer/`: the tokenizer's files (copied) and its card (rendered)."""
CARD_NAME = "README.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REMOTE_CODE_CLASSES = {
    "configuration_shark.py": "SharkConfig",
    "modeling_shark.py": "SharkForDiagnosisPrediction",
}


SPACE_MODEL_FOLDER = "model"
SPACE_APP = f'''"""The SHARK web app on the model in {SPACE_MODEL_FOLDER}/ (`shark-hf push --space`)."""

from shark_hf.app import build_app, launch

launch(build_app("{SPACE_MODEL_FOLDER}"), host="0.0.0.0")
'''
SPACE_FILES = ("app.py", "requirements.txt", CARD_NAME)
"""What a Space push owns besides `model/`."""


class HubPushError(OSError):
    """Pushing to the Hub failed (server error, lost connection). The local folders are unchanged."""


class HubAuthError(HubPushError, PermissionError):
    """The Hub refused the request's credentials (HTTP 401 or 403)."""


def stage_repository(
    model_dir: str | Path,
    staging_dir: str | Path,
    repo_id: str,
    tokenizer_dir: str | Path | None = None,
    license: str | None = None,
    gated: bool = True,
    published_tokenizer: SharkTokenizer | None = None,
) -> Path:
    """Copy the publishable files of a trained model folder into `staging_dir` and render its card.

    Args:
        model_dir: a `save_pretrained` / `train` output folder (`config.json`, weights, `metrics.json`, ...).
        staging_dir: an empty folder that receives the repository's files.
        repo_id: the repository the card is written for.
        tokenizer_dir: the tokenizer folder to stage under `tokenizer/` (default: `model_dir/tokenizer`).
        license, gated: see `shark_hf.cards.model_card`.
        published_tokenizer: stage no tokenizer, and describe this one (the tokenizer already in the
            repository) in the card.

    Raises:
        FileNotFoundError: `model_dir` lacks `config.json` or its weights, or the tokenizer folder lacks one
            of its files (each message names the folder and the file).
        ValueError: an allow-listed file is a symbolic link, resolves outside its folder or does not hold
            what its name says (`check_publishable`; nothing is staged from a folder with such a file), or
            the model cannot read the tokenizer's ids (`SharkConfig.check_tokenizer`).
    """
    model_dir, staging = Path(model_dir), Path(staging_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a trained model folder: config.json is missing")
    shards = sorted(p.name for p in model_dir.iterdir() if _MODEL_SHARD.match(p.name))
    if not (model_dir / "model.safetensors").is_file() and not shards:
        raise FileNotFoundError(f"{model_dir} is not a trained model folder: model.safetensors is missing")
    model_files = [name for name in (*MODEL_FILES, *shards) if check_publishable(model_dir, name)]
    tokenizer = published_tokenizer
    if tokenizer is None:
        tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else model_dir / TOKENIZER_SUBFOLDER
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"{tokenizer_dir} is not a SharkTokenizer folder: no such directory")
        if tokenizer_dir.parent == model_dir:  # a folder of the model folder must be in it
            check_publishable(model_dir, tokenizer_dir.name, is_folder=True)
        (staging / TOKENIZER_SUBFOLDER).mkdir()
        for name in (CONFIG_NAME, TENSORS_NAME):
            if not check_publishable(tokenizer_dir, name):
                raise FileNotFoundError(f"{tokenizer_dir} is not a SharkTokenizer folder: {name} is missing")
            shutil.copyfile(tokenizer_dir / name, staging / TOKENIZER_SUBFOLDER / name)
        tokenizer = SharkTokenizer.from_pretrained(staging / TOKENIZER_SUBFOLDER)
        card = tokenizer.generate_model_card(repo_id=repo_id, subfolder=TOKENIZER_SUBFOLDER)
        card.save(staging / TOKENIZER_SUBFOLDER / TOKENIZER_CARD_NAME)
        if warning := cohort_table_warning(tokenizer.codes):
            logger.warning("publishing %s to %s: %s", tokenizer_dir, repo_id, warning)
    # Never publish a model beside a tokenizer whose ids it cannot read.
    SharkConfig.from_pretrained(model_dir).check_tokenizer(tokenizer)
    for name in model_files:
        if name != "metrics.json":
            shutil.copyfile(model_dir / name, staging / name)
    config = json.loads((model_dir / "config.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text()) if "metrics.json" in model_files else {}
    metrics = public_metrics(metrics)
    if "metrics.json" in model_files:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    files = [*model_files, f"{TOKENIZER_SUBFOLDER}/"]
    card = model_card(
        config, tokenizer.config, metrics, repo_id, license=license, gated=gated, repository_files=files
    )
    card.save(staging / CARD_NAME)
    return staging


def check_publishable(root: Path, name: str, *, is_folder: bool = False) -> bool:
    """Whether `root/name` exists (False if not), after checking that it may be published.

    Raises:
        ValueError: it is a symbolic link, resolves outside `root`, is not a regular file (not a folder for
            `is_folder`), or does not hold what its name says (`_check_content`); the message names it.
    """
    path = root / name
    if path.is_symlink():
        raise ValueError(
            f"{path} is a symbolic link: refusing to publish it (a push sends only the folder's own files); "
            "replace it with the file itself or remove it"
        )
    if not path.exists():
        return False
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"{path} resolves outside {root}: refusing to publish it; put the file itself in {root}"
        )
    if is_folder != path.is_dir() or not (is_folder or path.is_file()):
        what = "a folder" if is_folder else "a regular file"
        raise ValueError(f"{path} is not {what}: refusing to publish it")
    if not is_folder:
        _check_content(path)
    return True


def _check_content(path: Path) -> None:
    """Raise ValueError unless `path` holds what its name says: a safetensors file whose header is valid
    and covers the file, a JSON object, a PNG image, or (remote code) Python defining its SHARK class."""
    problem = None
    if path.suffix == ".safetensors":
        try:
            with safe_open(path, framework="pt"):
                pass
        except SafetensorError as error:
            problem = f"not a valid safetensors file ({error})"
    elif path.suffix == ".json":
        try:
            if not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
                problem = "not a JSON object"
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            problem = f"not valid JSON ({error})"
    elif path.suffix == ".png":
        with open(path, "rb") as file:
            if file.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                problem = "not a PNG image (no PNG signature)"
    elif path.name in REMOTE_CODE_CLASSES:
        expected = REMOTE_CODE_CLASSES[path.name]
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, SyntaxError, ValueError) as error:
            problem = f"not Python source ({' '.join(str(error).split())})"
        else:
            classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
            problem = None if expected in classes else f"Python source without class {expected}"
    if problem:
        raise ValueError(
            f"{path} is {problem}: refusing to publish it; write it again (shark-hf train, save_pretrained)"
        )


def public_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """`metrics` as published: every local path (absolute, `~`, or an existing file or folder, e.g. the
    run's `args.cohort`, `args.output_dir`, `args.tokenizer`) replaced by its last component, so that no
    folder of the machine that trained the model leaves it. Other values are kept."""

    def public(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: public(item) for key, item in value.items()}
        if isinstance(value, list):
            return [public(item) for item in value]
        if isinstance(value, str) and value and is_local_path(value):
            return Path(value).name or value
        return value

    return public(metrics)


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
    commit_description: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Push a trained model folder and its tokenizer to `repo_id` in one commit.

    The repository is created if missing; `revision` names a branch, created from `main` if missing. The
    local folders are only read: a failed upload leaves them as they were.

    Returns:
        The `CommitInfo` (a `str`: the commit URL; `.oid` is the commit to pin with `revision=`).

    Raises:
        FileNotFoundError: the model or tokenizer folder is incomplete (nothing is sent).
        HubAuthError: the Hub refused the token (its message, e.g. "Invalid username or password.").
        HubPushError: any other failure of the Hub or of the connection.
    """
    with tempfile.TemporaryDirectory(prefix="shark-hf-push-") as tmp:
        staging = stage_repository(model_dir, tmp, repo_id, tokenizer_dir, license=license, gated=gated)
        return _push_staged(
            staging,
            repo_id,
            private=private,
            revision=revision,
            token=token,
            commit_message=commit_message,
            commit_description=commit_description,
            create_pr=create_pr,
            with_tokenizer=True,
        )


def push_model(
    model: PreTrainedModel,
    repo_id: str,
    *,
    tokenizer: SharkTokenizer | None = None,
    metrics: dict[str, Any] | str | Path | None = None,
    license: str | None = None,
    gated: bool = True,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    tags: list[str] | None = None,
) -> CommitInfo:
    """Push an in-memory model with the SHARK card (what `SharkForDiagnosisPrediction.push_to_hub` runs).

    Args:
        model: the model to publish, a `SharkForDiagnosisPrediction` (taken duck-typed: this module never
            imports the model code, whose `push_to_hub` calls this function).
        tokenizer: its tokenizer, uploaded under `tokenizer/`. Without it the tokenizer already under
            `tokenizer/` in the revision is kept and described in the card (an error if there is none).
        metrics: the evaluation to publish (a `metrics.json` dict or path). Without it the card says the
            model was not evaluated and a `metrics.json` of earlier weights is deleted from the revision.
        license, gated: see `shark_hf.cards.model_card`.
        tags: extra card tags.
        commit_message, commit_description, private, token, revision, create_pr, max_shard_size: as in
            `transformers.PreTrainedModel.push_to_hub`.

    Raises:
        ValueError: no `tokenizer` given and the revision has none either (nothing is sent).
        HubAuthError, HubPushError: as in `push_model_and_tokenizer`.
    """
    published = _published_tokenizer(repo_id, revision, token) if tokenizer is None else None
    with tempfile.TemporaryDirectory(prefix="shark-hf-push-") as tmp:
        model_dir, staging = Path(tmp) / "model", Path(tmp) / "staging"
        staging.mkdir()
        model.save_pretrained(model_dir, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(model_dir / TOKENIZER_SUBFOLDER)
        if metrics is not None:
            content = metrics if isinstance(metrics, dict) else json.loads(Path(metrics).read_text())
            (model_dir / "metrics.json").write_text(json.dumps(content, indent=2) + "\n")
        stage_repository(
            model_dir, staging, repo_id, license=license, gated=gated, published_tokenizer=published
        )
        if tags:
            _add_card_tags(staging / CARD_NAME, tags)
        return _push_staged(
            staging,
            repo_id,
            private=private,
            revision=revision,
            token=token,
            commit_message=commit_message or "Upload SHARK model",
            commit_description=commit_description,
            create_pr=create_pr,
            with_tokenizer=tokenizer is not None,
        )


def _push_staged(
    staging: Path,
    repo_id: str,
    *,
    private: bool | None,
    revision: str | None,
    token: str | None,
    commit_message: str,
    commit_description: str | None,
    create_pr: bool,
    with_tokenizer: bool,
    space: bool = False,
) -> CommitInfo:
    """Create the repo (and branch), then one commit: add the staged files, delete stale managed files.
    `space`: the repository is a Gradio Space whose model lives under `model/`."""
    api = HfApi(token=token)
    kind = {"repo_type": "space"} if space else {}
    with _hub_errors(repo_id, revision, "creating the repository"):
        api.create_repo(
            repo_id, private=private, exist_ok=True, space_sdk="gradio" if space else None, **kind
        )
    if revision:
        with _hub_errors(repo_id, revision, "creating the branch"):
            api.create_branch(repo_id, branch=revision, exist_ok=True, **kind)
    with _hub_errors(repo_id, revision, "reading the revision"):
        info = api.repo_info(repo_id, revision=revision, **kind)
    staged = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    stale = [
        path
        for path in sorted(s.rfilename for s in info.siblings or [])
        if path not in staged and _is_managed(path, with_tokenizer, space)
    ]
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=staging / p) for p in staged]
    operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
    with _hub_errors(repo_id, revision, "uploading"):
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
            parent_commit=info.sha,
            **kind,
        )


def _is_managed(path: str, with_tokenizer: bool, space: bool = False) -> bool:
    """Whether a push owns `path` (and deletes it from the revision when it no longer publishes it)."""
    if space:
        folder, _, rest = path.partition("/")
        return path in SPACE_FILES or (folder == SPACE_MODEL_FOLDER and _is_managed(rest, with_tokenizer))
    if path in (*MODEL_FILES, CARD_NAME) or _MODEL_SHARD.match(path):
        return True
    folder, _, name = path.partition("/")
    return with_tokenizer and folder == TOKENIZER_SUBFOLDER and name in TOKENIZER_FILES


def push_space(
    model_dir: str | Path,
    space_id: str,
    tokenizer_dir: str | Path | None = None,
    private: bool = False,
    token: str | None = None,
    license: str | None = None,
    requirement: str | None = None,
    commit_message: str = "Upload SHARK web app and model",
) -> CommitInfo:
    """Push a trained model folder as a Gradio Space running the SHARK web app, in one commit.

    The Space holds the model repository's files under `model/` (`stage_repository`: the allow-list, the
    model card), `app.py` (`SPACE_APP`: `shark_hf.app` on `model/`), `requirements.txt` (`requirement`,
    default `shark-hf==<this version>`; pass a wheel URL or `shark-hf @ git+https://...` where shark-hf is not
    on the Space's package index) and a Space card (`sdk: gradio`). A public Space publishes the weights:
    mind the training data's terms (`private=True`).

    Raises:
        FileNotFoundError, ValueError, HubAuthError, HubPushError: as `push_model_and_tokenizer`.
    """
    from importlib.metadata import version

    with tempfile.TemporaryDirectory(prefix="shark-hf-space-") as tmp:
        staging = Path(tmp)
        (staging / SPACE_MODEL_FOLDER).mkdir()
        stage_repository(
            model_dir, staging / SPACE_MODEL_FOLDER, space_id, tokenizer_dir, license=license, gated=False
        )
        (staging / "app.py").write_text(SPACE_APP)
        (staging / "requirements.txt").write_text(f"{requirement or f'shark-hf=={__version__}'}\n")
        card_data = SpaceCardData(
            title=f"SHARK {space_id.split('/')[-1]}",
            sdk="gradio",
            sdk_version=version("gradio"),
            app_file="app.py",
            license=license,
            tags=["shark", "ehr", "diagnosis-prediction"],
        )
        content = (
            f"---\n{card_data.to_yaml()}\n---\n\n# SHARK next-visit diagnosis prediction\n\n"
            f"The web app of the SHARK model in `{SPACE_MODEL_FOLDER}/` (its card: "
            f"[{SPACE_MODEL_FOLDER}/README.md]({SPACE_MODEL_FOLDER}/README.md)): enter a patient's visits, "
            "see the predicted categories of the next visit and the attention over the visits. Nothing "
            "typed is stored. For research only, not for clinical decisions.\n"
        )
        SpaceCard(content).save(staging / CARD_NAME)
        return _push_staged(
            staging,
            space_id,
            private=private,
            revision=None,
            token=token,
            commit_message=commit_message,
            commit_description=None,
            create_pr=False,
            with_tokenizer=True,
            space=True,
        )


def _published_tokenizer(repo_id: str, revision: str | None, token: str | None) -> SharkTokenizer:
    """The tokenizer under `tokenizer/` of a revision, for a push that keeps it."""
    with _hub_errors(repo_id, revision, "reading the published tokenizer"):
        try:
            return SharkTokenizer.from_pretrained(
                repo_id, revision=revision, subfolder=TOKENIZER_SUBFOLDER, token=token
            )
        except (FileNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            raise ValueError(
                f"{repo_id}@{revision or 'main'} has no SharkTokenizer under {TOKENIZER_SUBFOLDER}/ (or is "
                "not visible with this token): pass the model's tokenizer, push_to_hub(repo_id, "
                "tokenizer=...), so that the repository holds the tokenizer its card describes"
            ) from None


def _add_card_tags(card_path: Path, tags: list[str]) -> None:
    card = ModelCard.load(card_path)
    card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *tags]))
    card.save(card_path)


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, step: str) -> Iterator[None]:
    """Turn the client's HTTP and connection errors into one-line `HubPushError`s naming repo and step."""
    where = f"push to {repo_id}@{revision or 'main'} failed while {step}"
    advice = "the local folders are unchanged; pushing again is safe"
    try:
        yield
    except HfHubHTTPError as error:
        response = error.response
        status = response.status_code if response is not None else None
        message = error.server_message or str(error).splitlines()[0]
        if status in (401, 403):
            raise HubAuthError(
                f"{where}: the Hub answered {status}: {message.strip()} "
                "(log in with `hf auth login`, or pass a token with write access: --token / HF_TOKEN)"
            ) from error
        raise HubPushError(f"{where}: the Hub answered {status}: {message.strip()} ({advice})") from error
    except TransportError as error:
        raise HubPushError(f"{where}: connection lost: {error} ({advice})") from error
