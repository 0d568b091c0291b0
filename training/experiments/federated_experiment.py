"""Federated training across three hospitals against each hospital alone and all data pooled (issue 13).

    python training/experiments/federated_experiment.py --work /tmp/fed --out /tmp/fed/FEDERATED.md
    python training/experiments/federated_experiment.py --num-patients 6000 --seeds 0 1 2 --rounds 20
    python training/experiments/federated_experiment.py --seeds 0 --rows dp --dp-clipping-norm 5

The built-in MIMIC-IV-scale synthetic cohort (`--num-patients` patients, seed 0; its 7:1:2 patient split)
is divided by patient into three hospitals of unequal size: C holds every patient coded in ICD-10 only
(~27%), the other patients go 2:1 to A and B (mixed ICD-9 / ICD-10). Every site keeps the cohort's split,
so the three hospitals' test splits together are the pooled test split, on which every row is scored.

Rows (universal tokenizer, CCS labels, `shark_hf.training` defaults: lr 1e-2, batch 64, hidden 16):
- each hospital alone: `train` on its cohort (best epoch on its own validation P@10, patience 5);
- FedAvg and FedProx (mu `--proximal-mu`): `shark_hf.federated.simulate`, one local epoch per round,
  `--rounds` rounds, best round on pooled validation P@10; `--rows dp`: FedAvg with client-side
  fixed clipping and server noise (`--dp-clipping-norm`, `--dp-noise-multiplier`);
- pooled: `train` on the whole cohort (the upper reference).
Mean and 95% t-interval over seeds; the paired difference of FedAvg against pooled and against the best
hospital alone (paired t-test over seeds); seconds per epoch (alone, pooled) or per round (federated:
training and evaluation at every site, in one process); the per-site membership-inference AUC.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets import DatasetDict, load_from_disk
from run_experiments import HEADLINE, fmt, paired, slug  # this folder: the shared statistics

from shark_hf.data.cohort import build_cohort
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.evaluation import evaluate_model
from shark_hf.federated import FederatedArguments, simulate
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import TrainingArguments, train
from shark_hf.universal import UNIVERSAL_TOKENIZER

HOSPITALS = ("A", "B", "C")
ROWS = ("alone", "fedavg", "fedprox", "dp", "pooled")
POOLED = "Pooled (all data in one place)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/shark_federated"), help="Cohorts and runs.")
    parser.add_argument("--out", type=Path, default=None, help="Write the markdown table here.")
    parser.add_argument("--num-patients", type=int, default=6000, help="Patients of the built-in cohort.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="Epoch cap of the single-site runs.")
    parser.add_argument("--rounds", type=int, default=30, help="Round cap of the federated runs.")
    parser.add_argument("--proximal-mu", type=float, default=0.01)
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=ROWS,
        default=["alone", "fedavg", "fedprox", "pooled"],
        help="Which rows to run (dp: FedAvg with client-side clipping and server noise).",
    )
    parser.add_argument("--dp-clipping-norm", type=float, default=5.0)
    parser.add_argument("--dp-noise-multiplier", type=float, default=0.01)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    start = time.perf_counter()
    sites, pooled = prepare_sites(args.work, args.num_patients)
    cohort = load_from_disk(str(pooled))
    tokenizer = SharkTokenizer.from_pretrained(UNIVERSAL_TOKENIZER)
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for hospital, site in zip(HOSPITALS, sites, strict=True) if "alone" in args.rows else ():
            run = single_site(site, args.work / "runs" / f"alone_{hospital}_seed{seed}", seed, args.epochs)
            run["test"] = evaluate_model(run.pop("model"), tokenizer, cohort["test"])  # the pooled test
            rows.setdefault(f"Hospital {hospital} alone", []).append(run)
        federated = {}
        if "fedavg" in args.rows:
            federated["FedAvg"] = {"strategy": "fedavg"}
        if "fedprox" in args.rows:
            federated[f"FedProx (mu {args.proximal_mu})"] = {"strategy": "fedprox"}
        if "dp" in args.rows:
            name = f"FedAvg + DP (clip {args.dp_clipping_norm}, noise x{args.dp_noise_multiplier})"
            federated[name] = {
                "strategy": "fedavg",
                "dp_clipping_norm": args.dp_clipping_norm,
                "dp_noise_multiplier": args.dp_noise_multiplier,
            }
        for name, options in federated.items():
            output = args.work / "runs" / f"{slug(name)}_seed{seed}"
            print(f"{name} (seed {seed}) ...", flush=True)
            t0 = time.perf_counter()
            result = simulate(
                sites,
                FederatedArguments(
                    output_dir=str(output),
                    num_rounds=args.rounds,
                    proximal_mu=args.proximal_mu,
                    seed=seed,
                    overwrite_output_dir=True,
                    **options,
                ),
            )
            rows.setdefault(name, []).append(
                {
                    "test": result["test"],
                    "best": result["best_round"],
                    "at_cap": result["best_round_at_cap"],
                    "seconds_per_step": float(np.mean(result["federated"]["seconds_per_round"])),
                    "wall_seconds": time.perf_counter() - t0,
                    "audit": {
                        n: a["membership_inference_auc"] for n, a in result["privacy"]["sites"].items()
                    },
                }
            )
        if "pooled" in args.rows:
            run = single_site(pooled, args.work / "runs" / f"pooled_seed{seed}", seed, args.epochs)
            run.pop("model")
            rows.setdefault(POOLED, []).append(run)
    summary = {
        "source": f"built-in synthetic mimic4 cohort (seed 0, {args.num_patients} patients)",
        "sites": site_sizes(sites),
        "pooled_test_samples": len(cohort["test"]),
        "rows": rows,
        "seeds": args.seeds,
        "options": {k: str(v) for k, v in vars(args).items()},
        "total_seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    (args.work / "federated_results.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    markdown = results_markdown(summary, sys.argv[1:] if argv is None else argv)
    if args.out:
        args.out.write_text(markdown)
    print(markdown)


def prepare_sites(work: Path, num_patients: int) -> tuple[list[Path], Path]:
    """The pooled cohort folder and the three hospitals' cohort folders (built once, then reused)."""
    pooled = work / "cohort"
    if not (pooled / "dataset_dict.json").is_file():
        raw = write_synthetic_cohort(work / "raw", scale="mimic4", seed=0, num_patients=num_patients)
        build_cohort("mimic4", root=raw, seed=0).save_to_disk(str(pooled))
    cohort = load_from_disk(str(pooled))
    sites = [work / f"hospital_{h}" for h in HOSPITALS]
    if not all((site / "dataset_dict.json").is_file() for site in sites):
        for site, part in zip(sites, split_hospitals(cohort), strict=True):
            part.save_to_disk(str(site))
    return sites, pooled


def split_hospitals(cohort: DatasetDict) -> list[DatasetDict]:
    """A, B, C: C every patient whose codes are all ICD-10-CM; the others 2:1 to A and B by a seeded draw
    over patient ids. Each hospital keeps the cohort's train / validation / test split of its patients."""
    rng = np.random.default_rng(0)
    parts: list[dict] = [{}, {}, {}]
    for name, split in cohort.items():
        icd10 = [all(c.startswith("ICD10CM:") for v in visits for c in v) for visits in split["visits"]]
        patients = sorted({p for p, only10 in zip(split["patient_id"], icd10, strict=True) if not only10})
        to_a = set(rng.permutation(patients)[: round(len(patients) * 2 / 3)].tolist())
        site = [
            2 if only10 else 0 if p in to_a else 1
            for p, only10 in zip(split["patient_id"], icd10, strict=True)
        ]
        for index in range(3):
            parts[index][name] = split.select([i for i, s in enumerate(site) if s == index])
    return [DatasetDict(part) for part in parts]


def site_sizes(sites: list[Path]) -> dict:
    return {site.name: {k: len(v) for k, v in load_from_disk(str(site)).items()} for site in sites}


def single_site(cohort: Path, output: Path, seed: int, epochs: int) -> dict:
    """`train` with the defaults on one cohort folder; the run's summary and its best model."""
    print(f"train {cohort.name} (seed {seed}) ...", flush=True)
    t0 = time.perf_counter()
    result = train(
        TrainingArguments(
            output_dir=str(output),
            cohort=str(cohort),
            seed=seed,
            num_epochs=epochs,
            overwrite_output_dir=True,
        )
    )
    return {
        "test": result["test"],
        "best": result["best_epoch"],
        "at_cap": result["best_epoch_at_cap"],
        "seconds_per_step": result["train_seconds"] / result["epochs"],
        "wall_seconds": time.perf_counter() - t0,
        "audit": {"all": result["privacy"]["membership_inference_auc"]},
        "model": SharkForDiagnosisPrediction.from_pretrained(output),
    }


def results_markdown(summary: dict, argv: list[str] | None) -> str:
    rows, seeds = summary["rows"], len(summary["seeds"])
    sizes = ", ".join(
        f"{name}: {s['train']} / {s['validation']} / {s['test']}" for name, s in summary["sites"].items()
    )
    lines = [
        f"Source: {summary['source']}; hospitals (train / validation / test samples) {sizes}; "
        "hospital_C codes in ICD-10-CM only. Every row is scored on the pooled test split "
        f"({summary['pooled_test_samples']} samples). Metrics in %, mean ± half-width of the 95% "
        f"t-interval over {seeds} seeds. Command: "
        f"`python training/experiments/federated_experiment.py {' '.join(argv or [])}` "
        f"({summary['total_seconds']:.0f} s on {summary['machine']}).",
        "",
        "| model | "
        + " | ".join(HEADLINE)
        + " | best epoch / round (at cap) | s per epoch / round | MIA AUC |",
        "|---|" + "---|" * (len(HEADLINE) + 3),
    ]
    for name, runs in rows.items():
        metrics = " | ".join(fmt([r["test"][k] for r in runs]) for k in HEADLINE)
        best = f"{np.mean([r['best'] for r in runs]):.1f} ({sum(r['at_cap'] for r in runs)}/{len(runs)})"
        seconds = fmt([r["seconds_per_step"] for r in runs], scale=1.0, digits=1)
        audit = fmt([np.mean(list(r["audit"].values())) for r in runs], scale=1.0, digits=3)
        lines.append(f"| {name} | {metrics} | {best} | {seconds} | {audit} |")
    if POOLED not in rows or not any(name.endswith("alone") for name in rows):
        return "\n".join(lines) + "\n"
    pooled = [r["test"]["P@10"] for r in rows[POOLED]]
    alone = {name: [r["test"]["P@10"] for r in runs] for name, runs in rows.items() if name.endswith("alone")}
    best_alone = max(alone, key=lambda name: np.mean(alone[name]))
    lines += ["", "Paired differences in test P@10 (points; 95% t-interval; paired t-test over seeds):", ""]
    for name, runs in rows.items():
        if not name.startswith(("FedAvg", "FedProx")):
            continue
        p10 = [r["test"]["P@10"] for r in runs]
        ratio = fmt(np.asarray(p10) / np.asarray(pooled), digits=1)
        above = all(all(f > a for f, a in zip(p10, other, strict=True)) for other in alone.values())
        lines.append(
            f"- {name}: vs pooled {paired(p10, pooled)} ({ratio}% of pooled); vs {best_alone} "
            f"{paired(p10, alone[best_alone])}; above every hospital alone on every seed: {above}."
        )
    lines += [
        "",
        "A best epoch or round equal to its cap (counted in brackets) means that run had not finished "
        "improving. MIA AUC: the loss-threshold membership-inference attack's ROC AUC (0.5 = chance), "
        "training against test samples: per site for the federated models (mean over sites), on the run's "
        "own cohort otherwise.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
