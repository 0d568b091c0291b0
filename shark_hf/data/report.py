"""Accounting for a cohort build: unusable rows per reason (with examples) and the cohort card.

Every row a builder cannot use is counted under exactly one reason of `REASONS` and the first few
such rows are kept as examples (file, line, raw values). Nothing is dropped silently: the counts end
up in `CohortReport`, which prints as a human-readable summary and converts to a JSON-ready dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

#: Why a row could not be used, in the order the builders check them (a row gets the first that applies).
REASONS: dict[str, str] = {
    "missing_id": "patient or visit/admission id is blank",
    "bad_date": "date/time is blank or unparseable",
    "blank_code": "diagnosis code is blank",
    "bad_code": "code (or its code-system value) cannot be parsed",
    "unknown_code": "well-formed code that is not in its code system",
    "no_admission": "diagnosis whose admission id has no usable admission row of the same patient",
    "duplicate_row": "repeats an earlier row (same admission id, or same code in the same visit)",
    "admission_without_diagnoses": "admission with no usable diagnosis row",
}

MAX_EXAMPLES = 5


@dataclass
class SourceFile:
    """A table read from disk, kept so that issues can quote its raw values.

    `name` is the path relative to the cohort root (as printed in messages), `path` the file, `table` the
    raw columns as read, `kind` "csv" (lines counted with the header as line 1) or "parquet" (rows from 1).
    `rows` ([T] int64, optional) gives the 0-based data row in the file of each table row when `table`
    holds only some rows of the file (MEDS: the diagnosis rows), and `rows_in_file` the file's row count.
    """

    name: str
    path: Path
    table: pa.Table
    kind: str
    rows: np.ndarray | None = None
    rows_in_file: int | None = None

    @property
    def rows_read(self) -> int:
        """Data rows in the file (not only those kept in `table`)."""
        return self.table.num_rows if self.rows_in_file is None else self.rows_in_file

    def number(self, position: int) -> int:
        """1-based line (CSV, header = line 1) or row (parquet) number of table row `position`."""
        row = position if self.rows is None else int(self.rows[position])
        return row + 2 if self.kind == "csv" else row + 1

    @property
    def unit(self) -> str:
        return "line" if self.kind == "csv" else "row"

    def location(self, position: int) -> str:
        """Human-readable position of table row `position`: "file line N" (CSV) or "file row N" (parquet)."""
        return f"{self.name} {self.unit} {self.number(position)}"


@dataclass
class RowExample:
    """One unusable row: where it is and what it held."""

    file: str
    line: int
    values: dict[str, Any]
    unit: str = "line"

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"{self.file} {self.unit} {self.line}: {shown}"


@dataclass
class _Reason:
    count: int = 0
    examples: list[tuple[int, int, RowExample]] = field(default_factory=list)  # (file order, row, example)


class RowIssues:
    """Collects unusable rows per reason; files are numbered in the order they are registered."""

    def __init__(self) -> None:
        self.files: list[SourceFile] = []
        self._reasons: dict[str, _Reason] = {}

    def register(self, source: SourceFile) -> int:
        """Add a file; returns its index (files are reported and checked in this order)."""
        self.files.append(source)
        return len(self.files) - 1

    def add(self, reason: str, file_index: int, rows: np.ndarray) -> None:
        """Count table rows `rows` (int positions or bool mask) of file `file_index` under `reason`."""
        if reason not in REASONS:
            raise KeyError(f"unknown issue reason {reason!r}; expected one of {sorted(REASONS)}")
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if rows.size == 0:
            return
        entry = self._reasons.setdefault(reason, _Reason())
        entry.count += int(rows.size)
        source = self.files[file_index]
        first = np.sort(rows)[:MAX_EXAMPLES]
        raw = source.table.take(pa.array(first)).to_pylist()
        new = [
            (file_index, int(r), RowExample(source.name, source.number(int(r)), values, source.unit))
            for r, values in zip(first, raw, strict=True)
        ]
        entry.examples = sorted(entry.examples + new, key=lambda e: (e[0], e[1]))[:MAX_EXAMPLES]

    def counts(self) -> dict[str, int]:
        """{reason: number of rows}, reasons in `REASONS` order, only those that occurred."""
        return {r: self._reasons[r].count for r in REASONS if r in self._reasons}

    def examples(self, reason: str) -> list[RowExample]:
        return [e for _, _, e in self._reasons[reason].examples] if reason in self._reasons else []

    def raise_first(self) -> None:
        """Raise ValueError for the first unusable row (file order, then line); no-op when there is none."""
        found = [(e[0], e[1], reason, e[2]) for reason, r in self._reasons.items() for e in r.examples[:1]]
        if not found:
            return
        file_index, row, reason, example = min(found, key=lambda f: (f[0], f[1]))
        where = self.files[file_index].location(row)
        shown = ", ".join(f"{k}={v!r}" for k, v in example.values.items())
        raise ValueError(f"{where}: {reason} ({REASONS[reason]}): {shown}")


@dataclass
class CohortReport:
    """What a cohort build read, what it could not use and what it produced.

    - `files`: {file: rows read}
    - `issues`: {reason: rows}, `examples`: {reason: up to 5 `RowExample`}
    - `notes`: other counts that are not row errors (ignored non-diagnosis rows, patients with too few
      visits, codes without a label in the label space, samples with empty labels, ...)
    - `card`: {split: statistics} for "train", "validation", "test" and "all"; see `cohort_card`.
    """

    source: str
    root: str
    options: dict[str, Any]
    files: dict[str, int]
    issues: dict[str, int]
    examples: dict[str, list[RowExample]]
    notes: dict[str, Any]
    card: dict[str, dict[str, float | int]]

    @property
    def num_unusable_rows(self) -> int:
        return sum(self.issues.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (examples as {file, line, values})."""
        return {
            "source": self.source,
            "root": self.root,
            "options": dict(self.options),
            "files": dict(self.files),
            "issues": dict(self.issues),
            "examples": {
                r: [{"file": e.file, e.unit: e.line, "values": e.values} for e in ex]
                for r, ex in self.examples.items()
            },
            "notes": dict(self.notes),
            "card": {k: dict(v) for k, v in self.card.items()},
        }

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        lines = [f"Cohort from {self.source} at {self.root} ({opts})", "Files read:"]
        lines += [f"  {name}: {rows:,} rows" for name, rows in self.files.items()]
        lines.append(f"Unusable rows: {self.num_unusable_rows:,}")
        for reason, count in self.issues.items():
            lines.append(f"  {reason}: {count:,} ({REASONS[reason]})")
            lines += [f"    {example}" for example in self.examples.get(reason, [])]
        if self.notes:
            lines.append("Notes:")
            lines += [f"  {key}: {value}" for key, value in self.notes.items()]
        lines.append(format_card(self.card))
        return "\n".join(lines)


CARD_COLUMNS = {
    "patients": "patients",
    "samples": "samples",
    "visits": "visits",
    "distinct_codes": "codes",
    "mean_visits_per_patient": "visits/pt",
    "max_visits_per_patient": "max v/pt",
    "mean_codes_per_visit": "codes/visit",
    "distinct_labels": "labels",
    "mean_labels_per_sample": "labels/sample",
}


def format_card(card: dict[str, dict[str, float | int]]) -> str:
    """The cohort card as a fixed-width text table, one row per split."""
    header = ["split"] + list(CARD_COLUMNS.values())
    rows = [header]
    for split, stats in card.items():
        cells = [split]
        for key in CARD_COLUMNS:
            value = stats[key]
            cells.append(f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)
