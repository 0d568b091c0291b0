"""Diagnosis rows in one columnar layout, shared by every cohort source, and the column helpers to read them.

Each source (MIMIC-III, MIMIC-IV, MEDS, a generic table) turns its files into a `DiagnosisRows`: one entry
per usable diagnosis row, as Arrow/NumPy columns (never one Python object per row). Codes are normalised
once per distinct raw value with `shark_hf.codes.normalize_code`, then mapped back to the rows.
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shark_hf.codes import is_known, normalize_code
from shark_hf.data.report import RowIssues

logger = logging.getLogger(__name__)

# Status of a code after normalisation.
OK, BLANK, BAD, UNKNOWN = 0, 1, 2, 3
CODE_REASONS = {BLANK: "blank_code", BAD: "bad_code", UNKNOWN: "unknown_code"}

TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
TIME_TYPE = pa.timestamp("us")


@dataclass
class DiagnosisRows:
    """Usable diagnosis rows of a cohort, N rows, in file order (file, then row: this breaks order ties).

    - `patient`: [N] patient id (strings, usually a DictionaryArray).
    - `visit`: [N] visit key (strings, usually a DictionaryArray, or timestamps), unique within a patient.
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
    """The first of `candidates` (paths relative to `root`) that exists; FileNotFoundError lists them all.

    When both `X.csv` and `X.csv.gz` exist, a warning names the one that is read (the one listed first).
    """
    for candidate in candidates:
        if (root / candidate).is_file():
            other = candidate[: -len(".gz")] if candidate.endswith(".csv.gz") else f"{candidate}.gz"
            if other.endswith((".csv", ".csv.gz")) and (root / other).is_file():
                logger.warning(
                    "%s: both %s and %s exist; reading %s and ignoring %s",
                    root,
                    candidate,
                    other,
                    candidate,
                    other,
                )
            return root / candidate
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"none of these files exists: {tried}")


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: the header line is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}): save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from error
    except (OSError, EOFError) as error:  # gzip: not a gzip file, or cut short
        raise ValueError(_damaged_archive(path, error)) from error


def _damaged_archive(path: Path, error: BaseException) -> str:
    return (
        f"{path}: the compressed file is truncated or damaged ({error}): download or copy it again "
        f"(`gzip -t {path}` checks it)"
    )


def _resolve(available: list[str], wanted: list[str], optional: list[str], path: Path) -> dict[str, str]:
    """Map wanted column names (case-insensitive) to the spelling in the file.

    A wanted column whose name occurs more than once in the file (case-insensitively) raises ValueError:
    which of them holds the data cannot be told.
    """
    by_lower = {name.lower(): name for name in available}
    resolved = {}
    for name in wanted + optional:
        spellings = [c for c in available if c.lower() == name.lower()]
        if len(spellings) > 1:
            raise ValueError(
                f"{path}: column {name!r} occurs {len(spellings)} times among the columns "
                f"({', '.join(repr(c) for c in spellings)}); rename or remove the extra one"
            )
        if name.lower() in by_lower:
            resolved[name] = by_lower[name.lower()]
        elif name in wanted:
            raise ValueError(f"{path}: missing column {name!r} (columns: {', '.join(available)})")
    return resolved


def read_columns(path: Path, columns: Sequence[str], optional: Sequence[str] = ()) -> pa.Table:
    """Read `columns` (+ `optional` ones present) of a CSV(.gz) or parquet file, renamed to the given names.

    Column names match case-insensitively. CSV columns are read as strings (blank -> null); a malformed
    CSV (e.g. a line with the wrong number of fields) raises ValueError naming the file and the line text.
    """
    columns, optional = list(columns), list(optional)
    if path.name.endswith(".parquet"):
        available = pq.read_schema(path).names
        resolved = _resolve(available, columns, optional, path)
        table = pq.read_table(path, columns=list(resolved.values()))
    else:
        available = _csv_header(path)
        resolved = _resolve(available, columns, optional, path)
        convert = pacsv.ConvertOptions(
            include_columns=list(resolved.values()),
            column_types={c: pa.string() for c in resolved.values()},
            strings_can_be_null=True,
            null_values=[""],
        )
        try:
            table = pacsv.read_csv(path, convert_options=convert)
        except pa.ArrowInvalid as error:
            raise ValueError(f"{path}: {error}") from error
        except OSError as error:  # pyarrow's decompression: "Truncated compressed stream"
            raise ValueError(_damaged_archive(path, error)) from error
    return table.select(list(resolved.values())).rename_columns(list(resolved))


def as_string(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """[N] strings with surrounding whitespace removed; numbers are formatted, blank strings become null."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_string(array.type):
        array = pc.cast(array, pa.string())
    array = pc.utf8_trim_whitespace(array)
    return pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)


def is_blank(array: pa.Array) -> np.ndarray:
    """[N] bool: null (after `as_string`)."""
    return np.asarray(pc.is_null(array))


def repeated(keys: np.ndarray) -> np.ndarray:
    """[N] bool: `keys[i]` equals the key of an earlier entry (sort-based; fast on nearly sorted keys)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    out = np.zeros(len(keys), dtype=bool)
    out[order[1:]] = ordered[1:] == ordered[:-1]
    return out


def distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of int64 `keys` (one sort and no inverse: cheaper than `unique_inverse`)."""
    ordered = np.sort(keys)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered


def unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, [N] index of each key among them) for non-negative int64 `keys`."""
    if len(keys) and keys.max() < max(4 * len(keys), 1 << 16):  # dense: a lookup table beats sorting
        present = np.bincount(keys) > 0
        distinct = np.flatnonzero(present)
        return distinct, (np.cumsum(present) - 1)[keys]
    return np.unique(keys, return_inverse=True)


def parse_times(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """[N] timestamp[us]. Strings: ISO 8601 ("2180-05-06 22:23:00", "2180-05-06", fractions), else the first
    of `TIME_FORMATS` that fits; values nothing parses become null."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_timestamp(array.type) or pa.types.is_date(array.type):
        if pa.types.is_timestamp(array.type) and array.type.tz is not None:
            array = pc.local_timestamp(array)
        return pc.cast(array, TIME_TYPE)
    text = as_string(array)
    try:
        return pc.cast(text, TIME_TYPE)
    except pa.ArrowInvalid:  # some value is not ISO 8601: parse format by format, failures become null
        pass
    parsed = pa.nulls(len(text), TIME_TYPE)
    for fmt in TIME_FORMATS:
        parsed = pc.coalesce(parsed, pc.strptime(text, format=fmt, unit="us", error_is_null=True))
    return parsed


def parse_order(array: pa.Array | None, n: int) -> np.ndarray:
    """[N] non-negative int64 order keys from a SEQ_NUM-like column; blank or non-integer values sort last."""
    if array is None:
        return np.zeros(n, dtype=np.int64)
    text = as_string(array)
    valid = pc.and_kleene(pc.utf8_is_digit(text), pc.less_equal(pc.utf8_length(text), 18))
    values = pc.cast(pc.if_else(valid, text, pa.scalar(None, text.type)), pa.int64())
    last = (pc.max(values).as_py() or 0) + 1
    return pc.fill_null(values, last).to_numpy().astype(np.int64)


def system_name(value: Any) -> str | None:
    """Canonical system ("ICD9CM" or "ICD10CM") of spellings such as 9, "9", "ICD-9", "icd10cm"; else None."""
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


def encode(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode [N] values as trimmed strings: ([N] int64 index into `values`, -1 where null or
    blank; `values`, the distinct strings). Hashes the column once; trimming runs on the distinct values."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    inner = pc.dictionary_encode(as_string(array.dictionary))  # merges values equal once trimmed
    remap = np.append(pc.fill_null(inner.indices, -1).to_numpy(), -1)
    indices = pc.fill_null(array.indices, len(remap) - 1).to_numpy()
    return remap[indices].astype(np.int64), inner.dictionary


def coded(indices: np.ndarray, values: pa.Array) -> pa.DictionaryArray:
    """[N] DictionaryArray from non-negative `indices` into `values`."""
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int64()), values)


def normalise_codes(
    raw: pa.Array | pa.ChunkedArray, systems: pa.Array | pa.ChunkedArray | str | None = None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Normalise [N] raw codes, each distinct (code, system) pair once.

    `systems` is one system for all rows, a per-row array (9/10, "ICD9CM", ...), or None (inferred from
    the code). Returns `code` [N] int32 index into `codes` (-1 where unusable), the canonical `codes`,
    and `status` [N] int8 (OK, BLANK, BAD, UNKNOWN).
    """
    code_index, code_values = encode(raw)
    present = code_index >= 0
    key = code_index[present]
    system_values: list[Any] = [systems]
    if isinstance(systems, pa.Array | pa.ChunkedArray):
        system_index, values = encode(systems)
        # A blank system value becomes "" (never "infer"), which `system_name` rejects.
        system_values = values.to_pylist() + [""]
        system_index = np.where(system_index < 0, len(system_values) - 1, system_index)
        key = key * len(system_values) + system_index[present]
    unique_keys, inverse = unique_inverse(key)
    raw_values = code_values.to_pylist()
    canonical: dict[str, int] = {}
    unique_code = np.empty(len(unique_keys), dtype=np.int32)
    unique_status = np.empty(len(unique_keys), dtype=np.int8)
    for i, k in enumerate(unique_keys.tolist()):
        value, system = raw_values[k // len(system_values)], system_values[k % len(system_values)]
        result, unique_status[i] = _normalise_one(value, system)
        unique_code[i] = -1 if result is None else canonical.setdefault(result, len(canonical))
    code = np.full(len(code_index), -1, dtype=np.int32)
    status = np.full(len(code_index), BLANK, dtype=np.int8)
    code[present] = unique_code[inverse]
    status[present] = unique_status[inverse]
    return code, list(canonical), status
