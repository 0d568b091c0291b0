"""`load_embeddings`: code vectors computed elsewhere (safetensors, `.npy`, parquet, Dryad ICD-10 JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from shark_hf.codes import normalize_code
from shark_hf.embeddings.code_embeddings import (
    EMBEDDINGS_FORMAT,
    CodeEmbeddings,
    check_finite,
    find_duplicates,
)
from shark_hf.utils import preview


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
    duplicates = find_duplicates(canonical)
    if duplicates:
        raise ValueError(f"{path}: duplicate codes (after normalisation): {preview(duplicates)}")
    check_finite(vectors, canonical, where=str(path))
    return CodeEmbeddings(canonical, vectors, model_id, text)
