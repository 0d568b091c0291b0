"""Training and evaluation of `SharkForDiagnosisPrediction` with Accelerate.

`train(args)` is the whole job behind `training/train.py` and `shark-hf train`: it loads a cohort and a
tokenizer, builds (or fine-tunes) a model, trains it with AdamW under `accelerate`, selects the best epoch on
validation P@10 with early stopping, and writes into `args.output_dir`:

```
config.json  model.safetensors  README.md?    the best model (`save_pretrained`)
tokenizer/                                   its tokenizer (`SharkTokenizer.save_pretrained`)
metrics.json                                 final test (and validation) metrics of the best model
log.jsonl                                    one JSON object per epoch (loss, validation metrics, seconds)
training_curves.png                          train loss and validation P@10 per epoch
checkpoints/checkpoint_<i>/                  `Accelerator.save_state` folders (+ trainer_state.json)
```

The same code runs single-process (`python training/train.py ...` or `python -m shark_hf.training ...`) and
distributed (`accelerate launch training/train.py ...` or `accelerate launch -m shark_hf.training ...`);
evaluation gathers with `gather_for_metrics`, so a distributed evaluation sees each sample exactly once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from datasets import DatasetDict, load_from_disk
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .codes import label_names as code_label_names
from .configuration_shark import SharkConfig
from .data.collator import VisitCollator
from .metrics import compute_metrics
from .modeling_shark import SharkForDiagnosisPrediction
from .plots import plot_training_curves
from .privacy import membership_inference_auc, per_sample_loss
from .tokenization_shark import SharkTokenizer

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
SELECTION_METRIC = "P@10"
REPORT_KS = (5, 10, 15, 20, 25, 30)


@dataclass
class TrainingArguments:
    """Options of `train`. Every field is also a `--flag` of `training/train.py`."""

    output_dir: str = field(
        metadata={"help": "Folder for the best model, tokenizer, metrics and checkpoints."}
    )
    cohort: str = field(
        metadata={
            "help": "A `datasets.save_to_disk` folder, or a builder name (mimic3, mimic4, meds) with --root."
        }
    )
    tokenizer: str = field(metadata={"help": "A SharkTokenizer folder or Hub repo id."})
    root: str | None = field(default=None, metadata={"help": "Data root when --cohort is a builder name."})
    tokenizer_subfolder: str | None = field(default=None, metadata={"help": "Subfolder of --tokenizer."})
    label_space: str = field(default="ccs", metadata={"help": "Label space: ccs, ccsr or code."})
    init_from: str | None = field(
        default=None, metadata={"help": "Fine-tune from a pretrained model folder or repo id."}
    )
    allow_tokenizer_mismatch: bool = field(
        default=False, metadata={"help": "Fine-tune even if --tokenizer differs from the model's tokenizer."}
    )
    embed_dim: int = field(default=16, metadata={"help": "Codeword embedding width d (paper: 16)."})
    hidden_size: int = field(default=16, metadata={"help": "GRU hidden size."})
    composition: str = field(default="sum", metadata={"help": "How L codewords form a code: sum or concat."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on visit vectors and the context."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (paper: 1e-3)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_epochs: int = field(default=30, metadata={"help": "Maximum number of epochs."})
    batch_size: int = field(default=64, metadata={"help": "Patients per batch and process."})
    eval_batch_size: int = field(default=256, metadata={"help": "Patients per evaluation batch and process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    max_visits: int | None = field(default=None, metadata={"help": "Keep only the most recent visits."})
    patience: int = field(
        default=5, metadata={"help": "Epochs without validation P@10 gain before stopping."}
    )
    mixed_precision: str = field(
        default="no", metadata={"help": "no, fp16 or bf16 (where the hardware has it)."}
    )
    checkpoint_steps: int | None = field(
        default=None, metadata={"help": "Save the full training state every N training batches."}
    )
    checkpoint_limit: int | None = field(default=3, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest in output_dir."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling and dropout."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})


@dataclass
class TrainerState:
    """Progress that a checkpoint must restore besides weights, optimizer and RNG states."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)


def load_cohort(args: TrainingArguments) -> DatasetDict:
    """The cohort named by `args.cohort`: a saved DatasetDict folder or a builder run over `args.root`."""
    if Path(args.cohort).is_dir():
        return load_from_disk(args.cohort)
    from .data.cohort import build_cohort

    if args.root is None:
        raise ValueError(f"--cohort {args.cohort!r} is not a folder; a builder name needs --root")
    return build_cohort(args.cohort, root=args.root, label_space=args.label_space)


def resolve_label_names(cohort: DatasetDict, label_space: str) -> dict[str, str]:
    """Ordered {label: name} of the label space; for `code`, the sorted labels seen in the cohort."""
    if label_space != "code":
        return code_label_names(label_space)
    seen = sorted({label for split in cohort.values() for labels in split["labels"] for label in labels})
    return {label: label for label in seen}


def build_model(
    args: TrainingArguments, tokenizer: SharkTokenizer, label_names: dict[str, str]
) -> SharkForDiagnosisPrediction:
    """A new model for `tokenizer`, or `args.init_from` (head re-initialised if the labels differ)."""
    config = SharkConfig.from_tokenizer(
        tokenizer,
        label_names,
        label_space=args.label_space,
        embed_dim=args.embed_dim,
        hidden_size=args.hidden_size,
        composition=args.composition,
        dropout=args.dropout,
    )
    if args.init_from is None:
        return SharkForDiagnosisPrediction(config)
    pretrained = SharkForDiagnosisPrediction.from_pretrained(args.init_from)
    pretrained.check_tokenizer(tokenizer, allow_mismatch=args.allow_tokenizer_mismatch)
    if list(pretrained.config.id2label.values()) == list(label_names):
        logger.info("Fine-tuning %s on the same %d labels", args.init_from, len(label_names))
        return pretrained
    logger.warning(
        "Label space changed from %s (%d labels) to %s (%d labels): the prediction head is re-initialised",
        pretrained.config.label_space,
        pretrained.config.num_labels,
        args.label_space,
        len(label_names),
    )
    config = SharkConfig(**{**pretrained.config.to_dict(), **config.label_fields()})
    model = SharkForDiagnosisPrediction(config)
    body = {k: v for k, v in pretrained.state_dict().items() if not k.startswith(model.head_prefix)}
    model.load_state_dict(body, strict=False)
    return model


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
        logits = model(**{k: batch[k] for k in ("input_ids", "code_mask", "visit_mask")}).logits
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    return logits, labels, loss


def split_metrics(logits: torch.Tensor, labels: torch.Tensor, loss: float) -> dict[str, float | int]:
    """`shark_hf.metrics.compute_metrics` of sigmoid(logits) `[N, C]` against labels `[N, C]`, plus `loss`."""
    return {"loss": loss, **compute_metrics(torch.sigmoid(logits), labels, ks=REPORT_KS)}


def evaluate_split(
    model: SharkForDiagnosisPrediction, dataloader: DataLoader, accelerator: Accelerator
) -> dict[str, float | int]:
    """`split_metrics` of the model on one split."""
    return split_metrics(*predict_scores(model, dataloader, accelerator))


def membership_audit(
    model, member_loader: DataLoader, test_logits: torch.Tensor, test_labels: torch.Tensor, accelerator
) -> dict[str, float | int | str]:
    """Loss-threshold membership inference: training patients (members) against test patients."""
    member_logits, member_labels, _ = predict_scores(model, member_loader, accelerator)
    auc = membership_inference_auc(
        per_sample_loss(member_logits, member_labels), per_sample_loss(test_logits, test_labels)
    )
    return {
        "attack": "loss threshold",
        "membership_inference_auc": auc,
        "members": len(member_logits),
        "nonmembers": len(test_logits),
    }


def evaluate_model(
    model: SharkForDiagnosisPrediction, tokenizer: SharkTokenizer, split, batch_size: int = 256
) -> dict[str, float | int]:
    """Metrics of a trained model on one cohort split, in this process (no launcher needed)."""
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    collator = VisitCollator(tokenizer, labels)
    accelerator = Accelerator()
    loader = accelerator.prepare(make_dataloader(split, collator, batch_size, False, 0))
    return evaluate_split(accelerator.prepare(model), loader, accelerator)


def make_dataloader(
    split, collator: VisitCollator, batch_size: int, shuffle: bool, workers: int
) -> DataLoader:
    """A DataLoader over a cohort split. Once prepared by Accelerate, the shuffling order is a function of
    the seed and the epoch only (a seedable sampler), so a resumed run sees the same batches."""
    columns = [c for c in ("visits", "labels") if c in split.column_names]
    return DataLoader(
        split.select_columns(columns),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collator,
        num_workers=workers,
    )


def train(args: TrainingArguments) -> dict:
    """Train, keep the best epoch on validation P@10, evaluate it on test; returns metrics.json."""
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir),
            automatic_checkpoint_naming=True,
            total_limit=args.checkpoint_limit,
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        log_with=_available_trackers(),
    )
    set_seed(args.seed)
    cohort = load_cohort(args)
    tokenizer = SharkTokenizer.from_pretrained(args.tokenizer, subfolder=args.tokenizer_subfolder)
    label_names = resolve_label_names(cohort, args.label_space)
    model = build_model(args, tokenizer, label_names)
    collator = VisitCollator(tokenizer, label_names, max_visits=args.max_visits)
    train_loader = make_dataloader(cohort["train"], collator, args.batch_size, True, args.num_workers)
    eval_loaders = {
        name: make_dataloader(cohort[name], collator, args.eval_batch_size, False, args.num_workers)
        for name in ("validation", "test")
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer, train_loader, *loaders = accelerator.prepare(
        model, optimizer, train_loader, *eval_loaders.values()
    )
    eval_loaders = dict(zip(eval_loaders, loaders, strict=True))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers("shark", config=_tracker_config(args))
        _log_cohort(cohort, model, accelerator)

    state = _resume(args, accelerator) if args.resume_from_checkpoint else TrainerState()
    start = time.perf_counter()
    while state.epoch < args.num_epochs and state.epochs_without_improvement < args.patience:
        epoch_loss = _train_epoch(args, accelerator, model, optimizer, train_loader, state)
        validation = evaluate_split(model, eval_loaders["validation"], accelerator)
        _end_epoch(args, accelerator, model, tokenizer, state, epoch_loss, validation)

    best = accelerator.prepare(SharkForDiagnosisPrediction.from_pretrained(output_dir))
    members = accelerator.prepare(
        make_dataloader(cohort["train"], collator, args.eval_batch_size, False, args.num_workers)
    )
    test_logits, test_labels, test_loss = predict_scores(best, eval_loaders["test"], accelerator)
    results = {
        "best_epoch": state.best_epoch,
        "train_seconds": round(time.perf_counter() - start, 3),
        "num_processes": accelerator.num_processes,
        "validation": evaluate_split(best, eval_loaders["validation"], accelerator),
        "test": split_metrics(test_logits, test_labels, test_loss),
        "privacy": membership_audit(best, members, test_logits, test_labels, accelerator),
        "args": asdict(args),
    }
    if accelerator.is_main_process:
        _write_json(output_dir / "metrics.json", results)
        plot_training_curves({output_dir.name: state.history}, output_dir / "training_curves.png")
        test = results["test"]
        logger.info("Test P@10 %.4f  P@20 %.4f  Acc@10 %.4f  Acc@20 %.4f", *(test[k] for k in _HEADLINE))
    accelerator.end_training()
    return results


_HEADLINE = ("P@10", "P@20", "Acc@10", "Acc@20")


def _train_epoch(args, accelerator, model, optimizer, train_loader, state: TrainerState) -> float:
    """One pass over the training split (from `state.step_in_epoch` on when resuming); mean batch loss."""
    model.train()
    train_loader.set_epoch(state.epoch)
    loader = accelerator.skip_first_batches(train_loader, state.step_in_epoch)
    losses = []
    progress = tqdm(
        loader,
        desc=f"epoch {state.epoch + 1}/{args.num_epochs}",
        initial=state.step_in_epoch,
        total=len(train_loader),
        disable=not accelerator.is_local_main_process,
        leave=False,
    )
    for batch in progress:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.detach().float())
        state.step_in_epoch += 1
        state.global_step += 1
        if args.checkpoint_steps and state.global_step % args.checkpoint_steps == 0:
            _save_checkpoint(accelerator, state)
    mean_loss = torch.stack(losses).mean() if losses else torch.tensor(float("nan"))
    return accelerator.gather(mean_loss.reshape(1).to(accelerator.device)).mean().item()


def _end_epoch(args, accelerator, model, tokenizer, state: TrainerState, epoch_loss: float, validation: dict):
    """Record the epoch, keep the best model on validation P@10, count epochs without improvement."""
    state.epoch += 1
    state.step_in_epoch = 0
    record = {"epoch": state.epoch, "step": state.global_step, "train_loss": epoch_loss}
    record.update({f"validation_{k}": v for k, v in validation.items()})
    state.history.append(record)
    improved = validation[SELECTION_METRIC] > state.best_metric
    if improved:
        state.best_metric, state.best_epoch = validation[SELECTION_METRIC], state.epoch
        state.epochs_without_improvement = 0
    else:
        state.epochs_without_improvement += 1
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if improved:
            accelerator.unwrap_model(model).save_pretrained(args.output_dir)
            tokenizer.save_pretrained(Path(args.output_dir) / "tokenizer")
        with open(Path(args.output_dir) / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        accelerator.log({k: v for k, v in record.items() if isinstance(v, float | int)}, step=state.epoch)
        logger.info(
            "epoch %d: train loss %.4f, validation P@10 %.4f%s",
            state.epoch,
            epoch_loss,
            validation[SELECTION_METRIC],
            " (best)" if improved else "",
        )
    accelerator.wait_for_everyone()


def _save_checkpoint(accelerator: Accelerator, state: TrainerState) -> None:
    """`save_state` (weights, optimizer, RNGs, sampler) plus the trainer's progress as JSON."""
    folder = accelerator.save_state()
    if accelerator.is_main_process:
        _write_json(Path(folder) / TRAINER_STATE, asdict(state))
    accelerator.wait_for_everyone()


def _resume(args: TrainingArguments, accelerator: Accelerator) -> TrainerState:
    """Restore a checkpoint and the trainer's progress; continue the checkpoint numbering after it."""
    folder = Path(args.resume_from_checkpoint)
    if args.resume_from_checkpoint == "latest":
        folder = _latest_checkpoint(Path(args.output_dir) / "checkpoints")
    if not (folder / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{folder} is not a shark-hf checkpoint: it has no {TRAINER_STATE}")
    accelerator.load_state(str(folder))
    # load_state does not advance the automatic checkpoint counter: without this the next
    # save_state would try to write checkpoint_0 again.
    accelerator.project_configuration.iteration = int(folder.name.rsplit("_", 1)[1]) + 1
    state = TrainerState(**json.loads((folder / TRAINER_STATE).read_text()))
    logger.info("Resumed from %s at epoch %d, step %d", folder, state.epoch, state.global_step)
    return state


def _latest_checkpoint(folder: Path) -> Path:
    checkpoints = sorted(folder.glob("checkpoint_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not checkpoints:
        raise FileNotFoundError(f"No checkpoint_* folder in {folder} to resume from")
    return checkpoints[-1]


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def _available_trackers() -> list[str] | None:
    """TensorBoard when installed, else no tracker (metrics still go to log.jsonl)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    return ["tensorboard"]


def _tracker_config(args: TrainingArguments) -> dict:
    return {k: v for k, v in asdict(args).items() if isinstance(v, int | float | str | bool)}


def _log_cohort(cohort: DatasetDict, model, accelerator: Accelerator) -> None:
    sizes = ", ".join(f"{name} {len(split)}" for name, split in cohort.items())
    params = sum(p.numel() for p in model.parameters())
    logger.info(
        "Cohort: %s samples; model: %d parameters; %d process(es)", sizes, params, accelerator.num_processes
    )


def main(argv: list[str] | None = None) -> dict:
    """Parse `--flags` into `TrainingArguments` and train (the entry point of `training/train.py`)."""
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return train(args)


if __name__ == "__main__":
    main()
