"""`embed_codes`: codes -> texts -> vectors (cached per text) -> one vector per code."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from shark_hf.codes import normalize_code
from shark_hf.embeddings.cache import merge_text_cache, read_text_cache, resolve_cache_dir, text_key
from shark_hf.embeddings.code_embeddings import CodeEmbeddings, find_duplicates
from shark_hf.embeddings.encoder import ModelRef, TextEncoder, resolve_model
from shark_hf.embeddings.texts import code_texts
from shark_hf.utils import preview

logger = logging.getLogger(__name__)


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
    duplicates = find_duplicates(codes)
    if duplicates:
        raise ValueError(f"duplicate codes passed to embed_codes: {preview(duplicates)}")
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
    cache_path = resolve_cache_dir(cache_dir) / f"{ref.fingerprint[:32]}.safetensors"
    keys = [text_key(t) for t in texts]
    cached_keys, cached_vectors = read_text_cache(cache_path)
    row = {key: i for i, key in enumerate(cached_keys)}
    missing = [i for i, key in enumerate(keys) if key not in row]
    logger.info("%d of %d texts cached in %s", len(texts) - len(missing), len(texts), cache_path)
    if missing:
        encoder = encoder or TextEncoder(ref, device)
        fresh = encoder.encode([texts[i] for i in missing], batch_size, show_progress)
        merge_text_cache(cache_path, [keys[i] for i in missing], fresh, ref.cache_metadata)
        row.update({keys[i]: len(cached_keys) + j for j, i in enumerate(missing)})
        cached_vectors = fresh if cached_vectors is None else torch.cat([cached_vectors, fresh])
    return cached_vectors[torch.tensor([row[key] for key in keys])]
