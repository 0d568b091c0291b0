"""`shark-hf build-dataset` and `shark-hf embed`: cohorts and code embeddings."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from .common import COHORT_MARKER, Command, UserError, add_code_source, positive, read_codes


def _embed_args(p: argparse.ArgumentParser) -> None:
    add_code_source(p.add_mutually_exclusive_group(required=True))
    p.add_argument("--out", type=Path, required=True, help="Output .safetensors file.")
    p.add_argument("--model", default=None, help="sentence-transformers model path or id (default: MiniLM).")
    p.add_argument(
        "--text",
        default="description",
        choices=["description", "hierarchy", "synonyms"],
        help="What is embedded for each code: its description, with its ICD ancestors, or with synonyms.",
    )
    p.add_argument("--batch-size", type=positive, default=64, help="Texts per encoder batch (default: 64).")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cuda when available).")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="Text-vector cache (default: ~/.cache/shark_hf)."
    )


def _embed(args: argparse.Namespace) -> None:
    from ..embeddings import embed_codes

    if args.out.suffix != ".safetensors":
        raise UserError(f"--out {args.out} must end in .safetensors")
    embeddings = embed_codes(
        read_codes(args),
        model=args.model,
        text=args.text,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache_dir,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    embeddings.save(args.out)
    print(f"Embedded {len(embeddings)} codes ({embeddings.dim}-d, text={embeddings.text}) -> {args.out}")


TABLE_OPTIONS = ("patient_col", "code_col", "visit_col", "time_col", "order_col", "system", "system_col")


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=["mimic3", "mimic4", "meds", "table", "synthetic"])
    p.add_argument("--root", type=Path, help="Data folder (the CSV/parquet file for `table`).")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="Output folder: the cohort (datasets.save_to_disk); for `synthetic`, the MIMIC-format CSVs.",
    )
    p.add_argument(
        "--label-space",
        default="ccs",
        choices=["ccs", "ccsr", "code"],
        help="What is predicted: single-level CCS categories (default), CCSR categories, or the codes.",
    )
    p.add_argument(
        "--min-visits", type=int, default=2, help="Keep patients with at least this many visits (default: 2)."
    )
    p.add_argument(
        "--sample",
        default="last",
        choices=["last", "all_prefixes"],
        help="last: one sample per patient (its last visit is the target); all_prefixes: one per visit after "
        "the first.",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="Seed of the patient split (and of the built-in cohort)."
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="Fail on the first unusable row (or MEDS subject listed in two splits) instead of counting it.",
    )
    synthetic = p.add_argument_group("synthetic")
    synthetic.add_argument("--scale", default="mimic3", choices=["mimic3", "mimic4"], help="Format and size.")
    synthetic.add_argument("--num-patients", type=positive, default=None, help="Patients with >= 2 visits.")
    synthetic.add_argument("--stats", action="store_true", help="Print the realised statistics.")
    table = p.add_argument_group("table (patient and code columns, and a visit and/or time column)")
    table.add_argument("--patient-col", help="Patient id column.")
    table.add_argument("--code-col", help="Diagnosis code column.")
    table.add_argument("--visit-col", help="Visit id column.")
    table.add_argument("--time-col", help="Visit time column (rows sharing a time form a visit).")
    table.add_argument("--order-col", help="Column ordering the codes of a visit (default: file order).")
    table.add_argument("--system", help="Code system of every row: ICD9CM or ICD10CM.")
    table.add_argument("--system-col", help="Column with each row's code system (9/10, ICD9CM/ICD10CM).")


def _build_dataset(args: argparse.Namespace) -> None:
    table_options = {k: getattr(args, k) for k in TABLE_OPTIONS if getattr(args, k) is not None}
    if table_options and args.source != "table":
        flags = ", ".join("--" + k.replace("_", "-") for k in table_options)
        raise UserError(f"{flags}: only for the `table` source")
    if args.source == "synthetic":
        _write_synthetic(args)
        return
    if args.root is None:
        raise UserError(f"build-dataset {args.source} needs --root")
    if args.source == "table":
        missing = [f"--{k.replace('_', '-')}" for k in ("patient_col", "code_col") if k not in table_options]
        missing += [] if {"visit_col", "time_col"} & set(table_options) else ["--visit-col or --time-col"]
        if missing:
            raise UserError(f"the table source needs {', '.join(missing)}")
    _check_cohort_out(args.out)
    from ..data.cohort import build_cohort

    cohort, report = build_cohort(
        args.source,
        root=args.root,
        label_space=args.label_space,
        min_visits=args.min_visits,
        sample=args.sample,
        seed=args.seed,
        strict=args.strict,
        return_report=True,
        **table_options,
    )
    _check_no_empty_split(cohort, args.root)
    _save_cohort(cohort, args.out)
    print(report)
    print(f"-> {args.out}")


def _write_synthetic(args: argparse.Namespace) -> None:
    from ..data.synthetic import SCALES, cohort_statistics, format_statistics, write_synthetic_cohort

    if args.root is not None:
        raise UserError("synthetic writes a cohort; it takes --out, not --root")
    path = write_synthetic_cohort(args.out, scale=args.scale, seed=args.seed, num_patients=args.num_patients)
    fmt = "MIMIC-III" if args.scale == "mimic3" else "MIMIC-IV"
    print(f"Wrote a built-in {args.scale}-like cohort in {fmt} format -> {path}")
    if args.stats:
        targets = SCALES[args.scale] if args.num_patients is None else None  # Table 1 at full scale only
        print(format_statistics(cohort_statistics(path, args.scale), targets))
    print(f"Next: shark-hf build-dataset {args.scale} --root {path} --out cohort/")


def _check_cohort_out(out: Path) -> None:
    """Refuse to replace anything but a cohort folder (or an empty folder)."""
    if out.is_dir() and not (out / COHORT_MARKER).is_file() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a cohort folder; choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")


def _check_no_empty_split(cohort, root: Path) -> None:
    """Refuse a cohort with an empty split before anything is written: training needs samples in every
    split (and `datasets` cannot load an empty split back from disk)."""
    empty = [name for name, split in cohort.items() if len(split) == 0]
    if empty:
        sizes = ", ".join(f"{name} {len(split)}" for name, split in cohort.items())
        raise UserError(
            f"{root}: the {' and '.join(empty)} split(s) would be empty (samples: {sizes}); patients are "
            "split 7:1:2, so the data needs more patients with --min-visits visits"
        )


def _save_cohort(cohort, out: Path) -> None:
    """`save_to_disk` into a temporary sibling folder, then swap: a failure leaves `out` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (out.with_name(f".{out.name}.{what}-{os.getpid()}") for what in ("tmp", "old"))
    cohort.save_to_disk(str(tmp))
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


COMMANDS: dict[str, Command] = {
    "embed": (
        _embed_args,
        _embed,
        "Embed code descriptions with a language model (cached; progress bar).",
        (
            "shark-hf embed --system ICD9CM --out icd9.safetensors",
            "shark-hf embed --cohort cohort/ --text hierarchy --out emb.safetensors",
            "shark-hf embed --codes my_codes.txt --out emb.safetensors",
        ),
    ),
    "build-dataset": (
        _dataset_args,
        _build_dataset,
        "Build a cohort (datasets) from MIMIC-III/IV, MEDS or a table, or write the built-in cohort.",
        (
            "shark-hf build-dataset synthetic --out raw/ --stats",
            "shark-hf build-dataset mimic3 --root raw/ --out cohort/",
            "shark-hf build-dataset mimic4 --root /data/mimiciv/3.1 --out cohort4/",
            "shark-hf build-dataset meds --root /data/meds --out cohort_meds/",
            "shark-hf build-dataset table --root dx.csv --patient-col pid --visit-col enc --code-col icd "
            "--system ICD10CM --out cohort/",
        ),
    ),
}
