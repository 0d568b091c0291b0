"""What the code map shows: the codes' 2-D PCA projection, their body-system chapter, their level-1 cluster.

`code_map(tokenizer)` returns a `CodeMap` (plain data, no matplotlib); `plots.plot_code_map` draws it.
The projection is computed on every code; only the points drawn are subsampled (deterministically, by
`seed`) when there are more than `max_points`. Clusters are named by their most common CCS category.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .codes import label_names, normalize_code, to_label
from .utils import preview

# One chapter per body system, the same for ICD-9-CM and ICD-10-CM so the universal tokenizer's ~90k codes
# fall into 20 colours (ICD-9-CM's chapter 320-389 covers ICD-10-CM's G, H00-H59 and H60-H95).
# (name, ICD-9-CM first..last 3-digit category or V/E, ICD-10-CM first..last 3-character category)
CHAPTERS: tuple[tuple[str, tuple[str, str], tuple[str, str]], ...] = (
    ("Infectious and parasitic", ("001", "139"), ("A00", "B99")),
    ("Neoplasms", ("140", "239"), ("C00", "D49")),
    ("Blood and immune", ("280", "289"), ("D50", "D89")),
    ("Endocrine, nutritional, metabolic", ("240", "279"), ("E00", "E89")),
    ("Mental and behavioural", ("290", "319"), ("F01", "F99")),
    ("Nervous system and sense organs", ("320", "389"), ("G00", "H95")),
    ("Circulatory", ("390", "459"), ("I00", "I99")),
    ("Respiratory", ("460", "519"), ("J00", "J99")),
    ("Digestive", ("520", "579"), ("K00", "K95")),
    ("Genitourinary", ("580", "629"), ("N00", "N99")),
    ("Pregnancy and childbirth", ("630", "679"), ("O00", "O9A")),
    ("Skin", ("680", "709"), ("L00", "L99")),
    ("Musculoskeletal", ("710", "739"), ("M00", "M99")),
    ("Congenital", ("740", "759"), ("Q00", "QA0")),
    ("Perinatal", ("760", "779"), ("P00", "P96")),
    ("Symptoms and ill-defined", ("780", "799"), ("R00", "R99")),
    ("Injury and poisoning", ("800", "999"), ("S00", "T88")),
    ("External causes", ("E", "E"), ("V00", "Y99")),
    ("Health status and services", ("V", "V"), ("Z00", "Z99")),
    ("Special purposes (U codes)", ("U", "U"), ("U00", "U85")),
)
CHAPTER_NAMES: tuple[str, ...] = tuple(name for name, _, _ in CHAPTERS)
UNKNOWN_CHAPTER = "Outside the ICD chapters"


@dataclass(frozen=True)
class ClusterLabel:
    """One labelled level-1 cluster: `rank` 1 is the largest."""

    rank: int
    cluster_id: int
    size: int
    ccs_name: str
    ccs_share: float  # fraction of the cluster's codes in that CCS category, in [0, 1]
    chapter: str  # its most common chapter (`CHAPTER_NAMES`)
    chapter_share: float  # fraction of its codes in that chapter, in [0, 1]
    center: tuple[float, float]  # median of its codes' 2-D positions


@dataclass(frozen=True)
class CodeMap:
    """Everything the code map draws.

    Attributes:
        xy: `[n, 2]` positions of the drawn codes on PCA components 1 and 2.
        codes, chapters, cluster_ids: the drawn codes, their `CHAPTERS` name and first-level ID (length n).
        explained_variance: the fraction of the vectors' variance on components 1 and 2.
        num_codes, num_clusters: codes and distinct level-1 IDs before subsampling.
        clusters: the largest clusters, largest first, labelled by their most common CCS name.
    """

    xy: torch.Tensor
    codes: list[str]
    chapters: list[str]
    cluster_ids: list[int]
    explained_variance: tuple[float, float]
    num_codes: int
    num_clusters: int
    clusters: list[ClusterLabel]

    @property
    def subsampled(self) -> bool:
        return len(self.codes) < self.num_codes


def chapter_of(code: str) -> str:
    """The body-system chapter (`CHAPTER_NAMES`) of an ICD-9-CM or ICD-10-CM code, else `UNKNOWN_CHAPTER`."""
    system, body = normalize_code(code).split(":")
    if system == "ICD9CM":
        category = body[0] if body[0] in "VE" else body[:3]
        for name, (first, last), _ in CHAPTERS:
            if first <= category <= last and (category in "VE") == (first in "VE"):
                return name
    else:
        for name, _, (first, last) in CHAPTERS:
            if first <= body[:3] <= last:
                return name
    return UNKNOWN_CHAPTER


def reconstructed_vectors(tokenizer) -> torch.Tensor:
    """`[N, D]` each code's vector rebuilt from its semantic IDs: the sum of its level centroids.

    Raises:
        ValueError: the tokenizer has no codebooks (kind "random" or "index").
    """
    codebooks = tokenizer.codebooks
    if codebooks is None:
        raise ValueError(
            f"the code map needs a semantic tokenizer (with codebooks), not one of kind {tokenizer.kind!r}"
        )
    ids = tokenizer.ids[:, : codebooks.shape[0]]  # leave out the deduplication level, if any
    return sum(codebooks[level][ids[:, level]] for level in range(codebooks.shape[0]))


def pca_2d(vectors: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """Project `[N, D]` vectors on their first two principal components.

    Returns `[N, 2]` float32 positions and the fraction of variance each component explains. Each
    component's sign is fixed (its largest-magnitude loading is positive), so the same vectors always
    give the same picture.
    """
    if vectors.ndim != 2 or vectors.shape[0] < 2 or vectors.shape[1] < 2:
        raise ValueError(
            f"the code map needs at least 2 vectors of >= 2 dimensions, got {list(vectors.shape)}"
        )
    mean = vectors.double().mean(dim=0)
    covariance = torch.zeros(vectors.shape[1], vectors.shape[1], dtype=torch.float64)
    for chunk in vectors.split(16384):
        centered = chunk.double() - mean
        covariance += centered.T @ centered
    values, vecs = torch.linalg.eigh(covariance)  # ascending
    components = vecs[:, [-1, -2]]
    signs = torch.sign(components.gather(0, components.abs().argmax(dim=0, keepdim=True)))
    components = components * signs
    xy = torch.cat([(chunk.double() - mean) @ components for chunk in vectors.split(16384)])
    total = float(values.clamp(min=0).sum()) or 1.0
    return xy.float(), (float(values[-1]) / total, float(values[-2]) / total)


def code_map(
    tokenizer,
    codes: Sequence[str] | None = None,
    vectors: torch.Tensor | None = None,
    max_points: int = 20000,
    top_clusters: int = 10,
    seed: int = 0,
) -> CodeMap:
    """The code map of a SHARK tokenizer.

    Args:
        tokenizer: a `SharkTokenizer`; its first-level IDs are the clusters.
        codes: the codes to show (default: every code of the tokenizer); each must be in the tokenizer.
        vectors: `[len(codes), D]` their embeddings; default: rebuilt from the codebooks
            (`reconstructed_vectors`), which needs a semantic tokenizer.
        max_points: at most this many codes are drawn, a seeded random subset; the PCA, cluster sizes and
            labels use every code.
        top_clusters: how many of the largest clusters get a label.
    """
    table = {code: row for row, code in enumerate(tokenizer.codes)}
    codes = tokenizer.codes if codes is None else [normalize_code(code) for code in codes]
    missing = [code for code in codes if code not in table]
    if missing:
        raise KeyError(f"codes not in the tokenizer: {preview(missing)}")
    rows = torch.tensor([table[code] for code in codes], dtype=torch.long)
    if vectors is None:
        vectors = reconstructed_vectors(tokenizer)[rows]
    if vectors.shape[0] != len(codes):
        raise ValueError(f"vectors has {vectors.shape[0]} rows but there are {len(codes)} codes")
    cluster_ids = tokenizer.ids[rows, 0].tolist()
    xy, explained = pca_2d(vectors)
    clusters = _label_clusters(codes, cluster_ids, xy, top_clusters)
    shown = _subsample(len(codes), max_points, seed)
    return CodeMap(
        xy=xy[shown],
        codes=[codes[i] for i in shown],
        chapters=[chapter_of(codes[i]) for i in shown],
        cluster_ids=[cluster_ids[i] for i in shown],
        explained_variance=explained,
        num_codes=len(codes),
        num_clusters=len(set(cluster_ids)),
        clusters=clusters,
    )


def _subsample(n: int, max_points: int, seed: int) -> list[int]:
    """Rows drawn: all of them, or `max_points` chosen by a seeded permutation, in row order."""
    if n <= max_points:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:max_points].tolist())


def _label_clusters(
    codes: list[str], cluster_ids: list[int], xy: torch.Tensor, top: int
) -> list[ClusterLabel]:
    """The `top` largest clusters (ties: smaller ID first) named by their most common CCS category (ties:
    the category that comes first in AHRQ order; codes without a CCS label do not vote), with their most
    common chapter (ties: the first in `CHAPTER_NAMES`)."""
    names = label_names("ccs")
    order = {label: i for i, label in enumerate(names)}
    members: dict[int, list[int]] = {}
    for row, cluster in enumerate(cluster_ids):
        members.setdefault(cluster, []).append(row)
    largest = sorted(members, key=lambda c: (-len(members[c]), c))[:top]
    labels = []
    for rank, cluster in enumerate(largest, 1):
        rows = members[cluster]
        votes = Counter(label for row in rows if (label := _ccs(codes[row])) is not None)
        if votes:
            label, count = min(votes.items(), key=lambda item: (-item[1], order.get(item[0], len(order))))
            name, share = names.get(label, label), count / len(rows)
        else:
            name, share = "no CCS category", 0.0
        chapters = Counter(chapter_of(codes[row]) for row in rows)
        chapter, in_chapter = min(chapters.items(), key=lambda item: (-item[1], chapter_rank(item[0])))
        center = xy[rows].median(dim=0).values
        labels.append(
            ClusterLabel(
                rank,
                cluster,
                len(rows),
                name,
                share,
                chapter,
                in_chapter / len(rows),
                (float(center[0]), float(center[1])),
            )
        )
    return labels


def chapter_rank(chapter: str) -> int:
    """Position of a chapter in `CHAPTER_NAMES`; `UNKNOWN_CHAPTER` comes last."""
    return CHAPTER_NAMES.index(chapter) if chapter in CHAPTER_NAMES else len(CHAPTER_NAMES)


def _ccs(code: str) -> str | None:
    try:
        return to_label(code, "ccs")
    except (KeyError, ValueError):
        return None
