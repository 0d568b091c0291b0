"""The text-vector cache: one safetensors file per `ModelRef.fingerprint` holding `keys` uint8 `[M, 16]`
(sha256 prefixes of the texts) and `vectors` float32 `[M, D]`.

Writes merge with the file's current rows and replace it atomically, so concurrent runs never corrupt it (at
worst one run's new rows are recomputed).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from shark_hf.utils import atomic_write

logger = logging.getLogger(__name__)

CACHE_FORMAT = "shark_hf.text_vector_cache/1"
KEY_BYTES = 16  # first 16 bytes of sha256(text) identify a text in the cache


def text_key(text: str) -> bytes:
    """The cache key of a text: the first `KEY_BYTES` bytes of its UTF-8 sha256."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:KEY_BYTES]


def read_text_cache(path: Path) -> tuple[list[bytes], torch.Tensor | None]:
    """The keys and vectors `[M, D]` of a cache file; none when it is missing or unreadable (logged)."""
    if not path.is_file():
        return [], None
    try:
        with safe_open(path, framework="pt") as f:
            keys, vectors = f.get_tensor("keys"), f.get_tensor("vectors")
    except (SafetensorError, OSError, KeyError) as error:
        logger.warning("ignoring unreadable embedding cache %s (%s); it will be rebuilt", path, error)
        return [], None
    raw = keys.numpy().tobytes()
    return [raw[i : i + KEY_BYTES] for i in range(0, len(raw), KEY_BYTES)], vectors


def merge_text_cache(path: Path, keys: list[bytes], vectors: torch.Tensor, metadata: dict[str, str]) -> None:
    """Add the rows `vectors` `[n, D]` of `keys` to the cache file `path`, replacing it atomically; `metadata`
    (`ModelRef.cache_metadata`) describes the model in the file's header."""
    old_keys, old_vectors = read_text_cache(path)  # re-read: another run may have added rows meanwhile
    if old_vectors is not None and old_vectors.shape[1] == vectors.shape[1]:
        known = set(old_keys)
        new = [i for i, key in enumerate(keys) if key not in known]
        keys = old_keys + [keys[i] for i in new]
        vectors = torch.cat([old_vectors, vectors[new]])
    key_tensor = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(-1, KEY_BYTES)
    metadata = {"format": CACHE_FORMAT, **metadata}
    tensors = {"keys": key_tensor, "vectors": vectors.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """`cache_dir`, else `$SHARK_HF_CACHE/embeddings`, else `~/.cache/shark_hf/embeddings`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("SHARK_HF_CACHE") or Path.home() / ".cache" / "shark_hf"
    return Path(root).expanduser() / "embeddings"
