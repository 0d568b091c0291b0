"""Pictures of a SHARK run: training curves, a 2-D map of the codes, attention over a patient's visits.

Every function writes one PNG (atomically) and returns its path. matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .utils import atomic_write  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
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
    vectors: torch.Tensor, first_level_ids: torch.Tensor, chapters: Sequence[str], path: str | Path
) -> Path:
    """The codes' embeddings projected on their first two principal components.

    Args:
        vectors: `[N, D]` code embeddings.
        first_level_ids: `[N]` first semantic ID of each code (the colour).
        chapters: `N` chapter names (the marker: the 9 largest chapters get their own, the rest "other").
    """
    centered = vectors.double() - vectors.double().mean(dim=0)
    _, _, v = torch.linalg.svd(centered, full_matrices=False)
    xy = (centered @ v[:2].T).numpy()
    largest = [c for c, _ in Counter(chapters).most_common(len(MARKERS) - 1)]
    fig, ax = plt.subplots(figsize=(9, 7))
    cmap = plt.get_cmap("hsv")
    num_ids = int(first_level_ids.max()) + 1
    for marker, chapter in zip(MARKERS, [*largest, None], strict=False):
        rows = [i for i, c in enumerate(chapters) if (c == chapter if chapter else c not in largest)]
        if not rows:
            continue
        colors = [cmap(int(first_level_ids[i]) / num_ids) for i in rows]
        label = (chapter or "other chapters")[:48]
        ax.scatter(
            xy[rows, 0], xy[rows, 1], c=colors, marker=marker, s=9, alpha=0.7, linewidths=0, label=label
        )
    ax.set(
        xlabel="PC 1",
        ylabel="PC 2",
        title="Codes by first-level semantic ID (colour) and ICD chapter (marker)",
    )
    legend = ax.legend(fontsize=6, loc="best", markerscale=2)
    for handle in legend.legend_handles:
        handle.set_color("black")
    return _save(fig, path)


def plot_visit_attention(
    visit_attention: Sequence[float], visit_codes: Sequence[Sequence[str]], path: str | Path, title: str
) -> Path:
    """A bar per visit (oldest first) with its attention weight alpha, labelled with its first codes."""
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(visit_attention)), 3.8))
    positions = range(len(visit_attention))
    ax.bar(positions, visit_attention, color="C0")
    labels = [f"visit {i + 1}\n" + "\n".join(codes[:3]) for i, codes in enumerate(visit_codes)]
    ax.set_xticks(list(positions), labels, fontsize=7)
    ax.set(ylabel="visit attention (alpha)", ylim=(0, 1), title=title)
    return _save(fig, path)
