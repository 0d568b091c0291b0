"""`shark-hf`: the command line of shark-hf.

Each subcommand is a thin layer over the Python API; `shark-hf <command> --help` shows its options and
examples. Exit codes: 0 on success; 1 for a user error (missing file, malformed JSON, unknown code, a folder
that is not a cohort / tokenizer / model, ...), reported as ONE line `shark-hf <command>: error: ...` on
stderr without a traceback (`-v` shows it); 2 for usage errors (argparse). `train` runs a single-process
training in this process (as `python training/train.py` does) and hands over to `accelerate launch` for
`--num-processes N` or `--accelerate-config`, returning the launch's exit code. Heavy modules are
imported inside the commands: the CLI adds nothing to the import of the `shark_hf` package itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__

logger = logging.getLogger("shark_hf")

COHORT_MARKER = "dataset_dict.json"
TOKENIZER_MARKER = "tokenizer_config.json"
BUILDERS = ("mimic3", "mimic4", "meds")


class UserError(Exception):
    """An error in what the user asked for, reported as one line without a traceback."""


# Errors of the library that describe bad input: missing or unreadable files (OSError, which includes the Hub
# client's HTTP errors), malformed content (ValueError, json.JSONDecodeError) and unknown codes (KeyError).
USER_ERRORS = (UserError, OSError, ValueError, KeyError)


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Log progress; show tracebacks.",
    )
    parser = argparse.ArgumentParser(
        prog="shark-hf",
        description="SHARK semantic IDs for medical codes: embed, tokenize, build, train, predict, share.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
        epilog=_examples(
            "shark-hf build-dataset mimic3 --root /data/mimic-iii-1.4 --out cohort/",
            "shark-hf embed --cohort cohort/ --out embeddings.safetensors",
            "shark-hf fit-tokenizer --embeddings embeddings.safetensors --out tokenizer/",
            "shark-hf train --cohort cohort/ --tokenizer tokenizer/ --output_dir runs/shark",
            "shark-hf predict --model runs/shark --input patients.json --top-k 5",
            "shark-hf demo --out demo_output",
        ),
    )
    parser.add_argument("--version", action="version", version=f"shark-hf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (build, run, summary, examples) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=_examples(*examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
            add_help=name != "train",
            allow_abbrev=name != "train",  # train passes unknown flags on: never guess abbreviations
        )
        build(sub)
        sub.set_defaults(run=run, subparser=sub)
    return parser


def _add_code_source(group: argparse._MutuallyExclusiveGroup) -> None:
    """The options naming a set of codes: a codes file, a cohort folder or a whole code system."""
    group.add_argument(
        "--codes", type=Path, help="Text file with one code per line (any spelling; # comments)."
    )
    group.add_argument(
        "--cohort", type=Path, help="A cohort folder (build-dataset): every code in its visits."
    )
    group.add_argument(
        "--system", choices=["ICD9CM", "ICD10CM"], help="Every billable code of a code system."
    )


def _codes(args: argparse.Namespace) -> list[str]:
    """The codes named by `--codes`, `--cohort` or `--system`."""
    if args.system:
        from .codes import all_codes

        return all_codes(args.system)
    if args.cohort:
        return cohort_codes(_load_cohort(args.cohort))
    lines = (line.strip() for line in _read_text(args.codes).splitlines())
    codes = [line for line in lines if line and not line.startswith("#")]
    if not codes:
        raise UserError(f"{args.codes} lists no codes")
    return codes


def cohort_codes(cohort) -> list[str]:
    """Every distinct diagnosis code in a cohort's input visits, sorted."""
    return sorted(
        {code for split in cohort.values() for visits in split["visits"] for v in visits for code in v}
    )


# -- embed ----------------------------------------------------------------------------------------------
def _embed_args(p: argparse.ArgumentParser) -> None:
    _add_code_source(p.add_mutually_exclusive_group(required=True))
    p.add_argument("--out", type=Path, required=True, help="Output .safetensors file.")
    p.add_argument("--model", default=None, help="sentence-transformers model path or id (default: MiniLM).")
    p.add_argument("--text", default="description", choices=["description", "hierarchy", "synonyms"])
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cuda when available).")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="Text-vector cache (default: ~/.cache/shark_hf)."
    )


def _embed(args: argparse.Namespace) -> None:
    from .embeddings import embed_codes

    if args.out.suffix != ".safetensors":
        raise UserError(f"--out {args.out} must end in .safetensors")
    embeddings = embed_codes(
        _codes(args),
        model=args.model,
        text=args.text,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache_dir,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    embeddings.save(args.out)
    print(f"Embedded {len(embeddings)} codes ({embeddings.dim}-d, text={embeddings.text}) -> {args.out}")


# -- fit-tokenizer --------------------------------------------------------------------------------------
def _fit_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--embeddings", type=Path, help="Embeddings file (.safetensors from embed, .npy, .parquet, .json)."
    )
    _add_code_source(source)
    p.add_argument("--key", default=None, help="Which set of a multi-set file (Dryad embeddings.json).")
    p.add_argument("--out", type=Path, required=True, help="Output tokenizer folder.")
    p.add_argument(
        "--kind",
        default="semantic",
        choices=["semantic", "random", "index"],
        help="semantic: Residual K-Means on --embeddings; random: the paper's random-ID baseline; "
        "index: one ID per code (plain RETAIN). random and index take any code source.",
    )
    p.add_argument("--levels", type=_positive, default=4, help="L, the number of IDs per code.")
    p.add_argument("--codebook-size", type=_positive, default=128, help="K, the clusters per level.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--deduplicate", action="store_true", help="semantic: append a level making tuples unique."
    )
    p.add_argument("--device", default=None, help="semantic: torch device of the k-means (default: cpu).")


def _fit_tokenizer(args: argparse.Namespace) -> None:
    from .tokenization_shark import SharkTokenizer

    if args.kind != "semantic" and args.deduplicate:
        raise UserError("--deduplicate applies to --kind semantic only")
    if args.key and not args.embeddings:
        raise UserError("--key selects a set of an --embeddings file")
    embeddings = _load_embeddings(args.embeddings, args.key) if args.embeddings else None
    if args.kind == "semantic":
        if embeddings is None:
            raise UserError("--kind semantic needs --embeddings (make them with `shark-hf embed`)")
        device = {"device": args.device} if args.device else {}
        tokenizer = SharkTokenizer.fit(
            embeddings,
            args.levels,
            args.codebook_size,
            seed=args.seed,
            deduplicate=args.deduplicate,
            show_progress=True,
            **device,
        )
    else:
        codes = embeddings.codes if embeddings is not None else _codes(args)
        if args.kind == "random":
            tokenizer = SharkTokenizer.random_ids(codes, args.levels, args.codebook_size, seed=args.seed)
        else:
            tokenizer = SharkTokenizer.index(codes)
    tokenizer.save_pretrained(args.out)
    print(
        f"{tokenizer.kind} tokenizer: {len(tokenizer)} codes, L={tokenizer.num_levels}, "
        f"K={tokenizer.codebook_size}, collision rate {tokenizer.collision_rate:.4f} -> {args.out}"
    )


def _load_embeddings(path: Path, key: str | None):
    from .embeddings import load_embeddings

    try:
        return load_embeddings(path, key=key)
    except json.JSONDecodeError as error:  # load_embeddings does not name the file in this case
        raise UserError(f"{path} is not valid JSON: {error}") from None


# -- build-dataset --------------------------------------------------------------------------------------
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
    p.add_argument("--label-space", default="ccs", choices=["ccs", "ccsr", "code"])
    p.add_argument("--min-visits", type=int, default=2)
    p.add_argument("--sample", default="last", choices=["last", "all_prefixes"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--strict", action="store_true", help="Fail on the first unusable row instead of counting it."
    )
    synthetic = p.add_argument_group("synthetic")
    synthetic.add_argument("--scale", default="mimic3", choices=["mimic3", "mimic4"], help="Format and size.")
    synthetic.add_argument("--num-patients", type=_positive, default=None, help="Patients with >= 2 visits.")
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
    from .data.cohort import build_cohort

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
    _save_cohort(cohort, args.out)
    print(report)
    print(f"-> {args.out}")


def _write_synthetic(args: argparse.Namespace) -> None:
    from .data.synthetic import SCALES, cohort_statistics, format_statistics, write_synthetic_cohort

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


def _save_cohort(cohort, out: Path) -> None:
    """`save_to_disk` into a temporary sibling folder, then swap: a failure leaves `out` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (out.with_name(f".{out.name}.{what}-{os.getpid()}") for what in ("tmp", "old"))
    cohort.save_to_disk(str(tmp))
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


# -- train ----------------------------------------------------------------------------------------------
class _TrainHelp(argparse.Action):
    """`shark-hf train --help`: the launcher's options, then every flag of the training run."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="Show this help.")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from transformers import HfArgumentParser

        from .training import TrainingArguments

        training = HfArgumentParser(TrainingArguments, add_help=False).format_help()
        print(parser.format_help())
        print("training flags (the run's; --output_dir, --cohort and --tokenizer are required):")
        print(training[training.index("options:\n") + len("options:\n") :], end="")
        parser.exit()


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-h", "--help", action=_TrainHelp)
    p.add_argument("--accelerate-config", type=Path, help="An accelerate config file (see training/*.yaml).")
    p.add_argument(
        "--num-processes",
        type=_positive,
        default=None,
        help="Processes to launch (CPU: gloo DDP); default 1, in this process.",
    )


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    """Single process: train here (as `python training/train.py`); else hand over to `accelerate launch`."""
    _check_training_inputs(rest)
    if args.accelerate_config or (args.num_processes or 1) > 1:
        return _launch(args, rest)
    from transformers import HfArgumentParser

    from .training import TrainingArguments, train

    parser = HfArgumentParser(TrainingArguments, prog="shark-hf train")
    (training_args,) = parser.parse_args_into_dataclasses(args=rest)
    logging.getLogger("shark_hf").setLevel(logging.INFO)  # epoch lines and final metrics
    train(training_args)
    return 0


def _launch(args: argparse.Namespace, rest: list[str]) -> int:
    """`accelerate launch -m shark_hf.training REST`; returns its exit code."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    env = dict(os.environ)
    if args.accelerate_config:
        if not args.accelerate_config.is_file():
            raise UserError(f"{args.accelerate_config}: no such accelerate config file")
        command += ["--config_file", str(args.accelerate_config)]
        command += ["--num_processes", str(args.num_processes)] if args.num_processes else []
    else:
        command += ["--multi_gpu", "--num_processes", str(args.num_processes), "--num_machines", "1"]
        command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
        if not _has_cuda():
            env["ACCELERATE_USE_CPU"] = "true"  # gloo DDP (`--cpu` would silently run ONE process)
    command += ["-m", "shark_hf.training", *rest]
    logger.info("Running: %s", " ".join(command))
    returncode = subprocess.run(command, env=env).returncode
    if returncode:
        print(f"shark-hf train: error: training exited with code {returncode}", file=sys.stderr)
    return returncode


def _check_training_inputs(rest: list[str]) -> None:
    """Catch a wrong cohort, tokenizer or init model in one line before any training code is loaded."""
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("cohort", "root", "tokenizer", "tokenizer_subfolder", "init_from"):
        peek.add_argument(*dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"]), dest=name)
    known, _ = peek.parse_known_args(rest)
    if known.cohort in BUILDERS and not Path(known.cohort).is_dir():
        if not known.root:
            raise UserError(f"--cohort {known.cohort} names a builder: it needs --root")
    elif known.cohort:
        _load_cohort(Path(known.cohort), load=False)
    if known.tokenizer and _local(known.tokenizer, "tokenizer"):
        _check_tokenizer_folder(Path(known.tokenizer) / (known.tokenizer_subfolder or ""))
    if known.init_from and _local(known.init_from, "model"):
        _check_model_folder(Path(known.init_from))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- evaluate -------------------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="A trained model folder (or Hub repo id).")
    p.add_argument("--cohort", type=Path, required=True, help="A cohort folder (build-dataset).")
    p.add_argument(
        "--tokenizer", default=None, help="Tokenizer folder or repo (default: the model's tokenizer/)."
    )
    p.add_argument("--split", default="test", help="train, validation or test (default: test).")
    p.add_argument("--batch-size", type=_positive, default=256)
    p.add_argument(
        "--max-visits", type=_positive, default=None, help="Keep the most recent visits (as in training)."
    )
    p.add_argument("--out", type=Path, help="Also write the metrics as JSON here.")


def _evaluate(args: argparse.Namespace) -> None:
    from .training import evaluate_model

    cohort = _load_cohort(args.cohort)
    if args.split not in cohort:
        raise UserError(f"{args.cohort} has no split {args.split!r} (splits: {', '.join(cohort)})")
    split = cohort[args.split]
    tokenizer = _load_tokenizer(args.model, args.tokenizer)
    unknown = [code for code in cohort_codes({args.split: split}) if code not in tokenizer]
    if unknown:
        raise UserError(
            f"{len(unknown)} codes of {args.cohort} ({args.split}) are not in the tokenizer: {unknown[:10]}"
        )
    model = _load_weights(args.model)
    metrics = evaluate_model(model, tokenizer, split, batch_size=args.batch_size, max_visits=args.max_visits)
    _emit({"split": args.split, **metrics}, args.out)


# -- predict --------------------------------------------------------------------------------------------
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="A trained model folder (or Hub repo id).")
    p.add_argument(
        "--input",
        type=Path,
        required=True,
        help='JSON list of patients: each a list of visits (lists of codes, oldest first) or {"patient_id": '
        '..., "visits": [[...], ...]}.',
    )
    p.add_argument(
        "--tokenizer", default=None, help="Tokenizer folder or repo (default: the model's tokenizer/)."
    )
    p.add_argument("--top-k", type=_positive, default=20, help="Labels per patient (default: 20).")
    p.add_argument(
        "--unknown",
        default="error",
        choices=["error", "skip", "embed"],
        help="Codes the tokenizer never saw: fail (default), drop them, or embed them (semantic tokenizers).",
    )
    p.add_argument("--batch-size", type=_positive, default=256)
    p.add_argument("--out", type=Path, help="Write the predictions here instead of stdout.")


def _predict(args: argparse.Namespace) -> None:
    patients = _read_patients(args.input)
    tokenizer = _load_tokenizer(args.model, args.tokenizer)
    chunks = [patients[i : i + args.batch_size] for i in range(0, len(patients), args.batch_size)]
    batches = [tokenizer([p["visits"] for p in chunk], unknown=args.unknown) for chunk in chunks]
    model = _load_weights(args.model)
    predictions = [
        {"patient_id": patient["patient_id"], **prediction}
        for chunk, batch in zip(chunks, batches, strict=True)
        for patient, prediction in zip(chunk, model.predict(batch, top_k=args.top_k), strict=True)
    ]
    _emit(predictions, args.out)


def _read_patients(path: Path) -> list[dict]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error}") from None
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
    p.add_argument("--subfolder", default=None, help="Subfolder of a repo (a model repo's: tokenizer).")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit.")
    p.add_argument(
        "--top", type=_positive, default=10, help="Purest clusters shown per level, and pairs shown."
    )
    p.add_argument("--min-size", type=_positive, default=5, help="Leave out clusters with fewer codes.")
    p.add_argument("--json", action="store_true", help="Print the tokenizer's settings and report as JSON.")


def _inspect(args: argparse.Namespace) -> None:
    from .tokenization_shark import SharkTokenizer

    if _local(args.tokenizer, "tokenizer"):
        _check_tokenizer_folder(Path(args.tokenizer) / (args.subfolder or ""))
    tokenizer = SharkTokenizer.from_pretrained(
        args.tokenizer, subfolder=args.subfolder, revision=args.revision
    )
    report = tokenizer.cluster_report(min_size=args.min_size)
    if args.json:
        settings = {k: v for k, v in tokenizer.config.items() if k != "codes"}
        print(json.dumps({"tokenizer": settings, **report.to_dict()}, indent=2))
        return
    print(f"{tokenizer!r}\ncollision rate {tokenizer.collision_rate:.4f}")
    if errors := tokenizer.settings.get("level_errors"):
        print("reconstruction MSE after each level: " + ", ".join(f"{e:.4f}" for e in errors))
    print()
    print(report.format(top=args.top), end="")


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

    _check_model_folder(args.model)
    _check_tokenizer_folder(args.tokenizer or args.model / "tokenizer")
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
    p.add_argument("--epochs", type=_positive, default=30)


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, seed=args.seed, num_epochs=args.epochs)


# -- shared helpers -------------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return path.read_text(encoding="utf-8")


def _emit(data, out: Path | None) -> None:
    """Print `data` as JSON, or write it to `out` atomically."""
    text = json.dumps(data, indent=2) + "\n"
    if out is None:
        print(text, end="")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    print(f"-> {out}")


def _local(name: str, what: str) -> bool:
    """Whether `name` is a local folder (True) or a Hub repo id (False); a missing path is an error."""
    if Path(name).exists():
        return True
    if name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") != 1:
        raise UserError(f"{name}: no such {what} folder")
    return False


def _load_cohort(path: Path, load: bool = True):
    if not path.is_dir():
        raise UserError(f"{path}: no such cohort folder")
    if not (path / COHORT_MARKER).is_file():
        raise UserError(f"{path} is not a cohort folder (no {COHORT_MARKER}); make one with build-dataset")
    if not load:
        return None
    from datasets import load_from_disk

    return load_from_disk(str(path))


def _check_tokenizer_folder(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"{path}: no such tokenizer folder")
    if not (path / TOKENIZER_MARKER).is_file():
        raise UserError(
            f"{path} is not a tokenizer folder (no {TOKENIZER_MARKER}); make one with fit-tokenizer"
        )


def _check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"{path}: no such model folder")
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{path} is not a model folder (no config.json); train one with `shark-hf train`")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{config} is not a JSON object") from None
    if model_type != "shark":
        raise UserError(f"{path} is not a SHARK model (config.json model_type is {model_type!r})")


def _load_tokenizer(model: str, tokenizer: str | None):
    """The tokenizer for `model` (`tokenizer`, else the model's `tokenizer/`), checked against the model's
    config; the weights are loaded later by `_load_weights`, once the inputs are known to be valid."""
    from .configuration_shark import SharkConfig
    from .tokenization_shark import SharkTokenizer

    subfolder = None
    if _local(model, "model"):
        _check_model_folder(Path(model))
        if tokenizer is None:
            _check_tokenizer_folder(Path(model) / "tokenizer")
    elif tokenizer is None:
        subfolder = "tokenizer"
    if tokenizer is not None and _local(tokenizer, "tokenizer"):
        _check_tokenizer_folder(Path(tokenizer))
    source = tokenizer or (model if subfolder else str(Path(model) / "tokenizer"))
    shark_tokenizer = SharkTokenizer.from_pretrained(source, subfolder=subfolder)
    SharkConfig.from_pretrained(model).check_tokenizer(shark_tokenizer)
    return shark_tokenizer


def _load_weights(model: str):
    from .modeling_shark import SharkForDiagnosisPrediction

    return SharkForDiagnosisPrediction.from_pretrained(model).eval()


COMMANDS: dict[str, tuple[Callable, Callable, str, tuple[str, ...]]] = {
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
    "fit-tokenizer": (
        _fit_args,
        _fit_tokenizer,
        "Fit Residual K-Means codebooks: codes -> semantic IDs (or a baseline tokenizer).",
        (
            "shark-hf fit-tokenizer --embeddings emb.safetensors --levels 4 --codebook-size 128 --out tok/",
            "shark-hf fit-tokenizer --kind random --cohort cohort/ --out random_tok/",
            "shark-hf fit-tokenizer --kind index --cohort cohort/ --out index_tok/",
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
    "train": (
        _train_args,
        _train,
        "Train with Accelerate: the launcher's options below; every other flag goes to the training run.",
        (
            "shark-hf train --cohort cohort/ --tokenizer tok/ --output_dir runs/shark",
            "shark-hf train --cohort cohort/ --tokenizer tok/ --output_dir runs/ft --init_from runs/shark",
            "shark-hf train --num-processes 2 --cohort cohort/ --tokenizer tok/ --output_dir runs/ddp",
            "shark-hf train --accelerate-config training/accelerate_gpu.yaml --cohort cohort/ "
            "--tokenizer tok/ --output_dir runs/gpu",
        ),
    ),
    "evaluate": (
        _evaluate_args,
        _evaluate,
        "Evaluate a trained model on a cohort split: P@k, Acc@k, R@k, AUC, F1 as JSON.",
        (
            "shark-hf evaluate --model runs/shark --cohort cohort/ --split test",
            "shark-hf evaluate --model runs/shark --cohort other_cohort/ --out metrics_other.json",
        ),
    ),
    "predict": (
        _predict_args,
        _predict,
        "Predict next-visit CCS categories (names, probabilities, visit attention) for patients in JSON.",
        (
            'echo \'[[["401.9", "250.00"], ["414.01", "428.0"]]]\' > patients.json',
            "shark-hf predict --model runs/shark --input patients.json --top-k 5",
            "shark-hf predict --model my-org/shark-mimic3 --input patients.json --unknown embed",
        ),
    ),
    "inspect-tokenizer": (
        _inspect_args,
        _inspect,
        "Report clusters with purity and cross-chapter ID sharing (the paper's Tables 4 and 5).",
        (
            "shark-hf inspect-tokenizer tok/",
            "shark-hf inspect-tokenizer tok/ --json > report.json",
            "shark-hf inspect-tokenizer my-org/shark-mimic3 --subfolder tokenizer",
        ),
    ),
    "push": (
        _push_args,
        _push,
        "Push a trained model and its tokenizer to the Hub with model cards.",
        (
            "shark-hf push --model runs/shark --repo my-org/shark-mimic3 --private",
            "shark-hf push --model runs/shark --repo my-org/shark-mimic3 --revision v2 --license other",
        ),
    ),
    "demo": (
        _demo_args,
        _demo,
        "Run the whole pipeline on the built-in cohort (what `make demo` runs).",
        ("shark-hf demo --out demo_output",),
    ),
}


MAX_MESSAGE = 1000  # characters of an error message shown (a list of 500 unknown codes is not read)


def _one_line(error: BaseException) -> str:
    """The error's message on one line (a plain KeyError's message without the quotes str() adds)."""
    plain_key_error = isinstance(error, KeyError) and type(error).__str__ is KeyError.__str__
    text = " ".join((str(error.args[0]) if plain_key_error and error.args else str(error)).split())
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE]} ... ({len(text) - MAX_MESSAGE} more characters)"
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of `shark-hf`; returns the exit code."""
    args, rest = _parser().parse_known_args(argv)
    if rest and args.command != "train":
        args.subparser.error(f"unrecognized arguments: {' '.join(rest)}")
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        format="%(levelname)s %(name)s: %(message)s", level=logging.INFO if verbose else logging.WARNING
    )
    try:
        return (args.run(args, rest) if args.command == "train" else args.run(args)) or 0
    except USER_ERRORS as error:
        if verbose:
            raise
        print(f"shark-hf {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shark-hf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
