"""Laying out a batch of patients: per-code ID rows -> padded `[B, V, C, L]` tensors with their masks.

`SharkTokenizer.__call__` looks up each code's row of its ID table; `pack_visits` places the rows in the
batch in a few vectorised numpy passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchEncoding


def pack_visits(
    rows: np.ndarray,
    table: np.ndarray,
    visits_per_patient: np.ndarray,
    codes_per_visit: np.ndarray,
    max_visits: int | None,
    return_tensors: str,
) -> BatchEncoding:
    """Scatter flat rows of `table` into the padded batch of `SharkTokenizer.__call__`.

    Args:
        rows: int64 `[n]`, for each code of the batch (patients, then visits, then codes, in input order)
            its row in `table`; 0 drops the code.
        table: int64 `[1 + M, L]`, the ID tuple of each row (row 0 is the padding).
        visits_per_patient: int64 `[B]`, input visits of each patient.
        codes_per_visit: int64 `[sum(visits_per_patient)]`, input codes of each visit.
        max_visits: keep only the most recent `max_visits` non-empty visits of each patient (None: all).
        return_tensors: `"pt"` or `"np"`.

    Returns:
        `BatchEncoding` with `input_ids` `[B, V, C, L]`, `code_mask` `[B, V, C]` and `visit_mask` `[B, V]`:
        visits left-aligned (oldest kept visit first), empty visits removed, padding 0 / False.
    """
    batch_size = len(visits_per_patient)
    keep = rows > 0
    if not keep.all():
        visit_of_code = np.repeat(np.arange(len(codes_per_visit)), codes_per_visit)
        codes_per_visit = np.bincount(visit_of_code[keep], minlength=len(codes_per_visit))
        rows = rows[keep]
    patient_of_visit = np.repeat(np.arange(batch_size), visits_per_patient)

    # Number each patient's non-empty visits 0.. (oldest first); with max_visits keep the last ones.
    nonempty = codes_per_visit > 0
    kept_per_patient = np.bincount(patient_of_visit[nonempty], minlength=batch_size)
    first_of_patient = np.cumsum(kept_per_patient) - kept_per_patient
    position = np.cumsum(nonempty) - 1 - first_of_patient[patient_of_visit]
    if max_visits is not None:
        position -= np.maximum(kept_per_patient - max_visits, 0)[patient_of_visit]
        kept_per_patient = np.minimum(kept_per_patient, max_visits)
    visit_kept = nonempty & (position >= 0)
    if not visit_kept.all():
        rows = rows[np.repeat(visit_kept, codes_per_visit)]
        codes_per_visit, position = codes_per_visit[visit_kept], position[visit_kept]
        patient_of_visit = patient_of_visit[visit_kept]

    num_visits = max(int(kept_per_patient.max(initial=0)), 1)
    num_codes = max(int(codes_per_visit.max(initial=0)), 1)
    visit_slot = patient_of_visit * num_visits + position  # flat index into [B * V]
    code_start = np.cumsum(codes_per_visit) - codes_per_visit
    code_slot = np.arange(len(rows)) + np.repeat(visit_slot * num_codes - code_start, codes_per_visit)
    slot_rows = np.zeros(batch_size * num_visits * num_codes, dtype=np.int64)  # [B * V * C], 0 = padding
    slot_rows[code_slot] = rows
    visit_mask = np.zeros(batch_size * num_visits, dtype=bool)
    visit_mask[visit_slot] = True
    data = {
        "input_ids": np.take(table, slot_rows, axis=0).reshape(batch_size, num_visits, num_codes, -1),
        "code_mask": (slot_rows > 0).reshape(batch_size, num_visits, num_codes),
        "visit_mask": visit_mask.reshape(batch_size, num_visits),
    }
    if return_tensors == "pt":
        data = {key: torch.from_numpy(value) for key, value in data.items()}
    return BatchEncoding(data)


def check_nesting(patients: Sequence[Sequence[Sequence[str]]], flat: list[Any]) -> None:
    """Raise a TypeError when `patients` is not a list of patients -> visits -> code strings."""
    for index, patient in enumerate(patients):
        if isinstance(patient, str) or any(isinstance(visit, str) for visit in patient):
            raise TypeError(
                f"patient {index} is not a list of visits (lists of codes): got {str(patient)[:80]}; "
                "to encode one patient, pass [patient]"
            )
    not_codes = [code for code in flat if not isinstance(code, str)]
    if not_codes:
        raise TypeError(f"codes must be strings, got {type(not_codes[0]).__name__} {str(not_codes[0])[:80]}")
