"""SHARK model configuration.

This file ships as remote code next to saved models: it imports only third-party packages
(`transformers`, `huggingface_hub`) and nothing from the `shark_hf` package.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# SharkTokenizer.kind -> SharkConfig.code_representation
TOKENIZER_KIND_TO_REPRESENTATION = {"semantic": "semantic_id", "random": "random_id", "index": "learned"}

_DEFAULT_NUM_LEVELS = 4
_DEFAULT_CODEBOOK_SIZE = 128


@strict
class SharkConfig(PreTrainedConfig):
    r"""
    Configuration of [`SharkForDiagnosisPrediction`]: SHARK semantic-ID code embeddings (paper §2.2) feeding a
    RETAIN-style dual-GRU next-visit diagnosis predictor (paper §2.3-2.4).

    Args:
        num_levels (`int`, *optional*):
            L, the number of semantic-ID levels per code (the last dimension of `input_ids`). Defaults to 4
            for `semantic_id` / `random_id` and to 1 for `learned`.
        codebook_size (`int`, *optional*):
            K, the number of codewords per level; ids must lie in `[0, K)`. Defaults to 128 for
            `semantic_id` / `random_id` and to `num_codes` for `learned`.
        embed_dim (`int`, *optional*, defaults to 16):
            d, the width of one codeword embedding (the paper's d = 16).
        hidden_size (`int`, *optional*, defaults to 16):
            Hidden width of each of the two GRUs (the paper sets diseases and patients to 16).
        composition (`str`, *optional*, defaults to `"sum"`):
            How the L codeword embeddings of a code are combined: `"sum"` gives code vectors of width
            `embed_dim`, `"concat"` gives width `num_levels * embed_dim`. Visit vectors, beta (feature
            attention) and the patient context vector all have this width, [`SharkConfig.visit_dim`].
        code_representation (`str`, *optional*, defaults to `"semantic_id"`):
            `"semantic_id"` (SHARK: Residual K-Means ids), `"random_id"` (paper Table 2 baseline: L uniform
            random ids) or `"learned"` (plain RETAIN: one free embedding per code, `num_levels=1`, one table
            of `num_codes` rows).
        num_codes (`int`, *optional*):
            Number of codes in the per-code table; required for `"learned"`, unused otherwise.
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout probability applied to the patient context vector before the prediction head.
        label_space (`str`, *optional*, defaults to `"ccs"`):
            Name of the label space of `id2label` (`"ccs"`, `"ccsr"` or `"code"`).
        label_descriptions (`dict[str, str]`, *optional*):
            Human-readable name of each label, e.g. `{"98": "Essential hypertension"}`; used by `predict`.
        tokenizer_fingerprint (`str`, *optional*):
            sha256 fingerprint of the `SharkTokenizer` the model was built for (codebooks and code table); see
            [`SharkConfig.check_tokenizer`].
        tokenizer_codebook_fingerprint (`str`, *optional*):
            That tokenizer's `codebook_fingerprint` (codebooks only for semantic tokenizers, so it survives
            `add_codes`; equal to `tokenizer_fingerprint` for random and index tokenizers).
        tokenizer_kind (`str`, *optional*):
            `kind` of that tokenizer (`"semantic"`, `"random"` or `"index"`).

    The label space itself lives in the standard `id2label` / `label2id` / `num_labels` fields;
    `problem_type` is `"multi_label_classification"`.

    Example:

    ```python
    >>> from shark_hf.configuration_shark import SharkConfig
    >>> config = SharkConfig(num_labels=283)
    >>> (config.num_levels, config.codebook_size, config.visit_dim)
    (4, 128, 16)
    ```
    """

    model_type = "shark"

    num_levels: int | None = None
    codebook_size: int | None = None
    embed_dim: int = 16
    hidden_size: int = 16
    composition: Literal["sum", "concat"] = "sum"
    code_representation: Literal["semantic_id", "random_id", "learned"] = "semantic_id"
    num_codes: int | None = None
    dropout: float | int = 0.1
    label_space: str | None = "ccs"
    label_descriptions: dict[str, str] | None = None
    tokenizer_fingerprint: str | None = None
    tokenizer_codebook_fingerprint: str | None = None
    tokenizer_kind: Literal["semantic", "random", "index"] | None = None
    problem_type: (
        Literal["regression", "single_label_classification", "multi_label_classification"] | None
    ) = "multi_label_classification"

    def __post_init__(self, **kwargs: Any) -> None:
        if self.code_representation == "learned":
            self.num_levels = 1 if self.num_levels is None else self.num_levels
            self.codebook_size = self.num_codes if self.codebook_size is None else self.codebook_size
        else:
            self.num_levels = _DEFAULT_NUM_LEVELS if self.num_levels is None else self.num_levels
            self.codebook_size = _DEFAULT_CODEBOOK_SIZE if self.codebook_size is None else self.codebook_size
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {label: i for i, label in self.id2label.items()}

    @property
    def visit_dim(self) -> int:
        """Width D of code, visit, beta and context vectors: `embed_dim` (sum) or `L * embed_dim` (concat)."""
        return self.embed_dim if self.composition == "sum" else self.num_levels * self.embed_dim

    def validate_shark(self) -> None:
        """Part of `@strict`-powered validation: consistency of the SHARK fields."""
        if self.code_representation == "learned":
            if self.num_codes is None or self.num_codes < 1:
                raise ValueError(
                    f"code_representation='learned' needs num_codes >= 1 (the size of the per-code table), "
                    f"got num_codes={self.num_codes}"
                )
            if self.num_levels != 1 or self.codebook_size != self.num_codes:
                raise ValueError(
                    "code_representation='learned' uses one id per code: it needs num_levels=1 and "
                    f"codebook_size=num_codes={self.num_codes}, got num_levels={self.num_levels}, "
                    f"codebook_size={self.codebook_size}"
                )
        for name in ("num_levels", "codebook_size", "embed_dim", "hidden_size"):
            value = getattr(self, name)
            if value is None or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_labels is None or self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        expected = TOKENIZER_KIND_TO_REPRESENTATION.get(self.tokenizer_kind)
        if self.tokenizer_kind is not None and expected != self.code_representation:
            raise ValueError(
                f"tokenizer_kind={self.tokenizer_kind!r} produces {expected!r} ids, but "
                f"code_representation={self.code_representation!r}"
            )

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, label_names: Sequence[str] | Mapping[str, str], **kwargs: Any
    ) -> "SharkConfig":
        """Build a config for the codes produced by `tokenizer` and the labels in `label_names`.

        Args:
            tokenizer: a `SharkTokenizer` (anything with `kind`, `num_levels`, `codebook_size`, `fingerprint`
                and `len()`). Its kind sets `code_representation`: semantic -> `semantic_id`,
                random -> `random_id`, index -> `learned` with `num_codes=len(tokenizer)`.
            label_names: the label space in output order, either a list of labels or an ordered
                `{label: name}` dict (e.g. `shark_hf.codes.label_names("ccs")`); names go to
                `label_descriptions`.
            **kwargs: any other `SharkConfig` field (`embed_dim`, `hidden_size`, `composition`, `dropout`,
                `label_space`, ...). Fields the tokenizer determines may be repeated only with the same value.
        """
        identity = _tokenizer_identity(tokenizer)
        labels, descriptions = _parse_label_names(label_names)
        derived: dict[str, Any] = {
            "num_levels": tokenizer.num_levels,
            "codebook_size": tokenizer.codebook_size,
            **identity,
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "label_descriptions": descriptions,
        }
        if tokenizer.kind == "index":
            derived["num_codes"] = len(tokenizer)
        for key, value in derived.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(
                    f"{key}={kwargs[key]!r} was passed, but the tokenizer and label_names determine "
                    f"{key}={value!r}"
                )
        if "num_labels" in kwargs and kwargs.pop("num_labels") != len(labels):
            raise ValueError(f"num_labels does not match the {len(labels)} labels in label_names")
        return cls(**{**kwargs, **derived})

    def record_tokenizer(self, tokenizer: Any) -> None:
        """Make this config name `tokenizer` (its kind, representation and fingerprints), as `from_tokenizer`
        does; for a model moving to another tokenizer that `check_tokenizer` accepted (fine-tuning)."""
        for key, value in _tokenizer_identity(tokenizer).items():
            setattr(self, key, value)

    def check_tokenizer(self, tokenizer: Any, allow_mismatch: bool = False) -> None:
        """Raise a `ValueError` unless `tokenizer` produces the ids this model was trained on.

        Accepted: the same `fingerprint`, or, for semantic tokenizers, the same `codebook_fingerprint` (the
        same codebooks with a different code table, e.g. codes added with `add_codes`: their ids mean the
        same). Shape-level incompatibilities (number of levels, a codebook or per-code table larger than the
        model's) are always errors. Another fingerprint or tokenizer kind is an error unless
        `allow_mismatch=True`, which logs it as a warning instead.
        """
        problems = []
        if tokenizer.num_levels != self.num_levels:
            problems.append(f"num_levels {tokenizer.num_levels} != model's {self.num_levels}")
        if tokenizer.codebook_size > self.codebook_size:
            problems.append(f"codebook_size {tokenizer.codebook_size} > model's {self.codebook_size}")
        if problems:
            raise ValueError("tokenizer cannot be used with this model: " + "; ".join(problems))

        expected_kind = TOKENIZER_KIND_TO_REPRESENTATION.get(tokenizer.kind)
        mismatches = []
        if expected_kind != self.code_representation:
            mismatches.append(
                f"tokenizer kind {tokenizer.kind!r} produces {expected_kind!r} ids but the model was "
                f"trained on {self.code_representation!r} ids"
            )
        codebook_fingerprint = getattr(tokenizer, "codebook_fingerprint", tokenizer.fingerprint)
        if self.tokenizer_fingerprint is None:
            logger.warning(
                "The model config records no tokenizer_fingerprint; tokenizer compatibility not verified."
            )
        elif tokenizer.fingerprint != self.tokenizer_fingerprint and (
            self.tokenizer_codebook_fingerprint is None
            or codebook_fingerprint != self.tokenizer_codebook_fingerprint
        ):
            mismatches.append(
                f"tokenizer fingerprint {tokenizer.fingerprint[:12]}... "
                f"(codebooks {codebook_fingerprint[:12]}...) differs from the model's "
                f"tokenizer_fingerprint {self.tokenizer_fingerprint[:12]}..."
            )
        if not mismatches:
            return
        message = "tokenizer mismatch: " + "; ".join(mismatches)
        if not allow_mismatch:
            raise ValueError(
                f"{message}. Use the tokenizer saved with the model, or pass allow_mismatch=True "
                "(allow_tokenizer_mismatch=True in from_pretrained) if the ids are known to be compatible."
            )
        logger.warning(f"{message} (allowed by allow_mismatch=True)")


def _tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """The config fields that name `tokenizer`: its kind, the representation of its ids, its fingerprint and
    its codebook fingerprint."""
    if tokenizer.kind not in TOKENIZER_KIND_TO_REPRESENTATION:
        raise ValueError(
            f"unknown tokenizer kind {tokenizer.kind!r}; expected one of "
            f"{sorted(TOKENIZER_KIND_TO_REPRESENTATION)}"
        )
    return {
        "tokenizer_kind": tokenizer.kind,
        "code_representation": TOKENIZER_KIND_TO_REPRESENTATION[tokenizer.kind],
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokenizer_codebook_fingerprint": getattr(tokenizer, "codebook_fingerprint", tokenizer.fingerprint),
    }


def _parse_label_names(
    label_names: Sequence[str] | Mapping[str, str],
) -> tuple[list[str], dict[str, str] | None]:
    """Split `label_names` into the ordered labels and their `{label: name}` descriptions (or None)."""
    if isinstance(label_names, str):
        raise TypeError("label_names must be a list of labels or a {label: name} dict, got a string")
    if isinstance(label_names, Mapping):
        labels = [str(label) for label in label_names]
        descriptions = {str(label): str(name) for label, name in label_names.items()}
    else:
        labels = [str(label) for label in label_names]
        descriptions = None
    if not labels:
        raise ValueError("label_names is empty; the model needs at least one label")
    seen: set[str] = set()
    duplicates = sorted({label for label in labels if label in seen or seen.add(label)})
    if duplicates:
        raise ValueError(f"label_names contains duplicated labels: {duplicates[:10]}")
    return labels, descriptions


__all__ = ["SharkConfig"]
