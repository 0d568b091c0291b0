"""Table 1 statistics of MIMIC-format files, such as those `write_synthetic_cohort` writes.

`cohort_statistics(root)` reads the files with the cohort builders' own MIMIC reader
(`shark_hf.data.mimic.read_mimic`), so it counts what `build_cohort` sees: patients, visits, codes per
visit, unique codes and CCS labels, the most frequent codes, and how predictable the last visit's CCS
labels are from the patient's earlier visits (against another patient's). Rows that reader cannot use
are left out and counted (`unusable_rows`). `format_statistics` prints them beside the targets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from shark_hf.codes import describe, to_label
from shark_hf.data.events import distinct, encode, unique_inverse
from shark_hf.data.mimic import LAYOUTS, detect_version, read_mimic
from shark_hf.data.report import RowIssues
from shark_hf.data.synthetic.targets import CohortShape


def cohort_statistics(
    root: str | os.PathLike, source: str | None = None, min_visits: int = 2, top: int = 10
) -> dict:
    """Table 1 statistics measured from MIMIC-format files (e.g. those `write_synthetic_cohort` writes).

    Args:
        root: the folder given to the cohort builders.
        source: "mimic3" or "mimic4"; detected from the files when None.
        min_visits: the cohort keeps patients with at least this many visits (the paper: 2).
        top: how many of the most frequent codes to list.

    Returns:
        A dict: file totals (`file_patients`, `file_visits`, `file_rows`: distinct subjects and rows of the
        admissions file, rows of the diagnoses file), `unusable_rows` (rows the builders leave out) and, for
        the cohort, `patients`, `visits`, `mean_visits`, `max_visits`, `unique_codes`, `unique_ccs`,
        `codes_per_visit`, `max_codes_per_visit`, `icd10_share` (of diagnosis rows), `singleton_codes`
        (codes seen once), `top_codes` [(code, count, description)] (most frequent first, ties in order of
        first appearance), `history_label_share` (share of the last visit's CCS labels already seen in the
        same patient's earlier visits) and `chance_label_share` (the same share against the earlier visits
        of another patient of the cohort: a random cyclic pairing, seed 0).
    """
    root = Path(root)
    if source is None:
        source = f"mimic{detect_version(root)}"
    if source not in ("mimic3", "mimic4"):
        raise ValueError(f"unknown source {source!r}: expected one of ['mimic3', 'mimic4']")
    version = int(source[-1])
    issues = RowIssues()
    rows = read_mimic(root, issues, version)
    admissions, diagnoses = issues.files  # read_mimic registers the admissions file, then the diagnoses file
    _, subjects = encode(admissions.table[LAYOUTS[version].subject])

    patient, _ = encode(rows.patient)  # [N] index into the file's subjects
    visit_key, _ = encode(rows.visit)  # [N] index into the file's admission ids, in file order
    visits, visit = unique_inverse(visit_key)  # [N] visit of each row, visits in admissions-file order
    some_row = np.empty(len(visits), dtype=np.int64)
    some_row[visit] = np.arange(len(visit))
    visit_patient = patient[some_row]  # [V]
    visit_time = rows.time.to_numpy(zero_copy_only=False)[some_row].astype(np.int64)  # [V]
    visits_per = np.bincount(visit_patient, minlength=len(subjects))  # [P]
    order = np.lexsort((visit_time, visit_patient))  # by patient, then time; ties keep file order
    rank = np.empty(len(order), dtype=np.int64)  # [V] 0-based index of the visit among its patient's
    rank[order] = np.arange(len(order)) - (np.cumsum(visits_per) - visits_per)[visit_patient[order]]

    code, canonical = rows.code, rows.codes
    cohort_visit = visits_per[visit_patient] >= min_visits  # [V]
    in_cohort = cohort_visit[visit]  # [N]
    counts = np.bincount(code[in_cohort], minlength=len(canonical))
    per_visit = np.bincount(visit[in_cohort], minlength=len(cohort_visit))[cohort_visit]
    present, first_row = np.unique(code, return_index=True)
    first_seen = np.full(len(canonical), len(code))
    first_seen[present] = first_row
    label = np.full(len(canonical), -1, dtype=np.int64)
    label_ids: dict[str, int] = {}
    icd10 = np.array([c.startswith("ICD10CM:") for c in canonical], dtype=bool)
    for i in np.flatnonzero(counts):
        try:
            label[i] = label_ids.setdefault(to_label(canonical[i]), len(label_ids))
        except (KeyError, ValueError):
            pass
    stats = {
        "source": source,
        "file_patients": len(subjects),
        "file_visits": admissions.rows_read,
        "file_rows": diagnoses.rows_read,
        "unusable_rows": sum(issues.counts().values()),
        "patients": int((visits_per >= min_visits).sum()),
        "visits": int(cohort_visit.sum()),
        "mean_visits": float(visits_per[visits_per >= min_visits].mean()) if cohort_visit.any() else 0.0,
        "max_visits": int(visits_per.max()) if len(visits_per) else 0,
        "unique_codes": int((counts > 0).sum()),
        "unique_ccs": len(label_ids),
        "codes_per_visit": float(per_visit.mean()) if len(per_visit) else 0.0,
        "max_codes_per_visit": int(per_visit.max()) if len(per_visit) else 0,
        "icd10_share": float(icd10[code[in_cohort]].mean()) if in_cohort.any() else 0.0,
        "singleton_codes": int((counts == 1).sum()),
        "top_codes": [
            (canonical[i], int(counts[i]), _title(canonical[i]))
            for i in np.lexsort((first_seen, -counts))[:top]
        ],
    }
    stats.update(
        _label_persistence(patient[in_cohort], rank[visit[in_cohort]], label[code[in_cohort]], visits_per)
    )
    return stats


def _contains(sorted_values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """[M] bool: keys present in the sorted array `sorted_values`."""
    if len(sorted_values) == 0:
        return np.zeros(len(keys), dtype=bool)
    position = np.minimum(np.searchsorted(sorted_values, keys), len(sorted_values) - 1)
    return sorted_values[position] == keys


def _title(code: str) -> str:
    try:
        return describe(code)
    except (KeyError, ValueError):
        return ""


def _label_persistence(
    patient: np.ndarray, rank: np.ndarray, label: np.ndarray, visits_per: np.ndarray
) -> dict:
    """Share of the last visit's labels present in the patient's earlier visits, and in another patient's."""
    ok = label >= 0
    patient, rank, label = patient[ok], rank[ok], label[ok]
    n_labels = int(label.max()) + 1 if len(label) else 1
    last = rank == visits_per[patient] - 1
    history = distinct(patient[~last] * n_labels + label[~last])
    target = distinct(patient[last] * n_labels + label[last])
    if len(target) == 0:
        return {"history_label_share": 0.0, "chance_label_share": 0.0}
    cohort = np.flatnonzero(np.bincount(patient, minlength=len(visits_per)))
    cohort = cohort[np.random.default_rng(0).permutation(len(cohort))]
    other = np.arange(len(visits_per))
    other[cohort] = np.roll(cohort, 1)  # each patient paired with another one (when there are two or more)
    paired = other[target // n_labels] * n_labels + target % n_labels
    return {
        "history_label_share": float(_contains(history, target).mean()),
        "chance_label_share": float(_contains(history, paired).mean()),
    }


def format_statistics(stats: dict, targets: CohortShape | None = None) -> str:
    """The statistics as a small text table, beside the targets when given."""
    expected = {}
    if targets is not None:
        expected = {
            "patients": f"{targets.num_patients:,}",
            "visits": f"{targets.num_visits:,}",
            "mean_visits": f"{targets.num_visits / targets.num_patients:.2f}",
            "max_visits": f"{targets.max_visits:,}",
            "unique_codes": f"{targets.unique_codes:,}",
            "codes_per_visit": f"{targets.codes_per_visit:.2f}",
        }
    rows = [
        ("patients", "patients", "{:,}"),
        ("visits", "visits", "{:,}"),
        ("mean visits / patient", "mean_visits", "{:.2f}"),
        ("max visits / patient", "max_visits", "{:,}"),
        ("unique diagnosis codes", "unique_codes", "{:,}"),
        ("unique CCS labels", "unique_ccs", "{:,}"),
        ("codes / visit", "codes_per_visit", "{:.2f}"),
        ("max codes / visit", "max_codes_per_visit", "{:,}"),
        ("ICD-10-CM share of codes", "icd10_share", "{:.3f}"),
        ("codes seen once", "singleton_codes", "{:,}"),
        ("last-visit labels in history", "history_label_share", "{:.3f}"),
        ("  ... in another's history", "chance_label_share", "{:.3f}"),
    ]
    lines = [
        f"files: {stats['file_patients']:,} patients, {stats['file_visits']:,} admissions, "
        f"{stats['file_rows']:,} diagnosis rows"
        + (f" ({stats['unusable_rows']:,} rows unusable)" if stats["unusable_rows"] else ""),
        f"{'cohort (>= 2 visits)':<30}{'realised':>10}{'target':>10}",
    ]
    for title, key, fmt in rows:
        lines.append(f"{title:<30}{fmt.format(stats[key]):>10}{expected.get(key, ''):>10}".rstrip())
    lines.append("most frequent codes (share of visits):")
    for code, count, title in stats["top_codes"]:
        lines.append(f"  {code:<16}{count:>9,} {count / max(stats['visits'], 1):6.1%}  {title[:70]}")
    return "\n".join(lines)
