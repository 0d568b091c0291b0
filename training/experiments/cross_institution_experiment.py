"""Cross-institution transfer with its controls (issue 12) on the built-in MIMIC-IV-scale cohort.

    OMP_NUM_THREADS=1 python training/experiments/cross_institution_experiment.py --out /tmp/crossinst \\
        --seeds 0 1 2 3 4 --results-md training/experiments/RESULTS.md

Hospitals. One synthetic MIMIC-IV cohort (`write_synthetic_cohort(scale="mimic4", seed=0, num_patients=N)`:
ICD-9-CM admissions before 2015-10-01, ICD-10-CM after) is split by patient. Hospital B is `--patients-b`
patients drawn (seed 0) from those with >= 2 ICD-10-CM admissions and keeps only their ICD-10-CM admissions;
hospital A is every other patient and keeps only their ICD-9-CM admissions (`keep_admissions` of
examples/cross_institution.py). Each folder goes through `build_cohort("mimic4", seed=0)`: 70/10/20 patient
splits, one sample per patient (its last visit's CCS labels from the visits before). No patient is in both.

Rows, every one evaluated on B's test split, every model selected on validation P@10 (never on test):
- B from scratch: `train` on B's cohort;
- B fine-tuned from A: `train(init_from=A's model)` on B's cohort;
- A zero-shot on B: A's model (trained on A's cohort, selected on A's validation) on B's test split;
- pooled A+B: `train` on A's and B's training splits together, selected on B's validation split;
each with the universal tokenizer (`shark_hf.UNIVERSAL_TOKENIZER`) and with cohort-fitted tokenizers (L and
K from --num-levels / --codebook-size, fitted per seed): fitted on A's codes, with the codes of B that A never
saw placed with A's codebooks (`SharkTokenizer.add_codes`, as the example does) for the fine-tuned, zero-shot
and pooled rows; fitted on B's codes for B from scratch. A and pooled train with the `train` defaults; the two
rows trained on B alone pick their learning rate per seed from --learning-rates on B's validation P@10.
Beside them: the non-learned heuristics of `shark_hf.baselines`, fitted on B's training split (the best one
chosen on B's validation split). Means with 95% t-intervals over seeds; seed-paired differences for the key
comparisons. Runs already finished under --out are reused. Writes OUT/results.json and OUT/RESULTS.md, and
with --results-md splices the section into that file between markers.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict, concatenate_datasets, load_from_disk

from shark_hf.codes import cohort_codes
from shark_hf.data.cohort import build_cohort
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.embeddings import embed_codes
from shark_hf.evaluation import evaluate_model
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import TrainingArguments, resolve_label_names, train
from shark_hf.universal import UNIVERSAL_TOKENIZER

# keep_admissions and read_csv come from examples/cross_institution.py; run_experiments and collision_remedy
# from this folder (on the path when this file runs as a script).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from collision_remedy import write_section  # noqa: E402
from cross_institution import keep_admissions, read_csv  # noqa: E402
from run_experiments import HEADLINE, ci, fmt, heuristic_results, paired  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- cross-institution:begin -->", "<!-- cross-institution:end -->"
TOKENIZERS = {"universal": "universal", "cohort": "cohort-fitted"}
ROWS = {  # row: title
    "scratch": "B from scratch",
    "finetuned": "B fine-tuned from A",
    "zeroshot": "A zero-shot on B",
    "pooled": "pooled A+B",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("cross_institution_experiment"), help="Work folder.")
    parser.add_argument("--results-md", type=Path, default=None, help="Splice the section into this file.")
    parser.add_argument("--num-patients", type=int, default=6000, help="Patients of the MIMIC-IV cohort.")
    parser.add_argument("--patients-b", type=int, default=500, help="Hospital B's patients (ICD-10-CM).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=30, help="Epoch cap of every run (early stopping).")
    parser.add_argument(
        "--learning-rates",
        type=float,
        nargs="+",
        default=[1e-3, 1e-2],
        help="Candidates for the runs on B alone (scratch, fine-tuned), chosen on B's validation P@10.",
    )
    parser.add_argument("--num-levels", type=int, default=4, help="Cohort-fitted tokenizers: levels L.")
    parser.add_argument("--codebook-size", type=int, default=128, help="Cohort-fitted tokenizers: K.")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------ hospitals


def build_hospitals(out: Path, num_patients: int, patients_b: int) -> dict[str, DatasetDict]:
    """Cohorts "A", "B" and "pooled" (A's and B's training splits, B's validation and test), saved under
    `out/cohorts/` (reused when there)."""
    folders = {name: out / "cohorts" / name for name in ("A", "B", "pooled")}
    if not all((folder / "dataset_dict.json").is_file() for folder in folders.values()):
        raw = write_synthetic_cohort(out / "raw" / "mimic4", "mimic4", seed=0, num_patients=num_patients)
        subjects_a, subjects_b = split_patients(raw, patients_b)
        cohorts = {}
        for name, version, subjects in (("A", "9", subjects_a), ("B", "10", subjects_b)):
            root = out / "raw" / name
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(raw, root)
            keep_admissions(root, version, subjects)
            cohorts[name] = build_cohort("mimic4", root=root, seed=0)
        b = cohorts["B"]
        cohorts["pooled"] = DatasetDict(
            train=concatenate_datasets([cohorts["A"]["train"], b["train"]]),
            validation=b["validation"],
            test=b["test"],
        )
        for name, cohort in cohorts.items():
            cohort.save_to_disk(str(folders[name]))
    cohorts = {name: load_from_disk(str(folder)) for name, folder in folders.items()}
    shared = patients(cohorts["A"]) & patients(cohorts["B"])
    if shared:
        raise RuntimeError(f"{len(shared)} patients are in both hospitals")
    return cohorts


def split_patients(raw: Path, patients_b: int) -> tuple[set[str], set[str]]:
    """(A's subjects, B's subjects): B is `patients_b` subjects drawn with seed 0 from those with >= 2
    ICD-10-CM admissions in `raw`'s `hosp/diagnoses_icd.csv`; A is every other subject."""
    diagnoses = read_csv(raw / "hosp" / "diagnoses_icd.csv")
    admissions = {(row["subject_id"], row["hadm_id"]) for row in diagnoses if row["icd_version"] == "10"}
    candidates = sorted(
        (subject for subject, n in Counter(s for s, _ in admissions).items() if n >= 2), key=int
    )
    if len(candidates) < patients_b:
        raise ValueError(
            f"--patients-b {patients_b}: only {len(candidates)} patients have >= 2 ICD-10-CM admissions"
        )
    chosen = np.random.default_rng(0).choice(len(candidates), size=patients_b, replace=False)
    subjects_b = {candidates[i] for i in chosen}
    return {row["subject_id"] for row in diagnoses} - subjects_b, subjects_b


def patients(cohort: DatasetDict) -> set[str]:
    return {patient for split in cohort.values() for patient in split["patient_id"]}


# ----------------------------------------------------------------------------------------- tokenizers


def cohort_tokenizers(cohorts: dict[str, DatasetDict], out: Path, seed: int, args) -> dict[str, Path]:
    """Cohort-fitted tokenizer folders for one seed: "A" (A's codes), "A+B" (A's, with B's unseen codes
    placed by `add_codes`) and "B" (B's codes)."""
    folders = {name: out / "tokenizers" / f"cohort_{name}_seed{seed}" for name in ("A", "A+B", "B")}
    if all(folder.is_dir() for folder in folders.values()):
        return folders
    fitted = {}
    for name in ("A", "B"):
        embeddings = embed_codes(cohort_codes(cohorts[name]), show_progress=False)
        fitted[name] = SharkTokenizer.fit(embeddings, args.num_levels, args.codebook_size, seed=seed)
    fitted["A"].save_pretrained(folders["A"])
    fitted["B"].save_pretrained(folders["B"])
    unseen = [code for code in cohort_codes(cohorts["B"]) if code not in fitted["A"]]
    codebooks = fitted["A"].codebook_fingerprint
    if unseen:
        fitted["A"].add_codes(embed_codes(unseen, show_progress=False))
    if fitted["A"].codebook_fingerprint != codebooks:
        raise RuntimeError("add_codes changed A's codebooks")
    fitted["A"].save_pretrained(folders["A+B"])
    return folders


# ---------------------------------------------------------------------------------------------- runs


def run_train(run_dir: Path, cohort: Path, tokenizer: Path, seed: int, epochs: int, **kwargs) -> dict:
    """`train` once (or the metrics.json a finished run left): the fields the table needs."""
    if not (run_dir / "metrics.json").is_file():
        train(
            TrainingArguments(
                output_dir=str(run_dir),
                cohort=str(cohort),
                tokenizer=str(tokenizer),
                seed=seed,
                num_epochs=epochs,
                overwrite_output_dir=True,  # an interrupted run is started again
                **kwargs,
            )
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "test": {key: metrics["test"][key] for key in (*HEADLINE, "loss", "num_samples")},
        "validation_P@10": metrics["validation"]["P@10"],
        "best_epoch": metrics["best_epoch"],
        "epochs": metrics["epochs"],
        "best_epoch_at_cap": metrics["best_epoch_at_cap"],
        "learning_rate": kwargs.get("learning_rate", TrainingArguments.learning_rate),
    }


def run_on_b(run_dir: Path, cohort: Path, tokenizer: Path, seed: int, args, **kwargs) -> dict:
    """One run per candidate learning rate on B alone; the one with the best validation P@10."""
    runs = [
        run_train(run_dir / f"lr{lr:g}", cohort, tokenizer, seed, args.epochs, learning_rate=lr, **kwargs)
        for lr in args.learning_rates
    ]
    return max(runs, key=lambda run: run["validation_P@10"])


def zero_shot(run_dir: Path, tokenizer: Path, cohort_b: DatasetDict, a_run: dict) -> dict:
    """A's model on B's test split (B's codes encoded by `tokenizer`, which holds A's codebooks)."""
    tokenizer = SharkTokenizer.from_pretrained(tokenizer)
    model = SharkForDiagnosisPrediction.from_pretrained(run_dir, tokenizer=tokenizer)
    test = evaluate_model(model, tokenizer, cohort_b["test"])
    validation = evaluate_model(model, tokenizer, cohort_b["validation"])
    return {
        **{key: a_run[key] for key in ("best_epoch", "epochs", "best_epoch_at_cap", "learning_rate")},
        "test": {key: test[key] for key in (*HEADLINE, "loss", "num_samples")},
        "validation_P@10": validation["P@10"],
    }


def run_seed(cohorts: dict[str, DatasetDict], seed: int, args) -> dict[str, dict[str, dict]]:
    """{tokenizer kind: {row: result}} of one seed, plus "A on A" (A's own test split) per kind."""
    out, folders = args.out, {name: args.out / "cohorts" / name for name in cohorts}
    fitted = cohort_tokenizers(cohorts, out, seed, args)
    tokenizers = {
        "universal": dict.fromkeys(("A", "A+B", "B"), Path(UNIVERSAL_TOKENIZER)),
        "cohort": fitted,
    }
    results = {}
    for kind, tok in tokenizers.items():
        runs = out / "runs" / f"{kind}_seed{seed}"
        print(f"seed {seed}, {kind} tokenizer: A, B from scratch, B fine-tuned, pooled", flush=True)
        a = run_train(runs / "A", folders["A"], tok["A"], seed, args.epochs)
        results[kind] = {
            "scratch": run_on_b(runs / "scratch", folders["B"], tok["B"], seed, args),
            "finetuned": run_on_b(
                runs / "finetuned", folders["B"], tok["A+B"], seed, args, init_from=str(runs / "A")
            ),
            "zeroshot": zero_shot(runs / "A", tok["A+B"], cohorts["B"], a),
            "pooled": run_train(runs / "pooled", folders["pooled"], tok["A+B"], seed, args.epochs),
            "A on A": a,
        }
    return results


# -------------------------------------------------------------------------------------------- report


def describe(cohorts: dict[str, DatasetDict]) -> dict:
    """Samples per split, distinct input codes, and B's codes that A's cohort never has."""
    codes = {name: cohort_codes(cohorts[name]) for name in ("A", "B")}
    return {
        "samples": {name: {split: len(rows) for split, rows in cohorts[name].items()} for name in cohorts},
        "codes": {name: len(value) for name, value in codes.items()},
        "b_codes_not_in_a": len(set(codes["B"]) - set(codes["A"])),
        "systems": {name: sorted({code.split(":")[0] for code in value}) for name, value in codes.items()},
    }


def table(summary: dict) -> str:
    """The markdown section: table of every row, heuristics, paired comparisons, best epochs."""
    runs, heuristics = summary["runs"], summary["heuristics"]
    seeds = summary["seeds"]
    best = max(heuristics, key=lambda name: heuristics[name]["validation_P@10"])
    best_p10 = heuristics[best]["test"]["P@10"]
    lines = [
        "| row | tokenizer | "
        + " | ".join(HEADLINE)
        + " | P@10 − best heuristic | lr | best epoch / epochs |",
        "|---|---|" + "---|" * (len(HEADLINE) + 3),
    ]
    for row, title in ROWS.items():
        for kind, kind_title in TOKENIZERS.items():
            results = runs[kind][row]
            cells = [fmt([r["test"][key] for r in results]) for key in HEADLINE]
            p10 = [r["test"]["P@10"] for r in results]
            mean, half = ci(100 * (np.asarray(p10) - best_p10))
            lift = f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"
            lrs = "/".join(f"{r['learning_rate']:g}" for r in results)
            epochs = ", ".join(f"{r['best_epoch']}/{r['epochs']}" for r in results)
            lines.append(
                f"| {title} | {kind_title} | " + " | ".join(cells) + f" | {lift} | {lrs} | {epochs} |"
            )
    for name, result in heuristics.items():
        marker = " (best on validation)" if name == best else ""
        cells = [f"{100 * result['test'][key]:.2f}" for key in HEADLINE]
        lines.append(f"| {name}{marker} | - | " + " | ".join(cells) + " | | | |")
    lines += [
        "",
        f"Seed-paired differences in test P@10 (points; 95% t-interval over {len(seeds)} seeds, "
        "paired t-test):",
        "",
    ]
    p10 = {(kind, row): [r["test"]["P@10"] for r in runs[kind][row]] for kind in TOKENIZERS for row in ROWS}
    for kind, kind_title in TOKENIZERS.items():
        for row in ("finetuned", "pooled", "zeroshot"):
            lines.append(
                f"- {ROWS[row]} − B from scratch ({kind_title}): "
                f"{paired(p10[kind, row], p10[kind, 'scratch'])}"
            )
    for row, title in ROWS.items():
        lines.append(
            f"- universal − cohort-fitted, {title}: {paired(p10['universal', row], p10['cohort', row])}"
        )
    trained = [r for kind in TOKENIZERS for row in ROWS if row != "zeroshot" for r in runs[kind][row]]
    trained += [r for kind in TOKENIZERS for r in runs[kind]["A on A"]]
    at_cap = sum(r["best_epoch_at_cap"] for r in trained)
    a_on_a = "; ".join(
        f"{kind_title} {fmt([r['test']['P@10'] for r in runs[kind]['A on A']])}"
        for kind, kind_title in TOKENIZERS.items()
    )
    lines += [
        "",
        f"Runs whose best epoch is the cap ({summary['epochs']}): {at_cap} of {len(trained)} "
        "(for B from scratch and fine-tuned, the runs of the chosen learning rate).",
        f"A's models on A's own test split (ICD-9-CM), P@10: {a_on_a}. Zero-shot rows show A's learning "
        "rate and best epochs.",
        "",
        "What the intervals of test P@10 say (95% t-interval of the seed-paired difference):",
        "",
    ]
    for row in ("finetuned", "pooled", "zeroshot"):
        verdicts = ", ".join(
            f"{kind_title}: {verdict(p10[kind, row], p10[kind, 'scratch'])}"
            for kind, kind_title in TOKENIZERS.items()
        )
        lines.append(f"- {ROWS[row]} against B from scratch: {verdicts}.")
    verdicts = "; ".join(
        f"{title}: {verdict(p10['universal', row], p10['cohort', row])}" for row, title in ROWS.items()
    )
    lines.append(f"- Universal against cohort-fitted tokenizer: {verdicts}.")
    return "\n".join(lines)


def verdict(a: list[float], b: list[float]) -> str:
    """ "higher", "lower" or "no difference shown" for the 95% t-interval of the seed-paired a - b."""
    mean, half = ci(np.asarray(a) - np.asarray(b))
    if len(a) < 2:
        return "one seed, no interval"
    return "higher" if mean - half > 0 else "lower" if mean + half < 0 else "no difference shown"


def training_time(out: Path, seeds: list[int]) -> dict:
    """Training runs of `seeds` under `out/runs` (every learning rate tried) and their summed
    `train_seconds` (metrics.json: the epochs only, not the evaluation)."""
    runs = [
        json.loads(path.read_text()) for s in seeds for path in out.glob(f"runs/*_seed{s}/**/metrics.json")
    ]
    return {"runs": len(runs), "seconds": round(sum(run["train_seconds"] for run in runs), 1)}


def section(summary: dict) -> str:
    info, seeds = summary["cohorts"], summary["seeds"]
    a, b = info["samples"]["A"], info["samples"]["B"]
    cohort = f'write_synthetic_cohort(scale="mimic4", seed=0, num_patients={summary["num_patients"]})'
    text = (
        f"**Built-in synthetic cohort only** (not MIMIC): one MIMIC-IV-format cohort written by `{cohort}`, "
        "split by patient. Hospital A: every patient not in B, ICD-9-CM admissions only "
        f"({info['codes']['A']} codes; samples {a}). Hospital B: {summary['patients_b']} patients with "
        f">= 2 ICD-10-CM admissions, ICD-10-CM admissions only ({info['codes']['B']} codes, "
        f"{info['b_codes_not_in_a']} of them never in A's cohort; samples {b}). No patient is in both.",
        f"Command: `{summary['command']}` ({summary['training']['runs']} training runs, "
        f"{summary['training']['seconds']:.0f} s of training in all; this invocation "
        f"{summary['total_seconds']:.0f} s on {summary['machine']}, finished runs reused). "
        "Every row is evaluated on B's test split and selected on validation P@10 (A: A's validation; "
        "every other row: B's). Metrics in %, mean ± half-width of the 95% t-interval over seeds "
        f"{seeds} (training seed = tokenizer seed). The cohorts and splits are fixed, so the intervals "
        f"hold the training variation only, not the sampling variation of B's {b['test']} test samples. "
        "Universal = `shark_hf.UNIVERSAL_TOKENIZER`; cohort-fitted = "
        f"L={summary['num_levels']}, K={summary['codebook_size']} fitted per seed on A's codes with B's "
        "unseen codes added by `add_codes` (B from scratch: fitted on B's codes). lr: the learning rate "
        f"per seed (rows on B alone: chosen from {summary['learning_rates']} on B's validation; A and "
        "pooled: the `train` default). Heuristics: `shark_hf.baselines` fitted on B's training split.",
    )
    lines = [MARK_BEGIN, "## Cross-institution transfer (issue 12)", "", text[0], "", text[1], ""]
    return "\n".join([*lines, table(summary), MARK_END, ""])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    cohorts = build_hospitals(args.out, args.num_patients, args.patients_b)
    per_seed = [run_seed(cohorts, seed, args) for seed in args.seeds]
    runs = {
        kind: {row: [seed[kind][row] for seed in per_seed] for row in (*ROWS, "A on A")}
        for kind in TOKENIZERS
    }
    summary = {
        "source": "built-in synthetic mimic4 cohort (seed 0)",
        "num_patients": args.num_patients,
        "patients_b": args.patients_b,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "learning_rates": args.learning_rates,
        "num_levels": args.num_levels,
        "codebook_size": args.codebook_size,
        "cohorts": describe(cohorts),
        "runs": runs,
        "heuristics": heuristic_results(cohorts["B"], list(resolve_label_names(cohorts["B"], "ccs"))),
        "training": training_time(args.out, args.seeds),
        "total_seconds": round(time.perf_counter() - start, 1),
        "command": "OMP_NUM_THREADS=1 python training/experiments/cross_institution_experiment.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = section(summary)
    (args.out / "RESULTS.md").write_text(text)
    if args.results_md:
        write_section(args.results_md, text, MARK_BEGIN, MARK_END)
    print(text)
    return summary


if __name__ == "__main__":
    main()
