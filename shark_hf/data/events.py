"""Diagnosis rows in one columnar layout, shared by every cohort source, and the column helpers that read them.

Each source (MIMIC-III, MIMIC-IV, MEDS, a generic table) turns its files into a `DiagnosisRows`: one entry
per usable diagnosis row, as Arrow/NumPy columns (never one Python object per row). Codes are normalised
once per distinct raw value with `shark_hf.codes.normalize_code`, then mapped back to the rows.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shark_hf.codes import is_known, normalize_code
from shark_hf.data.report import RowIssues

# Status of a code after normalisation.
OK, BLANK, BAD, UNKNOWN = 0, 1, 2, 3
CODE_REASONS = {BLANK: "blank_code", BAD: "bad_code", UNKNOWN: "unknown_code"}

TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
TIME_TYPE = pa.timestamp("us")


@dataclass
class DiagnosisRows:
    """Usable diagnosis rows of a cohort, N rows, in no particular order.

    - `patient`: [N] string patient id.
    - `visit`: [N] visit key (string, integer or timestamp), unique within a patient.
    - `time`: [N] timestamp[us] of the visit, null where the source has no time.
    - `code`: [N] int32 index into `codes` (canonical keys such as "ICD9CM:4019").
    - `order`: [N] int64 position of the code inside its visit (SEQ_NUM; ties keep file order).
    - `file`, `row`: [N] index of the source file (in `RowIssues.files`) and 0-based data row in it.
    - `splits`: optional fixed assignment (columns patient: string, split: train/validation/test).
    - `notes`: counts that are not row errors (e.g. ignored non-diagnosis rows).
    """

    patient: pa.Array
    visit: pa.Array
    time: pa.Array
    code: np.ndarray
    codes: list[str]
    order: np.ndarray
    file: np.ndarray
    row: np.ndarray
    splits: pa.Table | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.code)


def flag(
    issues: RowIssues, checks: list[tuple[str, np.ndarray]], file: np.ndarray, row: np.ndarray
) -> np.ndarray:
    """Count each row under the first reason of `checks` ([(reason, [N] bool)]) it fails.

    `file` and `row` ([N]) locate the rows in `issues.files`. Returns [N] bool: the row is unusable.
    """
    unusable = np.zeros(len(row), dtype=bool)
    for reason, found in checks:
        found = found & ~unusable
        for f in np.unique(file[found]):
            issues.add(reason, int(f), row[found & (file == f)])
        unusable |= found
    return unusable


def find_file(root: Path, candidates: list[str]) -> Path:
    """The first of `candidates` (paths relative to `root`) that exists; FileNotFoundError listing all tried."""
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"none of these files exists: {tried}")


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])


def _resolve(available: list[str], wanted: list[str], optional: list[str], path: Path) -> dict[str, str]:
    """Map wanted column names (case-insensitive) to the spelling in the file."""
    by_lower = {name.lower(): name for name in available}
    resolved = {}
    for name in wanted + optional:
        if name.lower() in by_lower:
            resolved[name] = by_lower[name.lower()]
        elif name in wanted:
            raise ValueError(f"{path}: missing column {name!r} (columns: {', '.join(available)})")
    return resolved


def read_columns(path: Path, columns: list[str], optional: list[str] = ()) -> pa.Table:
    """Read `columns` (+ `optional` ones present) of a CSV(.gz) or parquet file, renamed to the given names.

    Column names match case-insensitively. CSV columns are read as strings (blank -> null).
    """
    optional = list(optional)
    if path.name.endswith(".parquet"):
        available = pq.read_schema(path).names
        resolved = _resolve(available, list(columns), optional, path)
        table = pq.read_table(path, columns=list(resolved.values()))
    else:
        available = _csv_header(path)
        resolved = _resolve(available, list(columns), optional, path)
        convert = pacsv.ConvertOptions(
            include_columns=list(resolved.values()),
            column_types={c: pa.string() for c in resolved.values()},
            strings_can_be_null=True,
            null_values=[""],
        )
        table = pacsv.read_csv(path, convert_options=convert)
    return table.select(list(resolved.values())).rename_columns(list(resolved))


def as_string(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """[N] strings with surrounding whitespace removed; numbers are formatted, blank strings become null."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        array = pc.cast(array, pa.string())
    array = pc.utf8_trim_whitespace(array)
    return pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)


def is_blank(array: pa.Array) -> np.ndarray:
    """[N] bool: null (after `as_string`)."""
    return np.asarray(pc.is_null(array))


def duplicated(array: pa.Array, mask: np.ndarray) -> np.ndarray:
    """[N] bool: rows where `mask` holds whose value appeared in an earlier row where `mask` holds."""
    indices = pc.dictionary_encode(array.filter(pa.array(mask))).indices
    repeated = pd.Series(pc.fill_null(indices, -1).to_numpy()).duplicated().to_numpy()
    out = np.zeros(len(array), dtype=bool)
    out[np.flatnonzero(mask)] = repeated
    return out


def parse_times(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """[N] timestamp[us]; strings are parsed with `TIME_FORMATS` (first that fits), failures become null."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        if pa.types.is_timestamp(array.type) and array.type.tz is not None:
            array = pc.local_timestamp(array)
        return pc.cast(array, TIME_TYPE)
    text = as_string(array)
    parsed = pa.nulls(len(text), TIME_TYPE)
    for fmt in TIME_FORMATS:
        parsed = pc.coalesce(parsed, pc.strptime(text, format=fmt, unit="us", error_is_null=True))
    return parsed


def parse_order(array: pa.Array | None, n: int) -> np.ndarray:
    """[N] int64 order keys from a SEQ_NUM-like column; blank or non-integer values sort last."""
    if array is None:
        return np.zeros(n, dtype=np.int64)
    text = as_string(array)
    digits = pc.if_else(pc.utf8_is_digit(text), text, pa.scalar(None, text.type))
    values = pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False)
    return np.where(np.isnan(values), np.iinfo(np.int64).max, values).astype(np.int64)


def system_name(value: Any) -> str | None:
    """"ICD9CM"/"ICD10CM" for spellings such as 9, "9", "ICD-9", "icd9cm", "ICD10"; None otherwise."""
    text = str(value).strip().upper().replace("-", "").replace("_", "").replace(" ", "")
    if text.endswith(".0"):
        text = text[:-2]
    if text in {"9", "ICD9", "ICD9CM"}:
        return "ICD9CM"
    if text in {"10", "ICD10", "ICD10CM"}:
        return "ICD10CM"
    return None


def _normalise_one(code: str, system: Any) -> tuple[str | None, int]:
    name = None
    if system is not None:
        name = system_name(system)
        if name is None:
            return None, BAD
    try:
        canonical = normalize_code(code, name)
    except ValueError:
        return None, BAD
    return (canonical, OK) if is_known(canonical) else (None, UNKNOWN)


def normalise_codes(
    raw: pa.Array, systems: pa.Array | str | None = None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Normalise [N] raw codes, each distinct (code, system) pair once.

    `systems` is one system for all rows, a per-row array (9/10, "ICD9CM", ...), or None (inferred from
    the code). Returns `code` [N] int32 index into `codes` (-1 where unusable), the canonical `codes`,
    and `status` [N] int8 (OK, BLANK, BAD, UNKNOWN).
    """
    raw = as_string(raw)
    n = len(raw)
    status = np.full(n, BLANK, dtype=np.int8)
    code = np.full(n, -1, dtype=np.int32)
    present = ~is_blank(raw)
    if not present.any():
        return code, [], status
    keep = pa.array(present)
    code_dict = pc.dictionary_encode(raw.filter(keep))
    raw_values = code_dict.dictionary.to_pylist()
    key = code_dict.indices.to_numpy().astype(np.int64)
    system_values: list[Any] = [systems]
    if isinstance(systems, pa.Array | pa.ChunkedArray):
        # A blank system value becomes "" (never "infer"), which `system_name` rejects.
        system_dict = pc.dictionary_encode(as_string(systems).filter(keep), null_encoding="encode")
        system_values = ["" if v is None else v for v in system_dict.dictionary.to_pylist()]
        key = key * len(system_values) + system_dict.indices.to_numpy().astype(np.int64)
    inverse, unique_keys = pd.factorize(key)
    canonical: dict[str, int] = {}
    unique_code = np.empty(len(unique_keys), dtype=np.int32)
    unique_status = np.empty(len(unique_keys), dtype=np.int8)
    for i, k in enumerate(unique_keys.tolist()):
        value, system = raw_values[k // len(system_values)], system_values[k % len(system_values)]
        result, unique_status[i] = _normalise_one(value, system)
        unique_code[i] = -1 if result is None else canonical.setdefault(result, len(canonical))
    code[present] = unique_code[inverse]
    status[present] = unique_status[inverse]
    return code, list(canonical), status
