"""Evaluation of `SharkForDiagnosisPrediction` on cohort splits: logits, metrics, the membership audit.

Used by `shark_hf.training` (and by `shark-hf evaluate`); it runs in one process or under Accelerate
(`gather_for_metrics`: each sample is seen exactly once). Ranking metrics are computed on logits.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from datasets import Dataset
from torch.utils.data import DataLoader

from .data.collator import VisitCollator, check_cohort_codes
from .metrics import compute_metrics
from .modeling_shark import SharkForDiagnosisPrediction
from .privacy import BOOTSTRAP_RESAMPLES, bootstrap_auc_interval, membership_inference_auc, per_sample_loss
from .tokenization_shark import SharkTokenizer

REPORT_KS = (5, 10, 15, 20, 25, 30)
"""The k of P@k / Acc@k / R@k in every report (metrics.json, the card, `shark-hf evaluate`)."""


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
    unknown: str = "error",
) -> dict[str, float | int]:
    """Metrics of a trained model on one cohort split, in this process (no launcher needed). With the
    run's `--eval_batch_size` and `--max_visits` they equal what `train` logged for that split (target
    labels outside the model's label space are left out, as `train` does). `unknown` is the policy for codes
    the tokenizer does not know (`VisitCollator`); all the split's codes are checked before any batch."""
    check_cohort_codes(tokenizer, {str(split.split or "split"): split}, unknown)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    split, _ = restrict_labels(split, dict.fromkeys(labels))  # as `train` does: labels it never saw
    collator = VisitCollator.for_model(tokenizer, model.config, max_visits=max_visits, unknown=unknown)
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
