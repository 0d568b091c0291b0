"""Cross-institution workflow: hospital A publishes, hospital B fine-tunes on codes A never saw.

Hospital A (ICD-9-CM, MIMIC-III format) builds its cohort and takes the universal tokenizer shipped with
shark-hf (`shark_hf.UNIVERSAL_TOKENIZER`: every ICD-9-CM and ICD-10-CM code in one semantic space, no cohort
input), or with `--tokenizer cohort` embeds the descriptions of its own codes with all-MiniLM-L6-v2 and fits a
tokenizer on them (Residual K-Means); it trains and pushes model + tokenizer + card to the Hub. Hospital B
(MIMIC-IV format, ICD-10-CM admissions only) never sees A's patients: it pulls A's release pinned to its
commit, encodes its own ICD-10 codes with A's tokenizer (with a cohort tokenizer, the codes A never saw are
embedded and placed with A's codebooks: `SharkTokenizer.add_codes`, so A's model accepts the ids), evaluates
A's model on its cohort, fine-tunes it with Accelerate (`shark_hf.training.train(init_from=...)`) and pushes
the result as its own revision (a branch) of A's repository; A's `main` is left as it was.

Both cohorts here are the built-in synthetic MIMIC-like ones; with credentialed access, point
`build_cohort("mimic3" / "mimic4", root=...)` at the real files instead.

    # against the Hub (after `hf auth login`):
    python examples/cross_institution.py --repo my-org/shark-cross-institution --private
    # against any Hub-compatible server:
    HF_ENDPOINT=http://127.0.0.1:8080 python examples/cross_institution.py --repo org/shark --work /tmp/x

Everything a run measures is written to `WORK/summary.json` and printed as a table.

Whether sharing helps B, against its controls (B from scratch, A zero-shot, pooled A+B; universal and
cohort-fitted tokenizers; seeds, 95% intervals, the non-learned heuristics), is measured without a Hub by
`training/experiments/cross_institution_experiment.py` (it builds both hospitals with `keep_admissions`); its
results are in training/experiments/RESULTS.md, "Cross-institution transfer (issue 12)":

    OMP_NUM_THREADS=1 python training/experiments/cross_institution_experiment.py --out /tmp/crossinst \
        --seeds 0 1 2 3 4 --results-md training/experiments/RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from collections.abc import Collection
from pathlib import Path

from huggingface_hub import snapshot_download

from shark_hf.codes import cohort_codes
from shark_hf.data.cohort import build_cohort
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.embeddings import embed_codes
from shark_hf.evaluation import evaluate_model
from shark_hf.hub import push_model_and_tokenizer
from shark_hf.metrics import HEADLINE_METRICS
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import TrainingArguments, train
from shark_hf.universal import UNIVERSAL_TOKENIZER
from shark_hf.utils import TOKENIZER_SUBFOLDER

logger = logging.getLogger("cross_institution")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", required=True, help="Hub repository of hospital A's release, ORG/NAME.")
    parser.add_argument("--branch", default="hospital-b", help="Revision (branch) hospital B pushes to.")
    parser.add_argument("--work", type=Path, default=Path("cross_institution_output"), help="Working folder.")
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in token or HF_TOKEN).")
    parser.add_argument("--patients-a", type=int, default=1000, help="Hospital A's patients (>= 2 visits).")
    parser.add_argument(
        "--patients-b",
        type=int,
        default=2000,
        help="Hospital B's MIMIC-IV-like patients before keeping ICD-10 admissions only.",
    )
    parser.add_argument(
        "--tokenizer",
        choices=["universal", "cohort"],
        default="universal",
        help="universal: shark_hf.UNIVERSAL_TOKENIZER (L=4, K=128); cohort: fitted on A's codes (it lists "
        "them; --num-levels, --codebook-size).",
    )
    parser.add_argument("--num-levels", type=int, default=4, help="--tokenizer cohort: levels L.")
    parser.add_argument("--codebook-size", type=int, default=64, help="--tokenizer cohort: codebook size K.")
    parser.add_argument("--epochs-a", type=int, default=20, help="Hospital A's training epochs.")
    parser.add_argument("--epochs-b", type=int, default=10, help="Hospital B's fine-tuning epochs.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate-b", type=float, default=5e-4, help="Fine-tuning learning rate.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def keep_admissions(
    root: Path, version: str = "10", subjects: Collection[str] | None = None
) -> tuple[int, int]:
    """Rewrite a MIMIC-IV `hosp/` folder in place to the diagnoses coded in ICD `version` ("9" or "10"), of
    `subjects` only when given (subject ids as written), and the admissions that keep a diagnosis.

    Returns:
        (diagnosis rows kept, admissions kept).
    """
    subjects = None if subjects is None else set(subjects)
    kept = [
        row
        for row in read_csv(root / "hosp" / "diagnoses_icd.csv")
        if row["icd_version"] == version and (subjects is None or row["subject_id"] in subjects)
    ]
    if not kept:
        raise ValueError(f"{root / 'hosp' / 'diagnoses_icd.csv'}: no ICD-{version} diagnosis left to keep")
    admissions_with_codes = {row["hadm_id"] for row in kept}
    admissions = [
        row for row in read_csv(root / "hosp" / "admissions.csv") if row["hadm_id"] in admissions_with_codes
    ]
    _write_csv(root / "hosp" / "diagnoses_icd.csv", kept)
    _write_csv(root / "hosp" / "admissions.csv", admissions)
    return len(kept), len(admissions)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def hospital_a(args: argparse.Namespace) -> dict:
    """Build, embed, fit, train and push; returns what A measured and the commit it published."""
    work = args.work / "hospital_a"
    raw = write_synthetic_cohort(work / "raw", "mimic3", seed=args.seed, num_patients=args.patients_a)
    cohort = build_cohort("mimic3", root=raw, seed=args.seed)
    cohort.save_to_disk(work / "mimic3-synthetic")
    codes = cohort_codes(cohort)
    logger.info("A: %d patients, %d distinct ICD-9-CM codes", sum(map(len, cohort.values())), len(codes))

    if args.tokenizer == "universal":
        tokenizer = SharkTokenizer.from_pretrained(UNIVERSAL_TOKENIZER)
    else:
        embeddings = embed_codes(codes, show_progress=False)
        tokenizer = SharkTokenizer.fit(
            embeddings, num_levels=args.num_levels, codebook_size=args.codebook_size, seed=args.seed
        )
    tokenizer.save_pretrained(work / "tokenizer")
    metrics = train(
        TrainingArguments(
            output_dir=str(work / "model"),
            overwrite_output_dir=True,  # a rerun of the example replaces its model
            cohort=str(work / "mimic3-synthetic"),
            tokenizer=str(work / "tokenizer"),
            num_epochs=args.epochs_a,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    )
    commit = push_model_and_tokenizer(
        work / "model",
        args.repo,
        private=args.private,
        token=args.token,
        commit_message="Hospital A: SHARK model and tokenizer (ICD-9-CM)",
    )
    logger.info("A pushed %s", commit.commit_url)
    return {
        "commit": commit.oid,
        "num_codes": len(codes),
        "collision_rate": tokenizer.collision_rate,
        "test": _headline(metrics["test"]),
        "membership_inference_auc": metrics["privacy"]["membership_inference_auc"],
    }


def hospital_b(args: argparse.Namespace, release: str) -> dict:
    """Pull A's release, encode ICD-10 codes with A's codebooks, evaluate, fine-tune and push a branch."""
    work = args.work / "hospital_b"
    # A's release pinned to the commit B reviewed: later pushes to `main` do not change what B builds on.
    pretrained = Path(snapshot_download(args.repo, revision=release, token=args.token))
    tokenizer = SharkTokenizer.from_pretrained(pretrained, subfolder=TOKENIZER_SUBFOLDER)
    codebooks = tokenizer.codebook_fingerprint

    raw = write_synthetic_cohort(work / "raw", "mimic4", seed=args.seed + 1, num_patients=args.patients_b)
    kept_rows, kept_admissions = keep_admissions(raw, "10")
    cohort = build_cohort("mimic4", root=raw, seed=args.seed)
    cohort.save_to_disk(work / "mimic4-icd10-synthetic")
    codes = cohort_codes(cohort)
    unseen = [code for code in codes if code not in tokenizer]
    logger.info(
        "B: %d ICD-10 admissions, %d patients, %d distinct codes, %d of them unseen by A",
        kept_admissions,
        sum(map(len, cohort.values())),
        len(codes),
        len(unseen),
    )
    # Embed B's codes with A's embedding model and text strategy, and place them with A's codebooks.
    added = (
        tokenizer.add_codes(
            embed_codes(
                unseen, model=tokenizer.embedding_model, text=tokenizer.embedding_text, show_progress=False
            )
        )
        if unseen
        else []
    )
    if tokenizer.codebook_fingerprint != codebooks:
        raise RuntimeError("add_codes changed the codebooks; A's model would not understand the ids")
    tokenizer.save_pretrained(work / "tokenizer")

    model_a = SharkForDiagnosisPrediction.from_pretrained(pretrained, tokenizer=tokenizer)
    before = evaluate_model(model_a, tokenizer, cohort["test"])
    metrics = train(
        TrainingArguments(
            output_dir=str(work / "model"),
            overwrite_output_dir=True,  # a rerun of the example replaces its model
            cohort=str(work / "mimic4-icd10-synthetic"),
            tokenizer=str(work / "tokenizer"),
            init_from=str(pretrained),
            num_epochs=args.epochs_b,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate_b,
            seed=args.seed,
        )
    )
    commit = push_model_and_tokenizer(
        work / "model",
        args.repo,
        revision=args.branch,
        token=args.token,
        commit_message="Hospital B: fine-tuned on ICD-10-CM admissions",
    )
    logger.info("B pushed %s (branch %s)", commit.commit_url, args.branch)
    return {
        "commit": commit.oid,
        "branch": args.branch,
        "icd10_diagnosis_rows": kept_rows,
        "num_codes": len(codes),
        "unseen_codes": len(unseen),
        "codes_added": len(added),
        "a_model_on_b_test": _headline(before),
        "test": _headline(metrics["test"]),
        "membership_inference_auc": metrics["privacy"]["membership_inference_auc"],
    }


def _headline(metrics: dict) -> dict:
    return {key: metrics[key] for key in (*HEADLINE_METRICS, "num_samples")}


def format_table(summary: dict) -> str:
    rows = [
        ("A on A's test (ICD-9)", summary["hospital_a"]["test"]),
        ("A on B's test (ICD-10, before fine-tuning)", summary["hospital_b"]["a_model_on_b_test"]),
        ("B fine-tuned, B's test (ICD-10)", summary["hospital_b"]["test"]),
    ]
    lines = [
        f"| model | {' | '.join(HEADLINE_METRICS)} | samples |",
        "|---" * (len(HEADLINE_METRICS) + 2) + "|",
    ]
    for name, m in rows:
        values = " | ".join(f"{m[key]:.4f}" for key in HEADLINE_METRICS)
        lines.append(f"| {name} | {values} | {m['num_samples']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("httpx", "httpx2"):  # one INFO line per HTTP request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    start = time.perf_counter()
    summary = {"repo": args.repo, "hospital_a": hospital_a(args)}
    summary["hospital_b"] = hospital_b(args, release=summary["hospital_a"]["commit"])
    summary["seconds"] = round(time.perf_counter() - start, 1)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    b = summary["hospital_b"]
    print(
        f"Hospital A: {summary['hospital_a']['num_codes']} ICD-9-CM codes, released {args.repo}@"
        f"{summary['hospital_a']['commit'][:10]}\n"
        f"Hospital B: {b['num_codes']} ICD-10-CM codes, {b['unseen_codes']} unseen by A and placed with "
        f"A's codebooks; pushed {args.repo}@{b['branch']} ({b['commit'][:10]})\n\n"
        f"{format_table(summary)}\n\nSummary: {args.work / 'summary.json'} ({summary['seconds']} s)"
    )
    return summary


if __name__ == "__main__":
    main()
