"""`VisitCollator`: cohort rows -> padded model inputs and multi-hot labels, for a torch `DataLoader`.

>>> collator = VisitCollator(tokenizer, label_names("ccs"))
>>> loader = DataLoader(cohort["train"], batch_size=256, shuffle=True, collate_fn=collator)

Rows are what `build_cohort` produces (`visits`: list of visits, oldest first, each a list of codes; `labels`:
label-space codes of the target visit), as plain Python lists: a `datasets.Dataset` works as it is, without
`with_format("torch")`, which cannot hold ragged visits. Other columns (`patient_id`, `visit_times`, ...)
are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from shark_hf.code_table import unknown_codes_message
from shark_hf.codes import LABEL_SPACES, cohort_codes, to_label
from shark_hf.utils import preview

if TYPE_CHECKING:
    from shark_hf.tokenization_shark import SharkTokenizer

logger = logging.getLogger(__name__)


@dataclass
class VisitCollator:
    """Collate cohort rows into `input_ids`, `code_mask`, `visit_mask` and `labels` tensors.

    Args:
        tokenizer: a `SharkTokenizer` (its `__call__` pads the visits).
        label_names: the label space: an ordered sequence of labels, or a `{label: name}` mapping such as
            `shark_hf.codes.label_names("ccs")`; the order defines the columns of `labels`.
        max_visits: keep only the most recent `max_visits` visits of each patient (None keeps all).
        unknown: the tokenizer's policy for codes it does not know: "error" (KeyError listing them), "skip",
            "embed", or None for the tokenizer's default.
        label_space: when set ("ccs", "ccsr" or "code", the space of `label_names`), also return
            `code_labels`, the label history that a model with `repeat_head` reads.

    Calling it on B rows returns a dict of tensors:
        - `input_ids` int64 `[B, V, C, L]`, `code_mask` bool `[B, V, C]`, `visit_mask` bool `[B, V]`: from the
          tokenizer, visits left-aligned (visit 0 is the oldest kept), V and C the largest in the batch;
        - `labels` float32 `[B, len(label_names)]`: multi-hot targets, present when the rows have "labels".
          A label outside `label_names` raises ValueError naming the label and the row;
        - `code_labels` int64 `[B, V, C']` (with `label_space`): the column in `label_names` of the label
          of each input code (`shark_hf.codes.to_label(code, label_space)`); -1 for a code without a label
          in the space or outside `label_names`, and for padding. Its visits are those of `visit_mask` (an
          empty visit, or one whose codes the tokenizer all skips, is dropped as the tokenizer drops it); C'
          is the largest number of codes of a kept visit, codes in input order (unknown codes included).
    """

    tokenizer: SharkTokenizer
    label_names: Sequence[str] | Mapping[str, str]
    max_visits: int | None = None
    unknown: str | None = "error"
    label_space: str | None = None
    _column: dict[str, int] = field(init=False, repr=False)
    _code_column: dict[str, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        labels = list(self.label_names)
        if not labels:
            raise ValueError("label_names is empty")
        self._column = {str(label): i for i, label in enumerate(labels)}
        if len(self._column) != len(labels):
            repeated = sorted({str(x) for x in labels if labels.count(x) > 1})
            raise ValueError(f"label_names repeats labels: {repeated[:10]}")
        if self.max_visits is not None and self.max_visits < 1:
            raise ValueError(f"max_visits must be >= 1 or None, got {self.max_visits}")
        if self.label_space is not None and self.label_space not in LABEL_SPACES:
            raise ValueError(f"label_space must be one of {LABEL_SPACES} or None, got {self.label_space!r}")

    @classmethod
    def for_model(
        cls,
        tokenizer: SharkTokenizer,
        config: Any,
        max_visits: int | None = None,
        unknown: str | None = "error",
    ) -> VisitCollator:
        """The collator a model with `config` (a `SharkConfig`) reads: its label space in `id2label` order,
        and `code_labels` when `config.repeat_head` is set."""
        return cls(
            tokenizer,
            [config.id2label[i] for i in range(config.num_labels)],
            max_visits=max_visits,
            unknown=unknown,
            label_space=config.label_space if getattr(config, "repeat_head", False) else None,
        )

    @property
    def num_labels(self) -> int:
        return len(self._column)

    def __call__(
        self, rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]
    ) -> dict[str, torch.Tensor]:
        """Collate B rows (a list of row dicts, or one dict of columns such as `dataset[:B]`)."""
        if isinstance(rows, Mapping):
            rows = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
        if not rows:
            raise ValueError("cannot collate an empty batch")
        for i, row in enumerate(rows):
            if "visits" not in row:
                raise ValueError(f"row {_name(row, i)} has no 'visits' (keys: {sorted(row)})")
        encoding = self.tokenizer(
            [row["visits"] for row in rows],
            return_tensors="pt",
            unknown=self.unknown,
            max_visits=self.max_visits,
        )
        batch = {key: encoding[key] for key in ("input_ids", "code_mask", "visit_mask")}
        if self.label_space is not None:
            batch["code_labels"] = self._code_labels(
                [row["visits"] for row in rows], batch["visit_mask"].shape[1]
            )
        has_labels = [row.get("labels") is not None for row in rows]
        if any(has_labels):
            if not all(has_labels):
                missing = has_labels.index(False)
                raise ValueError(f"row {_name(rows[missing], missing)} has no 'labels' but other rows do")
            batch["labels"] = self._multi_hot([row["labels"] for row in rows], rows)
        return batch

    def _code_labels(self, patients: list[Sequence[Sequence[str]]], num_visits: int) -> torch.Tensor:
        """[B, num_visits, C'] int64 label column of each code of the kept visits (-1 padding)."""
        kept = []
        for visits in patients:
            visits = [visit for visit in visits if self._keeps(visit)]
            kept.append(visits[-self.max_visits :] if self.max_visits is not None else visits)
        width = max((len(visit) for visits in kept for visit in visits), default=0)
        out = np.full((len(patients), num_visits, max(width, 1)), -1, dtype=np.int64)
        for b, visits in enumerate(kept):
            for v, visit in enumerate(visits):
                out[b, v, : len(visit)] = [self._label_column(code) for code in visit]
        return torch.from_numpy(out)

    def _keeps(self, visit: Sequence[str]) -> bool:
        """Whether the tokenizer keeps this visit: it has a code, and with unknown="skip" a known one."""
        if self.unknown == "skip":
            return any(code in self.tokenizer for code in visit)
        return len(visit) > 0

    def _label_column(self, code: str) -> int:
        """Column in `label_names` of the label of `code` in `label_space`, -1 when it has none (cached)."""
        column = self._code_column.get(code)
        if column is None:
            try:
                column = self._column.get(to_label(code, space=self.label_space), -1)
            except (KeyError, ValueError):
                column = -1
            self._code_column[code] = column
        return column

    def _multi_hot(self, labels: list[Sequence[str]], rows: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """[B, num_labels] float32 with 1.0 at each row's labels."""
        column = self._column
        for i, row_labels in enumerate(labels):
            if isinstance(row_labels, str):
                raise ValueError(
                    f"row {_name(rows[i], i)}: 'labels' must be a list of labels, got {row_labels!r}"
                )
        counts = np.fromiter(map(len, labels), dtype=np.int64, count=len(labels))
        flat = [label for row_labels in labels for label in row_labels]
        try:  # one C-level lookup pass; itemgetter of one key returns a scalar
            columns = np.array(
                itemgetter(*flat)(column) if len(flat) > 1 else [column[x] for x in flat], np.int64
            )
        except (KeyError, TypeError):
            for i, row_labels in enumerate(labels):
                bad = [label for label in row_labels if not isinstance(label, str) or label not in column]
                if bad:
                    examples = ", ".join(list(column)[:5])
                    raise ValueError(
                        f"row {_name(rows[i], i)}: label {bad[0]!r} is not in label_names "
                        f"({len(column)} labels: {examples}, ...)"
                    ) from None
            raise
        out = np.zeros((len(labels), len(column)), dtype=np.float32)  # numpy: torch.zeros may wake threads
        out[np.repeat(np.arange(len(labels)), counts), columns] = 1.0
        return torch.from_numpy(out)


def check_cohort_codes(tokenizer: SharkTokenizer, cohort: Mapping[str, Any], unknown: str) -> None:
    """Check every distinct code of every split of `cohort` (`{split: rows}` with a `visits` column) against
    `tokenizer` at once, before a model is built or a batch collated, under the `unknown` policy of
    `VisitCollator`; with "skip" or "embed", log how many codes that policy applies to.

    Raises:
        KeyError: with "error", counting and listing the codes the tokenizer lacks and the strings that are
            not codes (a batch would only show its own).
        ValueError: with "embed", naming the strings that are not codes (they cannot be embedded).
    """
    codes = cohort_codes(cohort)
    missing, invalid = tokenizer.missing_codes(codes)
    if not missing and not invalid:
        return
    where = f" of the cohort ({', '.join(cohort)})"
    if unknown == "error":
        raise KeyError(unknown_codes_message(missing, invalid, total=len(codes), where=where))
    if unknown == "embed" and invalid:
        raise ValueError(
            f"cannot embed {len(invalid)} strings{where} that are not valid ICD-9-CM or ICD-10-CM codes: "
            f"[{preview(sorted(invalid))}]"
        )
    logger.warning(
        "%d of %d codes%s are not in the tokenizer (%s): %s",
        len(missing) + len(invalid),
        len(codes),
        where,
        "dropped" if unknown == "skip" else "embedded with the tokenizer's embedding model",
        preview(missing + sorted(invalid)),
    )


def _name(row: Mapping[str, Any], index: int) -> str:
    """How to name a row in an error: its index in the batch, and its sample or patient id when present."""
    for key in ("sample_id", "patient_id"):
        if row.get(key) is not None:
            return f"{index} ({key} {row[key]!r})"
    return str(index)
