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

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shark_hf.data.events import (
    CODE_REASONS,
    DiagnosisRows,
    as_string,
    duplicated,
    flag,
    find_file,
    is_blank,
    normalise_codes,
    parse_order,
    parse_times,
    read_columns,
)
from shark_hf.data.report import RowIssues, SourceFile


def _candidates(names: list[str], folders: list[str]) -> list[str]:
    return [f"{folder}{name}{ext}" for folder in folders for name in names for ext in (".csv.gz", ".csv")]


def _register(issues: RowIssues, root: Path, path: Path, table: pa.Table) -> int:
    return issues.register(SourceFile(str(path.relative_to(root)), table, "csv"))


def _admissions(
    issues: RowIssues, root: Path, path: Path, subject: str, hadm: str, admittime: str
) -> tuple[int, pa.Table]:
    """Usable admissions: (file index, table of subject/hadm/time/row with one row per kept admission)."""
    raw = read_columns(path, [subject, hadm, admittime])
    index = _register(issues, root, path, raw)
    subjects, hadms = as_string(raw[subject]), as_string(raw[hadm])
    times = parse_times(raw[admittime])
    missing = is_blank(subjects) | is_blank(hadms)
    bad_date = ~missing & is_blank(times)
    usable = ~missing & ~bad_date
    duplicate = duplicated(hadms, usable)
    issues.add("missing_id", index, missing)
    issues.add("bad_date", index, bad_date)
    issues.add("duplicate_row", index, duplicate)
    keep = usable & ~duplicate
    mask = pa.array(keep)
    table = pa.table(
        {
            "subject": subjects.filter(mask),
            "hadm": hadms.filter(mask),
            "time": times.filter(mask),
            "row": pa.array(np.flatnonzero(keep)),
        }
    )
    return index, table


def read_mimic(
    root: str | Path,
    issues: RowIssues,
    version: int,
) -> DiagnosisRows:
    """Read a MIMIC-III (`version=3`) or MIMIC-IV (`version=4`) folder into `DiagnosisRows`."""
    root = Path(root)
    if version == 3:
        adm_names, dx_names, folders = ["ADMISSIONS", "admissions"], ["DIAGNOSES_ICD", "diagnoses_icd"], [""]
        subject, hadm, admittime, seq, code_col, version_col = (
            "SUBJECT_ID",
            "HADM_ID",
            "ADMITTIME",
            "SEQ_NUM",
            "ICD9_CODE",
            None,
        )
    elif version == 4:
        adm_names, dx_names, folders = ["admissions"], ["diagnoses_icd"], ["hosp/", ""]
        subject, hadm, admittime, seq, code_col, version_col = (
            "subject_id",
            "hadm_id",
            "admittime",
            "seq_num",
            "icd_code",
            "icd_version",
        )
    else:
        raise ValueError(f"MIMIC version must be 3 or 4, got {version!r}")
    adm_path = find_file(root, _candidates(adm_names, folders))
    dx_path = find_file(root, _candidates(dx_names, folders))
    adm_index, admissions = _admissions(issues, root, adm_path, subject, hadm, admittime)

    columns = [subject, hadm, seq, code_col] + ([version_col] if version_col else [])
    raw = read_columns(dx_path, columns)
    dx_index = _register(issues, root, dx_path, raw)
    subjects, hadms = as_string(raw[subject]), as_string(raw[hadm])
    systems = raw[version_col] if version_col else "ICD9CM"
    code, codes, status = normalise_codes(raw[code_col], systems)

    position = pc.index_in(hadms, value_set=admissions["hadm"])
    adm_row = pc.fill_null(position, 0).to_numpy().astype(np.int64)
    same_subject = np.zeros(raw.num_rows, dtype=bool)
    if admissions.num_rows:
        same = pc.equal(subjects, admissions["subject"].take(adm_row))
        same_subject = np.asarray(pc.fill_null(same, False))
    missing = is_blank(subjects) | is_blank(hadms)
    checks = [("missing_id", missing)] + [(reason, status == value) for value, reason in CODE_REASONS.items()]
    checks.append(("no_admission", is_blank(position) | ~same_subject))
    rows = np.arange(raw.num_rows)
    keep = ~flag(issues, checks, np.full(raw.num_rows, dx_index), rows)

    adm_used = np.zeros(admissions.num_rows, dtype=bool)
    adm_used[adm_row[keep]] = True
    issues.add("admission_without_diagnoses", adm_index, admissions["row"].to_numpy()[~adm_used])

    take = pa.array(adm_row[keep])
    return DiagnosisRows(
        patient=admissions["subject"].take(take).combine_chunks(),
        visit=admissions["hadm"].take(take).combine_chunks(),
        time=admissions["time"].take(take).combine_chunks(),
        code=code[keep],
        codes=codes,
        order=parse_order(raw[seq], raw.num_rows)[keep],
        file=np.full(int(keep.sum()), dx_index, dtype=np.int32),
        row=np.flatnonzero(keep),
    )
