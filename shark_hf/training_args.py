"""`TrainingArguments`: the options of `shark_hf.training.train`, each also a `--flag` of `shark-hf train`
and `training/train.py` (parsed with `transformers.HfArgumentParser`). Where transformers' `TrainingArguments`
names the same option differently, its name is accepted too (`aliases`: `--num_train_epochs`,
`--per_device_train_batch_size`, `--save_steps`, ...). Standard library only, like
transformers' `training_args.py`: reading the options costs no torch import."""

from __future__ import annotations

from dataclasses import dataclass, field

from .universal import UNIVERSAL_TOKENIZER
from .utils import UNKNOWN_POLICIES

SCHEDULES = ("constant", "linear", "cosine")
"""Learning-rate schedules of `--lr_scheduler_type` (after the linear warmup of `--warmup_ratio`)."""


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
    tokenizer: str = field(
        default=UNIVERSAL_TOKENIZER,
        metadata={
            "help": "A SharkTokenizer folder or Hub repo id (default: the universal tokenizer shipped with "
            "shark-hf, shark_hf.UNIVERSAL_TOKENIZER: every ICD-9-CM and ICD-10-CM code, no cohort input)."
        },
    )
    root: str | None = field(default=None, metadata={"help": "Data root when --cohort is a builder name."})
    tokenizer_subfolder: str | None = field(default=None, metadata={"help": "Subfolder of --tokenizer."})
    label_space: str = field(default="ccs", metadata={"help": "Label space: ccs, ccsr or code."})
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune from a pretrained model folder or repo id (its architecture is kept; if its "
            "labels differ from the cohort's, the prediction head is re-initialised)."
        },
    )
    allow_tokenizer_mismatch: bool = field(
        default=False, metadata={"help": "Fine-tune even if --tokenizer differs from the model's tokenizer."}
    )
    unknown: str = field(
        default="error",
        metadata={
            "help": "Cohort codes that --tokenizer does not know: error (checked over every split before the "
            "model is built), skip (drop them) or embed (encode them with the tokenizer's embedding model)."
        },
    )
    embed_dim: int = field(default=16, metadata={"help": "Codeword embedding width d (paper: 16)."})
    hidden_size: int = field(default=16, metadata={"help": "GRU hidden size."})
    composition: str = field(default="sum", metadata={"help": "How L codewords form a code: sum or concat."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the patient context vector."})
    repeat_head: bool = field(
        default=True,
        metadata={
            "help": "Add the label-history (repeat) path to the paper's head (SharkConfig.repeat_head): the "
            "best configuration in training/experiments/RESULTS.md. --no_repeat_head trains the paper-exact "
            "model."
        },
    )
    context_shrinkage: bool = field(
        default=True,
        metadata={
            "help": "With the repeat head: after training, scale the context logits by the factor in "
            "(1, 0.75, 0.5, 0.25, 0) with the best validation P@10 (shark_hf.context_shrinkage), so that "
            "where the history says it all their noise does not outrank it. --no_context_shrinkage keeps "
            "the trained weights."
        },
    )
    label_frequency_bias: bool = field(
        default=True,
        metadata={
            "help": "Start a new (or re-initialised) prediction head with each label's bias at the log-odds "
            "of its smoothed training frequency (n + 0.5) / (N + 1) instead of 0, so that the first steps "
            "need not learn the label frequencies. A fine-tuned head that is kept is left as it is."
        },
    )
    learning_rate: float = field(
        default=1e-2,
        metadata={
            "help": "AdamW peak learning rate (paper: 1e-3, constant, which does not converge in 30 "
            "epochs; 1e-2 with the cosine decay reaches the best validation P@10 well before epoch 30 on the "
            "built-in cohort, see benchmarks/bench_convergence.py)."
        },
    )
    lr_scheduler_type: str = field(
        default="constant",
        metadata={
            "help": "Learning-rate schedule after warmup: constant, linear or cosine (to 0 at --num_epochs)."
        },
    )
    warmup_ratio: float = field(
        default=0.05,
        metadata={"help": "Share of the --num_epochs optimizer steps spent warming up linearly."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_epochs: int = field(
        default=30, metadata={"help": "Maximum number of epochs.", "aliases": ["--num_train_epochs"]}
    )
    batch_size: int = field(
        default=64,
        metadata={"help": "Patients per batch and process.", "aliases": ["--per_device_train_batch_size"]},
    )
    eval_batch_size: int = field(
        default=256,
        metadata={
            "help": "Patients per evaluation batch and process.",
            "aliases": ["--per_device_eval_batch_size"],
        },
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    max_visits: int | None = field(default=None, metadata={"help": "Keep only the most recent visits."})
    patience: int = field(
        default=5,
        metadata={
            "help": "Epochs without validation P@10 gain before stopping.",
            "aliases": ["--early_stopping_patience"],
        },
    )
    mixed_precision: str = field(
        default="no", metadata={"help": "no, fp16 or bf16 (where the hardware has it)."}
    )
    checkpoint_steps: int | None = field(
        default=None,
        metadata={
            "help": "Save the full training state every N optimizer steps.",
            "aliases": ["--save_steps"],
        },
    )
    checkpoint_limit: int | None = field(
        default=3, metadata={"help": "Keep at most this many checkpoints.", "aliases": ["--save_total_limit"]}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A checkpoint folder, or 'latest' for the newest complete one in output_dir."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that holds a previous run (without this, such a folder is "
            "refused unless resuming): its model, metrics, log and checkpoints are replaced."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, shuffling and dropout."})
    num_workers: int = field(
        default=0, metadata={"help": "DataLoader worker processes.", "aliases": ["--dataloader_num_workers"]}
    )

    def __post_init__(self) -> None:
        for name in (
            "num_epochs",
            "patience",
            "batch_size",
            "eval_batch_size",
            "gradient_accumulation_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"--unknown must be one of {UNKNOWN_POLICIES}, got {self.unknown!r}")
        if self.lr_scheduler_type not in SCHEDULES:
            raise ValueError(
                f"--lr_scheduler_type must be one of {SCHEDULES}, got {self.lr_scheduler_type!r}"
            )
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.checkpoint_steps is not None and self.checkpoint_steps < 1:
            raise ValueError(f"--checkpoint_steps must be at least 1, got {self.checkpoint_steps}")
