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

`save_pretrained` writes the folder described in `shark_hf.tokenizer_format` (safetensors + JSON and a card;
no pickle anywhere); `fingerprint` and `codebook_fingerprint` are defined there.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelHubMixin
from transformers import BatchEncoding

from shark_hf.cards import tokenizer_card
from shark_hf.cluster_report import ClusterReport, ClusterStat, CrossChapterPair, cluster_report
from shark_hf.code_table import (
    append_collision_level,
    canonical_codes,
    canonical_spellings,
    checked_vectors,
    collision_index,
    describe_tensor,
    unknown_codes_message,
)
from shark_hf.codes import all_codes, normalize_code
from shark_hf.embeddings import TEXT_STRATEGIES, CodeEmbeddings, TextEncoder, embed_codes, load_text_encoder
from shark_hf.rkmeans import ResidualKMeans
from shark_hf.tokenizer_format import (
    CONFIG_NAME,
    FORMAT_VERSION,
    TENSORS_NAME,
    locate_folder,
    package_version,
    read_files,
    stored_ids,
    table_fingerprint,
    write_files,
)
from shark_hf.tokenizer_stats import cohort_table_warning, table_stats
from shark_hf.utils import UNKNOWN_POLICIES, atomic_write_text, preview
from shark_hf.visit_batch import check_nesting, pack_visits

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
CARD_TAG = "shark-tokenizer"
KINDS = ("semantic", "random", "index")
SETTING_KEYS = ("seed", "rkmeans", "level_errors", "codebook_usage", "embedding_normalized")


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
        codes = canonical_codes(embeddings.codes, "embeddings.codes")
        vectors = checked_vectors(codes, embeddings.vectors)
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
            ids = torch.cat([ids, collision_index(ids, codebook_size, codes)[:, None]], dim=1)
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
    def from_code_systems(
        cls,
        systems: Sequence[str] = ("ICD9CM", "ICD10CM"),
        model: str | Path | TextEncoder | None = None,
        text: str = "description",
        num_levels: int = 4,
        codebook_size: int = 128,
        seed: int = 0,
        deduplicate: bool = False,
        cache_dir: str | Path | None = None,
        show_progress: bool = True,
        codes: Sequence[str] | None = None,
        **rkmeans_kwargs: Any,
    ) -> SharkTokenizer:
        """A universal tokenizer: fitted on every billable code of `systems` (`shark_hf.codes.all_codes`),
        one semantic space for all of them, with no cohort input at all.

        Every site that builds (or downloads) it gives each code the same IDs, and its code table reveals
        nothing about any cohort. `shark_hf.UNIVERSAL_TOKENIZER` is this with the defaults, prebuilt.

        Args:
            systems: code systems, e.g. `("ICD9CM", "ICD10CM")`; their codes are fitted in this order.
            model, text, cache_dir: how codes become vectors (`shark_hf.embeddings.embed_codes`; None = the
                offline default model). Vectors are cached, so a second build embeds nothing.
            num_levels, codebook_size, seed, deduplicate, **rkmeans_kwargs: as in `fit`.
            show_progress: progress bars while embedding and fitting.
            codes: fit on these codes instead of all codes of `systems` (each must belong to one of them):
                for tests and experiments on a subset; the result is then not universal.
        """
        if isinstance(systems, str):
            raise TypeError(f"systems must be a list of code systems, got the string {systems!r}")
        table = [code for system in systems for code in all_codes(system)]
        if codes is not None:
            known = set(table)
            outside = [code for code in map(normalize_code, codes) if code not in known]
            if outside:
                raise ValueError(f"codes outside the systems {list(systems)}: [{preview(outside)}]")
            table = [normalize_code(code) for code in codes]
        embeddings = embed_codes(
            table, model=model, text=text, cache_dir=cache_dir, show_progress=show_progress
        )
        return cls.fit(
            embeddings,
            num_levels=num_levels,
            codebook_size=codebook_size,
            seed=seed,
            deduplicate=deduplicate,
            show_progress=show_progress,
            **rkmeans_kwargs,
        )

    @classmethod
    def random_ids(
        cls, codes: Sequence[str], num_levels: int = 4, codebook_size: int = 128, seed: int = 0
    ) -> SharkTokenizer:
        """The paper's Random ID baseline: each code gets L IDs drawn uniformly from `[0, K)`.

        IDs come from `torch.randint` on a `torch.Generator` seeded with `seed`, row by row in the order of
        `codes`, so the same codes in the same order and the same seed give the same table.
        """
        codes = canonical_codes(codes, "codes")
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
        codes = canonical_codes(codes, "codes")
        ids = torch.arange(len(codes), dtype=torch.int64)[:, None]
        return cls(codes, ids, kind="index", codebook_size=len(codes))

    def _set_table(self, codes: list[str], ids: torch.Tensor) -> None:
        """Validate and install the code table; recompute every cache derived from it."""
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.ndim != 2:
            raise ValueError(f"ids must be an int64 tensor [N, L], got {describe_tensor(ids)}")
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
        self._stats: dict[str, Any] | None = None
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
                This loads the tokenizer's `embedding_model`, so it is never the default: opt in.
                Default: `"error"`.
            max_visits: keep only the most recent `max_visits` visits of each patient.

        A visit with no codes left (empty in the input, or all its codes skipped) carries no information and
        has no mean, so it is removed and the later visits move up; a patient with no codes at all keeps an
        all-False `visit_mask` row.
        """
        policy = unknown or "error"
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
            check_nesting(patients, flat)
            rows = np.fromiter(map(self._row.get, flat, repeat(-1)), dtype=np.int64, count=len(flat))
            rows, table = self._resolve_unknown(flat, rows, policy)
        return pack_visits(rows + 1, table, visits_per_patient, codes_per_visit, max_visits, return_tensors)

    def _resolve_unknown(
        self, flat: list[str], rows: np.ndarray, policy: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fill `rows` (-1 where the table lookup missed) for other spellings, then apply the unknown policy.

        Returns the rows (-1 = drop the code) and the padded ID table `[1 + n, L]` they index (row 0 is the
        padding; with policy "embed" the tuples of on-the-fly embedded codes are appended).
        """
        missing = np.flatnonzero(rows < 0)
        canonical, invalid = canonical_spellings({flat[i] for i in missing})
        unknown = sorted({code for code in canonical.values() if code not in self._row})
        if policy == "error" and (unknown or invalid):
            raise KeyError(unknown_codes_message(unknown, invalid))
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

    def missing_codes(self, codes: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        """What `__call__(..., unknown="error")` would reject among `codes` (any spellings), all at once.

        Returns:
            The sorted canonical codes not in the table, and `{string: why}` for the strings that are not
            valid codes at all (the ValueError of `normalize_code`).
        """
        canonical, invalid = canonical_spellings(set(codes) - self._row.keys())
        return sorted({code for code in canonical.values() if code not in self._row}), invalid

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
        vectors = checked_vectors(codes, vectors)
        if vectors.shape[1] != self.embedding_dim:
            raise ValueError(
                f"embedding dimension mismatch: the codebooks are {self.embedding_dim}-d (fitted on "
                f"{self.embedding_model!r}) but the new vectors are {vectors.shape[1]}-d"
            )
        return ResidualKMeans.from_codebooks(self._codebooks).encode(vectors).cpu()

    def _with_collision_level(
        self, semantic_ids: torch.Tensor, codes: list[str], reserve: bool = True
    ) -> torch.Tensor:
        """Append the deduplication level to new codes' IDs `[n, L_rq]` (`append_collision_level`)."""
        if not self.deduplicated:
            return semantic_ids
        return append_collision_level(self._ids_np[:, :-1], semantic_ids, codes, self.codebook_size, reserve)

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
        codes = canonical_codes(embeddings.codes, "embeddings.codes")
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

    def table_stats(self) -> dict[str, Any]:
        """Whether the table is whole code systems, collision rates per level and across CCS categories,
        and ICD-9-CM -> ICD-10-CM GEM alignment (`shark_hf.tokenizer_stats.table_stats`; computed once)."""
        if self._stats is None:
            self._stats = table_stats(self._codes, self._ids_np, self.codebook_size)
        return self._stats

    # ------------------------------------------------------------------ fingerprint and config

    def _fingerprint(self, with_table: bool) -> str:
        """sha256 hex of header, codebooks and (`with_table`) ids and codes (`shark_hf.tokenizer_format`)."""
        return table_fingerprint(
            self.kind,
            self.codebook_size,
            self._ids_np,
            self._codes,
            self._codebooks,
            self.embedding_model,
            self.embedding_text,
            with_table,
        )

    @property
    def config(self) -> dict[str, Any]:
        """The content of `tokenizer_config.json` (JSON-serialisable; `codes` last)."""
        return {
            "format_version": FORMAT_VERSION,
            "tokenizer_class": type(self).__name__,
            "shark_hf_version": package_version(),
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
            atomic_write_text(card_path, str(card))
        else:
            logger.warning("%s is not a SharkTokenizer card: left unchanged", card_path)
        if push_to_hub:
            return self.push_to_hub(
                repo_id or folder.name, model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs
            )
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write the tensors, then the config (a reader never sees a config newer than its tensors)."""
        tensors = {"ids": stored_ids(self._ids, self.codebook_size)}
        if self._codebooks is not None:
            tensors["codebooks"] = self._codebooks
        write_files(save_directory, tensors, self.config, self.fingerprint)

    def push_to_hub(
        self, repo_id: str, *, model_card_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """Upload the tokenizer (tensors, config and card as README.md) to a Hub repo in one commit.

        Same arguments as `ModelHubMixin.push_to_hub` (`private`, `token`, `branch`, `commit_message`, ...);
        the card's usage snippet names `repo_id`.
        """
        if warning := cohort_table_warning(self._codes):
            logger.warning("pushing to %s: %s", repo_id, warning)
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
        folder, where = locate_folder(
            str(pretrained_model_name_or_path),
            subfolder=subfolder,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        return cls._load_folder(folder, where)

    @classmethod
    def _load_folder(cls, folder: Path, where: str) -> SharkTokenizer:
        config, tensors = read_files(folder, where, cls.__name__)
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
        return tokenizer_card(self.config, metadata, **{"table_stats": self.table_stats(), **kwargs})

    # ------------------------------------------------------------------ interpretability

    def cluster_report(
        self,
        label_fn: Callable[[str], str] | None = None,
        label_names: dict[str, str] | None = None,
        min_size: int = 5,
        max_pairs: int = 1000,
    ) -> ClusterReport:
        """Per-level clusters with their purity (paper Table 4) and cross-chapter codes sharing finer IDs
        (paper Table 5), over the semantic levels (the deduplication level is ignored).

        See `shark_hf.cluster_report.cluster_report` for the arguments and definitions.
        """
        return cluster_report(
            self._codes,
            self._ids_np[:, : self.num_levels - int(self.deduplicated)],
            label_fn=label_fn,
            label_names=label_names,
            min_size=min_size,
            max_pairs=max_pairs,
        )


__all__ = [
    "CONFIG_NAME",
    "TENSORS_NAME",
    "ClusterReport",
    "ClusterStat",
    "CrossChapterPair",
    "SharkTokenizer",
]
