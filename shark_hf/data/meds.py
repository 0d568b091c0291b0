"""MEDS datasets -> `DiagnosisRows`.

A MEDS folder holds `data/*.parquet` (or `data/**/*.parquet`) shards with `subject_id`, `time` and `code`
columns, and optionally `metadata/subject_splits.parquet` (`subject_id`, `split` in train / tuning /
held_out), which is then used for the splits instead of the seeded 7:1:2 split. A subject listed under
more than one split keeps the first split listed (counted in the report notes and logged as a warning;
`strict=True` raises ValueError instead).

Diagnosis codes are recognised in two spellings: `ICD9CM//4019` / `ICD10CM//E119` (one or two slashes,
dotted or not) and MIMIC-MEDS `DIAGNOSIS//ICD//9//4019` / `DIAGNOSIS//ICD//10//E119`. Every other code
(labs, procedures, admissions, ...) is ignored and counted in the report notes. A visit is the set of
diagnosis rows of a subject that share a `hadm_id` when that column exists, otherwise those sharing a
`time`; with `hadm_id` the visit is dated by its earliest row time.

Checks on diagnosis rows, in order: `missing_id` (blank subject_id, or blank hadm_id when the column
exists), `bad_date` (blank time, when visits are defined by time), `blank_code` (null code),
`bad_code`, `unknown_code`; repeated codes within a visit are counted later as `duplicate_row`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shark_hf.data.events import (
    CODE_REASONS,
    DiagnosisRows,
    as_string,
    coded,
    encode,
    flag,
    is_blank,
    normalise_codes,
    parse_times,
    read_columns,
    repeated,
)
from shark_hf.data.report import RowIssues, SourceFile

logger = logging.getLogger(__name__)

DIAGNOSIS_PATTERNS = (
    r"^(?P<system>ICD9CM|ICD10CM)//?(?P<code>.+)$",
    r"^DIAGNOSIS//ICD//(?P<system>9|10)//(?P<code>.+)$",
)
MEDS_SPLITS = {"train": "train", "tuning": "validation", "held_out": "test"}


def _ids(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Ids as strings; floating ids holding integers (parquet written from pandas with nulls) lose ".0"."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_floating(array.type):
        array = pc.cast(array, pa.int64())
    return as_string(array)


def _diagnosis_parts(code: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(system, code) strings of the diagnosis rows and [N] bool: row is a diagnosis (or has a null code)."""
    code = as_string(code)
    system = pa.nulls(len(code), pa.string())
    value = pa.nulls(len(code), pa.string())
    for pattern in DIAGNOSIS_PATTERNS:
        parts = pc.extract_regex(code, pattern=pattern)
        system = pc.coalesce(system, pc.struct_field(parts, "system"))
        value = pc.coalesce(value, pc.struct_field(parts, "code"))
    return system, value, ~is_blank(value) | is_blank(code)


def _shards(root: Path) -> list[Path]:
    """The data shards, sorted by path (this order numbers the files in the report)."""
    shards = sorted((root / "data").rglob("*.parquet"))
    if not shards:
        raise FileNotFoundError(f"no MEDS shards: {root / 'data'} has no *.parquet files")
    return shards


def _splits(root: Path, strict: bool, notes: dict[str, int]) -> pa.Table | None:
    """metadata/subject_splits.parquet as (patient, split) with our split names, or None when absent.

    A subject listed under several splits keeps the first one listed; how many such subjects there are
    goes to `notes["subjects_in_several_splits"]` (with `strict`, the first one raises ValueError).
    """
    path = root / "metadata" / "subject_splits.parquet"
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["subject_id", "split"])
    names = as_string(table["split"]).to_pylist()
    unknown = sorted(set(names) - set(MEDS_SPLITS), key=str)
    if unknown:
        raise ValueError(f"{path}: unknown split names {unknown}; expected {sorted(MEDS_SPLITS)}")
    subjects = _ids(table["subject_id"])
    listed: dict[str, list[str]] = {}
    for subject, name in zip(subjects.to_pylist(), names, strict=True):
        splits = listed.setdefault(subject, [])
        if name not in splits:
            splits.append(name)
    several = {subject: splits for subject, splits in listed.items() if len(splits) > 1}
    if several:
        shown = "; ".join(f"{s!r} in {', '.join(n)}" for s, n in list(several.items())[:5])
        if strict:
            subject, splits = next(iter(several.items()))
            raise ValueError(
                f"{path}: subject {subject!r} is listed in more than one split ({', '.join(splits)})"
            )
        logger.warning(
            "%s: %d subject(s) listed in more than one split keep the first split listed: %s%s",
            path,
            len(several),
            shown,
            "; ..." if len(several) > 5 else "",
        )
    notes["subjects_in_several_splits"] = len(several)
    first = np.flatnonzero(~repeated(encode(subjects)[0]))
    splits = pa.array([MEDS_SPLITS[names[i]] for i in first], pa.string())
    return pa.table({"patient": subjects.take(pa.array(first)), "split": splits})


def read_meds(root: str | Path, issues: RowIssues, strict: bool = False) -> DiagnosisRows:
    """Read the diagnosis rows of a MEDS folder (see the module docstring); `strict` raises ValueError for
    a subject listed in more than one split."""
    root = Path(root)
    parts: dict[str, list] = {k: [] for k in ("patient", "visit", "time", "raw", "system", "file", "row")}
    ignored = 0
    by_hadm = None
    for path in _shards(root):
        raw = read_columns(path, ["subject_id", "time", "code"], optional=["hadm_id"])
        if by_hadm is None:
            by_hadm = "hadm_id" in raw.column_names
        elif by_hadm != ("hadm_id" in raw.column_names):
            raise ValueError(f"{path}: hadm_id column present in some MEDS shards but not in others")
        system, value, diagnosis = _diagnosis_parts(raw["code"])
        ignored += int((~diagnosis).sum())
        mask = pa.array(diagnosis)
        kept = raw.filter(mask)
        index = issues.register(
            SourceFile(
                str(path.relative_to(root)), path, kept, "parquet", np.flatnonzero(diagnosis), raw.num_rows
            )
        )
        parts["patient"].append(_ids(kept["subject_id"]))
        parts["time"].append(parse_times(kept["time"]))
        if by_hadm:
            parts["visit"].append(_ids(kept["hadm_id"]))
        parts["raw"].append(value.filter(mask))
        parts["system"].append(system.filter(mask))
        parts["file"].append(np.full(kept.num_rows, index, dtype=np.int32))
        parts["row"].append(np.arange(kept.num_rows, dtype=np.int64))

    time = pa.concat_arrays(parts["time"])
    patient, patients = encode(pa.concat_arrays(parts["patient"]))
    visit, visits = np.zeros(len(time), dtype=np.int64), None
    if by_hadm:
        visit, visits = encode(pa.concat_arrays(parts["visit"]))
    code, codes, status = normalise_codes(pa.concat_arrays(parts["raw"]), pa.concat_arrays(parts["system"]))
    file, row = np.concatenate(parts["file"]), np.concatenate(parts["row"])

    missing = (patient < 0) | (visit < 0)
    bad_date = np.zeros(len(code), dtype=bool) if by_hadm else is_blank(time)
    checks = [("missing_id", missing), ("bad_date", bad_date)]
    checks += [(reason, status == value) for value, reason in CODE_REASONS.items()]
    unusable = flag(issues, checks, file, row)
    keep = ~unusable
    time = time.filter(pa.array(keep))
    notes = {"non_diagnosis_rows_ignored": ignored}
    return DiagnosisRows(
        patient=coded(patient[keep], patients),
        visit=coded(visit[keep], visits) if by_hadm else time,
        time=time,
        code=code[keep],
        codes=codes,
        order=np.zeros(int(keep.sum()), dtype=np.int64),
        file=file[keep],
        row=row[keep],
        splits=_splits(root, strict, notes),
        notes=notes,
    )
