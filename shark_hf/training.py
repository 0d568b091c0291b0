"""Training of `SharkForDiagnosisPrediction` with Accelerate (evaluation lives in `shark_hf.evaluation`).

`train(args)` is the whole job behind `training/train.py` and `shark-hf train`: it loads a cohort and a
tokenizer, builds (or fine-tunes) a model, trains it with AdamW under `accelerate`, selects the best epoch on
validation P@10 with early stopping, and writes into `args.output_dir`:

```
config.json  model.safetensors  *.py         the best model (`save_pretrained`, with its remote code)
tokenizer/                                   its tokenizer (`SharkTokenizer.save_pretrained`)
metrics.json                                 test and validation metrics of the best model, privacy audit,
                                             the non-learned baselines (`shark_hf.baselines`), the best of
                                             them on validation and the model's test lift over it, and the
                                             cohort (`cohort_summary`: task options, patients and samples)
log.jsonl                                    one JSON object per epoch (losses, validation metrics)
training_curves.png                          train/validation loss and validation P@10 per epoch
checkpoints/checkpoint_<i>/                  `Accelerator.save_state` folders, with trainer_state.json and
                                             best_model/ (the best model so far), written every
                                             `--checkpoint_steps` optimizer steps
.shark-train.lock                            the pid of the process training into the folder (removed at
                                             the end)
```

A folder that holds another run is refused unless the run resumes or `--overwrite_output_dir` is given
(`shark_hf.output_folder`). A checkpoint is written into a hidden temporary folder and renamed to
`checkpoint_<i>` once complete; only then are checkpoints beyond `--checkpoint_limit` deleted, so a run
killed mid-save still has its previous checkpoint, and `--resume_from_checkpoint latest` takes the newest
complete one.

The same code runs single-process (`python training/train.py ...` or `python -m shark_hf.training ...`) and
distributed (`accelerate launch training/train.py ...` or `accelerate launch -m shark_hf.training ...`);
evaluation gathers with `gather_for_metrics`, so a distributed evaluation sees each sample exactly once.

Reproducibility: the shuffling order is a function of `--seed` and the epoch only (Accelerate's seedable
sampler), and every DataLoader draws its worker seeds from its own generator, so the global torch RNG only
drives initialisation and dropout. A checkpoint holds that RNG, the weights, the optimizer and the trainer's
progress (also mid-epoch), so a resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed
from datasets import Dataset, DatasetDict, load_from_disk
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .baselines import baseline_summary, evaluate_baselines, fit_baselines
from .codes import label_names as code_label_names
from .configuration_shark import SharkConfig
from .context_shrinkage import shrink_context_logits
from .data.cohort import cohort_task
from .data.collator import VisitCollator, check_cohort_codes
from .evaluation import (
    REPORT_KS,
    evaluate_split,
    make_dataloader,
    membership_audit,
    predict_scores,
    restrict_labels,
    split_metrics,
)
from .metrics import HEADLINE_METRICS, SELECTION_METRIC
from .modeling_shark import SharkForDiagnosisPrediction
from .output_folder import RUN_MARKERS, OutputDirLock, check_output_dir
from .plots import plot_training_curves
from .tokenization_shark import SharkTokenizer
from .training_args import TrainingArguments
from .utils import TOKENIZER_SUBFOLDER, atomic_write_text

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
CHECKPOINTS = "checkpoints"
# A checkpoint's folder once complete; `.checkpoint_<i>.tmp` while it is written.
CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")
BEST_MODEL = "best_model"
HEAD_PREFIX = "classifier."  # the prediction head's parameters in SharkForDiagnosisPrediction
EMBEDDING_WEIGHT = "code_embeddings.weight"  # the codeword (or, for `learned`, per-code) table [L*K, d]
# Parameters with one row per label (the head, and the repeat path's per-label weights): a new label space
# re-initialises them.
PER_LABEL_PREFIXES = (HEAD_PREFIX, "history.label_weight")
# Options that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "num_epochs",
    "patience",
    "checkpoint_limit",
}


@dataclass
class TrainerState:
    """Progress that a checkpoint must restore besides weights, optimizer and RNG states.

    `epoch` counts completed epochs, `step_in_epoch` the training batches of the current epoch already
    consumed, `global_step` the optimizer steps. `epoch_loss_sum` / `epoch_samples` are the training BCE
    (summed over samples and labels) and sample count of the current epoch so far, over all processes.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_samples: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- inputs


def load_cohort(args: TrainingArguments) -> DatasetDict:
    """The cohort named by `args.cohort`: a saved DatasetDict folder or a builder run over `args.root`."""
    if Path(args.cohort).is_dir():
        return load_from_disk(args.cohort)
    from .data.cohort import build_cohort

    if args.root is None:
        raise ValueError(f"--cohort {args.cohort!r} is not a folder; a builder name needs --root")
    return build_cohort(args.cohort, root=args.root, label_space=args.label_space)


def resolve_label_names(cohort: DatasetDict, label_space: str) -> dict[str, str]:
    """Ordered {label: name} of the label space; for `code`, the sorted labels of the TRAINING split (a
    label never seen in training cannot be learned; `restrict_labels` leaves it out of the other splits)."""
    if label_space != "code":
        return code_label_names(label_space)
    seen = sorted({label for labels in cohort["train"]["labels"] for label in labels})
    return {label: label for label in seen}


def cohort_summary(cohort: DatasetDict) -> dict:
    """What the model card says about the data: the task options recorded by `build_cohort` (`task`, None
    when the cohort does not record them) and the patients and samples of each split (a patient gives
    several samples with `sample="all_prefixes"`)."""
    return {
        "task": cohort_task(cohort["train"]),
        "patients": {name: len(set(split["patient_id"])) for name, split in cohort.items()},
        "samples": {name: len(split) for name, split in cohort.items()},
    }


def _restrict_evaluation_labels(
    cohort: DatasetDict, label_names: dict[str, str]
) -> tuple[DatasetDict, dict[str, int]]:
    """The cohort with `restrict_labels` applied to validation and test, and the counts removed."""
    removed = {}
    cohort = DatasetDict(cohort)
    for split in ("validation", "test"):
        cohort[split], removed[split] = restrict_labels(cohort[split], label_names)
        if removed[split]:
            logger.warning(
                "%d %s target labels are not in the label space (never seen in training): left out",
                removed[split],
                split,
            )
    return cohort, removed


# ----------------------------------------------------------------------------------------------- model


def build_model(
    args: TrainingArguments, tokenizer: SharkTokenizer, label_names: dict[str, str]
) -> tuple[SharkForDiagnosisPrediction, bool]:
    """A new model for `tokenizer`, or `args.init_from` fine-tuned on `label_names`.

    Returns:
        The model and whether its prediction head is new (a new model, or a pretrained one whose labels
        differ from `label_names`, whose head is then re-initialised while every other weight is kept).
    """
    if args.init_from is None:
        config = SharkConfig.from_tokenizer(
            tokenizer,
            label_names,
            label_space=args.label_space,
            embed_dim=args.embed_dim,
            hidden_size=args.hidden_size,
            composition=args.composition,
            dropout=args.dropout,
            repeat_head=args.repeat_head,
        )
        return SharkForDiagnosisPrediction(config), True
    pretrained = SharkForDiagnosisPrediction.from_pretrained(args.init_from)
    pretrained.check_tokenizer(tokenizer, allow_mismatch=args.allow_tokenizer_mismatch)
    logger.info(
        "Fine-tuning %s: its architecture is kept (--embed_dim, --hidden_size, --composition, --dropout "
        "are not used)",
        args.init_from,
    )
    pretrained.config.record_tokenizer(tokenizer)
    old_labels = [pretrained.config.id2label[i] for i in range(pretrained.config.num_labels)]
    if old_labels == list(label_names):
        logger.info("Same %d %s labels: the prediction head is kept", len(old_labels), args.label_space)
        return pretrained, False
    logger.warning(
        "Label space changed from %s (%d labels) to %s (%d labels): the prediction head is re-initialised",
        pretrained.config.label_space,
        len(old_labels),
        args.label_space,
        len(label_names),
    )
    return _with_new_head(pretrained, label_names, args.label_space), True


def _with_new_head(
    pretrained: SharkForDiagnosisPrediction, label_names: dict[str, str], label_space: str
) -> SharkForDiagnosisPrediction:
    """A model with `pretrained`'s configuration and weights but a freshly initialised head (and per-label
    repeat weights) for `label_names`."""
    labels = list(label_names)
    config = SharkConfig(
        **{
            **pretrained.config.to_dict(),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "label_descriptions": dict(label_names),
            "label_space": label_space,
        }
    )
    model = SharkForDiagnosisPrediction(config)
    body = {k: v for k, v in pretrained.state_dict().items() if not k.startswith(PER_LABEL_PREFIXES)}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(not key.startswith(PER_LABEL_PREFIXES) for key in missing):
        raise RuntimeError(
            f"cannot transfer the weights of the pretrained model: missing {missing}, unexpected {unexpected}"
        )
    return model


def zero_unseen_code_rows(
    model: SharkForDiagnosisPrediction, tokenizer: SharkTokenizer, train: Dataset
) -> int:
    """For a per-code table (`code_representation="learned"`): zero the embedding row of every tokenizer
    code absent from the training split's visits, and return how many rows were zeroed.

    Such a row never receives a gradient, so it would keep its random initialisation and feed noise for
    codes first met in validation or test; a zero row (the unknown-code vector) stays zero under AdamW.
    """
    if model.config.code_representation != "learned":
        return 0
    seen = {code for visits in train["visits"] for visit in visits for code in visit}
    rows = [row for row, code in enumerate(tokenizer.codes) if code not in seen]
    rows = tokenizer.ids[rows, 0] if rows else torch.zeros(0, dtype=torch.int64)
    with torch.no_grad():
        model.get_parameter(EMBEDDING_WEIGHT)[rows] = 0.0
    logger.info(
        "%d of %d codes never occur in training: their embedding rows are zero", len(rows), len(tokenizer)
    )
    return len(rows)


def label_frequency_bias(split: Dataset, label_names: dict[str, str]) -> torch.Tensor:
    """Log-odds of each label's smoothed frequency among the samples of `split`: `[C]` float32.

    p_c = (n_c + 0.5) / (N + 1) for a label present in n_c of N samples, so a label never seen gets a finite
    bias (about -log(2N)) and one always present a finite positive bias.
    """
    return frequency_bias(label_counts(split, label_names), len(split))


def label_counts(split: Dataset, label_names: dict[str, str]) -> torch.Tensor:
    """`[C]` float64: in how many samples of `split` each label of `label_names` is present."""
    column = {label: i for i, label in enumerate(label_names)}
    counts = torch.zeros(len(column), dtype=torch.float64)
    for label, count in Counter(label for labels in split["labels"] for label in set(labels)).items():
        if label not in column:
            raise ValueError(f"training label {label!r} is not in the label space ({len(column)} labels)")
        counts[column[label]] = count
    return counts


def frequency_bias(counts: torch.Tensor, num_samples: int) -> torch.Tensor:
    """`[C]` float32 log-odds of (counts + 0.5) / (num_samples + 1) (`label_frequency_bias`)."""
    return torch.logit((counts + 0.5) / (num_samples + 1)).float()


def init_head_bias(model: SharkForDiagnosisPrediction, bias: torch.Tensor) -> None:
    """Set the prediction head's bias `[C]` (logits of an all-zero context vector)."""
    with torch.no_grad():
        model.get_parameter(HEAD_PREFIX + "bias").copy_(bias)
    logger.info(
        "Prediction head bias set to the log-odds of the training label frequencies (%.2f to %.2f)",
        bias.min(),
        bias.max(),
    )


# -------------------------------------------------------------------------------------------- training


def train(args: TrainingArguments) -> dict:
    """Train, keep the best epoch on validation P@10, evaluate it on test; returns metrics.json's content.

    The output folder is checked and locked first (`_claim_output_dir`); the lock is released at the end,
    also when training fails."""
    accelerator = _make_accelerator(args)
    lock = _claim_output_dir(args, accelerator)
    try:
        return _train(args, accelerator)
    finally:
        if lock is not None:
            lock.release()


def _claim_output_dir(args: TrainingArguments, accelerator: Accelerator) -> OutputDirLock | None:
    """On the main process: `check_output_dir` and take the folder's lock (returned; None elsewhere). Every
    process raises the main process's error, so that none is left waiting for the others."""
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            check_output_dir(
                args.output_dir,
                args.init_from,
                resuming=args.resume_from_checkpoint is not None,
                overwrite=args.overwrite_output_dir,
            )
            lock = OutputDirLock(args.output_dir)
            lock.acquire()
        except (ValueError, OSError) as caught:
            error = (type(caught), str(caught))
    if accelerator.num_processes > 1:
        (error,) = broadcast_object_list([error])
    if error is not None:
        kind, message = error
        raise kind(message)
    return lock


def _train(args: TrainingArguments, accelerator: Accelerator) -> dict:
    """`train` once the output folder is claimed."""
    set_seed(args.seed)
    cohort = load_cohort(args)
    tokenizer = SharkTokenizer.from_pretrained(args.tokenizer, subfolder=args.tokenizer_subfolder)
    label_names = resolve_label_names(cohort, args.label_space)
    summary = cohort_summary(cohort)
    check_cohort_codes(tokenizer, cohort, args.unknown)
    cohort, labels_left_out = _restrict_evaluation_labels(cohort, label_names)
    model, new_head = build_model(args, tokenizer, label_names)
    if args.init_from is None:
        zero_unseen_code_rows(model, tokenizer, cohort["train"])
    if new_head and args.label_frequency_bias:
        init_head_bias(model, label_frequency_bias(cohort["train"], label_names))
    collator = VisitCollator.for_model(
        tokenizer, model.config, max_visits=args.max_visits, unknown=args.unknown
    )
    loaders = make_loaders(args, cohort, collator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
    loaders = dict(zip(loaders, prepared, strict=True))
    scheduler = accelerator.prepare(make_scheduler(args, accelerator, optimizer, len(loaders["train"])))
    _start_run(args, accelerator, cohort, model, tokenizer)

    state = _resume(args, accelerator) if args.resume_from_checkpoint else TrainerState()
    start = time.perf_counter()
    while state.epoch < args.num_epochs and state.epochs_without_improvement < args.patience:
        train_loss = train_epoch(args, accelerator, model, optimizer, scheduler, loaders["train"], state)
        validation = evaluate_split(model, loaders["validation"], accelerator)
        _end_epoch(args, accelerator, model, state, train_loss, validation)
    train_seconds = time.perf_counter() - start
    extra = {
        "labels_outside_label_space": labels_left_out,
        "cohort": summary,
        **heuristics(cohort, label_names, args.label_space),
    }
    # The patient of each training and test sample, for the audit's bootstrap (never written to a file).
    patient_ids = {name: list(cohort[name]["patient_id"]) for name in ("train", "test")}
    results = _final_results(args, accelerator, loaders, state, train_seconds, extra, patient_ids)
    accelerator.end_training()
    return results


def make_loaders(
    args: TrainingArguments, cohort: DatasetDict, collator: VisitCollator
) -> dict[str, DataLoader]:
    """Shuffled `train` batches, and in-order `validation`, `test` and `members` (the training split,
    for the membership audit) evaluation batches."""
    splits = {"train": "train", "validation": "validation", "test": "test", "members": "train"}
    return {
        name: make_dataloader(
            cohort[split],
            collator,
            args.batch_size if name == "train" else args.eval_batch_size,
            name == "train",
            args.num_workers,
            args.seed,
        )
        for name, split in splits.items()
    }


def make_scheduler(args: TrainingArguments, accelerator: Accelerator, optimizer, batches_per_epoch: int):
    """`transformers.get_scheduler` over the `--num_epochs` optimizer steps of `batches_per_epoch` (this
    process's), times the number of processes: a prepared scheduler steps once per process per step."""
    from transformers import get_scheduler

    steps = math.ceil(batches_per_epoch / args.gradient_accumulation_steps) * args.num_epochs
    steps *= accelerator.num_processes
    return get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=round(args.warmup_ratio * steps),
        num_training_steps=steps,
    )


def _make_accelerator(args: TrainingArguments) -> Accelerator:
    """An Accelerator with trackers logging into `output_dir` and a seeded sampler."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        # Checkpoints are numbered by project_config.iteration (which save_state advances) and written by
        # `_save_checkpoint`, not by Accelerate's automatic naming, which deletes old ones before saving.
        project_config=ProjectConfiguration(project_dir=args.output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        log_with=_available_trackers(),
    )
    if not accelerator.is_local_main_process:  # progress bars on the main process only
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    return accelerator


def _start_run(
    args: TrainingArguments, accelerator: Accelerator, cohort: DatasetDict, model, tokenizer: SharkTokenizer
) -> None:
    """Create the output folder (a fresh start: without a previous run's outputs, with an empty log), save
    the tokenizer next to where the model will go, start the trackers."""
    if accelerator.is_main_process:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        if args.resume_from_checkpoint is None:
            _clear_previous_run(Path(args.output_dir))
        tokenizer.save_pretrained(Path(args.output_dir) / TOKENIZER_SUBFOLDER)
        sizes = ", ".join(f"{name} {len(split)}" for name, split in cohort.items())
        params = sum(p.numel() for p in model.parameters())
        logger.info(
            "Cohort: %s samples; model: %d parameters; %d process(es)",
            sizes,
            params,
            accelerator.num_processes,
        )
    accelerator.init_trackers("shark", config=_tracker_config(args))
    accelerator.wait_for_everyone()


def _clear_previous_run(output_dir: Path) -> None:
    """Delete what an earlier run left in `output_dir` (only there with --overwrite_output_dir: its model,
    curves and model card, which would describe the old run) and start an empty log.jsonl."""
    for name in (*RUN_MARKERS, "model.safetensors", "training_curves.png", "README.md"):
        path = output_dir / name
        if path.is_dir():
            logger.warning("--overwrite_output_dir: deleting the previous run's %s", path)
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    atomic_write_text(output_dir / "log.jsonl", "")


def train_epoch(
    args: TrainingArguments,
    accelerator: Accelerator,
    model,
    optimizer,
    scheduler,
    train_loader,
    state: TrainerState,
    desc: str | None = None,
) -> float:
    """One pass over the training split, from batch `state.step_in_epoch` on (a resumed epoch); `desc`
    labels the progress bar (default: "epoch i/--num_epochs").

    Returns:
        The epoch's mean training BCE in nats per label (as the validation loss), over all processes.
    """
    model.train()
    train_loader.set_epoch(state.epoch)
    progress = tqdm(
        accelerator.skip_first_batches(train_loader, state.step_in_epoch),
        desc=desc or f"epoch {state.epoch + 1}/{args.num_epochs}",
        initial=state.step_in_epoch,
        total=len(train_loader),
        disable=not accelerator.is_local_main_process,
        leave=False,
    )
    totals = torch.zeros(2, device=accelerator.device)  # this process's [BCE sum, samples] not yet in state
    for batch in progress:
        with accelerator.accumulate(model):
            loss = model(**batch).loss  # summed over labels, averaged over the batch
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        batch_size = len(batch["labels"])
        totals += torch.stack([loss.detach().float() * batch_size, loss.new_tensor(batch_size).float()])
        state.step_in_epoch += 1
        if accelerator.sync_gradients:
            state.global_step += 1
            if args.checkpoint_steps and state.global_step % args.checkpoint_steps == 0:
                _add_losses(accelerator, state, totals)
                _save_checkpoint(args, accelerator, state)
    _add_losses(accelerator, state, totals)
    num_labels = accelerator.unwrap_model(model).config.num_labels
    return state.epoch_loss_sum / max(state.epoch_samples, 1) / num_labels


def _add_losses(accelerator: Accelerator, state: TrainerState, totals: torch.Tensor) -> None:
    """Move every process's running `[BCE sum, samples]` into `state` (a collective call), zero `totals`."""
    loss_sum, samples = accelerator.reduce(totals.clone(), reduction="sum").tolist()
    state.epoch_loss_sum += loss_sum
    state.epoch_samples += round(samples)
    totals.zero_()


def _end_epoch(
    args: TrainingArguments,
    accelerator: Accelerator,
    model,
    state: TrainerState,
    train_loss: float,
    validation: dict,
):
    """Record the epoch, keep the best model on validation P@10, count epochs without improvement."""
    state.epoch += 1
    state.step_in_epoch = state.epoch_samples = 0
    state.epoch_loss_sum = 0.0
    record = {"epoch": state.epoch, "step": state.global_step, "train_loss": train_loss}
    record.update({f"validation_{k}": v for k, v in validation.items()})
    state.history.append(record)
    improved = validation[SELECTION_METRIC] > state.best_metric
    if improved:
        state.best_metric, state.best_epoch = validation[SELECTION_METRIC], state.epoch
        state.epochs_without_improvement = 0
    else:
        state.epochs_without_improvement += 1
    if accelerator.is_main_process:
        if improved:
            accelerator.unwrap_model(model).save_pretrained(args.output_dir)
        with open(Path(args.output_dir) / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        logger.info(
            "epoch %d: train loss %.4f, validation loss %.4f, P@10 %.4f%s",
            state.epoch,
            train_loss,
            validation["loss"],
            validation[SELECTION_METRIC],
            " (best)" if improved else "",
        )
    accelerator.log({k: v for k, v in record.items() if isinstance(v, float | int)}, step=state.epoch)
    accelerator.wait_for_everyone()


def heuristics(cohort: DatasetDict, label_names: dict[str, str], label_space: str) -> dict:
    """`shark_hf.baselines.evaluate_baselines` on validation and test (settings chosen on validation)."""
    fitted = fit_baselines(cohort["train"], cohort["validation"], label_names, label_space)
    return evaluate_baselines(fitted, cohort, ("validation", "test"), ks=REPORT_KS)


def _final_results(
    args: TrainingArguments,
    accelerator: Accelerator,
    loaders: dict,
    state: TrainerState,
    seconds: float,
    extra: dict,
    patient_ids: dict[str, list[str]],
) -> dict:
    """Evaluate the saved best model on validation and test, audit it, write metrics.json and the plot.

    `extra` holds `labels_outside_label_space`, the `cohort_summary` and the `heuristics` report (all
    written); the model's test lift over the best heuristic is added (`shark_hf.baselines.baseline_summary`).
    `patient_ids` (the patient of each train and test sample) only group the audit's bootstrap."""
    output_dir = Path(args.output_dir)
    best = accelerator.prepare(SharkForDiagnosisPrediction.from_pretrained(output_dir))
    shrinkage = _shrink_context(args, accelerator, best, loaders["validation"])
    test_logits, test_labels, test_loss = predict_scores(best, loaders["test"], accelerator)
    at_cap = state.best_epoch == args.num_epochs
    if at_cap and accelerator.is_main_process:
        logger.warning(
            "The best validation %s came at the last allowed epoch (%d = --num_epochs): training has not "
            "converged; raise --num_epochs or the learning rate",
            SELECTION_METRIC,
            args.num_epochs,
        )
    results = {
        "best_epoch": state.best_epoch,
        "best_epoch_at_cap": at_cap,
        "epochs": state.epoch,
        "train_seconds": round(seconds, 3),
        "num_processes": accelerator.num_processes,
        **shrinkage,
        "validation": evaluate_split(best, loaders["validation"], accelerator),
        "test": split_metrics(test_logits, test_labels, test_loss),
        "privacy": membership_audit(
            best, loaders["members"], test_logits, test_labels, accelerator, patient_ids, args.seed
        ),
        "labels_outside_label_space": extra["labels_outside_label_space"],
        "cohort": extra["cohort"],
    }
    results.update(baseline_summary(extra, results["test"]))
    results["args"] = asdict(args)
    if accelerator.is_main_process:
        _write_json(output_dir / "metrics.json", results)
        plot_training_curves({output_dir.name: state.history}, output_dir / "training_curves.png")
        logger.info(
            "Test P@10 %.4f  P@20 %.4f  Acc@10 %.4f  Acc@20 %.4f",
            *(results["test"][k] for k in HEADLINE_METRICS),
        )
        best_heuristic = results["best_baseline"]
        logger.info(
            "Best heuristic on validation: %s, test P@10 %.4f; the model's lift over it: %+.4f",
            best_heuristic,
            results["baselines"][best_heuristic]["test"][SELECTION_METRIC],
            results["lift_over_best_baseline"][SELECTION_METRIC],
        )
    return results


def _shrink_context(args: TrainingArguments, accelerator: Accelerator, best, validation) -> dict:
    """`shark_hf.context_shrinkage` on the best model (repeat head, `--context_shrinkage`): the factor
    chosen and each factor's validation P@10 for metrics.json; the scaled model is saved in its place."""
    if not (accelerator.unwrap_model(best).config.repeat_head and args.context_shrinkage):
        return {}
    scale, scores = shrink_context_logits(best, validation, accelerator)
    if accelerator.is_main_process:
        logger.info(
            "Context logits scaled by %s (validation %s by factor: %s)",
            scale,
            SELECTION_METRIC,
            ", ".join(f"{factor}: {score:.4f}" for factor, score in scores.items()),
        )
        if scale != 1.0:
            accelerator.unwrap_model(best).save_pretrained(args.output_dir)
    accelerator.wait_for_everyone()
    return {"context_logit_scale": scale, "context_scale_validation": {str(k): v for k, v in scores.items()}}


# ------------------------------------------------------------------------------------------ checkpoints


def _save_checkpoint(args: TrainingArguments, accelerator: Accelerator, state: TrainerState) -> None:
    """`save_state` (weights, optimizer, RNGs, sampler) plus the trainer's progress as JSON and the best
    model so far, so that the checkpoint alone can resume the run (into any output folder).

    Everything goes into `checkpoints/.checkpoint_<i>.tmp`, renamed to `checkpoint_<i>` when complete; only
    then are the oldest complete checkpoints beyond `--checkpoint_limit` deleted."""
    checkpoints = Path(args.output_dir) / CHECKPOINTS
    index = accelerator.project_configuration.iteration
    folder, partial = checkpoints / f"checkpoint_{index}", checkpoints / f".checkpoint_{index}.tmp"
    if accelerator.is_main_process and partial.exists():  # left by a run killed while saving
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every process's files are in `partial`
    if accelerator.is_main_process:
        if state.best_epoch > 0:
            SharkForDiagnosisPrediction.from_pretrained(args.output_dir).save_pretrained(partial / BEST_MODEL)
        _write_json(partial / TRAINER_STATE, {**asdict(state), "args": asdict(args)})
        _replace_folder(partial, folder)
        _delete_old_checkpoints(checkpoints, args.checkpoint_limit)
    accelerator.wait_for_everyone()


def _replace_folder(source: Path, target: Path) -> None:
    """Rename `source` to `target`; an existing `target` (left before the run resumed from an earlier
    checkpoint, or incomplete) is moved aside first and deleted after."""
    if target.exists():
        logger.warning("Replacing %s, left there before this run resumed", target)
        stale = target.with_name(f".{target.name}.replaced")
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(target, stale)
        os.replace(source, target)
        shutil.rmtree(stale)
    else:
        os.replace(source, target)


def _delete_old_checkpoints(checkpoints: Path, limit: int | None) -> None:
    """Keep the newest `limit` complete checkpoints (all when `limit` is None)."""
    complete = _complete_checkpoints(checkpoints)
    for old in complete[: max(len(complete) - limit, 0)] if limit is not None else []:
        shutil.rmtree(old)


def _complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The `checkpoint_<i>` folders of `checkpoints` that hold a trainer state, oldest first."""
    found = []
    for folder in checkpoints.glob("checkpoint_*"):
        match = CHECKPOINT_NAME.fullmatch(folder.name)
        if match is None or not folder.is_dir():
            continue
        if not (folder / TRAINER_STATE).is_file():
            logger.warning("%s is incomplete (no %s): skipped", folder, TRAINER_STATE)
            continue
        found.append((int(match.group(1)), folder))
    return [folder for _, folder in sorted(found)]


def _resume(args: TrainingArguments, accelerator: Accelerator) -> TrainerState:
    """Restore a checkpoint: training state, trainer progress, the best model so far and log.jsonl."""
    folder = Path(args.resume_from_checkpoint)
    if args.resume_from_checkpoint == "latest":
        folder = _latest_checkpoint(Path(args.output_dir) / CHECKPOINTS)
    if not (folder / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{folder} is not a shark-hf checkpoint: it has no {TRAINER_STATE}")
    saved = json.loads((folder / TRAINER_STATE).read_text())
    _warn_changed_args(args, saved.pop("args"))
    state = TrainerState(**saved)
    if accelerator.is_main_process:
        _restore_outputs(args, folder, state)
    accelerator.load_state(str(folder))
    # load_state does not advance the automatic checkpoint counter: without this the next save_state would
    # number its folder from 0 again (and, in the same output folder, overwrite checkpoint_0).
    accelerator.project_configuration.iteration = int(folder.name.rsplit("_", 1)[1]) + 1
    accelerator.wait_for_everyone()
    logger.info("Resumed from %s at epoch %d, batch %d", folder, state.epoch + 1, state.step_in_epoch)
    return state


def _restore_outputs(args: TrainingArguments, folder: Path, state: TrainerState) -> None:
    """Put the checkpoint's best model and the log of its epochs into `output_dir` (main process)."""
    output_dir = Path(args.output_dir)
    if (folder / BEST_MODEL).is_dir():
        SharkForDiagnosisPrediction.from_pretrained(folder / BEST_MODEL).save_pretrained(output_dir)
    atomic_write_text(
        output_dir / "log.jsonl", "".join(json.dumps(record) + "\n" for record in state.history)
    )


def _warn_changed_args(args: TrainingArguments, saved: dict) -> None:
    changed = {
        k: (v, getattr(args, k, None))
        for k, v in saved.items()
        if k not in _RESUMABLE_CHANGES and getattr(args, k, None) != v
    }
    if changed:
        logger.warning("Resuming with options that differ from the checkpoint's (was, now): %s", changed)


def _latest_checkpoint(folder: Path) -> Path:
    """The newest complete checkpoint in `folder` (incomplete ones, left by a killed save, are skipped)."""
    checkpoints = _complete_checkpoints(folder)
    if not checkpoints:
        raise FileNotFoundError(f"No complete checkpoint_* folder in {folder} to resume from")
    return checkpoints[-1]


# ---------------------------------------------------------------------------------------------- output


def _write_json(path: Path, content: dict) -> None:
    atomic_write_text(path, json.dumps(content, indent=2) + "\n")


def _available_trackers() -> list[str] | None:
    """TensorBoard when installed, else no tracker (metrics still go to log.jsonl)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    return ["tensorboard"]


def _tracker_config(args: TrainingArguments) -> dict:
    return {k: v for k, v in asdict(args).items() if isinstance(v, int | float | str | bool)}


def main(argv: list[str] | None = None) -> dict:
    """Parse `--flags` into `TrainingArguments` and train (the entry point of `training/train.py`)."""
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return train(args)


if __name__ == "__main__":
    main()
