"""A generic diagnosis table (one CSV or parquet file) -> `DiagnosisRows`.

Columns are named by the caller: `patient_col` and `code_col` always, and `visit_col` (a visit id, unique
within a patient) and/or `time_col` (the visit time; without `visit_col` rows sharing a time form a
visit). The code system comes from `system_col` (per-row values such as 9/10, "ICD9CM", "ICD-10"), from
`system` (one system for every row), or, when neither is given, from the code itself ("ICD9CM:4019",
"ICD10CM:E119"). `order_col` orders codes within a visit (else file order).

Checks, in order: `missing_id` (blank patient, or blank visit id when `visit_col` is given), `bad_date`
(blank or unparseable time when `time_col` is given), `blank_code`, `bad_code`, `unknown_code`; repeated
codes within a visit are counted later as `duplicate_row`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from shark_hf.data.events import (
    CODE_REASONS,
    TIME_TYPE,
    DiagnosisRows,
    coded,
    encode,
    flag,
    is_blank,
    normalise_codes,
    parse_order,
    parse_times,
    read_columns,
)
from shark_hf.data.report import RowIssues, SourceFile


def read_table(
    root: str | Path,
    issues: RowIssues,
    patient_col: str,
    code_col: str,
    visit_col: str | None = None,
    time_col: str | None = None,
    system_col: str | None = None,
    system: str | int | None = None,
    order_col: str | None = None,
) -> DiagnosisRows:
    """Read the diagnosis table at `root` (a .csv, .csv.gz or .parquet file; see the module docstring)."""
    path = Path(root)
    if not path.is_file():
        raise FileNotFoundError(f"table source expects a CSV or parquet file, got {path}")
    if visit_col is None and time_col is None:
        raise ValueError("table source needs visit_col or time_col (or both) to form visits")
    if system_col is not None and system is not None:
        raise ValueError("give system_col (per-row code system) or system (one for all rows), not both")
    columns = (patient_col, code_col, visit_col, time_col, system_col, order_col)
    raw = read_columns(path, list(dict.fromkeys(c for c in columns if c is not None)))
    kind = "parquet" if path.name.endswith(".parquet") else "csv"
    index = issues.register(SourceFile(path.name, path, raw, kind))

    n = raw.num_rows
    patient, patients = encode(raw[patient_col])
    time = parse_times(raw[time_col]) if time_col else pa.nulls(n, TIME_TYPE)
    visit, visits = encode(raw[visit_col]) if visit_col else (np.zeros(n, dtype=np.int64), None)
    code, codes, status = normalise_codes(raw[code_col], raw[system_col] if system_col else system)

    bad_date = is_blank(time) if time_col else np.zeros(n, dtype=bool)
    checks = [("missing_id", (patient < 0) | (visit < 0)), ("bad_date", bad_date)]
    checks += [(reason, status == value) for value, reason in CODE_REASONS.items()]
    keep = ~flag(issues, checks, np.full(n, index, dtype=np.int32), np.arange(n))
    time = time.filter(pa.array(keep))
    return DiagnosisRows(
        patient=coded(patient[keep], patients),
        visit=coded(visit[keep], visits) if visit_col else time,
        time=time,
        code=code[keep],
        codes=codes,
        order=parse_order(raw[order_col] if order_col else None, n)[keep],
        file=np.full(int(keep.sum()), index, dtype=np.int32),
        row=np.flatnonzero(keep),
    )
