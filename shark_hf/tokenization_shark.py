"""`SharkTokenizer`: medical codes -> SHARK semantic IDs, saved and shared through the Hugging Face Hub.

A tokenizer is a code table: `codes` (canonical keys, one per row) and `ids` (LongTensor `[N, L]`, the
L-tuple of IDs of each code, every ID in `[0, K)`). Three kinds build it:

- `"semantic"` (`SharkTokenizer.fit`): Residual K-Means over code-description embeddings (paper §2.2); the
  tokenizer keeps the codebooks `[L, K, D]`, so codes it never saw can be encoded later with the same
  greedy residual rule (`add_codes`, or on the fly in `__call__`).
- `"random"` (`SharkTokenizer.random_ids`): the paper's Random ID baseline (Table 2), L IDs uniform in
  `[0, K)` from a seeded `torch.Generator`.
- `"index"` (`SharkTokenizer.index`): one ID per code (L = 1, K = N), the per-code table of plain RETAIN.

With `deduplicate=True` a last level is appended whose ID is the index of the code inside its collision group
(the codes sharing the same Residual K-Means tuple), so every code gets a unique tuple.

Folder layout written by `save_pretrained` (no pickle anywhere):

- `codebooks.safetensors`: `ids` int64 `[N, L]`, and for kind "semantic" `codebooks` float32 `[L_rq, K, D]`
  (L_rq = L, or L - 1 with the deduplication level); metadata `shark_tokenizer` = JSON `{"fingerprint",
  "format_version"}`.
- `tokenizer_config.json`: `format_version`, `tokenizer_class`, kind, L, K, provenance (embedding model,
  text strategy, seed, Residual K-Means settings, per-level reconstruction errors, codebook usage),
  `fingerprint`, and the code table `codes` (public ICD codes, in row order).
- `README.md`: the tokenizer card rendered from `hub_cards/tokenizer_card.md`.

`fingerprint` is the sha256 hex digest of, in this order: the UTF-8 header
`"shark-tokenizer\\nkind=<kind>\\nids=<N>x<L>\\ncodebooks=<L_rq>x<K>x<D>\\nK=<K>\\n"` (`codebooks=none`
when the kind has none), the codebooks as little-endian float32 bytes (C order), the ids as little-endian
int64 bytes (C order), and the codes joined by `"\\n"` in UTF-8. It changes with any bit of the table or
codebooks and is the same before and after a save/load round trip. `codebook_fingerprint` hashes only what
gives an ID its meaning (the same header with `levels=<L>` in place of `ids=<N>x<L>`, then the codebooks;
for "random"/"index" it is `fingerprint`), so it survives `add_codes`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain, combinations, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, snapshot_download
from safetensors.torch import load_file, save_file
from transformers import BatchEncoding

from shark_hf.cards import render_card
from shark_hf.codes import ancestors, describe, normalize_code, to_label
from shark_hf.codes import label_names as code_label_names
from shark_hf.embeddings import TEXT_STRATEGIES, CodeEmbeddings, TextEncoder, embed_codes, load_text_encoder
from shark_hf.rkmeans import ResidualKMeans

logger = logging.getLogger(__name__)

CONFIG_NAME = "tokenizer_config.json"
TENSORS_NAME = "codebooks.safetensors"
CARD_NAME = "README.md"
CARD_TAG = "shark-tokenizer"
FORMAT_VERSION = 1
KINDS = ("semantic", "random", "index")
UNKNOWN_POLICIES = ("error", "skip", "embed")
REQUIRED_KEYS = (
    "kind",
    "codebook_size",
    "embedding_model",
    "embedding_text",
    "deduplicated",
    "fingerprint",
    "codes",
)
SETTING_KEYS = ("seed", "rkmeans", "level_errors", "codebook_usage", "embedding_normalized")

# format_version -> step turning a (config, tensors) pair of that version into the next version's layout.
# Version 1 is the first published layout, so no step exists yet. A later layout change bumps
# FORMAT_VERSION and registers its step here, so folders written by older releases keep loading.
Migration = Callable[
    [dict[str, Any], dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor]]
]
MIGRATIONS: dict[int, Migration] = {}


def _package_version() -> str:
    try:
        return importlib.metadata.version("shark-hf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class SharkTokenizer(
    ModelHubMixin,
    library_name="shark-hf",
    tags=["shark-hf", CARD_TAG, "medical-codes", "icd", "semantic-ids", "residual-kmeans"],
    license="apache-2.0",
):
    """Code table mapping medical codes to L-tuples of IDs in `[0, K)`; see the module docstring.

    Build one with `fit`, `random_ids` or `index`, or load one with `from_pretrained`. The constructor takes
    an already-built table and validates it.

    Args:
        codes: canonical code keys (`"ICD9CM:4019"`), one per row, unique.
        ids: LongTensor `[N, L]`, each entry in `[0, codebook_size)`.
        kind: `"semantic"`, `"random"` or `"index"`.
        codebook_size: K, the number of distinct IDs per level.
        codebooks: FloatTensor `[L_rq, K, D]` for kind "semantic" (L_rq = L, or L - 1 when `deduplicated`).
        embedding_model: id of the model the codebooks were fitted on (semantic only).
        embedding_text: text strategy of those embeddings (`"description"`, `"hierarchy"`, `"synonyms"`).
        deduplicated: whether the last level of `ids` is the collision-group index appended by `fit`.
        settings: provenance written to the config (seed, Residual K-Means settings, level errors, ...).
    """

    def __init__(
        self,
        codes: Sequence[str],
        ids: torch.Tensor,
        *,
        kind: str,
        codebook_size: int,
        codebooks: torch.Tensor | None = None,
        embedding_model: str | None = None,
        embedding_text: str | None = None,
        deduplicated: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if (codebooks is None) != (kind != "semantic"):
            raise ValueError(f"codebooks are required for kind 'semantic' and only for it (kind {kind!r})")
        self.kind = kind
        self.codebook_size = int(codebook_size)
        self.embedding_model = embedding_model
        self.embedding_text = embedding_text
        self.deduplicated = bool(deduplicated)
        self.settings = dict(settings or {})
        if set(self.settings) - set(SETTING_KEYS):
            raise ValueError(f"settings keys must be among {SETTING_KEYS}, got {sorted(self.settings)}")
        self._codebooks = (
            None if codebooks is None else codebooks.detach().to("cpu", torch.float32).contiguous()
        )
        self._set_table(list(codes), ids)
        self._embedded: dict[str, tuple[int, ...]] = {}  # memo of codes embedded on the fly by __call__
        self.text_encoder: TextEncoder | None = None  # loaded on the first on-the-fly embedding, then kept

    # ------------------------------------------------------------------ construction

    @classmethod
    def fit(
        cls,
        embeddings: CodeEmbeddings,
        num_levels: int = 4,
        codebook_size: int = 128,
        seed: int = 0,
        deduplicate: bool = False,
        **rkmeans_kwargs: Any,
    ) -> SharkTokenizer:
        """Fit Residual K-Means on code embeddings and encode every code (kind "semantic").

        Args:
            embeddings: `CodeEmbeddings` with `codes` (N) and `vectors` `[N, D]`; `model_id` and `text` are
                recorded so that unseen codes can be embedded the same way later.
            num_levels: L, the number of residual levels.
            codebook_size: K, centroids per level; at most N.
            seed: seed of the k-means++ initialisation (same seed, same data -> identical codebooks and IDs).
            deduplicate: append a level holding each code's index within its collision group, making every
                tuple unique (needs K >= the largest collision group).
            **rkmeans_kwargs: passed to `ResidualKMeans` (`n_init`, `max_iter`, `tol`, `device`).
        """
        codes = _canonical_codes(embeddings.codes, "embeddings.codes")
        vectors = _checked_vectors(codes, embeddings.vectors)
        if codebook_size > len(codes):
            raise ValueError(
                f"codebook_size={codebook_size} is larger than the number of codes ({len(codes)}): k-means "
                f"cannot make more clusters than points; use codebook_size <= {len(codes)}"
            )
        rkmeans = ResidualKMeans(
            num_levels=num_levels, codebook_size=codebook_size, seed=seed, **rkmeans_kwargs
        )
        ids = rkmeans.fit_encode(vectors).cpu()
        if deduplicate:
            ids = torch.cat([ids, _collision_index(ids, codebook_size, codes)[:, None]], dim=1)
        settings = {
            "seed": seed,
            "rkmeans": {
                "n_init": rkmeans.n_init,
                "max_iter": rkmeans.max_iter,
                "tol": rkmeans.tol,
                "n_local_trials": rkmeans.n_local_trials,
                "num_iter": list(rkmeans.num_iter),
            },
            "level_errors": [float(error) for error in rkmeans.level_errors],
            "codebook_usage": [int(usage) for usage in rkmeans.codebook_usage],
            # Unseen codes embedded later must be normalised the same way (embed_codes(normalize=...)).
            "embedding_normalized": bool(torch.allclose(vectors.norm(dim=1), torch.ones(()), atol=1e-4)),
        }
        return cls(
            codes,
            ids,
            kind="semantic",
            codebook_size=codebook_size,
            codebooks=rkmeans.codebooks.detach().cpu(),
            embedding_model=embeddings.model_id,
            embedding_text=embeddings.text,
            deduplicated=deduplicate,
            settings=settings,
        )

    @classmethod
    def random_ids(
        cls, codes: Sequence[str], num_levels: int = 4, codebook_size: int = 128, seed: int = 0
    ) -> SharkTokenizer:
        """The paper's Random ID baseline: each code gets L IDs drawn uniformly from `[0, K)`.

        IDs come from `torch.randint` on a `torch.Generator` seeded with `seed`, row by row in the order of
        `codes`, so the same codes in the same order and the same seed give the same table.
        """
        codes = _canonical_codes(codes, "codes")
        if num_levels < 1 or codebook_size < 1:
            raise ValueError(
                f"num_levels and codebook_size must be >= 1, got {num_levels} and {codebook_size}"
            )
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(
            0, codebook_size, (len(codes), num_levels), generator=generator, dtype=torch.int64
        )
        return cls(codes, ids, kind="random", codebook_size=codebook_size, settings={"seed": seed})

    @classmethod
    def index(cls, codes: Sequence[str]) -> SharkTokenizer:
        """One ID per code: L = 1, K = N and the ID of a code is its row (plain RETAIN's per-code table)."""
        codes = _canonical_codes(codes, "codes")
        ids = torch.arange(len(codes), dtype=torch.int64)[:, None]
        return cls(codes, ids, kind="index", codebook_size=len(codes))

    def _set_table(self, codes: list[str], ids: torch.Tensor) -> None:
        """Validate and install the code table; recompute every cache derived from it."""
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.ndim != 2:
            raise ValueError(f"ids must be an int64 tensor [N, L], got {_describe_tensor(ids)}")
        if ids.shape[0] != len(codes):
            raise ValueError(f"ids has {ids.shape[0]} rows but there are {len(codes)} codes")
        if ids.shape[1] < 1:
            raise ValueError("ids must have at least one level")
        duplicates = sorted(code for code, count in Counter(codes).items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate codes in the table: {duplicates}")
        if len(codes) and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            row = int(((ids < 0) | (ids >= self.codebook_size)).any(dim=1).nonzero()[0])
            raise ValueError(
                f"ids of {codes[row]} ({ids[row].tolist()}) are outside "
                f"[0, codebook_size={self.codebook_size})"
            )
        if self._codebooks is not None:
            semantic_levels = ids.shape[1] - int(self.deduplicated)
            if self._codebooks.ndim != 3 or tuple(self._codebooks.shape[:2]) != (
                semantic_levels,
                self.codebook_size,
            ):
                raise ValueError(
                    f"codebooks must be [{semantic_levels}, {self.codebook_size}, D] for ids of "
                    f"{ids.shape[1]} levels (deduplicated={self.deduplicated}), got "
                    f"{list(self._codebooks.shape)}"
                )
        self._codes = codes
        self._ids = ids.detach().to("cpu").contiguous()
        self._ids_np = self._ids.numpy()
        self._ids_padded = np.concatenate([np.zeros((1, ids.shape[1]), dtype=np.int64), self._ids_np])
        self._row = {code: row for row, code in enumerate(codes)}
        self.fingerprint = self._fingerprint(with_table=True)

    # ------------------------------------------------------------------ table access

    @property
    def codes(self) -> list[str]:
        """Canonical code keys in row order (a copy)."""
        return list(self._codes)

    @property
    def ids(self) -> torch.Tensor:
        """LongTensor `[N, L]`: the ID tuple of each code, row-aligned with `codes` (a copy)."""
        return self._ids.clone()

    @property
    def codebooks(self) -> torch.Tensor | None:
        """FloatTensor `[L_rq, K, D]` of kind "semantic" (a copy); None for "random" and "index"."""
        return None if self._codebooks is None else self._codebooks.clone()

    @property
    def num_levels(self) -> int:
        """L, the number of IDs per code (including the deduplication level when there is one)."""
        return self._ids.shape[1]

    @property
    def embedding_dim(self) -> int | None:
        """D, the width of the code embeddings the codebooks live in (None without codebooks)."""
        return None if self._codebooks is None else self._codebooks.shape[2]

    @property
    def codebook_fingerprint(self) -> str:
        """sha256 of what gives IDs their meaning: for "semantic" the header with `levels=<L>` instead of
        `ids=<N>x<L>` and the codebooks (stable under `add_codes`); for "random" and "index" `fingerprint`."""
        return self.fingerprint if self._codebooks is None else self._fingerprint(with_table=False)

    def __len__(self) -> int:
        return len(self._codes)

    def __contains__(self, code: object) -> bool:
        if not isinstance(code, str):
            return False
        if code in self._row:
            return True
        try:
            return normalize_code(code) in self._row
        except ValueError:
            return False

    def __repr__(self) -> str:
        return (
            f"SharkTokenizer(kind={self.kind!r}, num_codes={len(self)}, num_levels={self.num_levels}, "
            f"codebook_size={self.codebook_size}, embedding_model={self.embedding_model!r}, "
            f"fingerprint={self.fingerprint[:12]!r})"
        )

    def encode(self, code: str) -> tuple[int, ...]:
        """The ID tuple of one code, in any accepted spelling (`"401.9"`, `"ICD9CM:4019"`).

        Raises:
            KeyError: the code is not in the table (use `add_codes`, or `__call__(..., unknown="embed")`).
            ValueError: the string is not a valid code (from `normalize_code`).
        """
        row = self._row.get(code)
        if row is None:
            row = self._row.get(normalize_code(code))
        if row is None:
            raise KeyError(
                f"code not in the tokenizer: {[normalize_code(code)]} (add it with add_codes(embeddings), "
                "or encode batches of a semantic tokenizer with unknown='embed')"
            )
        return tuple(self._ids_np[row].tolist())

    # ------------------------------------------------------------------ batches

    def __call__(
        self,
        patients: Sequence[Sequence[Sequence[str]]],
        return_tensors: str = "pt",
        unknown: str | None = None,
        max_visits: int | None = None,
    ) -> BatchEncoding:
        """Encode a batch of patients into padded ID tensors.

        A patient is a list of visits, oldest first; a visit is a list of codes in any accepted spelling.

        Returns:
            `BatchEncoding` with
            - `input_ids` int64 `[B, V, C, L]`: IDs of code c of visit v of patient b; padding is 0.
            - `code_mask` bool `[B, V, C]`: True for real codes.
            - `visit_mask` bool `[B, V]`: True for real visits. Visits are left-aligned: visit 0 is the oldest
              kept visit and the real visits of a patient are always a prefix `visit_mask[b, :n_b]`.
            V and C are the largest visit and code counts in the batch (at least 1).

        Args:
            patients: B patients.
            return_tensors: `"pt"` (torch) or `"np"` (numpy).
            unknown: what to do with codes not in the table:
                `"error"` raises a KeyError listing every unknown code of the batch (normalised);
                `"skip"` drops them;
                `"embed"` embeds them with the tokenizer's embedding model and text strategy and encodes the
                vectors with the stored codebooks (the table is not changed; call `add_codes` for that).
                Default: `"embed"` for a semantic tokenizer that knows its embedding model, else `"error"`.
            max_visits: keep only the most recent `max_visits` visits of each patient.

        A visit with no codes left (empty in the input, or all its codes skipped) carries no information and
        has no mean, so it is removed and the later visits move up; a patient with no codes at all keeps an
        all-False `visit_mask` row.
        """
        policy = unknown or ("embed" if self._can_embed() else "error")
        if policy not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        if policy == "embed" and not self._can_embed():
            raise ValueError(
                "unknown='embed' needs a semantic tokenizer with a known embedding model and text strategy; "
                f"this one has kind {self.kind!r}, embedding_model {self.embedding_model!r} and "
                f"embedding_text {self.embedding_text!r}"
            )
        if max_visits is not None and max_visits < 1:
            raise ValueError(f"max_visits must be >= 1 or None, got {max_visits}")
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if isinstance(patients, str) or not len(patients):
            raise ValueError(
                "patients must be a non-empty list of patients (lists of visits, lists of codes)"
            )
        visits = list(chain.from_iterable(patients))
        flat = list(chain.from_iterable(visits))
        visits_per_patient = np.fromiter(map(len, patients), dtype=np.int64, count=len(patients))
        codes_per_visit = np.fromiter(map(len, visits), dtype=np.int64, count=len(visits))
        table = self._ids_padded
        try:  # fast path: every code is a canonical key of the table (one C-level lookup pass)
            rows = np.fromiter(itemgetter(*flat)(self._row), dtype=np.int64) if len(flat) > 1 else None
            rows = np.array([self._row[code] for code in flat], dtype=np.int64) if rows is None else rows
        except (KeyError, TypeError):  # other spellings, unknown codes, or input nested the wrong way
            _check_nesting(patients, flat)
            rows = np.fromiter(map(self._row.get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
            rows, table = self._resolve_unknown(flat, rows, policy)
        return self._pack(rows + 1, table, visits_per_patient, codes_per_visit, max_visits, return_tensors)

    def _resolve_unknown(
        self, flat: list[str], rows: np.ndarray, policy: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fill `rows` (-1 where the table lookup missed) for other spellings, then apply the unknown policy.

        Returns the rows (-1 = drop the code) and the padded ID table `[1 + n, L]` they index (row 0 is the
        padding; with policy "embed" the tuples of on-the-fly embedded codes are appended).
        """
        missing = np.flatnonzero(rows < 0)
        canonical: dict[str, str] = {}
        invalid: dict[str, str] = {}
        for raw in {flat[i] for i in missing}:
            try:
                canonical[raw] = normalize_code(raw)
            except (ValueError, TypeError) as error:
                invalid[raw] = str(error)
        unknown = sorted({code for code in canonical.values() if code not in self._row})
        if policy == "error" and (unknown or invalid):
            raise KeyError(_unknown_message(unknown, invalid))
        if policy == "embed" and invalid:
            raise ValueError(f"cannot embed strings that are not valid codes: {invalid}")
        table = self._ids_padded
        extra_row: dict[str, int] = {}
        if policy == "embed" and unknown:
            tuples = self._embed_unknown(unknown)
            extra_row = {code: len(self) + i for i, code in enumerate(unknown)}
            table = np.concatenate([table, np.array([tuples[code] for code in unknown], dtype=np.int64)])
        for i in missing:
            code = canonical.get(flat[i])
            row = self._row.get(code, extra_row.get(code, -1)) if code is not None else -1
            rows[i] = row
        return rows, table

    def _pack(
        self,
        rows: np.ndarray,
        table: np.ndarray,
        visits_per_patient: np.ndarray,
        codes_per_visit: np.ndarray,
        max_visits: int | None,
        return_tensors: str,
    ) -> BatchEncoding:
        """Scatter flat rows of `table` `[n]` (0 = drop the code) into `[B, V, C, L]`; see `__call__`."""
        batch_size = len(visits_per_patient)
        keep = rows > 0
        if not keep.all():
            visit_of_code = np.repeat(np.arange(len(codes_per_visit)), codes_per_visit)
            codes_per_visit = np.bincount(visit_of_code[keep], minlength=len(codes_per_visit))
            rows = rows[keep]
        patient_of_visit = np.repeat(np.arange(batch_size), visits_per_patient)

        # Number each patient's non-empty visits 0.. (oldest first); with max_visits keep the last ones.
        nonempty = codes_per_visit > 0
        kept_per_patient = np.bincount(patient_of_visit[nonempty], minlength=batch_size)
        first_of_patient = np.cumsum(kept_per_patient) - kept_per_patient
        position = np.cumsum(nonempty) - 1 - first_of_patient[patient_of_visit]
        if max_visits is not None:
            position -= np.maximum(kept_per_patient - max_visits, 0)[patient_of_visit]
            kept_per_patient = np.minimum(kept_per_patient, max_visits)
        visit_kept = nonempty & (position >= 0)
        if not visit_kept.all():
            rows = rows[np.repeat(visit_kept, codes_per_visit)]
            codes_per_visit, position = codes_per_visit[visit_kept], position[visit_kept]
            patient_of_visit = patient_of_visit[visit_kept]

        num_visits = max(int(kept_per_patient.max(initial=0)), 1)
        num_codes = max(int(codes_per_visit.max(initial=0)), 1)
        visit_slot = patient_of_visit * num_visits + position  # flat index into [B * V]
        code_start = np.cumsum(codes_per_visit) - codes_per_visit
        code_slot = np.arange(len(rows)) + np.repeat(visit_slot * num_codes - code_start, codes_per_visit)
        slot_rows = np.zeros(batch_size * num_visits * num_codes, dtype=np.int64)  # [B * V * C], 0 = padding
        slot_rows[code_slot] = rows
        visit_mask = np.zeros(batch_size * num_visits, dtype=bool)
        visit_mask[visit_slot] = True
        data = {
            "input_ids": np.take(table, slot_rows, axis=0).reshape(batch_size, num_visits, num_codes, -1),
            "code_mask": (slot_rows > 0).reshape(batch_size, num_visits, num_codes),
            "visit_mask": visit_mask.reshape(batch_size, num_visits),
        }
        if return_tensors == "pt":
            data = {key: torch.from_numpy(value) for key, value in data.items()}
        return BatchEncoding(data)

    # ------------------------------------------------------------------ codes never seen

    def _can_embed(self) -> bool:
        """Whether unseen codes can be embedded like the fitted ones (a model and a known text strategy)."""
        return (
            self.kind == "semantic"
            and self.embedding_model is not None
            and self.embedding_text in TEXT_STRATEGIES
        )

    def _encode_vectors(self, codes: list[str], vectors: torch.Tensor) -> torch.Tensor:
        """Residual greedy IDs `[n, L_rq]` of `vectors` `[n, D]` under the stored codebooks."""
        vectors = _checked_vectors(codes, vectors)
        if vectors.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embedding dimension mismatch: the codebooks are {self.embedding_dim}-d (fitted on "
                f"{self.embedding_model!r}) but the new vectors are {vectors.shape[1]}-d"
            )
        return ResidualKMeans.from_codebooks(self._codebooks).encode(vectors).cpu()

    def _with_collision_level(
        self, semantic_ids: torch.Tensor, codes: list[str], reserve: bool = True
    ) -> torch.Tensor:
        """Append the deduplication level to new codes' IDs `[n, L_rq]`: the next free index of their
        collision group. With `reserve=False` each code is placed as if it were the only one added."""
        if not self.deduplicated:
            return semantic_ids
        groups = Counter(map(tuple, self._ids_np[:, :-1].tolist()))
        level = []
        for code, key in zip(codes, map(tuple, semantic_ids.tolist()), strict=True):
            if groups[key] >= self.codebook_size:
                raise ValueError(
                    f"cannot deduplicate {code}: its IDs {list(key)} are already shared by {groups[key]} "
                    f"codes and the deduplication level holds at most codebook_size={self.codebook_size}"
                )
            level.append(groups[key])
            groups[key] += int(reserve)
        return torch.cat([semantic_ids, torch.tensor(level, dtype=torch.int64)[:, None]], dim=1)

    def _embed_unknown(self, codes: list[str]) -> dict[str, tuple[int, ...]]:
        """ID tuples of codes not in the table, embedded with the tokenizer's model (memoised; the table
        is not changed)."""
        todo = [code for code in codes if code not in self._embedded]
        if todo:
            if self.text_encoder is None:
                self.text_encoder = load_text_encoder(self.embedding_model)
            try:
                embeddings = embed_codes(
                    todo,
                    model=self.text_encoder,
                    text=self.embedding_text,
                    show_progress=False,
                    normalize=self.settings.get("embedding_normalized", True),
                )
            except KeyError as error:
                raise KeyError(
                    f"unknown='embed' cannot embed the unseen codes {todo}: {error} "
                    "(unknown='skip' drops them)"
                ) from error
            # Each unseen code is placed as if it were the only one added: unseen codes sharing a tuple may
            # collide with each other on the deduplication level (never with a code of the table).
            ids = self._with_collision_level(
                self._encode_vectors(todo, embeddings.vectors), todo, reserve=False
            )
            self._embedded.update(zip(todo, map(tuple, ids.tolist()), strict=True))
        return {code: self._embedded[code] for code in codes}

    def add_codes(self, embeddings: CodeEmbeddings, allow_other_model: bool = False) -> list[str]:
        """Add codes to the table, encoded with the stored codebooks (same greedy residual rule as fitting).

        A code held out of `fit` and added here gets exactly `ResidualKMeans.encode` of its vector. Codes
        already in the table keep their IDs and are not added again. The `fingerprint` changes (the table
        did); `codebook_fingerprint` does not.

        Args:
            embeddings: vectors `[n, D]` of the new codes, from the same embedding model and text strategy.
            allow_other_model: accept embeddings whose `model_id`/`text` differ from the tokenizer's.

        Returns:
            The canonical codes added, in order.
        """
        codes = _canonical_codes(embeddings.codes, "embeddings.codes")
        if self._codebooks is None:
            raise ValueError(
                f"add_codes needs codebooks, and a {self.kind!r} tokenizer has none: build a new "
                f"{self.kind!r} tokenizer over the extended code list instead"
            )
        if not allow_other_model and (embeddings.model_id, embeddings.text) != (
            self.embedding_model,
            self.embedding_text,
        ):
            raise ValueError(
                f"these embeddings come from model {embeddings.model_id!r} with text {embeddings.text!r}, "
                f"but the codebooks were fitted on {self.embedding_model!r} with text "
                f"{self.embedding_text!r}; IDs of vectors from another space are meaningless (pass "
                "allow_other_model=True to override)"
            )
        new = [row for row, code in enumerate(codes) if code not in self._row]
        new_codes = [codes[row] for row in new]
        semantic_ids = self._encode_vectors(codes, embeddings.vectors)[new]
        if not new_codes:
            return []
        ids = torch.cat([self._ids, self._with_collision_level(semantic_ids, new_codes)])
        self._set_table(self._codes + new_codes, ids)
        self._embedded.clear()
        return new_codes

    # ------------------------------------------------------------------ collisions

    def collisions(self) -> list[list[str]]:
        """Groups (size >= 2) of codes sharing their full ID tuple; row order within and across groups."""
        _, group, counts = np.unique(self._ids_np, axis=0, return_inverse=True, return_counts=True)
        groups: dict[int, list[str]] = {}
        for row in np.flatnonzero(counts[group] > 1):
            groups.setdefault(int(group[row]), []).append(self._codes[row])
        return list(groups.values())

    @property
    def collision_rate(self) -> float:
        """Share of codes whose ID tuple is shared with at least one other code (0.0 for an empty table)."""
        if not len(self):
            return 0.0
        _, group, counts = np.unique(self._ids_np, axis=0, return_inverse=True, return_counts=True)
        return float((counts[group] > 1).sum() / len(self))

    # ------------------------------------------------------------------ fingerprint and config

    def _fingerprint(self, with_table: bool) -> str:
        """sha256 hex of header, codebooks and (`with_table`) ids and codes; see the module docstring."""
        codebooks, (num_codes, num_levels) = self._codebooks, self._ids.shape
        shape = "none" if codebooks is None else "x".join(map(str, codebooks.shape))
        rows = f"ids={num_codes}x{num_levels}" if with_table else f"levels={num_levels}"
        header = f"shark-tokenizer\nkind={self.kind}\n{rows}\ncodebooks={shape}\nK={self.codebook_size}\n"
        digest = hashlib.sha256(header.encode("utf-8"))
        if codebooks is not None:
            digest.update(codebooks.numpy().astype("<f4", copy=False).tobytes(order="C"))
        if with_table:
            digest.update(self._ids_np.astype("<i8", copy=False).tobytes(order="C"))
            digest.update("\n".join(self._codes).encode("utf-8"))
        return digest.hexdigest()

    @property
    def config(self) -> dict[str, Any]:
        """The content of `tokenizer_config.json` (JSON-serialisable; `codes` last)."""
        return {
            "format_version": FORMAT_VERSION,
            "tokenizer_class": type(self).__name__,
            "shark_hf_version": _package_version(),
            "kind": self.kind,
            "num_levels": self.num_levels,
            "codebook_size": self.codebook_size,
            "num_codes": len(self),
            "embedding_dim": self.embedding_dim,
            "embedding_model": self.embedding_model,
            "embedding_text": self.embedding_text,
            "deduplicated": self.deduplicated,
            **self.settings,
            "collision_rate": self.collision_rate,
            "fingerprint": self.fingerprint,
            "codebook_fingerprint": self.codebook_fingerprint,
            "codes": self.codes,
        }

    # ------------------------------------------------------------------ save / load

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write `codebooks.safetensors`, `tokenizer_config.json` and the card `README.md` into a folder.

        Unlike `ModelHubMixin.save_pretrained`, this never touches a `config.json` in the folder (so the
        tokenizer can be saved next to a model) and refreshes the card when the existing `README.md` is a
        tokenizer card (a README.md of something else is left alone). Every file is written atomically.

        Args:
            save_directory: the folder (created if missing).
            config: not supported: the tokenizer's settings are its own (`tokenizer_config.json`).
            repo_id, push_to_hub, **push_to_hub_kwargs: push the folder to the Hub afterwards (`push_to_hub`).
            model_card_kwargs: extra values for the card template (`repo_id`, `subfolder`, `license`).
        """
        if config is not None:
            raise ValueError("SharkTokenizer writes its own tokenizer_config.json; `config` is not supported")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_pretrained(folder)
        card_path = folder / CARD_NAME
        if not card_path.exists() or CARD_TAG in (
            ModelCard.load(card_path, ignore_metadata_errors=True).data.tags or []
        ):
            card = self.generate_model_card(**(model_card_kwargs or {}))
            _atomic_write(card_path, lambda tmp: Path(tmp).write_text(str(card), encoding="utf-8"))
        else:
            logger.warning("%s is not a SharkTokenizer card: left unchanged", card_path)
        if push_to_hub:
            return self.push_to_hub(
                repo_id or folder.name, model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs
            )
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write the tensors, then the config (a reader never sees a config newer than its tensors)."""
        tensors = {"ids": self._ids}
        if self._codebooks is not None:
            tensors["codebooks"] = self._codebooks
        # One metadata key: safetensors orders several keys arbitrarily, and saves must be byte-identical.
        header = {"format_version": FORMAT_VERSION, "fingerprint": self.fingerprint}
        metadata = {"shark_tokenizer": json.dumps(header, sort_keys=True)}
        _atomic_write(save_directory / TENSORS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        text = json.dumps(self.config, indent=2, ensure_ascii=False) + "\n"
        _atomic_write(save_directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def push_to_hub(
        self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """Upload the tokenizer (tensors, config and card as README.md) to a Hub repo in one commit.

        Same arguments as `ModelHubMixin.push_to_hub` (`private`, `token`, `branch`, `commit_message`, ...);
        the card's usage snippet names `repo_id`.
        """
        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card_kwargs, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        subfolder: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> SharkTokenizer:
        """Load a tokenizer from a local folder or a Hub repo id (`revision`, `subfolder` as on the Hub).

        Raises:
            FileNotFoundError: the folder (or repo/subfolder/revision) has no SharkTokenizer files; the
                message names the folder and the missing file.
            ValueError: the files are from another library, another `format_version` that cannot be
                migrated, or are inconsistent (fingerprint mismatch).
        """
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            subfolder=subfolder,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        subfolder: str | None = None,
    ) -> SharkTokenizer:
        if os.path.isdir(model_id):
            folder = Path(model_id) / (subfolder or "")
            where = str(folder)
        elif os.path.exists(model_id) or model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
            raise FileNotFoundError(f"{model_id} is not a SharkTokenizer folder: no such directory")
        else:
            # One snapshot: both files come from the same commit even while the branch moves.
            prefix = f"{subfolder.strip('/')}/" if subfolder else ""
            root = snapshot_download(
                model_id,
                revision=revision,
                allow_patterns=[prefix + CONFIG_NAME, prefix + TENSORS_NAME],
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only,
                token=token,
            )
            folder = Path(root) / prefix
            where = f"Hub repo {model_id!r}" + (f" subfolder {subfolder!r}" if subfolder else "")
            where += f" at revision {revision!r}" if revision else ""
        return cls._load_folder(folder, where)

    @classmethod
    def _load_folder(cls, folder: Path, where: str) -> SharkTokenizer:
        for name in (CONFIG_NAME, TENSORS_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{where} is not a SharkTokenizer folder: it has no {name}")
        try:
            config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}/{CONFIG_NAME} is not valid JSON: {error}") from error
        if not isinstance(config, dict) or config.get("tokenizer_class") != cls.__name__:
            found = config.get("tokenizer_class") if isinstance(config, dict) else type(config).__name__
            raise ValueError(
                f"{where}/{CONFIG_NAME} is not a SharkTokenizer config (tokenizer_class is {found!r})"
            )
        config, tensors = _migrate(config, load_file(folder / TENSORS_NAME), where)
        missing = [key for key in REQUIRED_KEYS if key not in config]
        missing += [] if "ids" in tensors else [f"{TENSORS_NAME}: ids"]
        if missing:
            raise ValueError(f"{where}: incomplete SharkTokenizer files, missing {missing}")
        tokenizer = cls(
            config["codes"],
            tensors["ids"],
            kind=config["kind"],
            codebook_size=config["codebook_size"],
            codebooks=tensors.get("codebooks"),
            embedding_model=config["embedding_model"],
            embedding_text=config["embedding_text"],
            deduplicated=config["deduplicated"],
            settings={key: config[key] for key in SETTING_KEYS if key in config},
        )
        if tokenizer.fingerprint != config["fingerprint"]:
            raise ValueError(
                f"{where}: fingerprint mismatch: {CONFIG_NAME} says {config['fingerprint']} but "
                f"{TENSORS_NAME} + codes hash to {tokenizer.fingerprint}; the files are corrupted or come "
                "from different saves"
            )
        return tokenizer

    # ------------------------------------------------------------------ card

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The tokenizer card (`hub_cards/tokenizer_card.md`) with this tokenizer's provenance.

        Keyword arguments override card metadata (`license`, ...) or template values (`repo_id`, `subfolder`).
        """
        metadata = self._hub_mixin_info.model_card_data.to_dict()
        for key in list(kwargs):
            if key in ("license", "license_name", "license_link", "language", "tags"):
                metadata[key] = kwargs.pop(key)
        systems = Counter(code.split(":", 1)[0] for code in self._codes)
        examples = self._codes[:3]
        context = {
            "repo_id": None,
            "subfolder": None,
            "example_visits": [examples[:2], examples[2:]] if len(examples) == 3 else [examples],
            "kind": self.kind,
            "num_codes": len(self),
            "systems": dict(sorted(systems.items())),
            "num_levels": self.num_levels,
            "codebook_size": self.codebook_size,
            "embedding_dim": self.embedding_dim,
            "embedding_model": self.embedding_model,
            "embedding_text": self.embedding_text,
            "deduplicated": self.deduplicated,
            "seed": self.settings.get("seed"),
            "level_errors": self.settings.get("level_errors", []),
            "codebook_usage": self.settings.get("codebook_usage", []),
            "collision_rate": self.collision_rate,
            "fingerprint": self.fingerprint,
            "codebook_fingerprint": self.codebook_fingerprint,
            "format_version": FORMAT_VERSION,
            "shark_hf_version": _package_version(),
            **kwargs,
        }
        return render_card("tokenizer_card.md", ModelCardData(**metadata), **context)

    # ------------------------------------------------------------------ interpretability

    def cluster_report(
        self,
        label_fn: Callable[[str], str] | None = None,
        label_names: dict[str, str] | None = None,
        min_size: int = 5,
        max_pairs: int = 1000,
    ) -> ClusterReport:
        """Per-level clusters with their purity (paper Table 4) and cross-chapter codes sharing finer IDs
        (paper Table 5).

        A level-l cluster is the set of codes whose l-th ID is j (the other levels are free: `[-, j, -, -]`).
        Its purity is (codes carrying its majority label) / (codes in it); codes whose label is unknown count
        in the size but never form the majority.

        Args:
            label_fn: code -> category; default the single-level CCS category (`to_label(code, "ccs")`).
            label_names: category -> readable name; default the CCS names when `label_fn` is the default.
            min_size: clusters smaller than this are left out.
            max_pairs: at most this many cross-chapter pairs are listed (`num_cross_chapter_pairs` counts
                all of them).

        Cross-chapter pairs: two codes of the same code system whose ICD chapters differ and whose IDs at
        levels 2..L_rq are identical (level 1 may differ; the deduplication level is ignored). Empty when
        L_rq < 2.
        """
        if label_fn is None:
            label_fn = _ccs_label
            label_names = _ccs_names() if label_names is None else label_names
        labels = [_safe(label_fn, code) for code in self._codes]
        clusters = _level_clusters(
            self._ids_np[:, : self._semantic_levels], labels, label_names or {}, min_size
        )
        pairs, total = self._cross_chapter_pairs(max_pairs)
        return ClusterReport(
            num_levels=self._semantic_levels,
            clusters=clusters,
            cross_chapter_pairs=pairs,
            num_cross_chapter_pairs=total,
        )

    @property
    def _semantic_levels(self) -> int:
        return self.num_levels - int(self.deduplicated)

    def _cross_chapter_pairs(self, max_pairs: int) -> tuple[list[CrossChapterPair], int]:
        """Up to `max_pairs` cross-chapter pairs (ordered by shared IDs, then rows) and the number of all."""
        finer = self._ids_np[:, 1 : self._semantic_levels]
        if finer.shape[1] == 0:
            return [], 0
        _, group, counts = np.unique(finer, axis=0, return_inverse=True, return_counts=True)
        members: dict[int, list[int]] = {}
        for row in np.flatnonzero(counts[group.reshape(-1)] > 1):
            members.setdefault(int(group[row]), []).append(int(row))
        pairs, total = [], 0
        for rows in sorted(members.values(), key=lambda rows: finer[rows[0]].tolist()):
            # (row, (system, chapter)) of the group's codes whose chapter is known
            placed = [
                (row, (self._codes[row].split(":", 1)[0], _safe(_chapter, self._codes[row]))) for row in rows
            ]
            placed = [(row, key) for row, key in placed if key[1] is not None]
            total += _count_cross_chapter(key for _, key in placed)
            for (a, (system_a, chapter_a)), (b, (system_b, chapter_b)) in combinations(placed, 2):
                if len(pairs) == max_pairs:
                    break
                if system_a == system_b and chapter_a != chapter_b:
                    pairs.append(
                        CrossChapterPair(
                            codes=(self._codes[a], self._codes[b]),
                            descriptions=(_safe(describe, self._codes[a]), _safe(describe, self._codes[b])),
                            chapters=(chapter_a, chapter_b),
                            shared_ids=tuple(int(x) for x in finer[a]),
                        )
                    )
        return pairs, total


# ---------------------------------------------------------------------- interpretability report


@dataclass
class ClusterStat:
    """One cluster of one level: `cluster` is the ID at `level` (1-based: the paper's `[-, j, -, -]`)."""

    level: int
    cluster: int
    size: int
    majority_label: str | None
    majority_name: str | None
    majority_count: int

    @property
    def purity(self) -> float:
        return self.majority_count / self.size


@dataclass
class CrossChapterPair:
    """Two codes from different ICD chapters whose IDs at levels 2..L are identical (`shared_ids`)."""

    codes: tuple[str, str]
    descriptions: tuple[str | None, str | None]
    chapters: tuple[str, str]
    shared_ids: tuple[int, ...]


@dataclass
class ClusterReport:
    """Output of `SharkTokenizer.cluster_report`: as data (`to_dict`) and as text (`str`, `format`)."""

    num_levels: int
    clusters: list[ClusterStat] = field(default_factory=list)
    cross_chapter_pairs: list[CrossChapterPair] = field(default_factory=list)
    num_cross_chapter_pairs: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for cluster, stat in zip(data["clusters"], self.clusters, strict=True):
            cluster["purity"] = stat.purity
        return data

    def format(self, top: int = 10) -> str:
        """Text tables: per level the `top` purest clusters (ties: larger first), then cross-chapter pairs."""
        lines = [f"{'Cluster ID':<24} {'Size':>5} {'Purity':>16}  Majority category"]
        for level in range(1, self.num_levels + 1):
            stats = [stat for stat in self.clusters if stat.level == level]
            stats.sort(key=lambda stat: (-stat.purity, -stat.size, stat.cluster))
            for stat in stats[:top]:
                slots = ["-"] * self.num_levels
                slots[level - 1] = str(stat.cluster)
                label = ": ".join(filter(None, (stat.majority_label, stat.majority_name))) or "(no label)"
                purity = f"{stat.majority_count}/{stat.size} ({stat.purity:.0%})"
                lines.append(f"{'[' + ', '.join(slots) + ']':<24} {stat.size:>5} {purity:>16}  {label}")
        lines.append("")
        lines.append(
            f"Codes from different ICD chapters sharing IDs at levels 2..{self.num_levels}: "
            f"{self.num_cross_chapter_pairs} pairs"
        )
        for pair in self.cross_chapter_pairs[:top]:
            shared = "[-, " + ", ".join(map(str, pair.shared_ids)) + "]"
            for code, description, chapter in zip(pair.codes, pair.descriptions, pair.chapters, strict=True):
                lines.append(f"  {code:<16} {chapter:<10} {shared:<22} {description or ''}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def __str__(self) -> str:
        return self.format()


def _level_clusters(
    ids: np.ndarray, labels: list[str | None], names: dict[str, str], min_size: int
) -> list[ClusterStat]:
    """Clusters of each level `[N, L]` with at least `min_size` codes, by (level, cluster ID)."""
    stats = []
    for level in range(ids.shape[1]):
        members: dict[int, list[str | None]] = {}
        for cluster, label in zip(ids[:, level].tolist(), labels, strict=True):
            members.setdefault(cluster, []).append(label)
        for cluster in sorted(members):
            cluster_labels = members[cluster]
            if len(cluster_labels) < min_size:
                continue
            counts = Counter(label for label in cluster_labels if label is not None)
            # Majority: the most frequent label; ties broken by the label's text, for a stable report.
            majority, count = min(counts.items(), key=lambda item: (-item[1], item[0]), default=(None, 0))
            stats.append(
                ClusterStat(
                    level=level + 1,
                    cluster=cluster,
                    size=len(cluster_labels),
                    majority_label=majority,
                    majority_name=names.get(majority) if majority is not None else None,
                    majority_count=count,
                )
            )
    return stats


def _count_cross_chapter(keys: Iterable[tuple[str, str]]) -> int:
    """Pairs of (system, chapter) keys with the same system and different chapters."""
    keys = list(keys)
    per_system = Counter(system for system, _ in keys)
    per_chapter = Counter(keys)
    same_system = sum(n * (n - 1) // 2 for n in per_system.values())
    return same_system - sum(n * (n - 1) // 2 for n in per_chapter.values())


def _ccs_label(code: str) -> str:
    return to_label(code, "ccs")


def _ccs_names() -> dict[str, str]:
    return code_label_names("ccs")


def _chapter(code: str) -> str:
    return ancestors(code)[0].code


def _safe(function: Callable[[str], Any], code: str) -> Any:
    """`function(code)`, or None when the code has no such entry (KeyError / ValueError)."""
    try:
        return function(code)
    except (KeyError, ValueError):
        return None


# ---------------------------------------------------------------------- validation helpers


def _canonical_codes(codes: Sequence[str], what: str) -> list[str]:
    """Normalise codes to canonical keys; duplicates (after normalisation) are an error naming them."""
    if isinstance(codes, str):
        raise TypeError(f"{what} must be a list of codes, got the string {codes!r}")
    canonical = [normalize_code(code) for code in codes]
    if not canonical:
        raise ValueError(f"{what} is empty")
    duplicates = sorted(code for code, count in Counter(canonical).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate codes in {what} (after normalisation): {duplicates}")
    return canonical


def _checked_vectors(codes: list[str], vectors: torch.Tensor) -> torch.Tensor:
    """Vectors as CPU float32 `[N, D]` matching `codes`; NaN/inf rows are an error naming their codes."""
    vectors = torch.as_tensor(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(codes):
        raise ValueError(f"vectors must be [N={len(codes)}, D], got {list(vectors.shape)}")
    vectors = vectors.detach().to("cpu", torch.float32)
    bad = (~torch.isfinite(vectors)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"embeddings contain NaN or inf in the rows of {[codes[row] for row in bad]}")
    return vectors


def _collision_index(ids: torch.Tensor, codebook_size: int, codes: list[str]) -> torch.Tensor:
    """For each row of `ids` `[N, L]`, its index among the rows with the same tuple (row order), `[N]`."""
    values = ids.numpy()
    _, group, counts = np.unique(values, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    if counts.max() > codebook_size:
        members = np.flatnonzero(group == int(np.argmax(counts)))
        raise ValueError(
            "deduplicate=True needs codebook_size >= the largest collision group, but "
            f"{len(members)} codes share the IDs {values[members[0]].tolist()} "
            f"({[codes[row] for row in members[:10]]}) and "
            f"codebook_size={codebook_size}; use more levels or a larger codebook_size"
        )
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.empty(len(group), dtype=np.int64)
    index[order] = np.arange(len(group)) - starts[group[order]]
    return torch.from_numpy(index)


def _check_nesting(patients: Sequence[Sequence[Sequence[str]]], flat: list[Any]) -> None:
    """Raise a TypeError when `patients` is not a list of patients -> visits -> code strings."""
    for index, patient in enumerate(patients):
        if isinstance(patient, str) or any(isinstance(visit, str) for visit in patient):
            raise TypeError(
                f"patient {index} is not a list of visits (lists of codes): got {str(patient)[:80]}; "
                "to encode one patient, pass [patient]"
            )
    not_codes = [code for code in flat if not isinstance(code, str)]
    if not_codes:
        raise TypeError(f"codes must be strings, got {type(not_codes[0]).__name__} {str(not_codes[0])[:80]}")


def _preview(items: list[str], limit: int = 20) -> str:
    """`[a, b, ...]` with at most `limit` items, then how many there are in all."""
    shown = ", ".join(items[:limit])
    return f"[{shown}" + (f", ... ({len(items)} in all)]" if len(items) > limit else "]")


def _unknown_message(unknown: list[str], invalid: dict[str, str]) -> str:
    parts = []
    if unknown:
        parts.append(f"{len(unknown)} codes not in the tokenizer: {_preview(unknown)}")
    if invalid:
        parts.append(f"{len(invalid)} strings that are not valid codes: {_preview(sorted(invalid))}")
    return (
        "; ".join(parts) + " (unknown='skip' drops them; add_codes or unknown='embed' encodes unseen codes)"
    )


def _migrate(
    config: dict[str, Any], tensors: dict[str, torch.Tensor], where: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Bring a loaded (config, tensors) pair to `FORMAT_VERSION`, or say exactly why it cannot be."""
    version = config.get("format_version")
    if version is None:
        raise ValueError(
            f"{where}/{CONFIG_NAME} has no format_version: it was not written by "
            "SharkTokenizer.save_pretrained (every shark-hf release writes one; this release reads "
            f"format_version {FORMAT_VERSION})"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{where}/{CONFIG_NAME}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} was written by shark-hf {config.get('shark_hf_version', '(unknown version)')} with "
            f"tokenizer format_version {version}; this shark-hf {_package_version()} reads format_version <= "
            f"{FORMAT_VERSION}: upgrade shark-hf (pip install -U shark-hf)"
        )
    while version < FORMAT_VERSION:
        if version not in MIGRATIONS:
            raise ValueError(
                f"{where}: tokenizer format_version {version} cannot be migrated: no migration step from "
                f"version {version} (known steps: {sorted(MIGRATIONS)}; current version {FORMAT_VERSION})"
            )
        config, tensors = MIGRATIONS[version](dict(config), dict(tensors))
        version += 1
        config["format_version"] = version
    return config, tensors


def _atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call `write(tmp)` on a temporary path in `path`'s folder, then move it over `path` in one step."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _describe_tensor(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__
