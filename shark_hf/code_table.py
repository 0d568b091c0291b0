"""Checks on a tokenizer's code table: canonical codes, embedding vectors, collision groups, and the
messages naming the codes at fault. Used by `SharkTokenizer`; no state of its own."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from shark_hf.codes import normalize_code
from shark_hf.utils import preview


def canonical_codes(codes: Sequence[str], what: str) -> list[str]:
    """Normalise codes to canonical keys; duplicates (after normalisation) are an error naming them."""
    if isinstance(codes, str):
        raise TypeError(f"{what} must be a list of codes, got the string {codes!r}")
    canonical = [normalize_code(code) for code in codes]
    if not canonical:
        raise ValueError(f"{what} is empty")
    duplicates = sorted(code for code, count in Counter(canonical).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate codes in {what} (after normalisation): {duplicates}")
    return canonical


def canonical_spellings(raws: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """`{string: canonical code}` of the strings that are codes, and `{string: why}` of the others."""
    canonical: dict[str, str] = {}
    invalid: dict[str, str] = {}
    for raw in raws:
        try:
            canonical[raw] = normalize_code(raw)
        except (ValueError, TypeError) as error:
            invalid[raw] = str(error)
    return canonical, invalid


def checked_vectors(codes: list[str], vectors: torch.Tensor) -> torch.Tensor:
    """Vectors as CPU float32 `[N, D]` matching `codes`; NaN/inf rows are an error naming their codes."""
    vectors = torch.as_tensor(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(codes):
        raise ValueError(f"vectors must be [N={len(codes)}, D], got {list(vectors.shape)}")
    vectors = vectors.detach().to("cpu", torch.float32)
    bad = (~torch.isfinite(vectors)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"embeddings contain NaN or inf in the rows of {[codes[row] for row in bad]}")
    return vectors


def collision_index(ids: torch.Tensor, codebook_size: int, codes: list[str]) -> torch.Tensor:
    """For each row of `ids` `[N, L]`, its index among the rows with the same tuple (row order), `[N]`."""
    values = ids.numpy()
    _, group, counts = np.unique(values, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    if counts.max() > codebook_size:
        members = np.flatnonzero(group == int(np.argmax(counts)))
        raise ValueError(
            "deduplicate=True needs codebook_size >= the largest collision group, but "
            f"{len(members)} codes share the IDs {values[members[0]].tolist()} "
            f"({[codes[row] for row in members[:10]]}) and "
            f"codebook_size={codebook_size}; use more levels or a larger codebook_size"
        )
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.empty(len(group), dtype=np.int64)
    index[order] = np.arange(len(group)) - starts[group[order]]
    return torch.from_numpy(index)


def append_collision_level(
    table_ids: np.ndarray, new_ids: torch.Tensor, codes: list[str], codebook_size: int, reserve: bool
) -> torch.Tensor:
    """`new_ids` `[n, L_rq]` with the deduplication level appended: the next free index of each new code's
    collision group among the table's semantic tuples `table_ids` `[N, L_rq]`. With `reserve=False` each
    code is placed as if it were the only one added. A full group (codebook_size codes) is an error."""
    groups = Counter(map(tuple, table_ids.tolist()))
    level = []
    for code, key in zip(codes, map(tuple, new_ids.tolist()), strict=True):
        if groups[key] >= codebook_size:
            raise ValueError(
                f"cannot deduplicate {code}: its IDs {list(key)} are already shared by {groups[key]} "
                f"codes and the deduplication level holds at most codebook_size={codebook_size}"
            )
        level.append(groups[key])
        groups[key] += int(reserve)
    return torch.cat([new_ids, torch.tensor(level, dtype=torch.int64)[:, None]], dim=1)


def unknown_codes_message(
    unknown: list[str], invalid: dict[str, str], total: int | None = None, where: str = ""
) -> str:
    """The KeyError text of `unknown="error"`: codes not in the table and strings that are not codes.

    Args:
        unknown: canonical codes not in the table; invalid: `{string: why}` of strings that are not codes.
        total: how many distinct codes were checked (the count then reads "N of total").
        where: what was checked, after "codes" (" of the cohort (train, validation, test)").
    """
    parts = []
    if unknown:
        count = f"{len(unknown)} of {total}" if total is not None else str(len(unknown))
        parts.append(f"{count} codes{where} not in the tokenizer: [{preview(unknown)}]")
    if invalid:
        shown = preview(sorted(invalid))
        parts.append(f"{len(invalid)} strings that are not valid ICD-9-CM or ICD-10-CM codes: [{shown}]")
    return "; ".join(parts) + f" {UNKNOWN_HINT}"


UNKNOWN_HINT = "(unknown='skip' drops them; add_codes or unknown='embed' encodes unseen codes)"
"""How to get past unknown codes, in the library's words (the CLI names its `--unknown` flag instead)."""


def describe_tensor(value: Any) -> str:
    """`torch.int64 tensor of shape [3, 4]`, or the type name of anything else (for error messages)."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__
