"""Code text -> vectors: the continuous code embeddings that residual k-means turns into semantic IDs.

`embed_codes` writes a text for every code (see `code_texts` for the strategies), embeds the texts with a
sentence-transformers model or Qwen3-Embedding, and returns a `CodeEmbeddings` table. Text vectors are cached
on disk (safetensors) under a fingerprint of the model weights, so a second run loads no model at all.
`load_embeddings` reads vectors computed elsewhere (safetensors, `.npy`, parquet, the Dryad ICD-10 JSON).

Files: `code_embeddings.py` (the `CodeEmbeddings` table), `texts.py` (the text of a code), `encoder.py`
(models and pooling), `cache.py` (the text-vector cache), `embed.py` (`embed_codes`), `loaders.py`
(`load_embeddings`).
"""

from shark_hf.embeddings.code_embeddings import EMBEDDINGS_FORMAT, CodeEmbeddings
from shark_hf.embeddings.embed import embed_codes
from shark_hf.embeddings.encoder import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_ID,
    QWEN3_INSTRUCTION,
    QWEN3_MAX_LENGTH,
    ModelRef,
    TextEncoder,
    last_token_pool,
    left_pad,
    load_text_encoder,
    qwen3_prompt,
    resolve_model,
)
from shark_hf.embeddings.loaders import load_embeddings
from shark_hf.embeddings.texts import TEXT_STRATEGIES, code_texts

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_ID",
    "EMBEDDINGS_FORMAT",
    "QWEN3_INSTRUCTION",
    "QWEN3_MAX_LENGTH",
    "TEXT_STRATEGIES",
    "CodeEmbeddings",
    "ModelRef",
    "TextEncoder",
    "code_texts",
    "embed_codes",
    "last_token_pool",
    "left_pad",
    "load_embeddings",
    "load_text_encoder",
    "qwen3_prompt",
    "resolve_model",
]
