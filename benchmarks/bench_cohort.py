"""Benchmark: `build_cohort("mimic4")` vs a plain pandas groupby build of the same cohort.

Writes a MIMIC-IV-scale cohort (~80k patients, ~400k admissions, ~5M diagnosis rows) with
`shark_hf.data.synthetic.write_synthetic_cohort(dir, scale="mimic4")` (or, with `--generator local`, an
equivalent MIMIC-IV-format table of random real ICD-9/ICD-10 codes written here), then builds the cohort
twice, each in a fresh subprocess so that peak RSS belongs to one build only:

- ours: `shark_hf.data.cohort.build_cohort("mimic4", root=...)`;
- baseline: pandas `read_csv`, `merge`, `sort_values`, `groupby` patient/admission, `normalize_code` /
  `to_label` applied per row, rows built in Python, split with the same seeded rule.

Imports happen before the clock starts (the peak RSS they cause alone is printed beside the peak). Both
results are saved with `save_to_disk` (not timed) and compared table by table. Prints wall and CPU time,
peak RSS and the ratios. Goal: ours <= 60 s and <= 4 GiB peak on 2 cores, and faster than the baseline.

    python benchmarks/bench_cohort.py [--out DIR [--reuse]] [--generator synthetic|local] [--patients N]
"""

from __future__ import annotations

import argparse
import json
import os
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

    ~5 admissions per patient (geometric), ~12.5 distinct codes per admission; a patient's admissions in
    the first 50 years of the 60-year window use ICD-9-CM, later ones ICD-10-CM. Returns `out`.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
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
            "admittime": pc.strftime(
                pa.array(admit[order].astype("datetime64[s]")), format="%Y-%m-%d %H:%M:%S"
            ),
        }
    )

    n_codes = np.clip(rng.poisson(13.5, size=len(subject)), 1, 39)
    dx_adm = np.repeat(np.arange(len(subject)), n_codes)
    version = np.where(day[dx_adm] < 50 * 365, 9, 10)
    code = np.empty(len(dx_adm), dtype=object)
    for v in (9, 10):
        rows = np.flatnonzero(version == v)
        p = weights[v] / weights[v].sum()
        code[rows] = systems[v][perm[v][rng.choice(len(p), size=len(rows), p=p)]]
    fresh = (
        ~pd.DataFrame({"adm": dx_adm, "code": code}).duplicated().to_numpy()
    )  # distinct codes per admission
    dx_adm, code, version = dx_adm[fresh], code[fresh], version[fresh]
    n_codes = np.bincount(dx_adm, minlength=len(subject))
    seq = np.arange(len(dx_adm)) - np.repeat(np.cumsum(n_codes) - n_codes, n_codes) + 1
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


def _find(root: Path, name: str) -> Path:
    for candidate in (f"hosp/{name}.csv.gz", f"hosp/{name}.csv", f"{name}.csv.gz", f"{name}.csv"):
        if (root / candidate).is_file():
            return root / candidate
    raise FileNotFoundError(f"{root}: no {name}.csv[.gz]")


def pandas_baseline(root: Path, seed: int = 0, min_visits: int = 2):
    """The same cohort as `build_cohort("mimic4", root, seed=seed)` on clean data, the plain pandas way."""
    import datasets
    import pandas as pd
    import pyarrow as pa

    from shark_hf.codes import is_known, normalize_code, to_label
    from shark_hf.data.cohort import COHORT_FEATURES, SPLITS

    adm = pd.read_csv(_find(root, "admissions"), usecols=["subject_id", "hadm_id", "admittime"], dtype=str)
    dx = pd.read_csv(
        _find(root, "diagnoses_icd"),
        usecols=["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"],
        dtype=str,
    )
    adm["admittime"] = pd.to_datetime(adm["admittime"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    adm = adm.dropna().drop_duplicates("hadm_id")
    dx["line"] = np.arange(len(dx))
    dx = dx.dropna(subset=["subject_id", "hadm_id", "icd_code"])

    def normalise(code: str, version: str) -> str | None:
        try:
            canonical = normalize_code(code, "ICD9CM" if version == "9" else "ICD10CM")
        except ValueError:
            return None
        return canonical if is_known(canonical) else None

    def label(code: str) -> str | None:
        try:
            return to_label(code, "ccs")
        except (KeyError, ValueError):
            return None

    dx["code"] = [normalise(c, v) for c, v in zip(dx["icd_code"], dx["icd_version"], strict=True)]
    df = dx.dropna(subset=["code"]).merge(adm, on=["subject_id", "hadm_id"])
    df["patient"] = df["subject_id"].astype("int64")
    df["visit"] = df["hadm_id"].astype("int64")
    df["seq"] = pd.to_numeric(df["seq_num"], errors="coerce")
    df = df.sort_values(["patient", "admittime", "visit", "seq", "line"], na_position="last")
    df = df.drop_duplicates(["hadm_id", "code"])
    df["label"] = [label(c) for c in df["code"]]

    keys = ["patient", "admittime", "visit"]
    codes = df.groupby(keys, sort=True)["code"].agg(list).rename("codes")
    labelled = df.dropna(subset=["label"]).drop_duplicates(["visit", "label"])
    labels = labelled.groupby(keys, sort=True)["label"].agg(list).rename("labels")
    per_visit = codes.to_frame().join(labels).reset_index()
    per_visit["labels"] = [x if isinstance(x, list) else [] for x in per_visit["labels"]]
    per_patient = per_visit.groupby("patient", sort=True).agg(
        times=("admittime", list), codes=("codes", list), labels=("labels", list)
    )
    per_patient = per_patient[per_patient["codes"].map(len) >= min_visits]

    n = len(per_patient)
    split = np.empty(n, dtype=np.int64)
    shuffled = np.random.default_rng(seed).permutation(n)
    n_train, n_val = 7 * n // 10, n // 10
    split[shuffled[:n_train]], split[shuffled[n_train : n_train + n_val]] = 0, 1
    split[shuffled[n_train + n_val :]] = 2
    rows: dict[str, list] = {name: [] for name in SPLITS}
    columns = (per_patient.index, per_patient["codes"], per_patient["times"], per_patient["labels"])
    for s, patient, visits, times, labels in zip(split, *columns, strict=True):
        k = len(visits) - 1
        rows[SPLITS[s]].append(
            {
                "patient_id": str(patient),
                "sample_id": f"{patient}#{k}",
                "visits": visits[:k],
                "visit_times": [t.to_pydatetime() for t in times[:k]],
                "labels": labels[k],
            }
        )
    schema = COHORT_FEATURES.arrow_schema
    return datasets.DatasetDict(
        {
            name: datasets.Dataset(
                datasets.table.InMemoryTable(pa.Table.from_pylist(rows[name], schema=schema)),
                info=datasets.DatasetInfo(features=COHORT_FEATURES),
            )
            for name in SPLITS
        }
    )


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes.

    Linux: VmHWM of /proc/self/status. Not `ru_maxrss`, which also counts the parent's memory copied at fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _child(phase: str, root: Path, out: Path) -> None:
    """Build the cohort one way, save it (not timed), print JSON with seconds, CPU seconds and peak RSS."""
    import datasets  # noqa: F401  (imports are not timed)
    import pandas  # noqa: F401

    from shark_hf.data.cohort import build_cohort

    imports_peak = _peak_rss()
    start, cpu = time.perf_counter(), time.process_time()
    if phase == "ours":
        cohort, report = build_cohort("mimic4", root=root, return_report=True)
        extra = {"files": report.files, "unusable_rows": report.issues, "cohort": report.card["all"]}
    else:
        cohort, extra = pandas_baseline(root), {}
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _peak_rss()
    cohort.save_to_disk(str(out))
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_bytes": peak,
        "imports_rss_bytes": imports_peak,
    }
    print(json.dumps({**result, **extra}))


def _run(phase: str, root: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--result", str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _equal(a: Path, b: Path) -> bool:
    import datasets

    ours, theirs = datasets.load_from_disk(str(a)), datasets.load_from_disk(str(b))
    return list(ours) == list(theirs) and all(ours[s].data.table.equals(theirs[s].data.table) for s in ours)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--generator", choices=("synthetic", "local"), default="synthetic")
    parser.add_argument("--patients", type=int, default=None, help="patients (default: the mimic4 scale)")
    parser.add_argument("--reuse", action="store_true", help="reuse the cohort files already in --out")
    parser.add_argument("--phase", choices=("ours", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _child(args.phase, args.root, args.result)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        root = work / "mimic4"
        start = time.perf_counter()
        if args.reuse and (root / "hosp").is_dir():
            print(f"reusing the MIMIC-IV cohort in {root}")
        else:
            if args.generator == "synthetic":
                from shark_hf.data.synthetic import write_synthetic_cohort

                write_synthetic_cohort(root, scale="mimic4", num_patients=args.patients)
            else:
                write_local_cohort(root, patients=args.patients or 80_000)
            print(f"wrote {args.generator} MIMIC-IV cohort to {root} in {time.perf_counter() - start:.1f} s")
        results = {phase: _run(phase, root, work / f"cohort_{phase}") for phase in ("ours", "pandas")}
        equal = _equal(work / "cohort_ours", work / "cohort_pandas")
    ours = results["ours"]
    print(f"input: {ours['files']}; unusable rows: {ours['unusable_rows']}")
    print(f"cohort: {ours['cohort']}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'build':<22}{'wall s':>9}{'cpu s':>9}{'peak RSS GiB':>14}{'(imports alone)':>17}")
    for phase, name in (("ours", "build_cohort (ours)"), ("pandas", "pandas groupby")):
        r = results[phase]
        gib = r["peak_rss_bytes"] / 2**30, r["imports_rss_bytes"] / 2**30
        print(f"{name:<22}{r['seconds']:>9.1f}{r['cpu_seconds']:>9.1f}{gib[0]:>14.2f}{gib[1]:>17.2f}")
    ratio = results["pandas"]["seconds"] / results["ours"]["seconds"]
    cpu_ratio = results["pandas"]["cpu_seconds"] / results["ours"]["cpu_seconds"]
    print(f"speed-up over pandas: {ratio:.1f}x wall, {cpu_ratio:.1f}x CPU; identical datasets: {equal}")
    print(json.dumps({"results": results, "speedup": ratio, "cpu_speedup": cpu_ratio, "identical": equal}))
    if not equal:
        raise SystemExit("the two builds differ")


if __name__ == "__main__":
    main()
