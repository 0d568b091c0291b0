"""Pictures of a SHARK run: training curves, a 2-D map of the codes, attention over a patient's visits.

Every function writes one PNG (atomically) and returns its path. matplotlib runs headless (Agg).
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .code_map import CHAPTER_NAMES, UNKNOWN_CHAPTER, ClusterLabel, CodeMap, chapter_rank, code_map  # noqa: E402
from .codes import describe  # noqa: E402
from .utils import atomic_write  # noqa: E402

# One colour per body-system chapter (Trubetskoy's 20 distinct colours; the palest on the smallest chapters).
CHAPTER_COLORS: dict[str, str] = dict(
    zip(
        (*CHAPTER_NAMES, UNKNOWN_CHAPTER),
        (
            "#e6194B",
            "#4363d8",
            "#800000",
            "#f58231",
            "#911eb4",
            "#42d4f4",
            "#3cb44b",
            "#000075",
            "#9A6324",
            "#f032e6",
            "#fabed4",
            "#bfef45",
            "#469990",
            "#808000",
            "#ffd8b1",
            "#a9a9a9",
            "#e6b800",
            "#dcbeff",
            "#aaffc3",
            "#fffac8",
            "#000000",
        ),
        strict=True,
    )
)


def _save(fig, path: str | Path, tight: bool = True) -> Path:
    path = Path(path)
    if tight:
        fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
    return path


def plot_training_curves(histories: Mapping[str, Sequence[dict]], path: str | Path) -> Path:
    """Train/validation loss and validation P@10 per epoch for one or more runs.

    Args:
        histories: run name -> the run's `log.jsonl` records (`epoch`, `train_loss`, `validation_loss`,
            `validation_P@10`).
    """
    fig, (loss_ax, p10_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, history) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in history]
        color = f"C{i}"
        loss_ax.plot(epochs, [r["train_loss"] for r in history], color=color, label=f"{name} train")
        loss_ax.plot(
            epochs, [r["validation_loss"] for r in history], color=color, ls="--", label=f"{name} val"
        )
        p10_ax.plot(epochs, [r["validation_P@10"] for r in history], color=color, marker=".", label=name)
    loss_ax.set(xlabel="epoch", ylabel="BCE loss (nats per label)", title="Loss")
    p10_ax.set(xlabel="epoch", ylabel="P@10", title="Validation P@10")
    loss_ax.legend(fontsize=7)
    p10_ax.legend(fontsize=7)
    return _save(fig, path)


def plot_code_map(
    tokenizer,
    path: str | Path,
    name: str = "SHARK tokenizer",
    codes: Sequence[str] | None = None,
    vectors: torch.Tensor | None = None,
    max_points: int = 20000,
    top_clusters: int = 10,
    seed: int = 0,
) -> Path:
    """The codes of a tokenizer on their first two principal components, coloured by body-system chapter,
    with its `top_clusters` largest level-1 clusters numbered at their median and named in a key by their
    most common CCS category. `name` says which tokenizer in the title; the other arguments are
    `shark_hf.code_map.code_map`'s."""
    data = code_map(tokenizer, codes, vectors, max_points=max_points, top_clusters=top_clusters, seed=seed)
    return draw_code_map(data, path, name, tokenizer.codebook_size, vectors is None)


def draw_code_map(data: CodeMap, path: str | Path, name: str, codebook_size: int, rebuilt: bool) -> Path:
    """Draw a `CodeMap` (see `plot_code_map`); `rebuilt` says the vectors were rebuilt from the codebooks."""
    return _save(code_map_figure(data, name, codebook_size, rebuilt), path, tight=False)


def code_map_figure(data: CodeMap, name: str, codebook_size: int, rebuilt: bool) -> Figure:
    """The figure `draw_code_map` saves: the map left, the chapter legend and cluster key right, a caption
    below. The figure grows taller with the legend and key, so that neither is ever cut."""
    counts = Counter(data.chapters)
    key = _cluster_key(data.clusters)
    # Heights in inches of the right column's two blocks, so the legend and key always fit uncut.
    legend_height = 0.2 * (len(counts) + 2)
    key_height = 0.15 * (key.count("\n") + 2)
    height = max(9.5, legend_height + key_height + 2.0)
    fig = plt.figure(figsize=(15, height))
    grid = fig.add_gridspec(
        2,
        2,
        width_ratios=[2.6, 1],
        height_ratios=[legend_height, key_height],
        left=0.06,
        right=0.99,
        top=1 - 0.6 / height,
        bottom=1.2 / height,
        hspace=0.4 / (height - 1.8),
    )
    ax = fig.add_subplot(grid[:, 0])
    for chapter in sorted(counts, key=lambda c: (-counts[c], chapter_rank(c))):  # rare chapters on top
        rows = [i for i, c in enumerate(data.chapters) if c == chapter]
        ax.scatter(
            data.xy[rows, 0], data.xy[rows, 1], s=5, alpha=0.55, linewidths=0, color=CHAPTER_COLORS[chapter]
        )
    for cluster in data.clusters:
        ax.text(
            *cluster.center,
            str(cluster.rank),
            ha="center",
            va="center",
            fontsize=9,
            weight="bold",
            bbox={"boxstyle": "circle,pad=0.25", "facecolor": "white", "edgecolor": "black", "alpha": 0.9},
        )
    what = "reconstructed code vectors" if rebuilt else "code embeddings"
    (pc1, pc2) = data.explained_variance
    ax.set_xlabel(f"PCA component 1 of the {what} ({100 * pc1:.1f}% of variance)")
    ax.set_ylabel(f"PCA component 2 of the {what} ({100 * pc2:.1f}% of variance)")
    ax.set_title(
        f"{name}: {data.num_codes:,} codes in {data.num_clusters} level-1 clusters (of K = {codebook_size})",
        fontsize=13,
    )
    legend_ax = fig.add_subplot(grid[0, 1])
    legend_ax.axis("off")
    handles = [
        Line2D([], [], ls="", marker="o", markersize=7, color=CHAPTER_COLORS[c], label=f"{c} ({counts[c]:,})")
        for c in sorted(counts, key=chapter_rank)
    ]
    legend_ax.legend(
        handles=handles,
        loc="upper left",
        fontsize=8.5,
        title="Chapter (body system), codes drawn",
        title_fontsize=9,
        frameon=False,
        borderaxespad=0,
    )
    key_ax = fig.add_subplot(grid[1, 1])
    key_ax.axis("off")
    key_ax.text(0, 1, key, va="top", ha="left", fontsize=8.5, family="monospace", transform=key_ax.transAxes)
    fig.text(0.01, 0.015, _code_map_caption(data, rebuilt), fontsize=8.5, va="bottom", ha="left", wrap=True)
    return fig


def _cluster_key(clusters: Sequence[ClusterLabel]) -> str:
    """A heading, then per cluster ` 1 <CCS name>` (wrapped at 46 characters), `   ID 37: 2,345 codes, 61% in
    it` and `   chapter: 90% Circulatory`."""
    lines = ["Largest level-1 clusters, named by their most", "common CCS category:"]
    for cluster in clusters:
        wrapped = textwrap.wrap(cluster.ccs_name, 46, break_on_hyphens=False) or ["no CCS category"]
        lines.append(f"{cluster.rank:>2} {wrapped[0]}")
        lines += [f"   {part}" for part in wrapped[1:]]
        lines.append(
            f"   ID {cluster.cluster_id}: {cluster.size:,} codes, {100 * cluster.ccs_share:.0f}% in it"
        )
        lines.append(f"   chapter: {100 * cluster.chapter_share:.0f}% {cluster.chapter}")
    return "\n".join(lines)


def _code_map_caption(data: CodeMap, rebuilt: bool) -> str:
    vectors = (
        "each code's vector rebuilt from its semantic IDs (the sum of its codebook centroids)"
        if rebuilt
        else "the codes' description embeddings"
    )
    drawn = (
        f"{len(data.codes):,} of the {data.num_codes:,} codes drawn (a seeded random subset); "
        if data.subsampled
        else f"All {data.num_codes:,} codes drawn; "
    )
    return (
        f"Projection: PCA of {vectors}. {drawn}PCA, cluster sizes and names use every code. "
        "Numbers mark the median position of each labelled cluster's codes. Colour: the code's ICD chapter, "
        "merged across ICD-9-CM and ICD-10-CM by body system."
    )


def plot_visit_attention(
    visit_attention: Sequence[float],
    visit_codes: Sequence[Sequence[str]],
    path: str | Path,
    title: str,
    predictions: Sequence[tuple[str, float]] = (),
    codes_shown: int = 4,
) -> Path:
    """`visit_attention_figure` written to `path` as a PNG."""
    return _save(visit_attention_figure(visit_attention, visit_codes, title, predictions, codes_shown), path)


def visit_attention_figure(
    visit_attention: Sequence[float],
    visit_codes: Sequence[Sequence[str]],
    title: str,
    predictions: Sequence[tuple[str, float]] = (),
    codes_shown: int = 4,
):
    """A matplotlib figure. Left: a bar per visit (oldest first) with its attention weight alpha, labelled
    with its first `codes_shown` codes and their short descriptions ("+N more" when the list is cut). Right,
    when given: the patient's top predictions as `(name, probability)` pairs, most probable on top.
    The caller closes it (`plt.close(fig)`)."""
    panels = 2 if predictions else 1
    width = max(5.0, 1.9 * len(visit_attention)) + (5.0 if predictions else 0.0)
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=(width, 4.6),
        squeeze=False,
        gridspec_kw={"width_ratios": [max(1, len(visit_attention)), 2][:panels]},
    )
    ax = axes[0, 0]
    positions = range(len(visit_attention))
    ax.bar(positions, visit_attention, color="C0")
    ax.set_xticks(
        list(positions),
        [_visit_label(i, codes, codes_shown) for i, codes in enumerate(visit_codes)],
        fontsize=6,
    )
    top = min(1.0, 1.3 * max(visit_attention, default=1.0))
    ax.set(ylabel="visit attention (alpha, sums to 1)", ylim=(0, top), title=title)
    if predictions:
        names, probabilities = zip(*predictions, strict=True)
        right = axes[0, 1]
        right.barh(range(len(names))[::-1], probabilities, color="C1")
        right.set_yticks(range(len(names))[::-1], [_short(name, 34) for name in names], fontsize=7)
        right.set(xlim=(0, 1), xlabel="predicted probability", title="top predictions for the next visit")
        for row, probability in zip(range(len(names))[::-1], probabilities, strict=True):
            right.text(probability + 0.01, row, f"{probability:.2f}", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def _visit_label(index: int, codes: Sequence[str], shown: int) -> str:
    """`visit 2` then one line per shown code (`401.9 Hypertension NOS`), then `+N more` if cut."""
    lines = [f"visit {index + 1}"] + [
        f"{code.split(':')[-1]} {_short(_description(code), 18)}" for code in codes[:shown]
    ]
    if len(codes) > shown:
        lines.append(f"+{len(codes) - shown} more")
    return "\n".join(lines)


def _description(code: str) -> str:
    try:
        return describe(code, "short")
    except (KeyError, ValueError):
        return ""


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
