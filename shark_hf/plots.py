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

from .codes import describe  # noqa: E402
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
