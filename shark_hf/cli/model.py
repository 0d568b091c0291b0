"""`shark-hf train`, `shark-hf evaluate` and `shark-hf predict`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from ..output_folder import check_output_dir
from ..utils import UNKNOWN_POLICIES
from .common import (
    BUILDERS,
    Command,
    UserError,
    check_model_folder,
    check_tokenizer_folder,
    emit,
    is_local,
    load_cohort,
    load_tokenizer,
    load_weights,
    logger,
    positive,
    read_text,
)


class _TrainHelp(argparse.Action):
    """`shark-hf train --help`: the launcher's options, then every flag of the training run."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="Show this help.")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        training = training_flags_parser().format_help()
        print(parser.format_help())
        print("training flags (the run's; --output_dir and --cohort are required):")
        print(training[training.index("options:\n") + len("options:\n") :], end="")
        parser.exit()


def training_flags_parser() -> argparse.ArgumentParser:
    """The flags that transformers' `HfArgumentParser(TrainingArguments)` accepts, for `--help` only.

    Same option strings, defaults and help texts; built with argparse so that the help loads no transformers
    (about 1 s). Parsing itself goes through `HfArgumentParser` (`_train`).
    """
    from ..training_args import TrainingArguments

    parser = argparse.ArgumentParser(add_help=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for flag in dataclasses.fields(TrainingArguments):
        names = [f"--{flag.name}"] + ([f"--{flag.name.replace('_', '-')}"] if "_" in flag.name else [])
        names += flag.metadata.get("aliases", [])
        default = None if flag.default is dataclasses.MISSING else flag.default
        help_text = flag.metadata.get("help")
        if flag.type in (bool, "bool"):  # HfArgumentParser replaces the annotation strings by types
            parser.add_argument(*names, nargs="?", const=True, default=default, help=help_text)
            if default is True:
                negated = [name.replace("--", "--no_" if name == names[0] else "--no-", 1) for name in names]
                parser.add_argument(*negated, action="store_false", dest=flag.name, help=argparse.SUPPRESS)
        else:
            parser.add_argument(*names, default=default, help=help_text)
    return parser


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-h", "--help", action=_TrainHelp)
    p.add_argument("--accelerate-config", type=Path, help="An accelerate config file (see training/*.yaml).")
    p.add_argument(
        "--num-processes",
        type=positive,
        default=None,
        help="Processes to launch (CPU: gloo DDP); default 1, in this process.",
    )


def _train(args: argparse.Namespace, rest: list[str]) -> int:
    """Single process: train here (as `python training/train.py`); else hand over to `accelerate launch`."""
    _check_training_inputs(rest)
    if args.accelerate_config or (args.num_processes or 1) > 1:
        return _launch(args, rest)
    from transformers import HfArgumentParser

    from ..training import TrainingArguments, train

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
    """Catch a wrong cohort, tokenizer, init model or output folder in one line before any training code is
    loaded (and before `accelerate launch` starts processes that would each fail)."""
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    names = ("cohort", "root", "tokenizer", "tokenizer_subfolder", "init_from", "output_dir")
    for name in (*names, "resume_from_checkpoint"):
        peek.add_argument(*dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"]), dest=name)
    peek.add_argument(
        "--overwrite_output_dir", "--overwrite-output-dir", nargs="?", const="true", default="false"
    )
    known, _ = peek.parse_known_args(rest)
    if known.output_dir:
        check_output_dir(
            known.output_dir,
            known.init_from,
            resuming=known.resume_from_checkpoint is not None,
            overwrite=known.overwrite_output_dir.lower() in ("true", "yes", "1", "t", "y"),
        )
    if known.cohort in BUILDERS and not Path(known.cohort).is_dir():
        if not known.root:
            raise UserError(f"--cohort {known.cohort} names a builder: it needs --root")
    elif known.cohort:
        load_cohort(Path(known.cohort), load=False)
    if known.tokenizer and is_local(known.tokenizer, "tokenizer"):
        check_tokenizer_folder(Path(known.tokenizer) / (known.tokenizer_subfolder or ""))
    if known.init_from and is_local(known.init_from, "model"):
        check_model_folder(Path(known.init_from))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="A trained model folder (or Hub repo id).")
    p.add_argument("--cohort", type=Path, required=True, help="A cohort folder (build-dataset).")
    p.add_argument(
        "--tokenizer", default=None, help="Tokenizer folder or repo (default: the model's tokenizer/)."
    )
    p.add_argument("--split", default="test", help="train, validation or test (default: test).")
    p.add_argument("--batch-size", type=positive, default=256, help="Patients per batch (default: 256).")
    p.add_argument(
        "--max-visits", type=positive, default=None, help="Keep the most recent visits (as in training)."
    )
    _unknown_arg(p)
    p.add_argument(
        "--baselines",
        action="store_true",
        help="Also score the non-learned baselines (most frequent, last visit, history) on the same split, "
        "fitted on the cohort's train split with settings chosen on its validation split, and the model's "
        "lift over the best of them.",
    )
    p.add_argument("--out", type=Path, help="Also write the metrics as JSON here.")


def _evaluate(args: argparse.Namespace) -> None:
    from ..data.collator import check_cohort_codes
    from ..evaluation import evaluate_model

    cohort = load_cohort(args.cohort)
    if args.split not in cohort:
        raise UserError(f"{args.cohort} has no split {args.split!r} (splits: {', '.join(cohort)})")
    split = cohort[args.split]
    tokenizer = load_tokenizer(args.model, args.tokenizer)
    check_cohort_codes(tokenizer, {args.split: split}, args.unknown)
    model = load_weights(args.model)
    metrics = evaluate_model(
        model, tokenizer, split, batch_size=args.batch_size, max_visits=args.max_visits, unknown=args.unknown
    )
    report = {"split": args.split, **metrics}
    if args.baselines:
        report.update(_baselines_beside(model.config, cohort, args.split, metrics))
    emit(report, args.out)


def _baselines_beside(config, cohort, split: str, metrics: dict) -> dict:
    """The baselines on `split` (fitted on train, chosen on validation), printed beside the model (stderr),
    and `{"baselines": {name: metrics}, "best_baseline": name, "lift_over_best_baseline": {k: lift}}`."""
    from ..baselines import evaluate_baselines, fit_baselines, format_baselines
    from ..metrics import HEADLINE_METRICS

    missing = [name for name in ("train", "validation") if name not in cohort]
    if missing:
        raise UserError(f"--baselines needs the cohort's train and validation splits; it lacks {missing}")
    labels = [config.id2label[i] for i in range(config.num_labels)]
    fitted = fit_baselines(cohort["train"], cohort["validation"], labels, config.label_space)
    splits = tuple(dict.fromkeys(("validation", split)))
    report = evaluate_baselines(fitted, cohort, splits)
    ks = [k for k in HEADLINE_METRICS if k in metrics]
    model_row = "  ".join(f"{100 * metrics[k]:6.2f}" for k in ks)
    lines = [f"{'':<14} " + "  ".join(f"{k:>6}" for k in ks), f"{'model':<14} {model_row}"]
    print("\n".join(lines + format_baselines(report, split, ks)), file=sys.stderr)
    best = report["best_baseline"]
    return {
        "baselines": {name: result[split] for name, result in report["baselines"].items()},
        "best_baseline": best,
        "lift_over_best_baseline": {k: metrics[k] - report["baselines"][best][split][k] for k in ks},
    }


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
    p.add_argument("--top-k", type=positive, default=20, help="Labels per patient (default: 20).")
    _unknown_arg(p)
    p.add_argument("--batch-size", type=positive, default=256, help="Patients per batch (default: 256).")
    p.add_argument("--out", type=Path, help="Write the predictions here instead of stdout.")


def _unknown_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unknown",
        default="error",
        choices=UNKNOWN_POLICIES,
        help="Codes the tokenizer never saw: fail (default), drop them, or embed them (semantic tokenizers).",
    )


def _predict(args: argparse.Namespace) -> None:
    patients = _read_patients(args.input)
    tokenizer = load_tokenizer(args.model, args.tokenizer)
    chunks = [patients[i : i + args.batch_size] for i in range(0, len(patients), args.batch_size)]
    from ..data.collator import VisitCollator

    model = load_weights(args.model)
    collator = VisitCollator.for_model(tokenizer, model.config, unknown=args.unknown)
    batches = [collator([{"visits": p["visits"]} for p in chunk]) for chunk in chunks]
    predictions = [
        {"patient_id": patient["patient_id"], **prediction}
        for chunk, batch in zip(chunks, batches, strict=True)
        for patient, prediction in zip(chunk, model.predict(batch, top_k=args.top_k), strict=True)
    ]
    emit(predictions, args.out)


def _read_patients(path: Path) -> list[dict]:
    try:
        data = json.loads(read_text(path))
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


COMMANDS: dict[str, Command] = {
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
}
