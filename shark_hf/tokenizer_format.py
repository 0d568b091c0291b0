"""The files of a `SharkTokenizer` folder: names, fingerprint, format versions and migrations, reading and
writing.

Folder layout written by `SharkTokenizer.save_pretrained` (no pickle anywhere):

- `codebooks.safetensors`: `ids` `[N, L]` (uint8 when K <= 256, else int32: read back as int64), and for
  kind "semantic" `codebooks` float32 `[L_rq, K, D]` (L_rq = L, or L - 1 with the deduplication level);
  metadata `shark_tokenizer` = JSON `{"fingerprint", "format_version"}`.
- `tokenizer_config.json`: `format_version`, `tokenizer_class`, kind, L, K, provenance (embedding model,
  text strategy, seed, Residual K-Means settings, per-level reconstruction errors, codebook usage),
  `fingerprint`, and the code table `codes` (public ICD codes, in row order).
- `README.md`: the tokenizer card rendered from `hub_cards/tokenizer_card.md`.

`fingerprint` is the sha256 hex digest of, in this order: the UTF-8 header
`"shark-tokenizer\\nkind=<kind>\\nids=<N>x<L>\\ncodebooks=<L_rq>x<K>x<D>\\nK=<K>\\nembedding_model=<id>\\n
embedding_text=<text>\\n"` (`codebooks=none` when the kind has none; `none` for a missing model or text), the
codebooks as little-endian float32 bytes (C order), the ids as little-endian int64 bytes (C order), and the
codes joined by `"\\n"` in UTF-8. It changes with any bit of the table or codebooks, and with the embedding
model or text the codebooks were fitted on (an edited config cannot make a loader fetch another model),
and is the same before and after a save/load round trip. `codebook_fingerprint` hashes only what gives an ID
its meaning (the same header with `levels=<L>` in place of `ids=<N>x<L>`, then the codebooks; for
"random"/"index" it is `fingerprint`), so it survives `add_codes`.

Format versions: 1 (ids int64; the fingerprint header ends at `K=<K>\\n`), 2 (the above). A version-1 folder
is migrated on load: its version-1 fingerprint is checked, then replaced by the version-2 one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shark_hf.utils import TOKENIZER_CONFIG_NAME, atomic_write, atomic_write_text, is_local_path

CONFIG_NAME = TOKENIZER_CONFIG_NAME
TENSORS_NAME = "codebooks.safetensors"
FORMAT_VERSION = 2

# Keys every tokenizer_config.json holds (after migration to FORMAT_VERSION).
REQUIRED_KEYS = (
    "kind",
    "codebook_size",
    "embedding_model",
    "embedding_text",
    "deduplicated",
    "fingerprint",
    "codes",
)

# format_version -> step turning a (config, tensors) pair of that version into the next version's layout.
# A layout change bumps FORMAT_VERSION and registers its step here (after the functions it uses, below), so
# folders written by older releases keep loading.
Migration = Callable[
    [dict[str, Any], dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor]]
]
MIGRATIONS: dict[int, Migration] = {}


def package_version() -> str:
    """The installed shark-hf version, written into each config (`unknown` in a bare checkout)."""
    try:
        return importlib.metadata.version("shark-hf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def table_fingerprint(
    kind: str,
    codebook_size: int,
    ids: np.ndarray,
    codes: Sequence[str],
    codebooks: torch.Tensor | None,
    embedding_model: str | None,
    embedding_text: str | None,
    with_table: bool = True,
    format_version: int = FORMAT_VERSION,
) -> str:
    """sha256 hex of the header, the codebooks and (`with_table`) the ids `[N, L]` and codes; see the module
    docstring (`with_table=False` gives `codebook_fingerprint`; `format_version=1` the version-1 digest, which
    left out the embedding model and text)."""
    num_codes, num_levels = ids.shape
    shape = "none" if codebooks is None else "x".join(map(str, codebooks.shape))
    rows = f"ids={num_codes}x{num_levels}" if with_table else f"levels={num_levels}"
    header = f"shark-tokenizer\nkind={kind}\n{rows}\ncodebooks={shape}\nK={codebook_size}\n"
    if format_version >= 2:
        header += f"embedding_model={embedding_model or 'none'}\nembedding_text={embedding_text or 'none'}\n"
    digest = hashlib.sha256(header.encode("utf-8"))
    if codebooks is not None:
        digest.update(codebooks.numpy().astype("<f4", copy=False).tobytes(order="C"))
    if with_table:
        digest.update(ids.astype("<i8", copy=False).tobytes(order="C"))
        digest.update("\n".join(codes).encode("utf-8"))
    return digest.hexdigest()


def stored_ids(ids: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """`ids` `[N, L]` in the smallest dtype written to the file: uint8 when K <= 256, else int32."""
    return ids.to(torch.uint8 if codebook_size <= 256 else torch.int32).contiguous()


def write_files(
    folder: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any], fingerprint: str
) -> None:
    """Write the tensors, then the config (a reader never sees a config newer than its tensors), each
    atomically."""
    # One metadata key: safetensors orders several keys arbitrarily, and saves must be byte-identical.
    header = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint}
    metadata = {"shark_tokenizer": json.dumps(header, sort_keys=True)}
    atomic_write(folder / TENSORS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def locate_folder(
    model_id: str,
    *,
    subfolder: str | None,
    revision: str | None,
    cache_dir: str | Path | None,
    force_download: bool,
    local_files_only: bool,
    token: str | bool | None,
) -> tuple[Path, str]:
    """The local folder holding the files of `model_id` (a folder, or a Hub repo id: downloaded), and how
    to name it in messages."""
    if os.path.isdir(model_id):
        folder = Path(model_id) / (subfolder or "")
        where = str(folder)
    elif is_local_path(model_id) or model_id.count("/") > 1:
        raise FileNotFoundError(f"{model_id} is not a SharkTokenizer folder: no such directory")
    else:
        # One snapshot: both files come from the same commit even while the branch moves.
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        root = snapshot_download(
            model_id,
            revision=revision,
            allow_patterns=[prefix + CONFIG_NAME, prefix + TENSORS_NAME],
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        folder = Path(root) / prefix
        where = f"Hub repo {model_id!r}" + (f" subfolder {subfolder!r}" if subfolder else "")
        where += f" at revision {revision!r}" if revision else ""
    return folder, where


def read_files(
    folder: Path, where: str, tokenizer_class: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and tensors of a tokenizer folder, brought to `FORMAT_VERSION` and checked for the
    required keys; every error names `where`."""
    for name in (CONFIG_NAME, TENSORS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{where} is not a SharkTokenizer folder: it has no {name}")
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}/{CONFIG_NAME} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or config.get("tokenizer_class") != tokenizer_class:
        found = config.get("tokenizer_class") if isinstance(config, dict) else type(config).__name__
        raise ValueError(
            f"{where}/{CONFIG_NAME} is not a SharkTokenizer config (tokenizer_class is {found!r})"
        )
    try:
        tensors = load_file(folder / TENSORS_NAME)
    except SafetensorError as error:
        raise ValueError(
            f"{where}/{TENSORS_NAME} is not a readable safetensors file ({error}): the file is truncated or "
            "corrupted; save the tokenizer again or download it again"
        ) from error
    config, tensors = migrate(config, tensors, where)
    missing = [key for key in REQUIRED_KEYS if key not in config]
    missing += [] if "ids" in tensors else [f"{TENSORS_NAME}: ids"]
    if missing:
        raise ValueError(f"{where}: incomplete SharkTokenizer files, missing {missing}")
    if tensors["ids"].dtype not in (torch.uint8, torch.int32, torch.int64):
        raise ValueError(
            f"{where}/{TENSORS_NAME}: ids must be uint8, int32 or int64, got {tensors['ids'].dtype}"
        )
    return config, {**tensors, "ids": tensors["ids"].to(torch.int64)}


def migrate(
    config: dict[str, Any], tensors: dict[str, torch.Tensor], where: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Bring a loaded (config, tensors) pair to `FORMAT_VERSION`, or say exactly why it cannot be."""
    version = config.get("format_version")
    if version is None:
        raise ValueError(
            f"{where}/{CONFIG_NAME} has no format_version: it was not written by "
            "SharkTokenizer.save_pretrained (every shark-hf release writes one; this release reads "
            f"format_version {FORMAT_VERSION})"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{where}/{CONFIG_NAME}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} was written by shark-hf {config.get('shark_hf_version', '(unknown version)')} with "
            f"tokenizer format_version {version}; this shark-hf {package_version()} reads format_version <= "
            f"{FORMAT_VERSION}: upgrade shark-hf (pip install -U shark-hf)"
        )
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise ValueError(
                f"{where}: tokenizer format_version {version} cannot be migrated: no migration step from "
                f"version {version} (known steps: {sorted(MIGRATIONS)}; current version {FORMAT_VERSION})"
            )
        config, tensors = MIGRATIONS[version](dict(config), dict(tensors))
        version += 1
        config["format_version"] = version
    return config, tensors


def _migrate_1_to_2(
    config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Version 1 -> 2: the fingerprint now covers the embedding model and text. A version-1 fingerprint that
    matches its files is replaced by the version-2 one; one that does not is kept, so the load fails on it."""
    try:
        ids, codes = tensors["ids"].to(torch.int64).numpy(), config["codes"]
        args = (config["kind"], config["codebook_size"], ids, codes, tensors.get("codebooks"))
        model, text = config.get("embedding_model"), config.get("embedding_text")
    except (KeyError, TypeError):
        return config, tensors  # incomplete: read_files names what is missing
    if table_fingerprint(*args, model, text, format_version=1) == config.get("fingerprint"):
        config["fingerprint"] = table_fingerprint(*args, model, text)
    return config, tensors


MIGRATIONS[1] = _migrate_1_to_2
