"""MIMIC-III and MIMIC-IV diagnosis cohorts: admissions + diagnoses tables -> `DiagnosisRows`.

- MIMIC-III: `ADMISSIONS.csv[.gz]` and `DIAGNOSES_ICD.csv[.gz]` in `root` (SUBJECT_ID, HADM_ID, ADMITTIME;
  ICD9_CODE, SEQ_NUM). All codes ICD-9-CM, undotted as in MIMIC ("4019", "V4581", "E9102").
- MIMIC-IV: `hosp/admissions.csv[.gz]` and `hosp/diagnoses_icd.csv[.gz]` (or the same names directly in
  `root`): subject_id, hadm_id, admittime; seq_num, icd_code, icd_version (9 or 10 per row).

Column names match case-insensitively. A visit is an admission (HADM_ID), dated by its admission time;
its codes keep SEQ_NUM order. Checks, in order (each unusable row is counted once, under the first):

- admissions: `missing_id` (blank SUBJECT_ID/HADM_ID), `bad_date` (ADMITTIME blank or unparseable),
  `duplicate_row` (HADM_ID of an earlier admission row), `admission_without_diagnoses`;
- diagnoses: `missing_id`, `blank_code`, `bad_code` (not a code of its system, or icd_version not 9/10),
  `unknown_code` (well-formed but not in the code system), `no_admission` (HADM_ID without a usable
  admission row of the same SUBJECT_ID); repeated codes within a visit are counted later as `duplicate_row`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shark_hf.data.events import (
    CODE_REASONS,
    DiagnosisRows,
    coded,
    encode,
    find_file,
    flag,
    is_blank,
    normalise_codes,
    parse_order,
    parse_times,
    read_columns,
    repeated,
)
from shark_hf.data.report import RowIssues, SourceFile


def _candidates(names: tuple[str, ...], folders: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        f"{folder}{name}{ext}" for folder in folders for name in names for ext in (".csv.gz", ".csv")
    )


@dataclass(frozen=True)
class _Layout:
    """File names (tried in order, relative to the root) and column names of one MIMIC version."""

    admissions: tuple[str, ...]
    diagnoses: tuple[str, ...]
    subject: str
    hadm: str
    admittime: str
    seq: str
    code: str
    version: str | None  # the per-row ICD version column; None: every code is ICD-9-CM


LAYOUTS = {
    3: _Layout(
        _candidates(("ADMISSIONS", "admissions"), ("",)),
        _candidates(("DIAGNOSES_ICD", "diagnoses_icd"), ("",)),
        *("SUBJECT_ID", "HADM_ID", "ADMITTIME", "SEQ_NUM", "ICD9_CODE", None),
    ),
    4: _Layout(
        _candidates(("admissions",), ("hosp/", "")),
        _candidates(("diagnoses_icd",), ("hosp/", "")),
        *("subject_id", "hadm_id", "admittime", "seq_num", "icd_code", "icd_version"),
    ),
}


def detect_version(root: str | Path) -> int:
    """3 or 4: the MIMIC version whose admissions file `root` holds under that version's own name
    (MIMIC-III `ADMISSIONS.csv[.gz]`, checked first, or MIMIC-IV `hosp/admissions.csv[.gz]`)."""
    root = Path(root)
    for version, name in ((3, "ADMISSIONS.csv"), (4, "hosp/admissions.csv")):
        if any((root / f"{name}{ext}").is_file() for ext in (".gz", "")):
            return version
    raise FileNotFoundError(f"{root}: no ADMISSIONS.csv[.gz] nor hosp/admissions.csv[.gz]")


def _register(issues: RowIssues, root: Path, path: Path, table: pa.Table) -> int:
    return issues.register(SourceFile(str(path.relative_to(root)), path, table, "csv"))


@dataclass
class _Admissions:
    """K usable admissions: indices into `subjects` / `hadms` (distinct strings), time, 0-based file row."""

    subject: np.ndarray
    hadm: np.ndarray
    time: pa.Array
    row: np.ndarray
    subjects: pa.Array
    hadms: pa.Array


def _admissions(issues: RowIssues, root: Path, path: Path, layout: _Layout) -> tuple[int, _Admissions]:
    """Read and check the admissions file: (file index, usable admissions)."""
    raw = read_columns(path, [layout.subject, layout.hadm, layout.admittime])
    index = _register(issues, root, path, raw)
    subject_index, subjects = encode(raw[layout.subject])
    hadm_index, hadms = encode(raw[layout.hadm])
    times = parse_times(raw[layout.admittime])
    missing = (subject_index < 0) | (hadm_index < 0)
    bad_date = is_blank(times)
    usable = ~missing & ~bad_date
    duplicate = np.zeros(raw.num_rows, dtype=bool)
    duplicate[usable] = repeated(hadm_index[usable])
    rows = np.arange(raw.num_rows)
    checks = [("missing_id", missing), ("bad_date", bad_date), ("duplicate_row", duplicate)]
    keep = ~flag(issues, checks, np.full(raw.num_rows, index), rows)
    admissions = _Admissions(
        subject_index[keep], hadm_index[keep], times.filter(pa.array(keep)), rows[keep], subjects, hadms
    )
    return index, admissions


def _lookup(index: np.ndarray, values: pa.Array, targets: pa.Array, target_index: np.ndarray) -> np.ndarray:
    """For [N] `index` into `values`, the position in `target_index` of the same string (-1 when absent).

    `target_index` [K] holds distinct indices into `targets`.
    """
    of_target = np.full(len(targets) + 1, -1, dtype=np.int64)
    of_target[target_index] = np.arange(len(target_index))
    position = pc.fill_null(pc.index_in(values, value_set=targets), len(targets)).to_numpy()
    return np.where(index < 0, -1, of_target[np.append(position, len(targets))[index]])


def read_mimic(root: str | Path, issues: RowIssues, version: int) -> DiagnosisRows:
    """Read a MIMIC-III (`version=3`) or MIMIC-IV (`version=4`) folder into `DiagnosisRows`."""
    if version not in LAYOUTS:
        raise ValueError(f"MIMIC version must be 3 or 4, got {version!r}")
    root, layout = Path(root), LAYOUTS[version]
    adm_path, dx_path = find_file(root, layout.admissions), find_file(root, layout.diagnoses)
    adm_index, admissions = _admissions(issues, root, adm_path, layout)

    columns = [layout.subject, layout.hadm, layout.seq, layout.code] + (
        [layout.version] if layout.version else []
    )
    raw = read_columns(dx_path, columns)
    dx_index = _register(issues, root, dx_path, raw)
    subject_index, subjects = encode(raw[layout.subject])
    hadm_index, hadms = encode(raw[layout.hadm])
    code, codes, status = normalise_codes(
        raw[layout.code], raw[layout.version] if layout.version else "ICD9CM"
    )

    admission = _lookup(hadm_index, hadms, admissions.hadms, admissions.hadm)  # [N] usable admission or -1
    subject_of = _lookup(subject_index, subjects, admissions.subjects, np.arange(len(admissions.subjects)))
    same_subject = admission >= 0
    same_subject[same_subject] = subject_of[same_subject] == admissions.subject[admission[same_subject]]
    missing = (subject_index < 0) | (hadm_index < 0)
    checks = [("missing_id", missing)] + [(reason, status == value) for value, reason in CODE_REASONS.items()]
    checks.append(("no_admission", ~same_subject))
    n = raw.num_rows
    keep = ~flag(issues, checks, np.full(n, dx_index), np.arange(n))

    used = np.zeros(len(admissions.row), dtype=bool)
    used[admission[keep]] = True
    issues.add("admission_without_diagnoses", adm_index, admissions.row[~used])

    admission = admission[keep]
    return DiagnosisRows(
        patient=coded(admissions.subject[admission], admissions.subjects),
        visit=coded(admissions.hadm[admission], admissions.hadms),
        time=admissions.time.take(pa.array(admission)),
        code=code[keep],
        codes=codes,
        order=parse_order(raw[layout.seq], n)[keep],
        file=np.full(len(admission), dx_index, dtype=np.int32),
        row=np.flatnonzero(keep),
    )
