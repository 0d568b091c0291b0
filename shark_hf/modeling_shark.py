"""SHARK diagnosis prediction model: semantic-ID code embeddings + RETAIN dual-GRU attention (paper §2.2-2.4).

This file ships as remote code next to saved models (`trust_remote_code`): it needs nothing from the
`shark_hf` package, only `.configuration_shark` (`push_to_hub` uses `shark_hf.hub` when it is installed).

Shapes used throughout: B patients, V visit slots, C code slots per visit, L semantic-ID levels, D the
code/visit vector width (`config.visit_dim`), H the GRU width, N the number of real visits in the batch.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_shark import SharkConfig

# Codeword tables up to this many rows are looked up with a dense matmul (see `_level_means`).
_DENSE_TABLE_LIMIT = 2048


@dataclass
class SharkOutput(ModelOutput):
    """Output of [`SharkForDiagnosisPrediction`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned when `labels` is given):
            Binary cross-entropy of the paper's eq. (6): summed over labels, averaged over patients.
        logits (`torch.FloatTensor` of shape `[B, num_labels]`):
            Pre-sigmoid scores of the next visit's labels.
        visit_attention (`torch.FloatTensor` of shape `[B, V]`):
            alpha, the visit-level attention, in chronological order (column 0 = oldest visit, aligned with
            `visit_mask`). Each row sums to 1 over the real visits; padded visits get exactly 0.
        feature_attention (`torch.FloatTensor` of shape `[B, V, D]`):
            beta, the feature-level attention of each visit, chronological; zeros at padded visits.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    visit_attention: torch.FloatTensor | None = None
    feature_attention: torch.FloatTensor | None = None


@dataclass
class VisitLayout:
    """Where each real visit of a batch goes in the reversed, packed GRU input.

    The N real visits are listed in `PackedSequence` order (reversed time step, then patients by decreasing
    length): element n is visit `visit_index[n]` (chronological) of patient `patient_index[n]`.
    """

    patient_index: torch.LongTensor  # [N]
    visit_index: torch.LongTensor  # [N]
    batch_sizes: torch.LongTensor  # [max visits], on CPU as torch.gru requires


class SharkPreTrainedModel(PreTrainedModel):
    config_class = SharkConfig
    base_model_prefix = "shark"
    main_input_name = "input_ids"
    input_modalities = "text"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Codeword tables ~ N(0, 1/L) for `sum` (unit-variance code vectors) or N(0, 1) for `concat`; GRUs
        with Xavier-uniform input weights, orthogonal recurrent weights and zero biases; linears
        Xavier-uniform with zero bias."""
        if isinstance(module, nn.EmbeddingBag):
            levels = self.config.num_levels if self.config.composition == "sum" else 1
            init.normal_(module.weight, mean=0.0, std=1.0 / math.sqrt(levels))
        elif isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                else:
                    init.zeros_(param)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)


class SharkForDiagnosisPrediction(SharkPreTrainedModel):
    """SHARK next-visit diagnosis predictor.

    Each code's L ids select one codeword per level from L tables of K x d (stored as one `[L*K, d]`
    table, level l in rows `l*K .. l*K+K-1`); the codewords are summed or concatenated into the code vector
    and the codes of a visit are averaged (a visit without codes gets zeros). Two GRUs read each patient's
    real visits from newest to oldest; alpha = softmax over the real visits of `w_alpha . g + b_alpha`,
    beta = tanh(`W_beta h + b_beta`), context = sum_i alpha_i * beta_i * v_i, logits =
    `W_c dropout(context) + b_c`. Padding (masked codes, masked visits) never changes a prediction.
    """

    def __init__(self, config: SharkConfig) -> None:
        super().__init__(config)
        dim = config.visit_dim
        self.code_embeddings = nn.EmbeddingBag(
            config.num_levels * config.codebook_size, config.embed_dim, mode="sum"
        )
        self.alpha_gru = nn.GRU(dim, config.hidden_size)
        self.beta_gru = nn.GRU(dim, config.hidden_size)
        self.alpha_proj = nn.Linear(config.hidden_size, 1)
        self.beta_proj = nn.Linear(config.hidden_size, dim)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(dim, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor,
        code_mask: torch.Tensor,
        visit_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> SharkOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `[B, V, C, L]`):
                Semantic ids of each code (`SharkTokenizer` output), visits left-aligned, oldest first.
            code_mask (`torch.BoolTensor` of shape `[B, V, C]`): True for real codes.
            visit_mask (`torch.BoolTensor` of shape `[B, V]`): True for real visits; each row is a prefix of
                True values and every patient needs at least one.
            labels (`torch.FloatTensor` of shape `[B, num_labels]`, *optional*): multi-hot next-visit labels.
            return_dict (`bool`, *optional*): return a [`SharkOutput`] (default) or a tuple.
        """
        code_mask, visit_mask = self._check_inputs(input_ids, code_mask, visit_mask, labels)
        batch_size, num_visits = visit_mask.shape
        layout = packed_reverse_layout(visit_mask)
        patients, visits = layout.patient_index, layout.visit_index
        ids = input_ids[patients, visits]  # [N, C, L]
        self._check_id_range(ids)
        vectors = self._visit_vectors(ids, code_mask[patients, visits])  # [N, D]

        g, h = self.run_grus(vectors, layout.batch_sizes)  # [N, H] each
        alpha_scores = self.alpha_proj(g).squeeze(-1)  # [N]
        beta = torch.tanh(self.beta_proj(h))  # [N, D]

        # Scatter back to the chronological slot each visit came from; padding stays -inf -> weight exactly 0.
        scores = alpha_scores.new_full((batch_size, num_visits), float("-inf"))
        alpha = torch.softmax(scores.index_put((patients, visits), alpha_scores), dim=1)  # [B, V]
        weighted = alpha[patients, visits].unsqueeze(-1) * beta * vectors  # [N, D]
        context = vectors.new_zeros(batch_size, vectors.shape[-1]).index_add(0, patients, weighted)  # [B, D]
        logits = self.classifier(self.dropout(context))
        feature_attention = beta.new_zeros(batch_size, num_visits, beta.shape[-1]).index_put(
            (patients, visits), beta
        )

        loss = None
        if labels is not None:
            loss = (
                F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="sum")
                / batch_size
            )
        output = SharkOutput(
            loss=loss, logits=logits, visit_attention=alpha, feature_attention=feature_attention
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def run_grus(
        self, vectors: torch.FloatTensor, batch_sizes: torch.LongTensor
    ) -> tuple[torch.FloatTensor, torch.FloatTensor]:
        """GRU_alpha and GRU_beta over the packed visits `[N, D]`, in one pass: `(g, h)`, `[N, H]` each.

        Both run as one GRU of width 2H whose weights stack the two GRUs' gate by gate, with block-diagonal
        recurrent weights, so no unit ever sees the other GRU's state: the result is that of the two GRUs run
        separately, in half the sequential steps (the recurrence is what a training step waits on).
        """
        hidden = self.config.hidden_size
        alpha, beta = self.alpha_gru, self.beta_gru

        def stacked(name: str, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:  # gate-major, alpha then beta
            first = F.pad(getattr(alpha, name).view(3, hidden, -1), pad)
            second = F.pad(getattr(beta, name).view(3, hidden, -1), pad[::-1])
            return torch.cat([first, second], dim=1).view(6 * hidden, -1)

        weights = [
            stacked("weight_ih_l0"),
            stacked("weight_hh_l0", pad=(0, hidden)),
            stacked("bias_ih_l0").view(-1),
            stacked("bias_hh_l0").view(-1),
        ]
        state = vectors.new_zeros(1, int(batch_sizes[0]), 2 * hidden)
        output, _ = torch.gru(vectors, batch_sizes, state, weights, True, 1, 0.0, self.training, False)
        return output[:, :hidden], output[:, hidden:]

    def _visit_vectors(self, ids: torch.LongTensor, code_mask: torch.Tensor) -> torch.FloatTensor:
        """Masked mean over codes of the composed codewords: ids `[N, C, L]`, mask `[N, C]` -> `[N, D]`."""
        means = self._level_means(ids, code_mask)  # [L, N, d]
        if self.config.composition == "sum":
            return means.sum(0)
        return means.transpose(0, 1).reshape(ids.shape[0], -1)

    def _level_means(self, ids: torch.LongTensor, code_mask: torch.Tensor) -> torch.FloatTensor:
        """Per level l, the mean over each visit's real codes of their level-l codeword: `[L, N, d]`.

        Small tables (L*K <= `_DENSE_TABLE_LIMIT`, e.g. semantic ids with L=4, K=128) use a dense
        visit x codeword weight matrix and one batched matmul: its cost does not depend on how often a
        codeword repeats, whereas embedding-bag backward slows down sharply on the heavy repetition of a
        512-row table. Large tables (`learned`, one row per code) use embedding bags over the real codes.
        """
        num_visits, _, num_levels = ids.shape
        size = self.config.codebook_size
        table = self.code_embeddings.weight  # [L*K, d]
        if num_levels * size <= _DENSE_TABLE_LIMIT:
            weight = code_mask.to(table.dtype)
            weight = weight / weight.sum(-1, keepdim=True).clamp(min=1.0)  # [N, C]
            level_visit_codeword = table.new_zeros(num_levels, num_visits, size).scatter_add_(
                2, ids.permute(2, 0, 1), weight.expand(num_levels, -1, -1)
            )  # [L, N, K]: weight of codeword k of level l in visit n
            return torch.bmm(level_visit_codeword, table.view(num_levels, size, -1))
        offsets = torch.arange(num_levels, device=ids.device) * size  # [L]: level l's rows start at l*K
        counts = code_mask.sum(1)  # [N]
        starts = counts.cumsum(0) - counts
        codes = ids[code_mask] + offsets  # [M, L], grouped by visit
        bags = [F.embedding_bag(codes[:, level], table, starts, mode="mean") for level in range(num_levels)]
        return torch.stack(bags)

    def _check_inputs(
        self,
        input_ids: torch.Tensor,
        code_mask: torch.Tensor,
        visit_mask: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate shapes and masks; return the masks as bool tensors."""
        levels = self.config.num_levels
        if input_ids.dim() != 4 or input_ids.shape[-1] != levels:
            raise ValueError(
                f"input_ids must have shape [batch, visits, codes, num_levels={levels}], "
                f"got {tuple(input_ids.shape)}"
            )
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        batch_size, num_visits, num_codes, _ = input_ids.shape
        if batch_size == 0 or num_visits == 0:
            raise ValueError(f"input_ids holds no patients or no visits: shape {tuple(input_ids.shape)}")
        if tuple(code_mask.shape) != (batch_size, num_visits, num_codes):
            raise ValueError(
                f"code_mask must have shape [batch, visits, codes] = {(batch_size, num_visits, num_codes)} "
                f"like input_ids, got {tuple(code_mask.shape)}"
            )
        if tuple(visit_mask.shape) != (batch_size, num_visits):
            raise ValueError(
                f"visit_mask must have shape [batch, visits] = {(batch_size, num_visits)} like input_ids, "
                f"got {tuple(visit_mask.shape)}"
            )
        visit_mask = visit_mask.bool()
        lengths = visit_mask.sum(1)
        empty = (lengths == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"patients at batch index {empty[:10]} have no visits (visit_mask all False); "
                "SHARK needs at least one input visit per patient"
            )
        prefix = torch.arange(num_visits, device=visit_mask.device) < lengths.unsqueeze(1)
        if not torch.equal(prefix, visit_mask):
            bad = (prefix != visit_mask).any(1).nonzero().flatten().tolist()
            raise ValueError(
                f"visit_mask rows {bad[:10]} are not left-aligned: real visits must come first (oldest at "
                "index 0) followed only by padding"
            )
        if labels is not None:
            if tuple(labels.shape) != (batch_size, self.config.num_labels):
                raise ValueError(
                    f"labels must have shape [batch, num_labels] = {(batch_size, self.config.num_labels)} "
                    f"(label space {self.config.label_space!r}), got {tuple(labels.shape)}"
                )
            target = labels.float()
            if (target * (1 - target)).any():  # nonzero unless every entry is 0 or 1 (NaN included)
                raise ValueError("labels must be multi-hot: every entry 0 or 1")
        return code_mask.bool(), visit_mask

    def _check_id_range(self, ids: torch.Tensor) -> None:
        """Every id of a real visit (padding codes included) must lie in `[0, codebook_size)`."""
        low, high = torch.aminmax(ids)
        size = self.config.codebook_size
        if low < 0 or high >= size:
            bad = ((ids < 0) | (ids >= size)).nonzero()[0].tolist()
            raise ValueError(
                f"input_ids contains id {int(ids[tuple(bad)])} at level {bad[-1]}, outside "
                f"[0, codebook_size={size}); "
                "was the batch encoded with this model's tokenizer?"
            )

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor], top_k: int = 20) -> list[dict[str, Any]]:
        """Top-k next-visit labels with names and probabilities, and the attention over visits, per patient.

        Args:
            batch: a `SharkTokenizer` / `VisitCollator` output with `input_ids`, `code_mask`, `visit_mask`.
            top_k: number of labels returned per patient (capped at `num_labels`).

        Returns:
            One dict per patient: `{"labels": [{"label", "name", "probability"}, ...]` (most probable first),
            `"visit_attention": [alpha per real visit, oldest first]}`. `name` is `None` for labels without a
            description in `config.label_descriptions`.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        was_training = self.training
        self.eval()
        try:
            inputs = {key: batch[key].to(self.device) for key in ("input_ids", "code_mask", "visit_mask")}
            output = self(**inputs, return_dict=True)
        finally:
            self.train(was_training)
        probabilities, indices = torch.sigmoid(output.logits).topk(min(top_k, self.config.num_labels), dim=1)
        lengths = inputs["visit_mask"].bool().sum(1).tolist()
        descriptions = self.config.label_descriptions or {}
        results = []
        for row, length in enumerate(lengths):
            top = []
            for index, probability in zip(indices[row].tolist(), probabilities[row].tolist(), strict=True):
                label = self.config.id2label[index]
                top.append({"label": label, "name": descriptions.get(label), "probability": probability})
            attention = output.visit_attention[row, :length].tolist()
            results.append({"labels": top, "visit_attention": attention})
        return results

    def check_tokenizer(self, tokenizer: Any, allow_mismatch: bool = False) -> None:
        """Raise unless `tokenizer` produces the ids this model expects; see `SharkConfig.check_tokenizer`."""
        self.config.check_tokenizer(tokenizer, allow_mismatch=allow_mismatch)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Any,
        *model_args: Any,
        tokenizer: Any = None,
        allow_tokenizer_mismatch: bool = False,
        **kwargs: Any,
    ) -> "SharkForDiagnosisPrediction":
        """`PreTrainedModel.from_pretrained`, plus an optional tokenizer compatibility check.

        Args:
            tokenizer: a `SharkTokenizer`; when given, [`check_tokenizer`] runs on the loaded model.
            allow_tokenizer_mismatch: downgrade a fingerprint / kind mismatch to a warning.
        """
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if tokenizer is not None:
            model.check_tokenizer(tokenizer, allow_mismatch=allow_tokenizer_mismatch)
        return model

    def push_to_hub(self, repo_id: str, *, tokenizer: Any = None, metrics: Any = None, **kwargs: Any) -> Any:
        """Publish the model with the SHARK model card as README.md (not transformers' generic card).

        With shark-hf installed this is `shark_hf.hub.push_model`: the tokenizer goes under `tokenizer/` (or
        the one already there is kept), `metrics` (a metrics.json dict or path) fill the card's results, and
        `license` / `gated` / `tags` set its metadata. Without shark-hf (this file loaded as remote code) it
        is `PreTrainedModel.push_to_hub`, which keeps the README.md already in the repository.
        """
        try:
            from shark_hf.hub import push_model
        except ModuleNotFoundError as error:
            if error.name not in ("shark_hf", "shark_hf.hub"):
                raise
            if tokenizer is not None or metrics is not None:
                raise ImportError("push_to_hub(tokenizer=, metrics=) needs `pip install shark-hf`") from error
            return super().push_to_hub(repo_id, **kwargs)
        return push_model(self, repo_id, tokenizer=tokenizer, metrics=metrics, **kwargs)


def packed_reverse_layout(visit_mask: torch.Tensor) -> VisitLayout:
    """Map each real visit to its place in a `PackedSequence` of every patient's visits, newest first.

    Packed order is time step t (t = 0 is the newest visit) then patients by decreasing length (stable); at
    step t patient p reads its chronological visit `length_p - 1 - t`. visit_mask `[B, V]` (left-aligned).
    """
    lengths = visit_mask.sum(1)  # [B]
    sorted_lengths, order = torch.sort(lengths, descending=True, stable=True)
    steps = torch.arange(int(sorted_lengths[0]), device=visit_mask.device)
    active = steps.unsqueeze(1) < sorted_lengths.unsqueeze(0)  # [T, B]: rank b still has a visit at step t
    step_index, rank_index = active.nonzero(as_tuple=True)
    patient_index = order[rank_index]
    visit_index = lengths[patient_index] - 1 - step_index
    return VisitLayout(patient_index, visit_index, active.sum(1).cpu())


SharkConfig.register_for_auto_class()
SharkForDiagnosisPrediction.register_for_auto_class("AutoModel")

__all__ = [
    "SharkForDiagnosisPrediction",
    "SharkOutput",
    "SharkPreTrainedModel",
    "VisitLayout",
    "packed_reverse_layout",
]
