"""The paper's Tables 2-3 on the built-in cohort (or a real copy), with heuristics, CIs and paired tests.

    python training/experiments/run_experiments.py --out /tmp/exp          # built-in, MIMIC-III scale
    python training/experiments/run_experiments.py --scale mimic4 --num-patients 20000 --seeds 0 1 2
    python training/experiments/run_experiments.py --mimic3 /data/mimic-iii-1.4      # a real copy
    python training/experiments/run_experiments.py --mimic4 /data/mimiciv/2.2   |   --meds /data/meds

Rows (every learned model trained with `shark_hf.training.train` defaults, one run per seed):
- SHARK default: semantic IDs + the repeat head (`repeat_head=True`, the training default);
- SHARK paper-exact: semantic IDs, the paper's head only (`--repeat_head false`);
- Random ID (default head) and Random ID (paper-exact): L=4 uniform random ids, K=128 (paper Table 2);
- RETAIN per-code: one learned vector per code (paper-exact head); codes never seen in the training split get
  the zero vector (their rows get no gradient and are zeroed after training);
- three non-learned heuristics: most frequent training labels; the last visit's labels (then frequency);
  history frequency with recency decay plus a population prior (decay and prior weight chosen on validation).
Tables give the mean and the 95% t-interval over seeds; paired t-tests over seeds compare SID vs Random
(both heads) and SHARK default vs the best heuristic (chosen on validation P@10). Long-tail slices exclude
samples with empty labels (counted) and split the rest into terciles of their labels' training frequency.
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
from scipy import stats

from shark_hf.baselines import evaluate_baselines, fit_baselines, multi_hot
from shark_hf.data.cohort import build_cohort
from shark_hf.data.collator import VisitCollator
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.embeddings import embed_codes
from shark_hf.evaluation import REPORT_KS, make_dataloader, predict_scores
from shark_hf.metrics import HEADLINE_METRICS as HEADLINE
from shark_hf.metrics import compute_metrics
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import TrainingArguments, resolve_label_names, train

SLICES = ("rare", "medium", "frequent")
MODELS = {  # name: (tokenizer kind, repeat head)
    "SHARK default (SID + repeat head)": ("semantic", True),
    "SHARK paper-exact (SID)": ("semantic", False),
    "Random ID (repeat head)": ("random", True),
    "Random ID (paper-exact)": ("random", False),
    "RETAIN per-code (learned)": ("index", False),
}
DEFAULT, PAPER = "SHARK default (SID + repeat head)", "SHARK paper-exact (SID)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("training/experiments/results"))
    parser.add_argument("--results-md", type=Path, default=None, help="Also write the markdown here.")
    parser.add_argument(
        "--scale", choices=("mimic3", "mimic4"), default="mimic3", help="Built-in cohort scale."
    )
    parser.add_argument("--num-patients", type=int, default=None, help="Subsample the built-in cohort.")
    parser.add_argument("--mimic3", type=Path, help="A real MIMIC-III copy (ADMISSIONS + DIAGNOSES_ICD).")
    parser.add_argument("--mimic4", type=Path, help="A real MIMIC-IV copy (hosp/).")
    parser.add_argument("--meds", type=Path, help="A MEDS dataset.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="Subset of the model rows.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    cohort_dir, source = prepare_cohort(args)
    cohort = load_from_disk(str(cohort_dir))
    labels = list(resolve_label_names(cohort, "ccs"))
    codes = sorted({c for split in cohort.values() for visits in split["visits"] for v in visits for c in v})
    embeddings = embed_codes(codes, text="description")
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for name in args.models:
            kind, repeat = MODELS[name]
            tokenizer = make_tokenizer(kind, codes, embeddings, seed)
            tokenizer_dir = args.out / "tokenizers" / f"{kind}_seed{seed}"
            if not tokenizer_dir.is_dir():
                tokenizer.save_pretrained(tokenizer_dir)
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
                    repeat_head=repeat,
                    overwrite_output_dir=True,  # a rerun of the experiments replaces its runs
                )
            )
            scores, targets = test_scores(run_dir, cohort)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                torch.from_numpy(scores), torch.from_numpy(targets)
            )
            result["test"] = {"loss": loss.item(), **compute_metrics(scores, targets, ks=REPORT_KS)}
            result["slices"] = long_tail_slices(scores, targets, cohort, labels)
            result["wall_seconds"] = round(time.perf_counter() - t0, 1)
            runs.setdefault(name, []).append(result)
    heuristics = heuristic_results(cohort, labels)
    summary = {
        "source": source,
        "cohort": {name: len(split) for name, split in cohort.items()},
        "runs": {name: [strip(r) for r in results] for name, results in runs.items()},
        "heuristics": heuristics,
        "total_seconds": round(time.perf_counter() - start, 1),
        "command": "python training/experiments/run_experiments.py " + " ".join(argv or []),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = results_markdown(summary)
    (args.out / "RESULTS.md").write_text(markdown)
    if args.results_md:
        args.results_md.write_text(markdown)
    print(markdown)


def prepare_cohort(args: argparse.Namespace) -> tuple[Path, str]:
    """The cohort folder: a real copy when given (--mimic3 / --mimic4 / --meds), else the built-in one."""
    cohort_dir = args.out / "cohort"
    real = [(name, getattr(args, name)) for name in ("mimic3", "mimic4", "meds") if getattr(args, name)]
    if len(real) > 1:
        raise SystemExit("give at most one of --mimic3, --mimic4, --meds")
    if real:
        source = f"{real[0][0]} at {real[0][1]}"
    else:
        source = f"built-in synthetic {args.scale} cohort (seed 0, {args.num_patients or 'all'} patients)"
    if not (cohort_dir / "dataset_dict.json").is_file():
        if real:
            cohort = build_cohort(real[0][0], root=real[0][1], seed=0)
        else:
            raw = write_synthetic_cohort(
                args.out / "raw", scale=args.scale, seed=0, num_patients=args.num_patients
            )
            cohort = build_cohort(args.scale, root=raw, seed=0)
        cohort.save_to_disk(str(cohort_dir))
    return cohort_dir, source


def make_tokenizer(kind: str, codes: list[str], embeddings, seed: int) -> SharkTokenizer:
    if kind == "semantic":
        return SharkTokenizer.fit(embeddings, 4, 128, seed=seed)
    if kind == "random":
        return SharkTokenizer.random_ids(codes, 4, 128, seed=seed)
    return SharkTokenizer.index(codes)


def test_scores(run_dir: Path, cohort: DatasetDict) -> tuple[np.ndarray, np.ndarray]:
    """Logits `[N, C]` and multi-hot targets `[N, C]` of the run's saved model on the test split."""
    model = SharkForDiagnosisPrediction.from_pretrained(run_dir).eval()
    tokenizer = SharkTokenizer.from_pretrained(run_dir / "tokenizer")
    loader = make_dataloader(cohort["test"], VisitCollator.for_model(tokenizer, model.config), 512, False, 0)
    logits, targets, _ = predict_scores(model, loader, Accelerator())
    return logits.numpy(), targets.numpy()


HEURISTIC_NAMES = {
    "most_frequent": "Most frequent labels",
    "last_visit": "Last visit's labels",
    "history": "History frequency",
}


def heuristic_results(cohort: DatasetDict, labels: list[str]) -> dict[str, dict]:
    """Test metrics of `shark_hf.baselines` (the history baseline's settings chosen on validation)."""
    fitted = fit_baselines(cohort["train"], cohort["validation"], labels, "ccs")
    report = evaluate_baselines(fitted, cohort, ("validation", "test"), ks=REPORT_KS)
    targets = multi_hot(cohort["test"]["labels"], labels)
    out = {}
    for name, result in report["baselines"].items():
        settings = result["settings"]
        title = HEURISTIC_NAMES[name] + (
            f" (decay {settings['decay']}, prior x{settings['prior_weight']})" if settings else ""
        )
        scores = fitted.scores(name, cohort["test"])
        out[title] = {
            "test": result["test"],
            "validation_P@10": result["validation"]["P@10"],
            "slices": long_tail_slices(scores, targets, cohort, labels),
        }
    return out


def long_tail_slices(scores: np.ndarray, targets: np.ndarray, cohort: DatasetDict, labels: list[str]) -> dict:
    """P@10 / Acc@10 on terciles of test samples by the median training frequency of their labels; samples
    with empty labels are excluded (counted under "empty")."""
    frequency = multi_hot(cohort["train"]["labels"], labels).sum(axis=0)
    nonempty = targets.sum(1) > 0
    median = np.array([np.median(frequency[row.astype(bool)]) for row in targets[nonempty]])
    group = np.digitize(median, np.quantile(median, [1 / 3, 2 / 3]), right=True)
    out = {"empty": {"num_samples": int((~nonempty).sum())}}
    for index, name in enumerate(SLICES):
        rows = np.flatnonzero(nonempty)[group == index]
        metrics = compute_metrics(scores[rows], targets[rows], ks=(10, 20))
        out[name] = {k: metrics[k] for k in ("P@10", "Acc@10", "num_samples")}
    return out


def strip(result: dict) -> dict:
    keys = ("best_epoch", "best_epoch_at_cap", "epochs", "train_seconds", "wall_seconds", "test", "slices")
    out = {k: result[k] for k in keys}
    out["validation"] = {k: result["validation"][k] for k in ("P@10", "loss")}
    out["test_loss"] = result["test"].get("loss")
    return out


def ci(values) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (0 for one value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def fmt(values, scale: float = 100.0, digits: int = 2) -> str:
    """`mean ± half-width` of the 95% t-interval of `values x scale`."""
    mean, half = ci(np.asarray(values, dtype=np.float64) * scale)
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def paired(a: list[float], b: list[float]) -> str:
    """Mean difference a - b (points), its 95% t-interval and the paired t-test p-value."""
    diff = 100 * (np.asarray(a) - np.asarray(b))
    mean, half = ci(diff)
    p = stats.ttest_1samp(diff, 0.0).pvalue if len(diff) > 1 else float("nan")
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}], p = {p:.2g}"


def results_markdown(summary: dict) -> str:
    runs, heuristics = summary["runs"], summary["heuristics"]
    seeds = len(next(iter(runs.values())))
    best_heuristic = max(heuristics, key=lambda n: heuristics[n]["validation_P@10"])
    rows = {name: [r["test"] for r in results] for name, results in runs.items()}
    rows |= {name: [h["test"]] for name, h in heuristics.items()}
    lines = [
        f"Source: {summary['source']}; samples {summary['cohort']}. Command: `{summary['command'].strip()}` "
        f"({summary['total_seconds']:.0f} s on {summary['machine']}). Metrics in %, mean ± half-width of the "
        f"95% t-interval over {seeds} seeds (heuristics are deterministic).",
        "",
        "| model | " + " | ".join(HEADLINE) + " | test loss | best epoch | epochs |",
        "|---|" + "---|" * (len(HEADLINE) + 3),
    ]
    for name, results in rows.items():
        cells = [fmt([r[k] for r in results]) for k in HEADLINE]
        run = runs.get(name)
        extra = (
            [
                f"{np.mean([r['test_loss'] for r in run]):.4f}",
                f"{np.mean([r['best_epoch'] for r in run]):.1f}",
                f"{np.mean([r['epochs'] for r in run]):.1f}",
            ]
            if run
            else ["", "", ""]
        )
        lines.append(f"| {name} | " + " | ".join(cells + extra) + " |")
    lines += ["", "Paired comparisons on test P@10 (seed-paired; difference in points, 95% CI, t-test):", ""]
    p10 = {name: [r["test"]["P@10"] for r in results] for name, results in runs.items()}
    pairs = [
        ("SID vs Random ID (repeat head)", DEFAULT, "Random ID (repeat head)"),
        ("SID vs Random ID (paper-exact)", PAPER, "Random ID (paper-exact)"),
        ("SHARK default vs SHARK paper-exact", DEFAULT, PAPER),
    ]
    for title, a, b in pairs:
        if a in p10 and b in p10:
            lines.append(f"- {title}: {paired(p10[a], p10[b])}")
    if DEFAULT in p10:
        h = heuristics[best_heuristic]["test"]["P@10"]
        lines.append(
            f"- SHARK default vs the best heuristic on validation ({best_heuristic}): "
            f"{paired(p10[DEFAULT], [h] * len(p10[DEFAULT]))}"
        )
    at_cap = sum(r["best_epoch_at_cap"] for results in runs.values() for r in results)
    lines += ["", f"Runs whose best epoch is the cap: {at_cap} of {sum(map(len, runs.values()))}.", ""]
    empty = next(iter(runs.values()))[0]["slices"]["empty"]["num_samples"]
    lines += [f"Long-tail slices, test P@10 (terciles; {empty} test samples with empty labels excluded):", ""]
    lines += ["| model | " + " | ".join(SLICES) + " |", "|---|" + "---|" * len(SLICES)]
    for name, results in (runs | {n: [h] for n, h in heuristics.items()}).items():
        lines.append(
            f"| {name} | " + " | ".join(fmt([r["slices"][s]["P@10"] for r in results]) for s in SLICES) + " |"
        )
    return "\n".join(lines) + "\n"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
