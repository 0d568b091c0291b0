"""Cohorts: builders for MIMIC-III, MIMIC-IV, MEDS and tables, the built-in cohort, and the batch collator."""

from .cohort import COHORT_FEATURES, SPLITS, build_cohort
from .collator import VisitCollator
from .report import CohortReport
from .synthetic import cohort_statistics, write_synthetic_cohort

__all__ = [
    "COHORT_FEATURES",
    "SPLITS",
    "CohortReport",
    "VisitCollator",
    "build_cohort",
    "cohort_statistics",
    "write_synthetic_cohort",
]
