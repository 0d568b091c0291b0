"""`shark-hf`: the command line of shark-hf.

Each subcommand is a thin layer over the Python API; `shark-hf <command> --help` shows its options and
examples. User errors (missing files, malformed JSON, unknown codes, ...) end with a one-line message on
stderr and exit code 1; usage errors exit with 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__

logger = logging.getLogger("shark_hf")

USER_ERRORS = (
    ValueError,
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


class UserError(Exception):
    """An error in what the user asked for, reported as one line without a traceback."""


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shark-hf",
        description="SHARK semantic IDs for medical codes: embed, tokenize, build, train, predict, share.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            "shark-hf demo --out demo_output",
            "shark-hf build-dataset mimic3 --root /data/mimic-iii --out cohort/",
            "shark-hf embed --cohort cohort/ --out embeddings.safetensors",
            "shark-hf fit-tokenizer --embeddings embeddings.safetensors --out tokenizer/",
        ),
    )
    parser.add_argument("--version", action="version", version=f"shark-hf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (build, run, summary, examples) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=_examples(*examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        build(sub)
        sub.set_defaults(run=run)
    return parser


# -- embed ----------------------------------------------------------------------------------------------
def _embed_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--codes", type=Path, help="Text file with one code per line (any spelling).")
    source.add_argument(
        "--cohort", type=Path, help="A cohort folder (build-dataset): embed every code in it."
    )
    source.add_argument("--system", choices=["ICD9CM", "ICD10CM"], help="Embed every code of a code system.")
    p.add_argument("--out", type=Path, required=True, help="Output .safetensors file.")
    p.add_argument("--model", default=None, help="sentence-transformers model path or id (default: MiniLM).")
    p.add_argument("--text", default="description", choices=["description", "hierarchy", "synonyms"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cuda when available).")


def _embed(args: argparse.Namespace) -> None:
    from .embeddings import embed_codes

    codes = _codes_for_embedding(args)
    embeddings = embed_codes(
        codes, model=args.model, text=args.text, batch_size=args.batch_size, device=args.device
    )
    embeddings.save(args.out)
    print(f"Embedded {len(embeddings)} codes ({embeddings.dim}-d, {embeddings.text}) -> {args.out}")


def _codes_for_embedding(args: argparse.Namespace) -> list[str]:
    if args.system:
        from .codes import all_codes

        return all_codes(args.system)
    if args.cohort:
        return cohort_codes(_load_cohort(args.cohort))
    lines = _read_text(args.codes).splitlines()
    codes = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not codes:
        raise UserError(f"{args.codes} lists no codes")
    return codes


def cohort_codes(cohort) -> list[str]:
    """Every distinct diagnosis code in a cohort's input visits, sorted."""
    return sorted(
        {code for split in cohort.values() for visits in split["visits"] for v in visits for code in v}
    )


# -- fit-tokenizer --------------------------------------------------------------------------------------
def _fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embeddings", type=Path, required=True, help="Embeddings file (.safetensors, .npy, ...)."
    )
    p.add_argument("--key", default=None, help="Which set of a multi-set file (Dryad embeddings.json).")
    p.add_argument("--out", type=Path, required=True, help="Output tokenizer folder.")
    p.add_argument("--kind", default="semantic", choices=["semantic", "random", "index"])
    p.add_argument("--levels", type=int, default=4, help="L, the number of semantic IDs per code.")
    p.add_argument("--codebook-size", type=int, default=128, help="K, the clusters per level.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deduplicate", action="store_true", help="Append a level that makes every tuple unique.")


def _fit_tokenizer(args: argparse.Namespace) -> None:
    from .embeddings import load_embeddings
    from .tokenization_shark import SharkTokenizer

    embeddings = load_embeddings(args.embeddings, key=args.key)
    if args.kind == "semantic":
        tokenizer = SharkTokenizer.fit(
            embeddings, args.levels, args.codebook_size, seed=args.seed, deduplicate=args.deduplicate
        )
    elif args.kind == "random":
        tokenizer = SharkTokenizer.random_ids(
            embeddings.codes, args.levels, args.codebook_size, seed=args.seed
        )
    else:
        tokenizer = SharkTokenizer.index(embeddings.codes)
    tokenizer.save_pretrained(args.out)
    print(
        f"{tokenizer.kind} tokenizer: {len(tokenizer)} codes, L={tokenizer.num_levels}, "
        f"K={tokenizer.codebook_size}, collision rate {tokenizer.collision_rate:.4f} -> {args.out}"
    )


# -- build-dataset --------------------------------------------------------------------------------------
def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=["mimic3", "mimic4", "meds", "table", "synthetic"])
    p.add_argument("--root", type=Path, help="Data folder (or file for `table`).")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="Output folder (a datasets.save_to_disk folder; for `synthetic`, the MIMIC-format CSV folder).",
    )
    p.add_argument("--label-space", default="ccs", choices=["ccs", "ccsr", "code"])
    p.add_argument("--min-visits", type=int, default=2)
    p.add_argument("--sample", default="last", choices=["last", "all_prefixes"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--strict", action="store_true", help="Fail on the first unusable row instead of counting it."
    )
    p.add_argument("--scale", default="mimic3", choices=["mimic3", "mimic4"], help="synthetic: cohort size.")
    p.add_argument("--patient-col", help="table: patient id column.")
    p.add_argument("--visit-col", help="table: visit id column.")
    p.add_argument("--time-col", help="table: visit time column.")
    p.add_argument("--code-col", help="table: diagnosis code column.")
    p.add_argument("--system", help="table: code system of every row (ICD9CM or ICD10CM).")
    p.add_argument("--system-col", help="table: column with the code system (9/10 or ICD9CM/ICD10CM).")


def _build_dataset(args: argparse.Namespace) -> None:
    if args.source == "synthetic":
        from .data.synthetic import write_synthetic_cohort

        path = write_synthetic_cohort(args.out, scale=args.scale, seed=args.seed)
        fmt = "MIMIC-III" if args.scale == "mimic3" else "MIMIC-IV"
        print(f"Wrote a built-in {args.scale}-like cohort in {fmt} format -> {path}")
        print(f"Next: shark-hf build-dataset {args.scale} --root {path} --out cohort/")
        return
    from .data.cohort import build_cohort

    if args.root is None:
        raise UserError(f"build-dataset {args.source} needs --root")
    table_options = {
        "patient_col": args.patient_col,
        "visit_col": args.visit_col,
        "time_col": args.time_col,
        "code_col": args.code_col,
        "system": args.system,
        "system_col": args.system_col,
    }
    extra = {k: v for k, v in table_options.items() if v is not None} if args.source == "table" else {}
    cohort, report = build_cohort(
        args.source,
        root=args.root,
        label_space=args.label_space,
        min_visits=args.min_visits,
        sample=args.sample,
        seed=args.seed,
        strict=args.strict,
        return_report=True,
        **extra,
    )
    _save_dataset(cohort, args.out)
    print(report)
    print(f"-> {args.out}")


def _save_dataset(cohort, out: Path) -> None:
    """`save_to_disk` into a temporary sibling folder, then rename: a failure leaves `out` as it was."""
    tmp = out.with_name(out.name + ".tmp")
    cohort.save_to_disk(str(tmp))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)


# -- train ----------------------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerate-config", type=Path, help="An accelerate config file (see training/*.yaml).")
    p.add_argument("--num-processes", type=int, default=None, help="Processes to launch (CPU: gloo DDP).")


def _train(args: argparse.Namespace, rest: list[str]) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if args.accelerate_config:
        command += ["--config_file", str(args.accelerate_config)]
    if args.num_processes and args.num_processes > 1:
        command += ["--multi_gpu", "--num_processes", str(args.num_processes), "--num_machines", "1"]
    elif not args.accelerate_config:
        command += [
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    command += ["-m", "shark_hf.training", *rest]
    env = dict(os.environ)
    if args.num_processes and args.num_processes > 1 and not _has_cuda():
        env["ACCELERATE_USE_CPU"] = "true"
    logger.info("Running: %s", " ".join(command))
    result = subprocess.run(command, env=env)
    if result.returncode:
        raise UserError(f"training failed (exit code {result.returncode}); see the log above")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- evaluate -------------------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="A trained model folder.")
    p.add_argument("--cohort", type=Path, required=True, help="A cohort folder (build-dataset).")
    p.add_argument("--tokenizer", default=None, help="Tokenizer folder (default: MODEL/tokenizer).")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, help="Write the metrics as JSON here.")


def _evaluate(args: argparse.Namespace) -> None:
    from .training import evaluate_model

    cohort = _load_cohort(args.cohort)
    if args.split not in cohort:
        raise UserError(f"{args.cohort} has no split {args.split!r} (splits: {', '.join(cohort)})")
    model, tokenizer = _load_model(args.model, args.tokenizer)
    metrics = evaluate_model(model, tokenizer, cohort[args.split], batch_size=args.batch_size)
    text = json.dumps(metrics, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


# -- predict --------------------------------------------------------------------------------------------
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="A trained model folder.")
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        help="JSON: a list of patients; a patient is a list of visits (lists of codes) or "
        '{"patient_id": ..., "visits": [[...], ...]}.',
    )
    p.add_argument("--tokenizer", default=None, help="Tokenizer folder (default: MODEL/tokenizer).")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument(
        "--unknown",
        default="error",
        choices=["error", "skip", "embed"],
        help="Codes the tokenizer never saw: fail, drop them, or embed them on the fly.",
    )
    p.add_argument("--out", type=Path, help="Write the predictions as JSON here (default: stdout).")


def _predict(args: argparse.Namespace) -> None:
    patients = _read_patients(args.input)
    model, tokenizer = _load_model(args.model, args.tokenizer)
    batch = tokenizer([p["visits"] for p in patients], unknown=args.unknown)
    predictions = model.predict(batch, top_k=args.top_k)
    for patient, prediction in zip(patients, predictions, strict=True):
        prediction["patient_id"] = patient["patient_id"]
    text = json.dumps(predictions, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"Predicted {len(predictions)} patients -> {args.out}")
    else:
        print(text)


def _read_patients(path: Path) -> list[dict]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"{path} must hold a non-empty JSON list of patients")
    patients = []
    for i, item in enumerate(data):
        patient = item if isinstance(item, dict) else {"patient_id": str(i), "visits": item}
        visits = patient.get("visits")
        valid = (
            isinstance(visits, list)
            and visits
            and all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in visits)
        )
        if not valid:
            raise UserError(
                f"{path}: patient {i} must be a non-empty list of visits, each a list of code strings"
            )
        patients.append({"patient_id": str(patient.get("patient_id", i)), "visits": visits})
    return patients


# -- inspect-tokenizer ----------------------------------------------------------------------------------
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("tokenizer", help="A tokenizer folder or Hub repo id.")
    p.add_argument("--subfolder", default=None)
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")


def _inspect(args: argparse.Namespace) -> None:
    from .tokenization_shark import SharkTokenizer

    tokenizer = SharkTokenizer.from_pretrained(args.tokenizer, subfolder=args.subfolder)
    report = tokenizer.cluster_report()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)


# -- push -----------------------------------------------------------------------------------------------
def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="A trained model folder (with metrics.json).")
    p.add_argument(
        "--tokenizer", type=Path, default=None, help="Tokenizer folder (default: MODEL/tokenizer)."
    )
    p.add_argument("--repo", required=True, help="Hub repository, ORG/NAME.")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="Branch to push to (created from main if missing).")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in token or HF_TOKEN).")
    p.add_argument(
        "--license", default=None, help="Licence of the weights (default: the MIMIC data-use terms)."
    )
    p.add_argument("--no-gating", action="store_true", help="Do not ask users to accept terms before access.")


def _push(args: argparse.Namespace) -> None:
    from .hub import push_model_and_tokenizer

    url = push_model_and_tokenizer(
        args.model,
        args.repo,
        tokenizer_dir=args.tokenizer,
        private=args.private,
        revision=args.revision,
        token=args.token,
        license=args.license,
        gated=not args.no_gating,
    )
    print(f"Pushed {args.model} (model, tokenizer/, README.md) -> {url}")


# -- demo -----------------------------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, seed=args.seed, num_epochs=args.epochs)


# -- shared helpers -------------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return path.read_text(encoding="utf-8")


def _load_cohort(path: Path):
    from datasets import load_from_disk

    if not (path / "dataset_dict.json").is_file():
        raise UserError(f"{path} is not a cohort folder (no dataset_dict.json); make one with build-dataset")
    return load_from_disk(str(path))


def _load_model(model_dir: Path, tokenizer_dir: str | None):
    from .modeling_shark import SharkForDiagnosisPrediction
    from .tokenization_shark import SharkTokenizer

    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not a model folder (no config.json)")
    tokenizer = SharkTokenizer.from_pretrained(tokenizer_dir or model_dir / "tokenizer")
    model = SharkForDiagnosisPrediction.from_pretrained(model_dir)
    model.check_tokenizer(tokenizer)
    return model.eval(), tokenizer


COMMANDS: dict[str, tuple[Callable, Callable, str, tuple[str, ...]]] = {
    "embed": (
        _embed_args,
        _embed,
        "Embed code descriptions with a language model.",
        (
            "shark-hf embed --system ICD9CM --out icd9.safetensors",
            "shark-hf embed --cohort cohort/ --text hierarchy --out emb.safetensors",
        ),
    ),
    "fit-tokenizer": (
        _fit_args,
        _fit_tokenizer,
        "Fit Residual K-Means codebooks: codes -> semantic IDs.",
        (
            "shark-hf fit-tokenizer --embeddings emb.safetensors --levels 4 --codebook-size 128 --out tok/",
            "shark-hf fit-tokenizer --embeddings emb.safetensors --kind random --out random_tok/",
        ),
    ),
    "build-dataset": (
        _dataset_args,
        _build_dataset,
        "Build a cohort (datasets) from MIMIC, MEDS or a table.",
        (
            "shark-hf build-dataset synthetic --out raw/",
            "shark-hf build-dataset mimic3 --root /data/mimic-iii-1.4 --out cohort/",
            "shark-hf build-dataset mimic4 --root /data/mimiciv/3.1 --out cohort4/",
            "shark-hf build-dataset table --root dx.csv --patient-col pid --visit-col enc --code-col icd "
            "--system ICD10CM --out cohort/",
        ),
    ),
    "train": (
        _train_args,
        _train,
        "Train with Accelerate (all other flags go to training/train.py).",
        (
            "shark-hf train --cohort cohort/ --tokenizer tok/ --output_dir runs/shark",
            "shark-hf train --num-processes 2 --cohort cohort/ --tokenizer tok/ --output_dir runs/ddp",
        ),
    ),
    "evaluate": (
        _evaluate_args,
        _evaluate,
        "Evaluate a trained model on a cohort split.",
        ("shark-hf evaluate --model runs/shark --cohort cohort/ --split test",),
    ),
    "predict": (
        _predict_args,
        _predict,
        "Predict next-visit categories for patients given as JSON.",
        (
            'echo \'[[["401.9", "250.00"], ["414.01"]]]\' > patients.json',
            "shark-hf predict --model runs/shark --input patients.json --top-k 5",
        ),
    ),
    "inspect-tokenizer": (
        _inspect_args,
        _inspect,
        "Report clusters, purity and cross-chapter ID sharing.",
        (
            "shark-hf inspect-tokenizer tok/",
            "shark-hf inspect-tokenizer tok/ --json > report.json",
        ),
    ),
    "push": (
        _push_args,
        _push,
        "Push a model and its tokenizer to the Hub with model cards.",
        ("shark-hf push --model runs/shark --repo my-org/shark-mimic3 --private",),
    ),
    "demo": (
        _demo_args,
        _demo,
        "Run the whole pipeline on the built-in cohort (what `make demo` runs).",
        ("shark-hf demo --out demo_output",),
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `shark-hf`; returns the exit code."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        format="%(levelname)s %(name)s: %(message)s", level=logging.DEBUG if args.verbose else logging.INFO
    )
    try:
        if args.command == "train":
            args.run(args, rest)
        else:
            args.run(args)
    except UserError as error:
        print(f"shark-hf {args.command}: error: {error}", file=sys.stderr)
        return 1
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"shark-hf {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
