"""`make demo` / `shark-hf demo`: the whole SHARK pipeline on the built-in MIMIC-III-like cohort.

built-in cohort (MIMIC-III CSVs) -> `build_cohort("mimic3")` -> the universal tokenizer shipped with shark-hf
(`UNIVERSAL_TOKENIZER`: every ICD-9-CM and ICD-10-CM code, L=4, K=128, no cohort input) and the random-ID
baseline over the same codes -> train both -> evaluate -> `out_dir/` with the models, tokenizers, cards,
`metrics.md` and pictures (the code map embeds the cohort's ICD-9 descriptions, cached).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from .cards import model_card
from .codes import cohort_codes
from .data.cohort import build_cohort
from .data.collator import VisitCollator
from .data.synthetic import write_synthetic_cohort
from .embeddings import embed_codes
from .metrics import HEADLINE_METRICS
from .modeling_shark import SharkForDiagnosisPrediction
from .plots import plot_code_map, plot_training_curves, plot_visit_attention
from .tokenization_shark import SharkTokenizer
from .training import TrainingArguments, train
from .universal import UNIVERSAL_TOKENIZER
from .utils import TOKENIZER_CONFIG_NAME, TOKENIZER_SUBFOLDER

logger = logging.getLogger(__name__)

RUNS = {"SHARK SID": "shark", "Random ID": "random_id"}


def run_demo(out_dir: str | Path = "demo_output", seed: int = 0, num_epochs: int = 30) -> dict:
    """Run the pipeline into `out_dir`; returns {run name: test metrics}."""
    start = time.perf_counter()
    # The model is tiny (d=16): on a 2-core CPU one intra-op thread trains it ~3x faster than two
    # (measured: 30 epochs in ~45 s instead of ~170 s): synchronising threads costs more than it saves.
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cohort_dir = _build_cohort(out, seed)
    tokenizers = _fit_tokenizers(out, cohort_dir, seed)
    results = {}
    for name, folder in RUNS.items():
        print(f"[demo] training {name} ...", flush=True)
        args = TrainingArguments(
            output_dir=str(out / folder),
            cohort=str(cohort_dir),
            tokenizer=str(tokenizers[folder]),
            seed=seed,
            num_epochs=num_epochs,
            overwrite_output_dir=True,  # the demo regenerates its folder
        )
        results[name] = train(args)
        _write_card(out / folder, out / folder / "README.md")
    _write_metrics_table(results, out / "metrics.md")
    histories = {name: _read_log(out / folder / "log.jsonl") for name, folder in RUNS.items()}
    plot_training_curves(histories, out / "training_curves.png")
    _plot_attention(out / "shark", cohort_dir, out / "visit_attention.png")
    elapsed = time.perf_counter() - start
    _print_summary(out, results, elapsed)
    return {name: r["test"] for name, r in results.items()}


def _build_cohort(out: Path, seed: int) -> Path:
    print("[demo] writing the built-in MIMIC-III-like cohort and building it with the mimic3 builder ...")
    raw = write_synthetic_cohort(out / "raw_mimic3", scale="mimic3", seed=seed)
    cohort, report = build_cohort("mimic3", root=raw, seed=seed, return_report=True)
    print(report)
    cohort_dir = out / "cohort"
    cohort.save_to_disk(str(cohort_dir))
    return cohort_dir


def _fit_tokenizers(out: Path, cohort_dir: Path, seed: int) -> dict[str, Path]:
    from datasets import load_from_disk

    cohort = load_from_disk(str(cohort_dir))
    codes = cohort_codes(cohort)
    print("[demo] loading the universal tokenizer (every ICD-9-CM and ICD-10-CM code) ...", flush=True)
    semantic = SharkTokenizer.from_pretrained(UNIVERSAL_TOKENIZER)
    random_ids = SharkTokenizer.random_ids(semantic.codes, num_levels=4, codebook_size=128, seed=seed)
    folders = {"shark": Path(UNIVERSAL_TOKENIZER), "random_id": out / "random_id_tokenizer"}
    random_ids.save_pretrained(folders["random_id"])
    (out / "tokenizer_report.txt").write_text(str(semantic.cluster_report()) + "\n")
    print(f"[demo] embedding {len(codes)} ICD-9 descriptions for the code map (cached) ...", flush=True)
    embeddings = embed_codes(codes)
    plot_code_map(
        semantic,
        out / "code_map.png",
        name="Universal tokenizer on the built-in cohort's codes",
        codes=embeddings.codes,
        vectors=embeddings.vectors,
        seed=seed,
    )
    return folders


def _write_card(model_dir: Path, path: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer_config = json.loads((model_dir / TOKENIZER_SUBFOLDER / TOKENIZER_CONFIG_NAME).read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    card = model_card(
        config,
        tokenizer_config,
        metrics,
        repo_id=str(model_dir),
        license="apache-2.0",  # the package's licence: synthetic data carries no data-use agreement
        gated=False,
        data_source="the built-in MIMIC-III-like synthetic cohort of shark-hf (no real patients)",
    )
    card.save(path)


def _write_metrics_table(results: dict[str, dict], path: Path) -> None:
    """The models' and the non-learned baselines' test metrics (in %), with the lift and convergence."""
    header = "| model | " + " | ".join(HEADLINE_METRICS) + " | test samples | best epoch | membership AUC |"
    lines = ["# Built-in MIMIC-III-like synthetic cohort: test metrics", "", header]
    lines.append("|---|" + "---|" * (len(HEADLINE_METRICS) + 3))
    for name, result in results.items():
        test = result["test"]
        auc = result["privacy"]["membership_inference_auc"]
        cells = [f"{100 * test[k]:.2f}" for k in HEADLINE_METRICS]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {test['num_samples']} | {result['best_epoch']} | {auc:.3f} |"
        )
    reference = next(iter(results.values()))  # every run has the same split, so the same baselines
    best = reference["best_baseline"]
    for name, baseline in reference["baselines"].items():
        cells = [f"{100 * baseline['test'][k]:.2f}" for k in HEADLINE_METRICS]
        mark = " (best on validation)" if name == best else ""
        lines.append(f"| baseline: {name}{mark} | {' | '.join(cells)} | | | |")
    lines.append("")
    for name, result in results.items():
        lift = result["lift_over_best_baseline"]["P@10"]
        lines.append(f"- {name}: test P@10 {100 * lift:+.2f} points over the best baseline ({best}).")
        if result["best_epoch_at_cap"]:
            epoch = result["best_epoch"]
            lines.append(f"  **Warning: its best epoch is the last allowed one ({epoch}): not converged.**")
    lines += [
        "",
        "Metrics in %, as in the paper's Table 2 (P@k visit-level, Acc@k code-level). Baselines "
        "(`shark_hf.baselines`) are fitted on the training split, settings chosen on validation.",
    ]
    path.write_text("\n".join(lines) + "\n")


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plot_attention(model_dir: Path, cohort_dir: Path, path: Path) -> None:
    from datasets import load_from_disk

    test = load_from_disk(str(cohort_dir))["test"]
    lengths = [len(v) for v in test["visits"]]
    row = test[max(range(len(lengths)), key=lambda i: (min(lengths[i], 6), -i))]
    tokenizer = SharkTokenizer.from_pretrained(model_dir / TOKENIZER_SUBFOLDER)
    model = SharkForDiagnosisPrediction.from_pretrained(model_dir).eval()
    with torch.no_grad():
        batch = VisitCollator.for_model(tokenizer, model.config)([{"visits": row["visits"]}])
        prediction = model.predict(batch, top_k=5)[0]
    title = f"Patient {row['patient_id']}: attention over {len(row['visits'])} visits"
    top = [(label["name"] or label["label"], label["probability"]) for label in prediction["labels"]]
    plot_visit_attention(prediction["visit_attention"], row["visits"], path, title, predictions=top)


def _print_summary(out: Path, results: dict[str, dict], elapsed: float) -> None:
    print()
    print((out / "metrics.md").read_text())
    print(f"Done in {elapsed:.0f} s. Everything is in {out}/:")
    for name, what in (
        ("shark/", "SHARK model (config.json, model.safetensors, README.md card, metrics.json, log.jsonl)"),
        ("shark/tokenizer/", "its tokenizer (codebooks.safetensors, tokenizer_config.json, README.md card)"),
        ("random_id/", "the random-ID baseline model"),
        ("metrics.md", "the two rows side by side"),
        ("training_curves.png", "loss and validation P@10 per epoch"),
        ("code_map.png", "the codes by ICD chapter, the largest level-1 clusters numbered and named"),
        ("visit_attention.png", "attention over the visits of one test patient"),
        ("tokenizer_report.txt", "clusters, purity, cross-chapter ID sharing (paper Tables 4-5)"),
    ):
        print(f"  {out / name}: {what}")
    print()
    print("Predict with it:")
    print('  echo \'[[["401.9", "250.00"], ["414.01", "428.0"]]]\' > patients.json')
    print(f"  .venv/bin/shark-hf predict --model {out / 'shark'} --input patients.json --top-k 5")
