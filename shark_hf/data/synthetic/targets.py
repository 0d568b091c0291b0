"""Targets of the built-in cohort: the shape of the paper's Table 1, per scale.

| scale  | patients | visits  | mean | max | unique codes | codes / visit | years (unshifted) |
| mimic3 | 5,449    | 14,141  | 2.60 | 29  | 3,874        | 13            | 2001-2012, ICD-9  |
| mimic4 | 79,393   | 408,990 | 5.15 | 170 | 37,917       | 12            | 2008-2019, 9 + 10 |

Patients with >= 2 visits; codes per visit are not in the paper's table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CohortShape:
    """Target statistics of the cohort of patients with >= 2 visits (the paper's Table 1).

    `first_year`/`last_year` bound the real (unshifted) admission years; `single_visit_fraction` adds
    that many single-visit patients per cohort patient, for the builders to filter out.
    """

    num_patients: int
    num_visits: int
    max_visits: int
    unique_codes: int
    codes_per_visit: float
    first_year: int
    last_year: int
    single_visit_fraction: float = 0.1


SCALES: dict[str, CohortShape] = {
    "mimic3": CohortShape(5_449, 14_141, 29, 3_874, 13.0, 2001, 2012),
    "mimic4": CohortShape(79_393, 408_990, 170, 37_917, 12.0, 2008, 2019),
}
