"""`CodeEmbeddings`: one vector per medical code, the table that residual k-means turns into semantic IDs."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from shark_hf.codes import normalize_code
from shark_hf.utils import atomic_write, preview

EMBEDDINGS_FORMAT = "shark_hf.code_embeddings"
"""`format` metadata of the safetensors files written by `CodeEmbeddings.save`."""


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
        duplicates = find_duplicates(self.codes)
        if duplicates:
            raise ValueError(f"duplicate codes in CodeEmbeddings: {preview(duplicates)}")
        check_finite(self.vectors, self.codes, where="CodeEmbeddings")

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
            raise KeyError(f"{len(missing)} codes have no embedding: {preview(missing)}")
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
        vectors = {"vectors": self.vectors.detach().cpu().contiguous()}
        atomic_write(path, lambda tmp: save_file(vectors, tmp, metadata=metadata))
        return path


def check_finite(vectors: torch.Tensor, codes: Sequence[str], where: str) -> None:
    """Raise a ValueError naming the rows (and codes) of `vectors` `[N, D]` holding NaN or inf."""
    bad = (~torch.isfinite(vectors).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        named = [f"row {i} ({codes[i]})" for i in bad]
        raise ValueError(f"{where}: {len(bad)} vectors have NaN or inf values: {preview(named)}")


def find_duplicates(items: Sequence[str]) -> list[str]:
    """The items that occur more than once, in first-occurrence order."""
    return [item for item, count in Counter(items).items() if count > 1]


def _try_normalize(code: str) -> str:
    try:
        return normalize_code(code)
    except ValueError:
        return code
