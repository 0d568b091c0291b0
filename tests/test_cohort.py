"""Cohort builders on small hand-written MIMIC-III, MIMIC-IV, MEDS and generic-table fixtures."""

from __future__ import annotations

import gzip
import json
import logging
from datetime import datetime
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shark_hf.data.cohort import SPLITS, build_cohort, cohort_task
from shark_hf.data.synthetic import write_synthetic_cohort


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.lstrip("\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def _rows(cohort) -> dict[str, dict]:
    """{sample_id: row} over all splits, each row with its split name."""
    return {row["sample_id"]: {**row, "split": name} for name in SPLITS for row in cohort[name].to_list()}


# Admissions are listed out of time order; codes out of SEQ_NUM order; patient 9 sorts before 10.
MIMIC3_ADMISSIONS = """
ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME
1,10,102,2150-03-01 09:00:00,2150-03-04 09:00:00
2,10,100,2150-01-01 08:00:00,2150-01-03 08:00:00
3,10,101,2150-02-01 08:00:00,2150-02-03 08:00:00
4,20,200,2160-05-05 00:00:00,2160-05-06 00:00:00
5,30,300,2170-01-01 00:00:00,2170-01-01 10:00:00
6,30,301,2170-01-01 12:00:00,2170-01-02 00:00:00
7,9,900,2180-01-01 00:00:00,2180-01-02 00:00:00
8,9,901,2181-01-01 00:00:00,2181-01-02 00:00:00
"""
MIMIC3_DIAGNOSES = """
ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE
1,10,100,2,"25000"
2,10,100,1,"4019"
3,10,101,1,"4280"
4,10,101,2,"4019"
5,10,102,1,"5849"
6,10,102,2,"486"
7,20,200,1,"4019"
8,30,300,1,"0389"
9,30,301,1,"5990"
10,30,301,2,"E8497"
11,9,900,1,"V5861"
12,9,901,1,"2724"
13,9,901,2,"42731"
"""


@pytest.fixture
def mimic3(tmp_path: Path) -> Path:
    _write(tmp_path / "ADMISSIONS.csv", MIMIC3_ADMISSIONS)
    _write(tmp_path / "DIAGNOSES_ICD.csv", MIMIC3_DIAGNOSES)
    return tmp_path


def test_mimic3_visits_order_and_labels(mimic3: Path) -> None:
    cohort, report = build_cohort("mimic3", root=mimic3, return_report=True)
    rows = _rows(cohort)
    assert set(rows) == {"9#1", "10#2", "30#1"}  # patient 20 has one visit
    assert rows["10#2"]["patient_id"] == "10"
    assert rows["10#2"]["visits"] == [["ICD9CM:4019", "ICD9CM:25000"], ["ICD9CM:4280", "ICD9CM:4019"]]
    assert rows["10#2"]["visit_times"] == [datetime(2150, 1, 1, 8), datetime(2150, 2, 1, 8)]
    assert rows["10#2"]["labels"] == ["157", "122"]
    assert rows["30#1"]["visits"] == [["ICD9CM:0389"]]
    assert rows["30#1"]["labels"] == ["159", "2621"]
    assert rows["9#1"]["visits"] == [["ICD9CM:V5861"]]
    assert rows["9#1"]["labels"] == ["53", "106"]
    assert report.issues == {}
    assert report.notes["patients_read"] == 4
    assert report.notes["patients_with_fewer_than_2_visits"] == 1
    assert report.files == {"ADMISSIONS.csv": 8, "DIAGNOSES_ICD.csv": 13}
    # 3 patients: floor(2.1) = 2 train, floor(0.3) = 0 validation, 1 test; ids in numeric order per split.
    assert [len(cohort[s]) for s in SPLITS] == [2, 0, 1]
    for name in SPLITS:
        ids = [int(p) for p in cohort[name]["patient_id"]]
        assert ids == sorted(ids)
    card = report.card["all"]
    assert (card["patients"], card["samples"], card["visits"], card["distinct_codes"]) == (3, 3, 7, 11)
    assert card["max_visits_per_patient"] == 3
    assert card["mean_codes_per_visit"] == pytest.approx(12 / 7)
    assert (card["distinct_labels"], card["mean_labels_per_sample"]) == (6, 2.0)


def test_mimic3_all_prefixes(mimic3: Path) -> None:
    rows = _rows(build_cohort("mimic3", root=mimic3, sample="all_prefixes"))
    assert set(rows) == {"9#1", "10#1", "10#2", "30#1"}
    assert rows["10#1"]["visits"] == [["ICD9CM:4019", "ICD9CM:25000"]]
    assert rows["10#1"]["visit_times"] == [datetime(2150, 1, 1, 8)]
    assert rows["10#1"]["labels"] == ["108", "98"]
    assert rows["10#2"]["labels"] == ["157", "122"]
    assert rows["10#1"]["split"] == rows["10#2"]["split"]


def test_the_task_options_travel_with_the_saved_cohort(mimic3: Path, tmp_path: Path) -> None:
    raw = write_synthetic_cohort(tmp_path / "raw", "mimic3", seed=0, num_patients=30)
    cohort = build_cohort("mimic3", root=raw, label_space="code", sample="all_prefixes", seed=4)
    cohort.save_to_disk(tmp_path / "c")
    loaded = datasets.load_from_disk(str(tmp_path / "c"))
    expected = {
        "source": "mimic3",
        "label_space": "code",
        "min_visits": 2,
        "sample": "all_prefixes",
        "seed": 4,
    }
    assert {name: cohort_task(loaded[name]) for name in SPLITS} == dict.fromkeys(SPLITS, expected)
    assert cohort_task(build_cohort("mimic3", root=mimic3, min_visits=3)["train"])["min_visits"] == 3
    assert cohort_task(datasets.Dataset.from_dict({"visits": [[["ICD9CM:4019"]]]})) is None


def test_min_visits(mimic3: Path) -> None:
    cohort, report = build_cohort("mimic3", root=mimic3, min_visits=3, return_report=True)
    assert set(_rows(cohort)) == {"10#2"}
    assert report.notes["patients_with_fewer_than_3_visits"] == 3
    with pytest.raises(ValueError, match="min_visits must be an integer >= 2"):
        build_cohort("mimic3", root=mimic3, min_visits=1)


def test_label_space_code(mimic3: Path) -> None:
    rows = _rows(build_cohort("mimic3", root=mimic3, label_space="code"))
    assert rows["10#2"]["labels"] == ["ICD9CM:5849", "ICD9CM:486"]


MIMIC4_ADMISSIONS = """
subject_id,hadm_id,admittime,dischtime
1,11,2180-07-01 10:00:00,2180-07-02 10:00:00
1,10,2180-01-01 10:00:00,2180-01-02 10:00:00
1,12,2190-01-01 10:00:00,2190-01-02 10:00:00
2,20,2185-01-01 00:00:00,2185-01-02 00:00:00
2,21,2186-01-01 00:00:00,2186-01-02 00:00:00
3,30,2187-01-01 00:00:00,2187-01-02 00:00:00
3,31,2187-02-01 00:00:00,2187-02-02 00:00:00
"""
MIMIC4_DIAGNOSES = """
subject_id,hadm_id,seq_num,icd_code,icd_version
1,10,1,4280,9
1,10,2,4019,9
1,11,1,5849,9
1,12,2,I10,10
1,12,1,I5022,10
1,12,3,N179,10
2,20,1,E119,10
2,21,1,J189,10
2,21,2,E785,10
3,30,1,486,9
3,31,1,0389,9
"""


@pytest.fixture
def mimic4(tmp_path: Path) -> Path:
    _write(tmp_path / "hosp" / "admissions.csv.gz", MIMIC4_ADMISSIONS)
    _write(tmp_path / "hosp" / "diagnoses_icd.csv.gz", MIMIC4_DIAGNOSES)
    return tmp_path


def test_mimic4_mixed_systems(mimic4: Path) -> None:
    cohort, report = build_cohort("mimic4", root=mimic4, return_report=True)
    rows = _rows(cohort)
    assert rows["1#2"]["visits"] == [["ICD9CM:4280", "ICD9CM:4019"], ["ICD9CM:5849"]]
    assert rows["1#2"]["labels"] == ["108", "98", "157"]
    assert rows["2#1"]["visits"] == [["ICD10CM:E119"]]
    assert rows["2#1"]["labels"] == ["122", "53"]
    assert rows["3#1"]["labels"] == ["2"]
    assert report.files == {"hosp/admissions.csv.gz": 7, "hosp/diagnoses_icd.csv.gz": 11}
    assert report.issues == {}


def test_mimic4_ccsr(mimic4: Path) -> None:
    cohort, report = build_cohort("mimic4", root=mimic4, label_space="ccsr", return_report=True)
    rows = _rows(cohort)
    assert rows["1#2"]["labels"] == ["CIR019", "CIR007", "GEN002"]
    assert rows["2#1"]["labels"] == ["RSP002", "END010"]
    assert rows["3#1"]["labels"] == []  # CCSR covers ICD-10-CM only
    assert report.notes["samples_with_empty_labels"] == 1
    assert report.notes["codes_without_ccsr_label"] == 5


def _meds(root: Path, hadm: bool) -> Path:
    t = datetime
    train = {
        "subject_id": [1, 1, 1, 1, 1, 1, 1, 2],
        "time": [None, t(2020, 1, 1, 10), t(2020, 1, 1, 10), t(2020, 1, 1, 10), t(2020, 1, 1, 11)]
        + [t(2021, 6, 1), t(2021, 6, 1), t(2020, 2, 2)],
        "code": ["MEDS_BIRTH", "ADMISSION//EMERGENCY", "ICD9CM//4019", "ICD9CM//250.00", "LAB//50912"]
        + ["DIAGNOSIS//ICD//10//I10", "DIAGNOSIS//ICD//10//N179", "ICD10CM//E119"],
        "numeric_value": [None, None, None, None, 1.2, None, None, None],
    }
    held_out = {
        "subject_id": [3, 3, 3],
        "time": [t(2019, 1, 1), t(2019, 3, 1), t(2019, 5, 1)],
        "code": ["ICD9CM//486", "ICD9CM//0389", "ICD10CM//A419"],
        "numeric_value": [None, None, None],
    }
    if hadm:
        train["hadm_id"] = [None, 5, 5, 5, 5, 6, 6, 7]
        held_out["hadm_id"] = [8, 8, 9]
    schema = {
        "subject_id": pa.int64(),
        "time": pa.timestamp("us"),
        "code": pa.string(),
        "hadm_id": pa.int64(),
    }
    for name, data in (("train", train), ("held_out", held_out)):
        (root / "data" / name).mkdir(parents=True)
        table = pa.table({k: pa.array(v, schema.get(k)) for k, v in data.items()})
        pq.write_table(table, root / "data" / name / "0.parquet")
    (root / "metadata").mkdir()
    splits = pa.table({"subject_id": [1, 2, 3], "split": ["train", "tuning", "held_out"]})
    pq.write_table(splits, root / "metadata" / "subject_splits.parquet")
    return root


def test_meds_visits_by_time_and_splits(tmp_path: Path) -> None:
    cohort, report = build_cohort("meds", root=_meds(tmp_path, hadm=False), return_report=True)
    assert cohort["train"].to_list() == [
        {
            "patient_id": "1",
            "sample_id": "1#1",
            "visits": [["ICD9CM:4019", "ICD9CM:25000"]],
            "visit_times": [datetime(2020, 1, 1, 10)],
            "labels": ["98", "157"],
        }
    ]
    assert len(cohort["validation"]) == 0  # patient 2 has one visit
    assert cohort["test"]["visits"] == [[["ICD9CM:486"], ["ICD9CM:0389"]]]
    assert cohort["test"]["labels"] == [["2"]]
    assert report.notes["non_diagnosis_rows_ignored"] == 3
    assert report.notes["splits"] == "metadata/subject_splits.parquet"
    assert report.files == {"data/held_out/0.parquet": 3, "data/train/0.parquet": 8}


def test_meds_visits_by_hadm(tmp_path: Path) -> None:
    rows = _rows(build_cohort("meds", root=_meds(tmp_path, hadm=True)))
    # hadm 5 spans 10:00 and 11:00 (one visit, dated 10:00); held-out hadm 8 holds two times.
    assert rows["1#1"]["visits"] == [["ICD9CM:4019", "ICD9CM:25000"]]
    assert rows["1#1"]["visit_times"] == [datetime(2020, 1, 1, 10)]
    assert rows["3#1"]["visits"] == [["ICD9CM:486", "ICD9CM:0389"]]
    assert rows["3#1"]["labels"] == ["2"]


# Dirty MIMIC-III: every reason once or more. Line numbers count the header as line 1.
DIRTY_ADMISSIONS = """
ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME
1,10,100,2150-01-01 08:00:00
2,10,101,2150-13-45 00:00:00
3,10,102,2150-03-01 00:00:00
4,,103,2150-04-01 00:00:00
5,10,102,2150-03-01 00:00:00
6,20,200,2160-01-01 00:00:00
7,20,201,2160-02-01 00:00:00
8,20,202,
9,30,300,2170-01-01 00:00:00
"""
DIRTY_DIAGNOSES = """
ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE
1,10,100,1,4019
2,10,100,2,
3,10,100,3,40199
4,10,100,4,XYZ
5,10,101,1,4280
6,10,102,1,5849
7,10,102,1,5849
8,10,102,2,584.9
9,20,200,1,486
10,20,201,1,0389
11,,201,2,4019
12,20,999,1,4019
13,30,300,1,40199
14,31,200,1,4019
"""


@pytest.fixture
def dirty(tmp_path: Path) -> Path:
    _write(tmp_path / "ADMISSIONS.csv", DIRTY_ADMISSIONS)
    _write(tmp_path / "DIAGNOSES_ICD.csv", DIRTY_DIAGNOSES)
    return tmp_path


def test_dirty_summary(dirty: Path) -> None:
    cohort, report = build_cohort("mimic3", root=dirty, return_report=True)
    assert report.issues == {
        "missing_id": 2,
        "bad_date": 2,
        "blank_code": 1,
        "bad_code": 1,
        "unknown_code": 2,
        "no_admission": 3,
        "duplicate_row": 3,
        "admission_without_diagnoses": 1,
    }
    assert report.num_unusable_rows == 15

    def lines(reason: str) -> list[tuple[str, int]]:
        return [(e.file, e.line) for e in report.examples[reason]]

    assert lines("missing_id") == [("ADMISSIONS.csv", 5), ("DIAGNOSES_ICD.csv", 12)]
    assert lines("bad_date") == [("ADMISSIONS.csv", 3), ("ADMISSIONS.csv", 9)]
    assert lines("blank_code") == [("DIAGNOSES_ICD.csv", 3)]
    assert lines("bad_code") == [("DIAGNOSES_ICD.csv", 5)]
    assert lines("unknown_code") == [("DIAGNOSES_ICD.csv", 4), ("DIAGNOSES_ICD.csv", 14)]
    assert lines("no_admission") == [
        ("DIAGNOSES_ICD.csv", 6),
        ("DIAGNOSES_ICD.csv", 13),
        ("DIAGNOSES_ICD.csv", 15),
    ]
    assert lines("duplicate_row") == [
        ("ADMISSIONS.csv", 6),
        ("DIAGNOSES_ICD.csv", 8),
        ("DIAGNOSES_ICD.csv", 9),
    ]
    assert lines("admission_without_diagnoses") == [("ADMISSIONS.csv", 10)]
    assert report.examples["bad_date"][0].values == {
        "SUBJECT_ID": "10",
        "HADM_ID": "101",
        "ADMITTIME": "2150-13-45 00:00:00",
    }
    text = str(report)
    assert "duplicate_row: 3 (repeats an earlier row" in text
    assert "DIAGNOSES_ICD.csv line 9: SUBJECT_ID='10', HADM_ID='102', SEQ_NUM='2', ICD9_CODE='584.9'" in text
    assert json.loads(json.dumps(report.to_dict()))["issues"]["no_admission"] == 3

    rows = _rows(cohort)
    assert rows["10#1"]["visits"] == [["ICD9CM:4019"]] and rows["10#1"]["labels"] == ["157"]
    assert rows["20#1"]["visits"] == [["ICD9CM:486"]] and rows["20#1"]["labels"] == ["2"]
    assert set(rows) == {"10#1", "20#1"}


def test_strict_names_first_bad_row(dirty: Path, tmp_path: Path) -> None:
    message = r"^ADMISSIONS\.csv line 3: bad_date \(date/time is blank or unparseable\): SUBJECT_ID='10', "
    with pytest.raises(ValueError, match=message):
        build_cohort("mimic3", root=dirty, strict=True)
    clean = tmp_path / "clean_admissions"
    _write(clean / "ADMISSIONS.csv", MIMIC3_ADMISSIONS)
    _write(clean / "DIAGNOSES_ICD.csv", MIMIC3_DIAGNOSES + '14,10,100,3,"40199"\n')
    with pytest.raises(ValueError, match=r"^DIAGNOSES_ICD\.csv line 15: unknown_code .*ICD9_CODE='40199'"):
        build_cohort("mimic3", root=clean, strict=True)
    build_cohort("mimic3", root=clean)  # not strict: reported, no error


def _many_patients(path: Path, n: int = 100) -> Path:
    lines = ["pid,vid,dx"] + [f"p{i:03d},{v},4019" for i in range(n) for v in (1, 2)]
    return _write(path, "\n".join(lines) + "\n")


def test_splits_disjoint_deterministic(tmp_path: Path) -> None:
    path = _many_patients(tmp_path / "dx.csv")
    kwargs = dict(patient_col="pid", visit_col="vid", code_col="dx", system="ICD9CM")
    first, again = build_cohort("table", root=path, **kwargs), build_cohort("table", root=path, **kwargs)
    other = build_cohort("table", root=path, seed=1, **kwargs)
    patients = {s: set(first[s]["patient_id"]) for s in SPLITS}
    assert [len(patients[s]) for s in SPLITS] == [70, 10, 20]
    assert set.union(*patients.values()) == {f"p{i:03d}" for i in range(100)}
    assert not (patients["train"] & patients["validation"] or patients["train"] & patients["test"])
    assert not patients["validation"] & patients["test"]
    assert all(first[s]["patient_id"] == again[s]["patient_id"] for s in SPLITS)
    assert set(other["train"]["patient_id"]) != patients["train"]


def test_table_source_by_time_with_system_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "events.csv",
        """
person,date,dx,vocab
a,2020-05-01,E11.9,ICD-10
a,2020-01-01,401.9,9
a,2020-01-01,250.00,ICD9CM
a,2020-05-01,I10,10
b,2021-01-01,486,9
b,2021-01-01,486,ICD9
b,not a date,0389,9
""",
    )
    cohort, report = build_cohort(
        "table",
        root=path,
        patient_col="person",
        time_col="date",
        code_col="dx",
        system_col="vocab",
        return_report=True,
    )
    rows = _rows(cohort)
    assert set(rows) == {"a#1"}
    assert rows["a#1"]["visits"] == [["ICD9CM:4019", "ICD9CM:25000"]]
    assert rows["a#1"]["visit_times"] == [datetime(2020, 1, 1)]
    assert rows["a#1"]["labels"] == ["49", "98"]
    assert report.issues == {"bad_date": 1, "duplicate_row": 1}
    assert [(e.file, e.line) for e in report.examples["bad_date"]] == [("events.csv", 8)]


def test_table_source_parquet_order_column(tmp_path: Path) -> None:
    table = pa.table(
        {
            "patient": ["x", "x", "x", "x"],
            "encounter": [2, 10, 10, 2],
            "rank": [1, 2, 1, 2],
            "icd": ["I10", "N17.9", "J18.9", "E119"],
        }
    )
    pq.write_table(table, tmp_path / "dx.parquet")
    kwargs = dict(patient_col="patient", visit_col="encounter", code_col="icd", order_col="rank", system=10)
    rows = _rows(build_cohort("table", root=tmp_path / "dx.parquet", **kwargs))
    assert rows["x#1"]["visits"] == [["ICD10CM:I10", "ICD10CM:E119"]]  # visit 2 before 10 (numeric ids)
    assert rows["x#1"]["visit_times"] == [None]
    assert rows["x#1"]["labels"] == ["122", "157"]


def test_bad_arguments(mimic3: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source 'mimic5'"):
        build_cohort("mimic5", root=mimic3)
    with pytest.raises(ValueError, match="unknown label_space 'icd'"):
        build_cohort("mimic3", root=mimic3, label_space="icd")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="none of these files exists: .*ADMISSIONS.csv.gz"):
        build_cohort("mimic3", root=tmp_path / "empty")
    _write(tmp_path / "m" / "ADMISSIONS.csv", "SUBJECT_ID,HADM_ID\n1,2\n")
    _write(tmp_path / "m" / "DIAGNOSES_ICD.csv", MIMIC3_DIAGNOSES)
    with pytest.raises(ValueError, match=r"ADMISSIONS\.csv: missing column 'ADMITTIME'"):
        build_cohort("mimic3", root=tmp_path / "m")


def test_mimic3_lowercase_demo_layout(tmp_path: Path) -> None:
    # The MIMIC-III demo ships lower-case file and column names.
    _write(tmp_path / "admissions.csv", MIMIC3_ADMISSIONS.lower())
    _write(tmp_path / "diagnoses_icd.csv.gz", MIMIC3_DIAGNOSES.lower())
    rows = _rows(build_cohort("mimic3", root=tmp_path))
    assert rows["10#2"]["visits"] == [["ICD9CM:4019", "ICD9CM:25000"], ["ICD9CM:4280", "ICD9CM:4019"]]
    assert rows["30#1"]["labels"] == ["159", "2621"]


def test_malformed_csv_names_file(tmp_path: Path) -> None:
    _write(tmp_path / "ADMISSIONS.csv", MIMIC3_ADMISSIONS + "9,40\n")
    _write(tmp_path / "DIAGNOSES_ICD.csv", MIMIC3_DIAGNOSES)
    with pytest.raises(
        ValueError, match=r"ADMISSIONS\.csv: CSV parse error: Expected 5 columns, got 2: 9,40"
    ):
        build_cohort("mimic3", root=tmp_path)


def test_meds_splits_file_checks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _meds(tmp_path, hadm=False)
    pq.write_table(
        pa.table({"subject_id": [3], "split": ["held_out"]}), root / "metadata" / "subject_splits.parquet"
    )
    with caplog.at_level(logging.WARNING, logger="shark_hf.data.cohort"):
        cohort, report = build_cohort("meds", root=root, return_report=True)
    assert [len(cohort[s]) for s in SPLITS] == [0, 0, 1]
    assert report.notes["patients_without_split"] == 1  # patient 1 qualifies but is not listed
    assert (
        "metadata/subject_splits.parquet lists no split for 1 patient(s) with enough visits; they are left "
        "out of the cohort: '1'"
    ) in caplog.messages
    pq.write_table(
        pa.table({"subject_id": [3], "split": ["dev"]}), root / "metadata" / "subject_splits.parquet"
    )
    with pytest.raises(ValueError, match=r"subject_splits\.parquet: unknown split names \['dev'\]"):
        build_cohort("meds", root=root)


def test_meds_subject_in_two_splits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _meds(tmp_path, hadm=False)
    path = root / "metadata" / "subject_splits.parquet"
    listed = {"subject_id": [1, 3, 2, 3, 3], "split": ["train", "held_out", "tuning", "train", "held_out"]}
    pq.write_table(pa.table(listed), path)
    with caplog.at_level(logging.WARNING, logger="shark_hf.data.meds"):
        cohort, report = build_cohort("meds", root=root, return_report=True)
    assert [r.getMessage() for r in caplog.records if r.name == "shark_hf.data.meds"] == [
        f"{path}: 1 subject(s) listed in more than one split keep the first split listed: "
        "'3' in held_out, train"
    ]
    assert report.notes["subjects_in_several_splits"] == 1
    assert cohort["train"]["patient_id"] == ["1"]
    assert cohort["test"]["patient_id"] == ["3"]  # the first split listed for subject 3
    with pytest.raises(ValueError) as error:
        build_cohort("meds", root=root, strict=True)
    assert str(error.value) == f"{path}: subject '3' is listed in more than one split (held_out, train)"


def test_csv_and_csv_gz_both_present_warns(mimic3: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The .csv.gz copy lacks patient 9's diagnoses: the warning says it is the one read.
    _write(mimic3 / "DIAGNOSES_ICD.csv.gz", "\n".join(MIMIC3_DIAGNOSES.splitlines()[:-3]) + "\n")
    with caplog.at_level(logging.WARNING, logger="shark_hf.data.events"):
        rows = _rows(build_cohort("mimic3", root=mimic3))
    assert [r.getMessage() for r in caplog.records if r.name == "shark_hf.data.events"] == [
        f"{mimic3}: both DIAGNOSES_ICD.csv.gz and DIAGNOSES_ICD.csv exist; "
        "reading DIAGNOSES_ICD.csv.gz and ignoring DIAGNOSES_ICD.csv"
    ]
    assert set(rows) == {"10#2", "30#1"}


def test_duplicated_csv_column_names_fail(tmp_path: Path) -> None:
    _write(tmp_path / "ADMISSIONS.csv", MIMIC3_ADMISSIONS)
    _write(
        tmp_path / "DIAGNOSES_ICD.csv",
        MIMIC3_DIAGNOSES.replace("ROW_ID,", "ICD9_CODE,").replace(",ICD9_CODE\n", ",icd9_code\n"),
    )
    with pytest.raises(ValueError) as error:
        build_cohort("mimic3", root=tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'DIAGNOSES_ICD.csv'}: column 'ICD9_CODE' occurs 2 times among the columns "
        "('ICD9_CODE', 'icd9_code'); rename or remove the extra one"
    )
