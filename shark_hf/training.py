"""Training and evaluation of `SharkForDiagnosisPrediction` with Accelerate.

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
```

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
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from datasets import Dataset, DatasetDict, load_from_disk
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .baselines import baseline_summary, evaluate_baselines, fit_baselines
from .codes import label_names as code_label_names
from .configuration_shark import SharkConfig
from .data.cohort import cohort_task
from .data.collator import VisitCollator
from .metrics import HEADLINE_METRICS, compute_metrics
from .modeling_shark import SharkForDiagnosisPrediction
from .plots import plot_training_curves
from .privacy import BOOTSTRAP_RESAMPLES, bootstrap_auc_interval, membership_inference_auc, per_sample_loss
from .tokenization_shark import SharkTokenizer
from .training_args import TrainingArguments
from .utils import TOKENIZER_SUBFOLDER, atomic_write_text

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
BEST_MODEL = "best_model"
SELECTION_METRIC = "P@10"
REPORT_KS = (5, 10, 15, 20, 25, 30)
HEAD_PREFIX = "classifier."  # the prediction head's parameters in SharkForDiagnosisPrediction
EMBEDDING_WEIGHT = "code_embeddings.weight"  # the codeword (or, for `learned`, per-code) table [L*K, d]
# Parameters with one row per label (the head, and the repeat path's per-label weights): a new label space
# re-initialises them.
PER_LABEL_PREFIXES = (HEAD_PREFIX, "history.label_weight")
# Options that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {"output_dir", "resume_from_checkpoint", "num_epochs", "patience", "checkpoint_limit"}


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


def restrict_labels(split: Dataset, label_names: dict[str, str]) -> tuple[Dataset, int]:
    """`split` with every target label outside `label_names` removed, and how many were removed."""
    known = set(label_names)
    removed = sum(label not in known for labels in split["labels"] for label in labels)
    if not removed:
        return split, 0
    kept = split.map(
        lambda row: {"labels": [label for label in row["labels"] if label in known]}, keep_in_memory=True
    )
    return kept, removed


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


def make_dataloader(
    split: Dataset, collator: VisitCollator, batch_size: int, shuffle: bool, workers: int, seed: int = 0
) -> DataLoader:
    """A DataLoader over a cohort split. Once prepared by Accelerate (seedable sampler), the shuffling
    order is a function of the seed and the epoch only, so a resumed run sees the same batches; the loader's
    own generator keeps iteration from drawing on the global torch RNG (dropout's)."""
    columns = [c for c in ("visits", "labels") if c in split.column_names]
    return DataLoader(
        split.select_columns(columns),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collator,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
    )


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
    column = {label: i for i, label in enumerate(label_names)}
    counts = torch.zeros(len(column), dtype=torch.float64)
    for label, count in Counter(label for labels in split["labels"] for label in set(labels)).items():
        if label not in column:
            raise ValueError(f"training label {label!r} is not in the label space ({len(column)} labels)")
        counts[column[label]] = count
    p = (counts + 0.5) / (len(split) + 1)
    return torch.logit(p).float()


def init_head_bias(model: SharkForDiagnosisPrediction, bias: torch.Tensor) -> None:
    """Set the prediction head's bias `[C]` (logits of an all-zero context vector)."""
    with torch.no_grad():
        model.get_parameter(HEAD_PREFIX + "bias").copy_(bias)
    logger.info(
        "Prediction head bias set to the log-odds of the training label frequencies (%.2f to %.2f)",
        bias.min(),
        bias.max(),
    )


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict_scores(
    model: SharkForDiagnosisPrediction, dataloader: DataLoader, accelerator: Accelerator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Logits and labels of every sample exactly once, in dataset order, and the mean BCE loss.

    Returns:
        logits `[N, C]` float32, labels `[N, C]` float32 (on CPU, on every process), loss (nats per label).
    """
    model.eval()
    all_logits, all_labels = [], []
    for batch in dataloader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    return logits, labels, loss


def split_metrics(logits: torch.Tensor, labels: torch.Tensor, loss: float) -> dict[str, float | int]:
    """`shark_hf.metrics.compute_metrics` of logits `[N, C]` against labels `[N, C]`, plus `loss`.

    Ranking metrics and AUC use the logits themselves: sigmoid is monotone, so they equal those of the
    probabilities computed exactly, whereas float32 probabilities saturate (every logit above ~17 becomes
    1.0) and would tie labels the logits order. F1 thresholds the logits at 0, i.e. probabilities at 0.5.
    """
    return {"loss": loss, **compute_metrics(logits, labels, ks=REPORT_KS, threshold=0.0)}


def evaluate_split(
    model: SharkForDiagnosisPrediction, dataloader: DataLoader, accelerator: Accelerator
) -> dict[str, float | int]:
    """`split_metrics` of the model on one split."""
    return split_metrics(*predict_scores(model, dataloader, accelerator))


def evaluate_model(
    model: SharkForDiagnosisPrediction,
    tokenizer: SharkTokenizer,
    split: Dataset,
    batch_size: int = 256,
    max_visits: int | None = None,
) -> dict[str, float | int]:
    """Metrics of a trained model on one cohort split, in this process (no launcher needed). With the
    run's `--eval_batch_size` and `--max_visits` they equal what `train` logged for that split (target
    labels outside the model's label space are left out, as `train` does)."""
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    split, _ = restrict_labels(split, dict.fromkeys(labels))  # as `train` does: labels it never saw
    collator = VisitCollator.for_model(tokenizer, model.config, max_visits=max_visits)
    accelerator = Accelerator()
    loader = accelerator.prepare(make_dataloader(split, collator, batch_size, False, 0))
    return evaluate_split(accelerator.prepare(model), loader, accelerator)


def membership_audit(
    model: SharkForDiagnosisPrediction,
    member_loader: DataLoader,
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    accelerator: Accelerator,
    patient_ids: dict[str, list[str]],
    seed: int = 0,
) -> dict:
    """Per-sample loss-threshold membership inference (`shark_hf.privacy`): training samples (members)
    against test samples, with a 95% bootstrap interval resampling patients (`patient_ids["train"]`,
    `patient_ids["test"]`: the patient of each sample, in loader order). A lower bound on the leakage."""
    member_logits, member_labels, _ = predict_scores(model, member_loader, accelerator)
    members = per_sample_loss(member_logits, member_labels)
    nonmembers = per_sample_loss(test_logits, test_labels)
    low, high = bootstrap_auc_interval(
        members, nonmembers, patient_ids["train"], patient_ids["test"], seed=seed
    )
    return {
        "attack": "per-sample loss threshold",
        "membership_inference_auc": membership_inference_auc(members, nonmembers),
        "auc_95ci": [low, high],
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "unit": "patient", "seed": seed},
        "members": len(member_logits),
        "nonmembers": len(test_logits),
        "member_patients": len(set(patient_ids["train"])),
        "nonmember_patients": len(set(patient_ids["test"])),
    }


# -------------------------------------------------------------------------------------------- training


def train(args: TrainingArguments) -> dict:
    """Train, keep the best epoch on validation P@10, evaluate it on test; returns metrics.json's content."""
    accelerator = _make_accelerator(args)
    set_seed(args.seed)
    cohort = load_cohort(args)
    tokenizer = SharkTokenizer.from_pretrained(args.tokenizer, subfolder=args.tokenizer_subfolder)
    label_names = resolve_label_names(cohort, args.label_space)
    summary = cohort_summary(cohort)
    cohort, labels_left_out = _restrict_evaluation_labels(cohort, label_names)
    model, new_head = build_model(args, tokenizer, label_names)
    if args.init_from is None:
        zero_unseen_code_rows(model, tokenizer, cohort["train"])
    if new_head and args.label_frequency_bias:
        init_head_bias(model, label_frequency_bias(cohort["train"], label_names))
    collator = VisitCollator.for_model(tokenizer, model.config, max_visits=args.max_visits)
    loaders = _make_loaders(args, cohort, collator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *loaders.values())
    loaders = dict(zip(loaders, prepared, strict=True))
    scheduler = accelerator.prepare(_make_scheduler(args, accelerator, optimizer, len(loaders["train"])))
    _start_run(args, accelerator, cohort, model, tokenizer)

    state = _resume(args, accelerator) if args.resume_from_checkpoint else TrainerState()
    start = time.perf_counter()
    while state.epoch < args.num_epochs and state.epochs_without_improvement < args.patience:
        train_loss = _train_epoch(args, accelerator, model, optimizer, scheduler, loaders["train"], state)
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


def _make_loaders(
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


def _make_scheduler(args: TrainingArguments, accelerator: Accelerator, optimizer, batches_per_epoch: int):
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
    """An Accelerator with numbered checkpoints under `output_dir/checkpoints` and a seeded sampler."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir,
            automatic_checkpoint_naming=True,
            total_limit=args.checkpoint_limit,
        ),
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
    """Create the output folder, save the tokenizer next to where the model will go, start the trackers."""
    if accelerator.is_main_process:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
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


def _train_epoch(
    args: TrainingArguments,
    accelerator: Accelerator,
    model,
    optimizer,
    scheduler,
    train_loader,
    state: TrainerState,
) -> float:
    """One pass over the training split, from batch `state.step_in_epoch` on (a resumed epoch).

    Returns:
        The epoch's mean training BCE in nats per label (as the validation loss), over all processes.
    """
    model.train()
    train_loader.set_epoch(state.epoch)
    progress = tqdm(
        accelerator.skip_first_batches(train_loader, state.step_in_epoch),
        desc=f"epoch {state.epoch + 1}/{args.num_epochs}",
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


# ------------------------------------------------------------------------------------------ checkpoints


def _save_checkpoint(args: TrainingArguments, accelerator: Accelerator, state: TrainerState) -> None:
    """`save_state` (weights, optimizer, RNGs, sampler) plus the trainer's progress as JSON and the best
    model so far, so that the checkpoint alone can resume the run (into any output folder)."""
    folder = Path(accelerator.save_state())
    if accelerator.is_main_process:
        if state.best_epoch > 0:
            SharkForDiagnosisPrediction.from_pretrained(args.output_dir).save_pretrained(folder / BEST_MODEL)
        _write_json(folder / TRAINER_STATE, {**asdict(state), "args": asdict(args)})
    accelerator.wait_for_everyone()


def _resume(args: TrainingArguments, accelerator: Accelerator) -> TrainerState:
    """Restore a checkpoint: training state, trainer progress, the best model so far and log.jsonl."""
    folder = Path(args.resume_from_checkpoint)
    if args.resume_from_checkpoint == "latest":
        folder = _latest_checkpoint(Path(args.output_dir) / "checkpoints")
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
    checkpoints = sorted(folder.glob("checkpoint_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not checkpoints:
        raise FileNotFoundError(f"No checkpoint_* folder in {folder} to resume from")
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
