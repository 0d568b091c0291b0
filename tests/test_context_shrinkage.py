"""`shark_hf.context_shrinkage`: the context-logit factor chosen on validation, exact weights, ties."""

import torch
from accelerate import Accelerator
from torch import nn
from transformers.utils import ModelOutput

from shark_hf.context_shrinkage import SCALES, shrink_context_logits

NUM_LABELS = 32  # above the largest reported k (30), so every P@k is defined


class HistoryPlusContext(nn.Module):
    """logits = classifier(context) + history: the repeat-head model's sum with its parts given directly."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.Linear(NUM_LABELS, NUM_LABELS)
        with torch.no_grad():
            self.classifier.weight.copy_(5.0 * torch.eye(NUM_LABELS))
            self.classifier.bias.zero_()

    def forward(self, context: torch.Tensor, history: torch.Tensor) -> ModelOutput:
        return ModelOutput(logits=self.classifier(context) + history)


def batches(context_on_true_labels: bool) -> list[dict[str, torch.Tensor]]:
    """Two samples, each with 10 true labels scored 2 by the history; the context (one-hot, x5 by the head)
    sits on the 10 true labels, or on 10 false ones."""
    labels = torch.zeros(2, NUM_LABELS)
    labels[0, :10] = labels[1, 10:20] = 1.0
    history = 2.0 * labels
    context = labels.clone() if context_on_true_labels else labels.roll(10, dims=1)
    return [{"context": context, "history": history, "labels": labels}]


def test_noisy_context_is_shrunk_to_the_largest_factor_that_ranks_the_history_first():
    model = HistoryPlusContext()
    trained = model.classifier.weight.detach().clone()
    scale, scores = shrink_context_logits(model, batches(False), Accelerator(cpu=True))
    # Context logits 5 * factor on false labels against history 2 on true ones: factor 0.25 (1.25 < 2) and 0
    # rank every true label first (P@10 = 1); the tie keeps the larger factor.
    assert scores == {1.0: 0.0, 0.75: 0.0, 0.5: 0.0, 0.25: 1.0, 0.0: 1.0}
    assert scale == 0.25
    assert torch.equal(model.classifier.weight, trained * 0.25)
    assert torch.equal(model.classifier.bias, torch.zeros(NUM_LABELS))


def test_a_context_that_helps_keeps_the_trained_weights_bit_for_bit():
    model = HistoryPlusContext()
    trained = model.classifier.weight.detach().clone()
    scale, scores = shrink_context_logits(model, batches(True), Accelerator(cpu=True))
    assert scores == dict.fromkeys(SCALES, 1.0)
    assert scale == 1.0
    assert torch.equal(model.classifier.weight, trained)
