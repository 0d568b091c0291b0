"""Writing the built-in cohort as MIMIC-III or MIMIC-IV CSVs.

`write_synthetic_cohort(out_dir, scale="mimic3")` writes `ADMISSIONS.csv` + `DIAGNOSES_ICD.csv` (MIMIC-III
columns and quoting, ICD-9-CM codes undotted) or, for `scale="mimic4"`, `hosp/admissions.csv` +
`hosp/diagnoses_icd.csv` (MIMIC-IV columns, `icd_version` 9 or 10 per row), so that the demo and the
benchmarks go through the real cohort builders. Subject and admission ids are drawn from the real
databases' id ranges; rows come in MIMIC's order (admissions by subject and admission id, diagnoses by
admission then SEQ_NUM). Everything is drawn from `numpy.random.Generator`s seeded by `seed` and written in
a fixed row order: the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from shark_hf.data.synthetic.simulator import SimulatedCohort, bit_width, simulate
from shark_hf.data.synthetic.targets import SCALES
from shark_hf.utils import atomic_write, atomic_write_text


def _write_csv(table: pa.Table, path: Path, quoted: bool, compress: bool) -> Path:
    """Write `table` as MIMIC writes it (III: quoted header and strings; IV: nothing quoted), atomically.

    With `compress`, `<path>.gz` is written (gzip without a timestamp) and a stale `<path>` removed, and the
    other way round, so the builders never see two versions."""
    buffer = io.BytesIO()
    if quoted:
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(quoting_style="needed"))
    else:
        buffer.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    target, other = (
        (path.with_name(path.name + ".gz"), path) if compress else (path, path.with_name(path.name + ".gz"))
    )

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            if compress:
                with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6) as gz:
                    gz.write(buffer.getbuffer())
            else:
                handle.write(buffer.getbuffer())

    atomic_write(target, write)
    other.unlink(missing_ok=True)
    return target


_ID_SPACES = {  # (first subject id, span, first admission id, span), as in the real databases
    "mimic3": (1, 99_999, 100_000, 100_000),
    "mimic4": (10_000_000, 10_000_000, 20_000_000, 10_000_000),
}


def _ids(first: int, span: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return first + rng.choice(max(span, 2 * size), size=size, replace=False).astype(np.int64)


def _tables(scale: str, cohort: SimulatedCohort, rng: np.random.Generator) -> dict[str, pa.Table]:
    """{relative path: table} of the admissions and diagnoses files, in MIMIC's row order: admissions by
    (subject, admission id), diagnoses by admission then SEQ_NUM."""
    counts, codes, row, code, position = cohort.counts, cohort.codes, cohort.row, cohort.code, cohort.position
    n_rows, code_bits = int(counts.sum()), bit_width(len(codes.text))
    subject_first, subject_span, hadm_first, hadm_span = _ID_SPACES[scale]
    subject = np.repeat(_ids(subject_first, subject_span, len(counts), rng), counts)
    hadm = _ids(hadm_first, hadm_span, n_rows, rng)
    adm_order = np.lexsort((hadm, subject))
    adm_rank = np.empty(n_rows, dtype=np.int64)
    adm_rank[adm_order] = np.arange(n_rows)
    key = np.sort((adm_rank[row] << (code_bits + 6)) | (position << code_bits) | code)
    row = adm_order[key >> (code_bits + 6)]
    seq, code = ((key >> code_bits) & 63) + 1, key & ((1 << code_bits) - 1)
    kind = np.where(cohort.emergency, 0, np.where(rng.random(n_rows) < 0.3, 1, 2))[adm_order]
    kind = pa.array(["EMERGENCY" if scale == "mimic3" else "EW EMER.", "URGENT", "ELECTIVE"]).take(kind)
    admit, discharge = (
        pa.array(t[adm_order].astype("datetime64[m]").astype("datetime64[s]"))
        for t in (cohort.admit, cohort.discharge)
    )
    code_text = pa.array(codes.text.tolist(), pa.string()).take(pa.array(code))
    if scale == "mimic3":
        admissions = {"ROW_ID": np.arange(1, n_rows + 1), "SUBJECT_ID": subject[adm_order],
                      "HADM_ID": hadm[adm_order], "ADMITTIME": admit, "DISCHTIME": discharge,
                      "ADMISSION_TYPE": kind}  # fmt: skip
        diagnoses = {"ROW_ID": np.arange(1, len(row) + 1), "SUBJECT_ID": subject[row], "HADM_ID": hadm[row],
                     "SEQ_NUM": seq, "ICD9_CODE": code_text}  # fmt: skip
        return {"ADMISSIONS.csv": pa.table(admissions), "DIAGNOSES_ICD.csv": pa.table(diagnoses)}
    admissions = {"subject_id": subject[adm_order], "hadm_id": hadm[adm_order], "admittime": admit,
                  "dischtime": discharge, "admission_type": kind}  # fmt: skip
    diagnoses = {"subject_id": subject[row], "hadm_id": hadm[row], "seq_num": seq, "icd_code": code_text,
                 "icd_version": codes.version[code].astype(np.int64)}  # fmt: skip
    return {"hosp/admissions.csv": pa.table(admissions), "hosp/diagnoses_icd.csv": pa.table(diagnoses)}


def write_synthetic_cohort(
    out_dir: str | os.PathLike,
    scale: str = "mimic3",
    seed: int = 0,
    num_patients: int | None = None,
    compress: bool = False,
) -> Path:
    """Write a synthetic MIMIC-format cohort (`shark_hf.data.synthetic.simulator` tells the generative story).

    Args:
        out_dir: folder to write into (created); pass it as `root` to `build_cohort(scale, root=...)`.
        scale: "mimic3" (MIMIC-III files, ICD-9-CM) or "mimic4" (MIMIC-IV files under `hosp/`, ICD-9-CM and
            ICD-10-CM); sets the targets `SCALES[scale]`.
        seed: seed of every random draw; the same seed gives byte-identical files.
        num_patients: patients with >= 2 visits (default: the scale's, e.g. 5,449); the number of visits
            scales with it and the tail keeps the code-popularity law calibrated for the full scale.
        compress: write `.csv.gz` (gzip without a timestamp) instead of `.csv`.

    Returns:
        `out_dir` as a Path. It also holds `synthetic_cohort.json`: the generator's settings and targets.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: expected one of {sorted(SCALES)}")
    shape = SCALES[scale]
    num_patients = shape.num_patients if num_patients is None else int(num_patients)
    *streams, rng_ids = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))
    cohort = simulate(shape, num_patients, streams)
    tables = _tables(scale, cohort, rng_ids)
    out_dir = Path(out_dir)
    for name, table in tables.items():
        _write_csv(table, out_dir / name, quoted=scale == "mimic3", compress=compress)
    settings = {
        "generator": "shark_hf.data.synthetic",
        "note": "Synthetic data generated from public code-system knowledge; no patient data.",
        "scale": scale,
        "seed": seed,
        "num_patients": num_patients,
        "single_visit_patients": cohort.single_visit_patients,
        "targets": asdict(shape),
        **{key: round(value, 6) for key, value in cohort.fit.items()},
    }
    settings_text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    atomic_write_text(out_dir / "synthetic_cohort.json", settings_text)
    return out_dir
