"""Cohorts: builders for MIMIC-III, MIMIC-IV, MEDS and tables, the built-in cohort, and the batch collator."""

from .collator import VisitCollator
from .synthetic import cohort_statistics, write_synthetic_cohort

__all__ = ["VisitCollator", "cohort_statistics", "write_synthetic_cohort"]
