"""The paper's experiments on the built-in MIMIC-III-like cohort.

    python training/experiments/run_experiments.py --out training/experiments/results

- Table 2: SHARK semantic IDs vs random IDs (same L=4, K=128).
- Table 3 analogue: SHARK vs plain RETAIN (one learned embedding per code) vs two non-learned baselines:
  the most frequent training labels, and the labels of the patient's last visit.
- Embedding text strategies for the tokenizer: description / hierarchy / synonyms.
- Long-tail slices: test samples grouped by how frequent their target labels are in training.

Each learned model is trained with `shark_hf.training.train` for every seed (default 0, 1, 2); the tables
give mean ± sample standard deviation over seeds. Writes `RESULTS.md`, `results.json` and `p_at_k.png` into
`--out` (and `--results-md`, by default `training/experiments/RESULTS.md`).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from datasets import DatasetDict, load_from_disk

from shark_hf.codes import label_names, to_label
from shark_hf.data.cohort import build_cohort
from shark_hf.data.collator import VisitCollator
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.embeddings import embed_codes
from shark_hf.metrics import HEADLINE_METRICS, compute_metrics
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import REPORT_KS, TrainingArguments, make_dataloader, predict_scores, train
from shark_hf.utils import TOKENIZER_SUBFOLDER

STRATEGIES = ("description", "hierarchy", "synonyms")
SLICES = ("rare", "medium", "frequent")


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--out", type=Path, default=Path("training/experiments/results"))
    parser.add_argument("--results-md", type=Path, default=Path("training/experiments/RESULTS.md"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-patients", type=int, default=None, help="Smaller cohort for a quick check.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    cohort_dir = prepare_cohort(args.out, args.num_patients)
    cohort = load_from_disk(str(cohort_dir))
    labels = list(label_names("ccs"))
    tokenizers = fit_tokenizers(args.out, cohort, args.seeds)
    runs: dict[str, list[dict]] = {}
    for name, seed, tokenizer_dir in tokenizers:
        run_dir = args.out / "runs" / f"{slug(name)}_seed{seed}"
        print(f"training {name} (seed {seed}) ...", flush=True)
        t0 = time.perf_counter()
        result = train(
            TrainingArguments(
                output_dir=str(run_dir),
                cohort=str(cohort_dir),
                tokenizer=str(tokenizer_dir),
                seed=seed,
                num_epochs=args.epochs,
            )
        )
        scores, targets = test_scores(run_dir, cohort)
        result["slices"] = long_tail_slices(scores, targets, cohort, labels)
        result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        runs.setdefault(name, []).append(result)
    baselines = baseline_results(cohort, labels)
    summary = {
        "runs": {name: [strip(r) for r in results] for name, results in runs.items()},
        "baselines": baselines,
        "total_seconds": round(time.perf_counter() - start, 1),
        "command": "python training/experiments/run_experiments.py " + " ".join(argv or []),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_p_at_k(runs, baselines, args.out / "p_at_k.png")
    markdown = results_markdown(summary, cohort)
    (args.out / "RESULTS.md").write_text(markdown)
    args.results_md.write_text(markdown)
    print(markdown)


def prepare_cohort(out: Path, num_patients: int | None) -> Path:
    """The built-in MIMIC-III-like cohort (seed 0), built with the mimic3 builder and saved to disk."""
    cohort_dir = out / "cohort"
    if not (cohort_dir / "dataset_dict.json").is_file():
        raw = write_synthetic_cohort(out / "raw_mimic3", scale="mimic3", seed=0, num_patients=num_patients)
        build_cohort("mimic3", root=raw, seed=0).save_to_disk(str(cohort_dir))
    return cohort_dir


def fit_tokenizers(out: Path, cohort: DatasetDict, seeds: list[int]) -> list[tuple[str, int, Path]]:
    """(run name, seed, tokenizer folder) for every model to train."""
    codes = sorted({c for split in cohort.values() for visits in split["visits"] for v in visits for c in v})
    embeddings = {strategy: embed_codes(codes, text=strategy) for strategy in STRATEGIES}
    plans = []
    for seed in seeds:
        tokenizers = {
            "SHARK SID": SharkTokenizer.fit(embeddings["description"], 4, 128, seed=seed),
            "Random ID": SharkTokenizer.random_ids(codes, 4, 128, seed=seed),
            "RETAIN (learned)": SharkTokenizer.index(codes),
            "SHARK SID, hierarchy text": SharkTokenizer.fit(embeddings["hierarchy"], 4, 128, seed=seed),
            "SHARK SID, synonyms text": SharkTokenizer.fit(embeddings["synonyms"], 4, 128, seed=seed),
        }
        for name, tokenizer in tokenizers.items():
            folder = out / "tokenizers" / f"{slug(name)}_seed{seed}"
            tokenizer.save_pretrained(folder)
            plans.append((name, seed, folder))
    return plans


def test_scores(run_dir: Path, cohort: DatasetDict) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores `[N, C]` and multi-hot targets `[N, C]` of the run's best model on the test split."""
    model = SharkForDiagnosisPrediction.from_pretrained(run_dir).eval()
    tokenizer = SharkTokenizer.from_pretrained(run_dir / TOKENIZER_SUBFOLDER)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    loader = make_dataloader(cohort["test"], VisitCollator(tokenizer, labels), 512, False, 0)
    logits, targets, _ = predict_scores(model, loader, Accelerator())
    return torch.sigmoid(logits).numpy(), targets.numpy()


def multi_hot(label_lists: list[list[str]], labels: list[str]) -> np.ndarray:
    column = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(label_lists), len(labels)), dtype=np.float32)
    for row, sample in enumerate(label_lists):
        matrix[row, [column[label] for label in sample]] = 1.0
    return matrix


def train_frequencies(cohort: DatasetDict, labels: list[str]) -> np.ndarray:
    """`[C]` number of training samples whose target contains each label."""
    return multi_hot(cohort["train"]["labels"], labels).sum(axis=0)


def baseline_results(cohort: DatasetDict, labels: list[str]) -> dict[str, dict]:
    """Test metrics of the most-frequent-labels and last-visit-labels baselines (no seed dependence)."""
    targets = multi_hot(cohort["test"]["labels"], labels)
    frequency = train_frequencies(cohort, labels)
    prior = frequency / frequency.max()
    most_frequent = np.broadcast_to(prior, targets.shape)
    last_visit = multi_hot(
        [sorted({to_label(code) for code in visits[-1]}) for visits in cohort["test"]["visits"]], labels
    )
    # Labels of the last visit first, the rest by training frequency (ties inside each group alike).
    last_visit_scores = last_visit + 0.5 * prior
    return {
        name: {
            "test": compute_metrics(scores, targets, ks=REPORT_KS),
            "slices": long_tail_slices(scores, targets, cohort, labels),
        }
        for name, scores in (
            ("Most frequent labels", most_frequent),
            ("Last visit's labels", last_visit_scores),
        )
    }


def long_tail_slices(
    scores: np.ndarray, targets: np.ndarray, cohort: DatasetDict, labels: list[str]
) -> dict[str, dict]:
    """P@10 and Acc@10 on test samples grouped into terciles by the median training frequency of their labels.

    "rare" holds the third of test samples whose target labels are least frequent in training.
    """
    frequency = train_frequencies(cohort, labels)
    median_frequency = np.array([np.median(frequency[row.astype(bool)]) for row in targets])
    cuts = np.quantile(median_frequency, [1 / 3, 2 / 3])
    group = np.digitize(median_frequency, cuts, right=True)
    out = {}
    for index, name in enumerate(SLICES):
        rows = group == index
        metrics = compute_metrics(scores[rows], targets[rows], ks=(10, 20))
        out[name] = {k: metrics[k] for k in ("P@10", "Acc@10", "P@20", "Acc@20", "num_samples")}
    return out


def strip(result: dict) -> dict:
    keys = ("best_epoch", "train_seconds", "wall_seconds", "test", "privacy", "slices")
    return {k: result[k] for k in keys}


def mean_std(values: list[float]) -> str:
    values = 100 * np.asarray(values, dtype=np.float64)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.2f} ± {std:.2f}"


def table(rows: dict[str, list[dict]], keys=HEADLINE_METRICS, where=lambda r: r["test"]) -> list[str]:
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, results in rows.items():
        cells = [mean_std([where(r)[k] for r in results]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def results_markdown(summary: dict, cohort: DatasetDict) -> str:
    runs = summary["runs"]
    seeds = len(next(iter(runs.values())))
    baselines = {name: [result] for name, result in summary["baselines"].items()}
    sizes = ", ".join(f"{name} {len(split)}" for name, split in cohort.items())
    lines = [
        "# Experiments on the built-in MIMIC-III-like cohort",
        "",
        f"Command: `{summary['command'].strip()}` ({summary['total_seconds']:.0f} s in total on "
        f"{summary['machine']}). Cohort: {sizes} patients. Metrics in %, mean ± sample std over "
        f"{seeds} seeds (baselines are deterministic). Every model: L=4, K=128, d=16, hidden 16, "
        "AdamW lr 1e-3, batch 64, early stopping on validation P@10 (patience 5).",
        "",
        "The cohort is synthetic (its disease structure comes from public code-system knowledge, see "
        "`shark_hf/data/synthetic/`), so these numbers test the implementation and compare methods on it; "
        "they are not MIMIC results and are not comparable with the paper's tables.",
        "",
        "## Semantic IDs vs random IDs (paper Table 2)",
        "",
        *table({k: runs[k] for k in ("SHARK SID", "Random ID")}),
        "",
        "## SHARK vs RETAIN and simple baselines (paper Table 3 analogue)",
        "",
        *table({k: runs[k] for k in ("SHARK SID", "RETAIN (learned)")} | baselines),
        "",
        "## Embedding text for the tokenizer",
        "",
        *table(
            {
                "description": runs["SHARK SID"],
                "hierarchy (KEPT-style)": runs["SHARK SID, hierarchy text"],
                "synonyms (MSMN-style)": runs["SHARK SID, synonyms text"],
            }
        ),
        "",
        "## Long-tail slices (test samples by training frequency of their target labels, terciles)",
        "",
    ]
    everything = runs | baselines
    for slice_name in SLICES:
        lines += [f"### {slice_name}", ""]
        lines += table(everything, keys=("P@10", "Acc@10"), where=lambda r, s=slice_name: r["slices"][s])
        lines.append("")
    lines += ["## Wall time per training run (s)", ""]
    lines += ["| model | seconds (mean) | best epoch (mean) |", "|---|---|---|"]
    for name, results in runs.items():
        wall = np.mean([r["wall_seconds"] for r in results])
        lines.append(f"| {name} | {wall:.1f} | {np.mean([r['best_epoch'] for r in results]):.1f} |")
    lines += ["", "![P@k](results/p_at_k.png)", ""]
    return "\n".join(lines)


def plot_p_at_k(runs: dict[str, list[dict]], baselines: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, results in runs.items():
        values = np.array([[r["test"][f"P@{k}"] for k in REPORT_KS] for r in results]) * 100
        ax.errorbar(REPORT_KS, values.mean(0), yerr=values.std(0), marker="o", capsize=3, label=name)
    for name, result in baselines.items():
        values = [100 * result["test"][f"P@{k}"] for k in REPORT_KS]
        ax.plot(REPORT_KS, values, ls="--", marker=".", label=name)
    ax.set(xlabel="k", ylabel="P@k (%)", title="Test P@k on the built-in MIMIC-III-like cohort")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
