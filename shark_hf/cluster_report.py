"""What the semantic IDs of a tokenizer mean: the paper's Tables 4 (cluster purity) and 5 (cross-chapter codes
sharing finer IDs).

`SharkTokenizer.cluster_report` calls `cluster_report` on its code table; `shark-hf inspect-tokenizer` prints
the result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from shark_hf.codes import ancestors, describe, to_label
from shark_hf.codes import label_names as code_label_names


def cluster_report(
    codes: Sequence[str],
    ids: np.ndarray,
    label_fn: Callable[[str], str] | None = None,
    label_names: dict[str, str] | None = None,
    min_size: int = 5,
    max_pairs: int = 1000,
) -> ClusterReport:
    """Per-level clusters with their purity (paper Table 4) and cross-chapter codes sharing finer IDs
    (paper Table 5).

    A level-l cluster is the set of codes whose l-th ID is j (the other levels are free: `[-, j, -, -]`).
    Its purity is (codes carrying its majority label) / (codes in it); codes whose label is unknown count
    in the size but never form the majority.

    Args:
        codes: canonical code keys, one per row of `ids`.
        ids: int `[N, L_rq]`, the semantic IDs of each code (without a deduplication level).
        label_fn: code -> category; default the single-level CCS category (`to_label(code, "ccs")`).
        label_names: category -> readable name; default the CCS names when `label_fn` is the default.
        min_size: clusters smaller than this are left out.
        max_pairs: at most this many cross-chapter pairs are listed (`num_cross_chapter_pairs` counts
            all of them).

    Cross-chapter pairs: two codes of the same code system whose ICD chapters differ and whose IDs at
    levels 2..L_rq are identical (level 1 may differ). Empty when L_rq < 2.
    """
    if label_fn is None:
        label_fn = _ccs_label
        label_names = _ccs_names() if label_names is None else label_names
    labels = [_safe(label_fn, code) for code in codes]
    clusters = _level_clusters(ids, labels, label_names or {}, min_size)
    pairs, total = _cross_chapter_pairs(codes, ids, max_pairs)
    return ClusterReport(
        num_levels=ids.shape[1],
        clusters=clusters,
        cross_chapter_pairs=pairs,
        num_cross_chapter_pairs=total,
    )


def _cross_chapter_pairs(
    codes: Sequence[str], ids: np.ndarray, max_pairs: int
) -> tuple[list[CrossChapterPair], int]:
    """Up to `max_pairs` cross-chapter pairs (ordered by shared IDs, then rows) and the number of all."""
    finer = ids[:, 1:]
    if finer.shape[1] == 0:
        return [], 0
    _, group, counts = np.unique(finer, axis=0, return_inverse=True, return_counts=True)
    members: dict[int, list[int]] = {}
    for row in np.flatnonzero(counts[group.reshape(-1)] > 1):
        members.setdefault(int(group[row]), []).append(int(row))
    pairs, total = [], 0
    for rows in sorted(members.values(), key=lambda rows: finer[rows[0]].tolist()):
        # (row, (system, chapter)) of the group's codes whose chapter is known
        placed = [(row, (codes[row].split(":", 1)[0], _safe(_chapter, codes[row]))) for row in rows]
        placed = [(row, key) for row, key in placed if key[1] is not None]
        total += _count_cross_chapter(key for _, key in placed)
        for (a, (system_a, chapter_a)), (b, (system_b, chapter_b)) in combinations(placed, 2):
            if len(pairs) == max_pairs:
                break
            if system_a == system_b and chapter_a != chapter_b:
                pairs.append(
                    CrossChapterPair(
                        codes=(codes[a], codes[b]),
                        descriptions=(_safe(describe, codes[a]), _safe(describe, codes[b])),
                        chapters=(chapter_a, chapter_b),
                        shared_ids=tuple(int(x) for x in finer[a]),
                    )
                )
    return pairs, total


@dataclass
class ClusterStat:
    """One cluster of one level: `cluster` is the ID at `level` (1-based: the paper's `[-, j, -, -]`)."""

    level: int
    cluster: int
    size: int
    majority_label: str | None
    majority_name: str | None
    majority_count: int

    @property
    def purity(self) -> float:
        return self.majority_count / self.size


@dataclass
class CrossChapterPair:
    """Two codes from different ICD chapters whose IDs at levels 2..L are identical (`shared_ids`)."""

    codes: tuple[str, str]
    descriptions: tuple[str | None, str | None]
    chapters: tuple[str, str]
    shared_ids: tuple[int, ...]


@dataclass
class ClusterReport:
    """Output of `cluster_report`: as data (`to_dict`) and as text (`str`, `format`)."""

    num_levels: int
    clusters: list[ClusterStat] = field(default_factory=list)
    cross_chapter_pairs: list[CrossChapterPair] = field(default_factory=list)
    num_cross_chapter_pairs: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for cluster, stat in zip(data["clusters"], self.clusters, strict=True):
            cluster["purity"] = stat.purity
        return data

    def format(self, top: int = 10) -> str:
        """Text tables: per level the `top` purest clusters (ties: larger first), then cross-chapter pairs."""
        lines = [f"{'Cluster ID':<24} {'Size':>5} {'Purity':>16}  Majority category"]
        for level in range(1, self.num_levels + 1):
            stats = [stat for stat in self.clusters if stat.level == level]
            stats.sort(key=lambda stat: (-stat.purity, -stat.size, stat.cluster))
            for stat in stats[:top]:
                slots = ["-"] * self.num_levels
                slots[level - 1] = str(stat.cluster)
                label = ": ".join(filter(None, (stat.majority_label, stat.majority_name))) or "(no label)"
                purity = f"{stat.majority_count}/{stat.size} ({stat.purity:.0%})"
                lines.append(f"{'[' + ', '.join(slots) + ']':<24} {stat.size:>5} {purity:>16}  {label}")
        lines.append("")
        lines.append(
            f"Codes from different ICD chapters sharing IDs at levels 2..{self.num_levels}: "
            f"{self.num_cross_chapter_pairs} pairs"
        )
        for pair in self.cross_chapter_pairs[:top]:
            shared = "[-, " + ", ".join(map(str, pair.shared_ids)) + "]"
            for code, description, chapter in zip(pair.codes, pair.descriptions, pair.chapters, strict=True):
                lines.append(f"  {code:<16} {chapter:<10} {shared:<22} {description or ''}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def __str__(self) -> str:
        return self.format()


def _level_clusters(
    ids: np.ndarray, labels: list[str | None], names: dict[str, str], min_size: int
) -> list[ClusterStat]:
    """Clusters of each level `[N, L]` with at least `min_size` codes, by (level, cluster ID)."""
    stats = []
    for level in range(ids.shape[1]):
        members: dict[int, list[str | None]] = {}
        for cluster, label in zip(ids[:, level].tolist(), labels, strict=True):
            members.setdefault(cluster, []).append(label)
        for cluster in sorted(members):
            cluster_labels = members[cluster]
            if len(cluster_labels) < min_size:
                continue
            counts = Counter(label for label in cluster_labels if label is not None)
            # Majority: the most frequent label; ties broken by the label's text, for a stable report.
            majority, count = min(counts.items(), key=lambda item: (-item[1], item[0]), default=(None, 0))
            stats.append(
                ClusterStat(
                    level=level + 1,
                    cluster=cluster,
                    size=len(cluster_labels),
                    majority_label=majority,
                    majority_name=names.get(majority) if majority is not None else None,
                    majority_count=count,
                )
            )
    return stats


def _count_cross_chapter(keys: Iterable[tuple[str, str]]) -> int:
    """Pairs of (system, chapter) keys with the same system and different chapters."""
    keys = list(keys)
    per_system = Counter(system for system, _ in keys)
    per_chapter = Counter(keys)
    same_system = sum(n * (n - 1) // 2 for n in per_system.values())
    return same_system - sum(n * (n - 1) // 2 for n in per_chapter.values())


def _ccs_label(code: str) -> str:
    return to_label(code, "ccs")


def ccs_or_none(code: str) -> str | None:
    """The single-level CCS category of `code`, or None when it has none."""
    return _safe(_ccs_label, code)


def _ccs_names() -> dict[str, str]:
    return code_label_names("ccs")


def _chapter(code: str) -> str:
    return ancestors(code)[0].code


def _safe(function: Callable[[str], Any], code: str) -> Any:
    """`function(code)`, or None when the code has no such entry (KeyError / ValueError)."""
    try:
        return function(code)
    except (KeyError, ValueError):
        return None
