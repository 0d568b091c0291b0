"""Benchmark: `build_cohort("mimic4")` vs a plain pandas groupby build of the same cohort.

Writes a MIMIC-IV-scale cohort (~80k patients, ~400k admissions, ~5M diagnosis rows) with
`shark_hf.data.synthetic.write_synthetic_cohort(dir, scale="mimic4")` (or, with `--generator local`, an
equivalent MIMIC-IV-format table of random real ICD-9/ICD-10 codes written here), then builds the cohort
twice, each in a fresh subprocess so that peak RSS belongs to one build only:

- ours: `shark_hf.data.cohort.build_cohort("mimic4", root=...)`;
- baseline: pandas `read_csv`, `merge`, `sort_values`, `groupby` patient/admission, `normalize_code` /
  `to_label` applied per row, rows built in Python, split with the same seeded rule.

Both results are saved with `save_to_disk` (not timed) and compared table by table. Prints time, peak RSS
and the ratio. Goal: ours <= 60 s and <= 4 GiB peak on 2 cores, and faster than the baseline.

    python benchmarks/bench_cohort.py [--out DIR] [--generator synthetic|local] [--patients 80000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ADMISSIONS = "hosp/admissions.csv.gz"
DIAGNOSES = "hosp/diagnoses_icd.csv.gz"


def write_local_cohort(out: Path, patients: int = 80_000, seed: int = 0) -> Path:
    """MIMIC-IV-format admissions + diagnoses of random real codes (Zipf-like frequencies).

    ~5 admissions per patient (geometric), ~12.5 codes per admission; admissions before 2160 use ICD-9-CM,
    later ones ICD-10-CM (as MIMIC-IV switched in 2015). Returns `out`.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from shark_hf.codes import all_codes

    rng = np.random.default_rng(seed)
    systems = {v: np.array([c.split(":")[1] for c in all_codes(f"ICD{v}CM")]) for v in (9, 10)}
    weights = {v: 1.0 / np.arange(1, len(c) + 1) ** 1.1 for v, c in systems.items()}
    perm = {v: rng.permutation(len(c)) for v, c in systems.items()}

    n_adm = rng.geometric(1 / 5.0, size=patients)
    subject = np.repeat(np.arange(10_000_000, 10_000_000 + patients), n_adm)
    hadm = 20_000_000 + rng.permutation(len(subject))
    start = rng.integers(0, 60 * 365, size=patients)
    gaps = rng.integers(1, 400, size=len(subject))
    first = np.cumsum(n_adm) - n_adm  # index of each patient's first admission
    cum = np.cumsum(gaps)
    day = np.repeat(start, n_adm) + cum - np.repeat(cum[first] - gaps[first], n_adm)
    admit = np.datetime64("2110-01-01T00:00:00") + day.astype("timedelta64[D]")
    admit = admit + rng.integers(0, 86_400, size=len(day)).astype("timedelta64[s]")
    order = rng.permutation(len(subject))  # file order differs from time order
    admissions = pa.table(
        {
            "subject_id": subject[order],
            "hadm_id": hadm[order],
            "admittime": pa.array(admit[order].astype("datetime64[s]").astype(str)),
            "dischtime": pa.array((admit[order] + np.timedelta64(3, "D")).astype("datetime64[s]").astype(str)),
        }
    )

    n_codes = np.clip(rng.poisson(12.5, size=len(subject)), 1, 39)
    dx_adm = np.repeat(np.arange(len(subject)), n_codes)
    seq = np.arange(len(dx_adm)) - np.repeat(np.cumsum(n_codes) - n_codes, n_codes) + 1
    version = np.where(admit[dx_adm] < np.datetime64("2160-01-01"), 9, 10)
    code = np.empty(len(dx_adm), dtype=object)
    for v in (9, 10):
        rows = np.flatnonzero(version == v)
        p = weights[v] / weights[v].sum()
        code[rows] = systems[v][perm[v][rng.choice(len(p), size=len(rows), p=p)]]
    diagnoses = pa.table(
        {
            "subject_id": subject[dx_adm],
            "hadm_id": hadm[dx_adm],
            "seq_num": seq,
            "icd_code": pa.array(code.tolist(), pa.string()),
            "icd_version": version,
        }
    )
    (out / "hosp").mkdir(parents=True, exist_ok=True)
    for table, name in ((admissions, ADMISSIONS), (diagnoses, DIAGNOSES)):
        with pa.CompressedOutputStream(str(out / name), "gzip") as stream:
            pacsv.write_csv(table, stream)
    return out
