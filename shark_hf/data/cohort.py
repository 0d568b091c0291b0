"""`build_cohort`: diagnosis tables -> a `datasets.DatasetDict` for next-visit diagnosis prediction.

The task (SHARK paper, as in RETAIN/TRANS): patients with at least `min_visits` visits; the input is every
visit but the last, the target is the label-space codes of the last visit. With `sample="all_prefixes"`
every visit after the first is a target once, with all the visits before it as input.

Rows of each split (`train`, `validation`, `test`):

- `patient_id` (string), `sample_id` (string, "<patient_id>#<number of input visits>", distinct),
- `visits` (list of lists of canonical code keys, oldest visit first; codes in SEQ_NUM order, each code once
  per visit), `visit_times` (timestamp[us] per input visit, null where the source has no time),
- `labels` (the target visit's label-space codes, each once, in order of first appearance).

Visits of a patient are ordered by time, then by visit id (numerically when all ids are integers); rows
within a split by patient id (same rule), then by number of input visits. Splits are by patient: the
patients that qualify, sorted, are permuted with `numpy.random.default_rng(seed)`; the first
`floor(7 n / 10)` go to train, the next `floor(n / 10)` to validation and the remaining
`n - floor(7n/10) - floor(n/10)` to test. A MEDS dataset with `metadata/subject_splits.parquet` keeps its
splits (train / tuning / held_out -> train / validation / test); patients it does not list are left out
(counted in the notes as `patients_without_split` and logged as a warning).

Each split's `DatasetInfo.description` records how the samples were formed (`TASK_KEYS`: source, label
space, min_visits, sample, seed) as JSON, so that it travels with `save_to_disk` and is read back by
`cohort_task` (the model card renders the task from it).

Rows that cannot be used are never dropped silently: each is counted under one reason of
`shark_hf.data.report.REASONS` (with up to 5 examples: file, line, raw values) in the `CohortReport`,
which also carries the cohort card (patients, visits, codes, label cardinality per split). A code without
a label in the label space stays in the input visits and is listed in the report notes; a target visit
without any labelled code gives an empty `labels` list (counted).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.table import InMemoryTable

from shark_hf.codes import to_label
from shark_hf.data.events import TIME_TYPE, DiagnosisRows, repeated, unique_inverse
from shark_hf.data.meds import read_meds
from shark_hf.data.mimic import read_mimic
from shark_hf.data.report import CohortReport, RowIssues
from shark_hf.data.table import read_table

logger = logging.getLogger(__name__)

SOURCES = ("mimic3", "mimic4", "meds", "table")
LABEL_SPACES = ("ccs", "ccsr", "code")
SAMPLES = ("last", "all_prefixes")
SPLITS = ("train", "validation", "test")
TASK_KEYS = ("source", "label_space", "min_visits", "sample", "seed")
_TASK_FIELD = "shark_hf_cohort"
COHORT_FEATURES = datasets.Features(
    {
        "patient_id": datasets.Value("string"),
        "sample_id": datasets.Value("string"),
        "visits": datasets.List(datasets.List(datasets.Value("string"))),
        "visit_times": datasets.List(datasets.Value("timestamp[us]")),
        "labels": datasets.List(datasets.Value("string")),
    }
)
_NO_TIME = np.iinfo(np.int64).max


@dataclass
class _Visits:
    """Deduplicated visits in final order. V visits, M codes, P patients.

    `codes` [M] int32 code ids, `code_offsets` [V+1], `time` [V] timestamp[us], `patient` [V] int64 index
    into `patient_ids` [P] (sorted), `visit_offsets` [P+1].
    """

    codes: np.ndarray
    code_offsets: np.ndarray
    time: pa.Array
    patient: np.ndarray
    patient_ids: pa.Array
    visit_offsets: np.ndarray


def _rank(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Sort the distinct values of [N] `array` (numerically when they are all integer strings).

    `array` holds no nulls; a DictionaryArray is ranked through its dictionary (unused entries dropped).
    Returns ([N] int64 rank of each entry, the sorted distinct values that occur).
    """
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    inner = pc.dictionary_encode(array.dictionary)  # merge repeated dictionary entries
    indices = inner.indices.to_numpy()[array.indices.to_numpy()]
    present = np.bincount(indices, minlength=len(inner.dictionary)) > 0
    values = inner.dictionary.filter(pa.array(present))
    indices = (np.cumsum(present) - 1)[indices]
    keys = values
    if pa.types.is_string(keys.type) and len(keys) and pc.all(pc.utf8_is_digit(keys)).as_py():
        if pc.max(pc.utf8_length(keys)).as_py() <= 18:
            keys = pc.cast(keys, pa.int64())
    order = pc.sort_indices(keys).to_numpy()
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order))
    return rank_of[indices], values.take(pa.array(order))


def _group_visits(rows: DiagnosisRows, issues: RowIssues) -> _Visits:
    """Sort rows into visits (time, then visit id) and codes (order), dropping repeated codes per visit."""
    patient, patient_ids = _rank(rows.patient)
    visit, visit_ids = _rank(rows.visit)
    unique, group = unique_inverse(patient * max(len(visit_ids), 1) + visit)
    visit_patient, visit_rank = unique // max(len(visit_ids), 1), unique % max(len(visit_ids), 1)
    times = pc.fill_null(pc.cast(rows.time, pa.int64()), _NO_TIME).to_numpy()
    visit_time = np.full(len(unique), _NO_TIME, dtype=np.int64)
    np.minimum.at(visit_time, group, times)
    visit_order = np.lexsort((visit_rank, visit_time, visit_patient))
    final = np.empty(len(unique), dtype=np.int64)
    final[visit_order] = np.arange(len(unique))

    row_visit = final[group]
    # Stable sorts: rows arrive in file order, which breaks ties of (visit, order).
    width = int(rows.order.max()) + 1 if len(rows.order) else 1
    if width * len(unique) < 2**62:
        perm = np.argsort(row_visit * width + rows.order, kind="stable")
    else:
        perm = np.lexsort((rows.order, row_visit))
    row_visit, codes = row_visit[perm], rows.code[perm]
    duplicate = repeated(row_visit * max(len(rows.codes), 1) + codes)
    files, file_rows = rows.file[perm][duplicate], rows.row[perm][duplicate]
    for f in np.unique(files):
        issues.add("duplicate_row", int(f), file_rows[files == f])
    row_visit, codes = row_visit[~duplicate], codes[~duplicate]

    patient_of_visit = visit_patient[visit_order]
    time = visit_time[visit_order]
    return _Visits(
        codes=codes.astype(np.int32),
        code_offsets=_offsets(np.bincount(row_visit, minlength=len(unique))),
        time=pa.array(time, pa.int64(), mask=time == _NO_TIME).cast(TIME_TYPE),
        patient=patient_of_visit,
        patient_ids=patient_ids.cast(pa.string()),
        visit_offsets=_offsets(np.bincount(patient_of_visit, minlength=len(patient_ids))),
    )


def _labels(codes: list[str], label_space: str) -> tuple[np.ndarray, list[str], list[str]]:
    """[C] int32 label id per code (-1 without a label), the label list, and the codes without a label."""
    label_ids: dict[str, int] = {}
    of_code = np.full(len(codes), -1, dtype=np.int32)
    missing = []
    for i, code in enumerate(codes):
        try:
            label = to_label(code, space=label_space)
        except (KeyError, ValueError):
            missing.append(code)
            continue
        of_code[i] = label_ids.setdefault(label, len(label_ids))
    return of_code, list(label_ids), missing


def _split_patients(
    visits: _Visits, eligible: np.ndarray, seed: int, fixed: pa.Table | None, notes: dict[str, Any]
) -> np.ndarray:
    """[P] int8 split per patient (index into SPLITS; -1 = not in the cohort)."""
    split = np.full(len(visits.patient_ids), -1, dtype=np.int8)
    candidates = np.flatnonzero(eligible)
    if fixed is not None:
        position = pc.index_in(visits.patient_ids.take(pa.array(candidates)), value_set=fixed["patient"])
        listed = ~np.asarray(pc.is_null(position))
        names = fixed["split"].take(pc.fill_null(position, 0)).to_numpy(zero_copy_only=False)
        for i, name in enumerate(SPLITS):
            split[candidates[listed & (names == name)]] = i
        notes["splits"] = "metadata/subject_splits.parquet"
        notes["patients_without_split"] = int((~listed).sum())
        if not listed.all():
            unlisted = visits.patient_ids.take(pa.array(candidates[~listed])).to_pylist()
            logger.warning(
                "metadata/subject_splits.parquet lists no split for %d patient(s) with enough visits; "
                "they are left out of the cohort: %s%s",
                len(unlisted),
                ", ".join(map(repr, unlisted[:5])),
                ", ..." if len(unlisted) > 5 else "",
            )
        return split
    n = len(candidates)
    n_train, n_val = 7 * n // 10, n // 10
    shuffled = candidates[np.random.default_rng(seed).permutation(n)]
    split[shuffled[:n_train]] = 0
    split[shuffled[n_train : n_train + n_val]] = 1
    split[shuffled[n_train + n_val :]] = 2
    notes["splits"] = f"seeded 7:1:2 by patient (seed {seed})"
    return split


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for each (s, l)."""
    total = int(lengths.sum())
    begin = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - begin + np.repeat(starts, lengths)


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(
            f"cohort too large for an Arrow list column ({offsets[-1]:,} entries); use sample='last'"
        )
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def _samples(
    visits: _Visits,
    codes: list[str],
    label_of_code: np.ndarray,
    labels: list[str],
    split: np.ndarray,
    sample: str,
) -> tuple[pa.Table, np.ndarray]:
    """The sample table (COHORT_FEATURES columns), rows grouped by split, and [S] int8 split per sample."""
    num_visits = np.diff(visits.visit_offsets)
    patients = np.flatnonzero(split >= 0)
    patients = patients[np.argsort(split[patients], kind="stable")]
    first = visits.visit_offsets[patients]
    if sample == "last":
        sample_patient, num_inputs, sample_first = patients, num_visits[patients] - 1, first
    else:
        per_patient = num_visits[patients] - 1
        sample_patient = np.repeat(patients, per_patient)
        num_inputs = _ranges(np.ones(len(patients), dtype=np.int64), per_patient)
        sample_first = np.repeat(first, per_patient)
    inputs = _ranges(sample_first, num_inputs)  # visit index of each input visit, sample after sample
    targets = sample_first + num_inputs

    # Arrow's take on the per-visit lists builds the output directly (no index arrays per code).
    visit_codes = _list_array(visits.code_offsets, pa.array(codes, pa.string()).take(pa.array(visits.codes)))
    patient_id = visits.patient_ids.take(pa.array(sample_patient))
    table = pa.table(
        {
            "patient_id": patient_id,
            "sample_id": pc.binary_join_element_wise(patient_id, pa.array(num_inputs).cast(pa.string()), "#"),
            "visits": _list_array(_offsets(num_inputs), visit_codes.take(pa.array(inputs))),
            "visit_times": _list_array(_offsets(num_inputs), visits.time.take(pa.array(inputs))),
            "labels": _visit_labels(visits, label_of_code, labels).take(pa.array(targets)),
        }
    )
    return table, split[sample_patient]


def _visit_labels(visits: _Visits, label_of_code: np.ndarray, labels: list[str]) -> pa.Array:
    """[V] list of label strings per visit, each once, in order of first appearance."""
    row_visit = np.repeat(np.arange(len(visits.code_offsets) - 1), np.diff(visits.code_offsets))
    row_label = label_of_code[visits.codes]
    keep = row_label >= 0
    keep[keep] = ~repeated(row_visit[keep] * max(len(labels), 1) + row_label[keep])
    counts = np.bincount(row_visit[keep], minlength=len(visits.code_offsets) - 1)
    values = pa.array(labels, pa.string()).take(pa.array(row_label[keep]))
    return _list_array(_offsets(counts), values)


def _card(visits: _Visits, split: np.ndarray, table: pa.Table, sample_split: np.ndarray) -> dict[str, dict]:
    """Statistics per split and for the whole cohort ("all")."""
    num_visits = np.diff(visits.visit_offsets)
    codes_per_visit = np.diff(visits.code_offsets)
    visit_split = split[visits.patient]
    code_split = np.repeat(visit_split, codes_per_visit)
    label_lists = table["labels"].combine_chunks()
    label_count = np.diff(label_lists.offsets.to_numpy())
    label_values = pc.dictionary_encode(label_lists.values).indices.to_numpy()
    label_split = np.repeat(sample_split, label_count)
    card = {}
    for i, name in [(0, "train"), (1, "validation"), (2, "test"), (None, "all")]:
        in_p = split == i if i is not None else split >= 0
        in_v = visit_split == i if i is not None else visit_split >= 0
        in_c = code_split == i if i is not None else code_split >= 0
        in_s = sample_split == i if i is not None else sample_split >= 0
        in_l = label_split == i if i is not None else label_split >= 0
        patients, samples, n_visits = int(in_p.sum()), int(in_s.sum()), int(in_v.sum())
        card[name] = {
            "patients": patients,
            "samples": samples,
            "visits": n_visits,
            "distinct_codes": int(np.count_nonzero(np.bincount(visits.codes[in_c], minlength=1))),
            "mean_visits_per_patient": float(n_visits / patients) if patients else 0.0,
            "max_visits_per_patient": int(num_visits[in_p].max()) if patients else 0,
            "mean_codes_per_visit": float(in_c.sum() / n_visits) if n_visits else 0.0,
            "distinct_labels": int(np.count_nonzero(np.bincount(label_values[in_l], minlength=1))),
            "mean_labels_per_sample": float(in_l.sum() / samples) if samples else 0.0,
        }
    return card


def _fingerprint(issues: RowIssues, options: dict[str, Any], split: str) -> str:
    """Deterministic `datasets` fingerprint from the options and the files read (name, size, mtime).

    Passing it spares `datasets` hashing the whole in-memory table (which copies it).
    """
    files = [(f.name, f.path.stat().st_size, f.path.stat().st_mtime_ns) for f in issues.files]
    text = json.dumps({"options": options, "files": files, "split": split}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cohort_task(split: datasets.Dataset) -> dict[str, Any] | None:
    """How `build_cohort` formed the samples of `split` (`{key: value}` for `TASK_KEYS`), or None for a
    dataset that does not record it (not built by `build_cohort`)."""
    try:
        recorded = json.loads(split.info.description or "")
    except json.JSONDecodeError:
        return None
    task = recorded.get(_TASK_FIELD) if isinstance(recorded, dict) else None
    return dict(task) if isinstance(task, dict) else None


def _read(source: str, root: Path, issues: RowIssues, strict: bool, **kwargs: Any) -> DiagnosisRows:
    if source in ("mimic3", "mimic4"):
        if kwargs:
            raise TypeError(f"source {source!r} takes no extra arguments, got {sorted(kwargs)}")
        return read_mimic(root, issues, version=int(source[-1]))
    if source == "meds":
        return read_meds(root, issues, strict=strict, **kwargs)
    return read_table(root, issues, **kwargs)


def build_cohort(
    source: str,
    root: str | Path,
    label_space: str = "ccs",
    min_visits: int = 2,
    sample: str = "last",
    seed: int = 0,
    strict: bool = False,
    return_report: bool = False,
    **source_kwargs: Any,
) -> datasets.DatasetDict | tuple[datasets.DatasetDict, CohortReport]:
    """Build a next-visit diagnosis prediction cohort (see the module docstring for the rows and splits).

    Args:
        source: "mimic3", "mimic4" (see `shark_hf.data.mimic`), "meds" (a MEDS folder, see
            `shark_hf.data.meds`) or "table" (one CSV/parquet file, see `shark_hf.data.table`).
        root: the source folder (the file for "table").
        label_space: "ccs" (283 single-level CCS categories), "ccsr" (ICD-10-CM CCSR) or "code" (the codes).
        min_visits: patients with fewer visits are left out (counted in the report); at least 2.
        sample: "last" (one sample per patient) or "all_prefixes" (one per visit after the first).
        seed: seeds the patient split.
        strict: raise ValueError at the first unusable row (file, line, reason) instead of reporting it,
            and (MEDS) for a subject listed in more than one split.
        return_report: also return the `CohortReport` (unusable rows with examples, cohort card).
        **source_kwargs: for "table": `patient_col`, `code_col`, and `visit_col` and/or `time_col`,
            optionally `system_col` or `system`, and `order_col`. The other sources take none.

    Returns:
        `DatasetDict` with "train", "validation", "test" (and the `CohortReport` when `return_report`).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    if label_space not in LABEL_SPACES:
        raise ValueError(f"unknown label_space {label_space!r}; expected one of {LABEL_SPACES}")
    if sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; expected one of {SAMPLES}")
    if int(min_visits) != min_visits or min_visits < 2:
        raise ValueError(f"min_visits must be an integer >= 2 (input visits + target), got {min_visits!r}")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"cohort root {root} does not exist")

    issues = RowIssues()
    rows = _read(source, root, issues, strict, **source_kwargs)
    visits = _group_visits(rows, issues)
    if strict:
        issues.raise_first()
    label_of_code, labels, unlabelled = _labels(rows.codes, label_space)
    notes: dict[str, Any] = dict(rows.notes)
    num_visits = np.diff(visits.visit_offsets)
    eligible = num_visits >= min_visits
    notes["patients_read"] = len(num_visits)
    notes[f"patients_with_fewer_than_{min_visits}_visits"] = int((~eligible).sum())
    split = _split_patients(visits, eligible, seed, rows.splits, notes)
    table, sample_split = _samples(visits, rows.codes, label_of_code, labels, split, sample)
    if unlabelled:
        notes[f"codes_without_{label_space}_label"] = len(unlabelled)
        notes[f"codes_without_{label_space}_label_examples"] = unlabelled[:5]
    notes["samples_with_empty_labels"] = int((pc.list_value_length(table["labels"]).to_numpy() == 0).sum())

    options = {"source": source, "label_space": label_space, "min_visits": min_visits}
    options.update({"sample": sample, "seed": seed, "strict": strict, **source_kwargs})
    bounds = _offsets(np.bincount(sample_split, minlength=len(SPLITS)))
    cohort = datasets.DatasetDict(
        {
            name: datasets.Dataset(
                InMemoryTable(table.slice(bounds[i], bounds[i + 1] - bounds[i])),
                info=datasets.DatasetInfo(
                    features=COHORT_FEATURES,
                    description=json.dumps({_TASK_FIELD: {key: options[key] for key in TASK_KEYS}}),
                ),
                split=datasets.NamedSplit(name),
                fingerprint=_fingerprint(issues, options, name),
            )
            for i, name in enumerate(SPLITS)
        }
    )
    report = CohortReport(
        source=source,
        root=str(root),
        options={k: v for k, v in options.items() if k != "source"},
        files={f.name: f.rows_read for f in issues.files},
        issues=issues.counts(),
        examples={reason: issues.examples(reason) for reason in issues.counts()},
        notes=notes,
        card=_card(visits, split, table, sample_split),
    )
    if report.num_unusable_rows:
        logger.warning("%d unusable rows: %s", report.num_unusable_rows, report.issues)
    if not table.num_rows:
        logger.warning("the cohort from %s at %s has no samples", source, root)
    logger.info("%s", report)
    return (cohort, report) if return_report else cohort
