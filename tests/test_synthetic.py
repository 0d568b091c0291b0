"""Built-in synthetic cohort: Table 1 statistics, determinism, MIMIC formats, disease structure, the CLI."""

import gzip
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shark_hf.cli import main
from shark_hf.codes import to_label
from shark_hf.data.cohort import build_cohort
from shark_hf.data.synthetic import SCALES, cohort_statistics, format_statistics, write_synthetic_cohort

MIMIC3_FILES = ("ADMISSIONS.csv", "DIAGNOSES_ICD.csv", "synthetic_cohort.json")


def _digests(root: Path, names=MIMIC3_FILES) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


@pytest.fixture(scope="module")
def mimic3(tmp_path_factory) -> Path:
    return write_synthetic_cohort(tmp_path_factory.mktemp("mimic3"), scale="mimic3", seed=0)


@pytest.fixture(scope="module")
def mimic3_stats(mimic3) -> dict:
    return cohort_statistics(mimic3, "mimic3")


def test_mimic3_scale_matches_table1(mimic3_stats):
    s, target = mimic3_stats, SCALES["mimic3"]
    # Exact by construction: the paper's 5,449 patients, 14,141 visits (mean 2.60), max 29 visits.
    assert (s["patients"], s["visits"], s["max_visits"]) == (5_449, 14_141, 29)
    assert round(s["mean_visits"], 2) == 2.60
    # Plus 10% single-visit patients, which the >= 2 visits rule drops.
    assert (s["file_patients"], s["file_visits"]) == (5_449 + 545, 14_141 + 545)
    # Calibrated in expectation: 3,874 unique codes within 5%, 13 codes per visit within 0.2, <= 39 codes.
    assert abs(s["unique_codes"] - target.unique_codes) <= 0.05 * target.unique_codes
    assert abs(s["codes_per_visit"] - 13.0) <= 0.2
    assert s["max_codes_per_visit"] == 39
    assert s["icd10_share"] == 0.0
    # A long tail: many codes are seen once, and the head is made of common chronic conditions.
    assert s["singleton_codes"] >= 0.15 * s["unique_codes"]
    top = [code for code, _, _ in s["top_codes"]]
    assert {"ICD9CM:4019", "ICD9CM:42731", "ICD9CM:41401", "ICD9CM:4280"} <= set(top)
    assert s["top_codes"][0][1] < 0.5 * s["visits"]


def test_next_visit_labels_are_predictable_from_history_but_not_trivially(mimic3_stats):
    # Chronic persistence: about 40% of the last visit's CCS labels were seen earlier in the same patient,
    # twice the share seen in another patient's history; far from all of them (acute events, the tail).
    assert 0.3 < mimic3_stats["history_label_share"] < 0.6
    assert mimic3_stats["history_label_share"] > 1.7 * mimic3_stats["chance_label_share"]


@pytest.fixture(scope="module")
def mimic3_visits(mimic3) -> pd.DataFrame:
    """One row per (patient, visit) of the >= 2-visit cohort, oldest first: code and CCS label sets."""
    root = mimic3
    adm = pd.read_csv(root / "ADMISSIONS.csv", dtype=str)
    dx = pd.read_csv(root / "DIAGNOSES_ICD.csv", dtype=str)
    labels = {c: to_label(f"ICD9CM:{c}") for c in dx["ICD9_CODE"].unique()}
    dx["label"] = dx["ICD9_CODE"].map(labels)
    per_visit = dx.groupby("HADM_ID").agg(codes=("ICD9_CODE", set), labels=("label", set))
    visits = adm.join(per_visit, on="HADM_ID").sort_values(["SUBJECT_ID", "ADMITTIME"])
    return visits[visits.groupby("SUBJECT_ID")["HADM_ID"].transform("size") >= 2]


def test_history_beats_the_most_frequent_labels(mimic3_visits):
    # A model that reads history has something to learn: ranking labels by their count in the patient's
    # history (then by population frequency) beats predicting the most frequent labels, in P@10.
    visits = mimic3_visits
    last = visits.groupby("SUBJECT_ID").tail(1)
    history = {
        patient: Counter(label for labels in group for label in labels)
        for patient, group in visits.drop(last.index).groupby("SUBJECT_ID")["labels"]
    }
    population = Counter(x for labels in last["labels"] for x in labels)
    popular = [label for label, _ in population.most_common()]

    def precision_at_10(ranked: list[str], target: set[str]) -> float:
        return len(set(ranked[:10]) & target) / min(10, len(target))

    frequent = np.mean([precision_at_10(popular, t) for t in last["labels"]])
    from_history = np.mean(
        [
            precision_at_10(sorted(history[p], key=lambda x: (-history[p][x], -population[x])) + popular, t)
            for p, t in zip(last["SUBJECT_ID"], last["labels"], strict=True)
        ]
    )
    assert from_history > frequent + 0.05


def test_combination_codes_follow_icd9_rules(mimic3_visits):
    # Hypertension with CKD is coded 403.x instead of 401.x: no visit carries both.
    visits = mimic3_visits
    has_403 = visits["codes"].map(lambda codes: any(c.startswith("403") for c in codes))
    has_401 = visits["codes"].map(lambda codes: any(c.startswith("401") for c in codes))
    assert has_403.sum() > 50
    assert not (has_403 & has_401).any()


def test_complications_follow_their_parent(mimic3_visits):
    # Diabetic nephropathy (250.4x) starts later far more often in patients whose first visit is coded with
    # diabetes without complication (250.0x) than in patients with no diabetes code at their first visit.
    visits = mimic3_visits
    first = visits.groupby("SUBJECT_ID").head(1)
    later = visits.drop(first.index).groupby("SUBJECT_ID")["codes"]
    nephropathy_later = later.apply(lambda s: any(c.startswith("2504") for v in s for c in v))
    first = first.set_index("SUBJECT_ID")["codes"].reindex(nephropathy_later.index)
    diabetic = first.map(lambda codes: any(c.startswith("2500") for c in codes))
    no_diabetes = first.map(lambda codes: not any(c.startswith("250") for c in codes))
    assert diabetic.sum() > 300 and no_diabetes.sum() > 3000
    assert nephropathy_later[diabetic].mean() > 4 * nephropathy_later[no_diabetes].mean()


def test_same_seed_gives_byte_identical_files(mimic3, tmp_path):
    again = write_synthetic_cohort(tmp_path / "again", scale="mimic3", seed=0)
    other = write_synthetic_cohort(tmp_path / "other", scale="mimic3", seed=1)
    assert _digests(again) == _digests(mimic3)
    differs = {name for name, digest in _digests(other).items() if digest != _digests(mimic3)[name]}
    assert differs == set(MIMIC3_FILES)


def test_mimic3_format(mimic3):
    adm_header, adm_first = (mimic3 / "ADMISSIONS.csv").read_text().splitlines()[:2]
    assert adm_header == '"ROW_ID","SUBJECT_ID","HADM_ID","ADMITTIME","DISCHTIME","ADMISSION_TYPE"'
    assert adm_first.startswith("1,") and adm_first.endswith(('"EMERGENCY"', '"URGENT"', '"ELECTIVE"'))
    dx_header = (mimic3 / "DIAGNOSES_ICD.csv").read_text().splitlines()[0]
    assert dx_header == '"ROW_ID","SUBJECT_ID","HADM_ID","SEQ_NUM","ICD9_CODE"'
    adm = pd.read_csv(mimic3 / "ADMISSIONS.csv", parse_dates=["ADMITTIME", "DISCHTIME"])
    assert (adm["ADMITTIME"].dt.year.between(2100, 2199)).all()
    assert (adm["DISCHTIME"] > adm["ADMITTIME"]).all()
    assert adm["HADM_ID"].is_unique and adm["HADM_ID"].between(100_000, 199_999).all()
    dx = pd.read_csv(mimic3 / "DIAGNOSES_ICD.csv", dtype={"ICD9_CODE": str})
    assert not dx["ICD9_CODE"].str.contains(".", regex=False).any()
    assert not dx.duplicated(["HADM_ID", "ICD9_CODE"]).any()
    # SEQ_NUM runs 1..n within every admission, and every admission has at least one code.
    seq = dx.groupby("HADM_ID")["SEQ_NUM"].agg(["min", "max", "size"])
    assert (seq["min"] == 1).all() and (seq["max"] == seq["size"]).all()
    assert set(seq.index) == set(adm["HADM_ID"])


def test_mimic4_format_mixes_icd9_and_icd10(tmp_path):
    root = write_synthetic_cohort(tmp_path, scale="mimic4", seed=0, num_patients=400, compress=True)
    assert sorted(p.name for p in (root / "hosp").iterdir()) == ["admissions.csv.gz", "diagnoses_icd.csv.gz"]
    with gzip.open(root / "hosp" / "diagnoses_icd.csv.gz", "rt") as handle:
        assert handle.readline() == "subject_id,hadm_id,seq_num,icd_code,icd_version\n"
    stats = cohort_statistics(root)
    assert stats["source"] == "mimic4"
    assert stats["patients"] == 400 and stats["file_patients"] == 440
    assert stats["visits"] == round(400 * 408_990 / 79_393)
    assert 0.2 < stats["icd10_share"] < 0.7  # admissions after 2015-10-01 are coded in ICD-10-CM
    assert abs(stats["codes_per_visit"] - 12.0) <= 0.3


def test_compressed_files_hold_the_same_bytes(tmp_path):
    plain = write_synthetic_cohort(tmp_path, scale="mimic3", seed=5, num_patients=60)
    digests = _digests(plain)
    write_synthetic_cohort(tmp_path, scale="mimic3", seed=5, num_patients=60, compress=True)
    for name in MIMIC3_FILES[:2]:
        assert not (tmp_path / name).exists()  # the stale uncompressed copy is gone
        raw = (tmp_path / f"{name}.gz").read_bytes()
        assert raw[4:8] == b"\0\0\0\0"  # gzip header without a timestamp
        assert hashlib.sha256(gzip.decompress(raw)).hexdigest() == digests[name]


def test_builder_reads_the_cohort(mimic3):
    dataset, report = build_cohort("mimic3", root=mimic3, return_report=True, strict=True)
    assert sum(len(split) for split in dataset.values()) == 5_449
    assert report.num_unusable_rows == 0
    assert report.notes["patients_with_fewer_than_2_visits"] == 545


def test_builder_reads_the_mimic4_cohort(tmp_path):
    root = write_synthetic_cohort(tmp_path, scale="mimic4", seed=2, num_patients=200)
    dataset, report = build_cohort("mimic4", root=root, return_report=True, strict=True)
    assert sum(len(split) for split in dataset.values()) == 200
    assert report.num_unusable_rows == 0
    codes = {code for split in dataset.values() for visits in split["visits"] for v in visits for code in v}
    assert any(c.startswith("ICD9CM:") for c in codes) and any(c.startswith("ICD10CM:") for c in codes)


def test_statistics_of_a_hand_written_cohort(tmp_path):
    (tmp_path / "ADMISSIONS.csv").write_text(
        '"ROW_ID","SUBJECT_ID","HADM_ID","ADMITTIME"\n'
        "1,1,101,2100-01-05 10:00:00\n"
        "2,1,102,2100-03-01 10:00:00\n"
        "3,2,201,2150-06-01 10:00:00\n"
        "4,3,301,2120-02-01 10:00:00\n"
        "5,3,302,2120-01-01 10:00:00\n"  # patient 3's first visit, listed second
        "6,3,303,2120-05-01 10:00:00\n"
    )
    (tmp_path / "DIAGNOSES_ICD.csv").write_text(
        '"ROW_ID","SUBJECT_ID","HADM_ID","SEQ_NUM","ICD9_CODE"\n'
        '1,1,101,1,"4019"\n2,1,101,2,"25000"\n3,1,102,1,"4019"\n4,1,102,2,"5849"\n5,2,201,1,"486"\n'
        '6,3,302,1,"42731"\n7,3,301,1,"4280"\n8,3,301,2,"42731"\n9,3,303,1,"4280"\n10,3,303,2,"5990"\n'
    )
    stats = cohort_statistics(tmp_path, top=2)
    assert stats["source"] == "mimic3"
    assert (stats["file_patients"], stats["file_visits"], stats["file_rows"]) == (3, 6, 10)
    assert (stats["patients"], stats["visits"], stats["mean_visits"], stats["max_visits"]) == (2, 5, 2.5, 3)
    # Cohort codes 4019 x2, 25000, 5849, 42731 x2, 4280 x2, 5990 (486 belongs to the single-visit patient).
    assert (stats["unique_codes"], stats["singleton_codes"], stats["unique_ccs"]) == (6, 3, 6)
    assert (stats["codes_per_visit"], stats["max_codes_per_visit"]) == (9 / 5, 2)
    assert stats["top_codes"] == [
        ("ICD9CM:4019", 2, "Unspecified essential hypertension"),
        ("ICD9CM:42731", 2, "Atrial fibrillation"),
    ]
    # Last visits: patient 1 {98, 157} after {98, 49}; patient 3 {108, 159} after {106, 108}: 2 of 4 seen.
    # Against the other patient's history: none.
    assert (stats["history_label_share"], stats["chance_label_share"]) == (0.5, 0.0)
    assert stats["icd10_share"] == 0.0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown scale 'mimic5'"):
        write_synthetic_cohort(tmp_path, scale="mimic5")
    with pytest.raises(ValueError, match="num_patients must be >= 1"):
        write_synthetic_cohort(tmp_path, num_patients=0)
    with pytest.raises(FileNotFoundError, match="no ADMISSIONS.csv"):
        cohort_statistics(tmp_path)


def test_statistics_leave_out_and_count_the_rows_the_builders_cannot_use(tmp_path):
    (tmp_path / "ADMISSIONS.csv").write_text(
        '"ROW_ID","SUBJECT_ID","HADM_ID","ADMITTIME"\n'
        "1,1,101,2100-01-05 10:00:00\n"
        "2,1,102,2100-03-01 10:00:00\n"
        "3,1,103,not a date\n"
    )
    (tmp_path / "DIAGNOSES_ICD.csv").write_text(
        '"ROW_ID","SUBJECT_ID","HADM_ID","SEQ_NUM","ICD9_CODE"\n'
        '1,1,101,1,"4019"\n2,1,102,1,"4019"\n3,1,102,2,"XYZ"\n4,1,103,1,"5849"\n5,1,999,1,"5849"\n'
    )
    stats = cohort_statistics(tmp_path, "mimic3")
    # Unusable: admission 103 (bad date), code XYZ, and the diagnoses of 103 and of the unknown 999.
    assert (stats["file_patients"], stats["file_visits"], stats["file_rows"], stats["unusable_rows"]) == (
        1,
        3,
        5,
        4,
    )
    assert (stats["patients"], stats["visits"], stats["unique_codes"], stats["codes_per_visit"]) == (
        1,
        2,
        1,
        1.0,
    )
    assert format_statistics(stats).startswith(
        "files: 1 patients, 3 admissions, 5 diagnosis rows (4 rows unusable)\n"
    )


def test_command_line(tmp_path, capsys):
    out_dir = tmp_path / "raw"
    assert main(["build-dataset", "synthetic", "--out", str(out_dir), "--num-patients", "50", "--stats"]) == 0
    out = capsys.readouterr().out
    assert f"Wrote a built-in mimic3-like cohort in MIMIC-III format -> {out_dir}" in out
    assert re.search(r"\npatients +50\n", out)
    assert format_statistics(cohort_statistics(out_dir)) in out
