"""shark-hf: SHARK semantic IDs for medical codes, as a Hugging Face package.

Importing `shark_hf` is cheap: it loads neither torch nor transformers. The names below are imported from
their modules on first use (a module `__getattr__`, in the spirit of transformers' `_LazyModule`), and
`SharkConfig` / `SharkForDiagnosisPrediction` are registered with the transformers Auto classes (`AutoConfig`,
`AutoModel`, `AutoModelForSequenceClassification`) as soon as transformers loads them (`auto_registration`),
so saved and pushed SHARK models load with `AutoModel.from_pretrained(...)` without `trust_remote_code`,
and `transformers.pipeline("diagnosis-prediction", model=...)` runs them (`pipelines`).

`UNIVERSAL_TOKENIZER` is the folder of the tokenizer shipped with the package (every ICD-9-CM and ICD-10-CM
code, L=4, K=128): `SharkTokenizer.from_pretrained(shark_hf.UNIVERSAL_TOKENIZER)`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .auto_registration import install as _install_auto_registration
from .universal import UNIVERSAL_TOKENIZER

__version__ = "0.1.0"

_LAZY_NAMES: dict[str, str] = {
    "all_codes": "codes",
    "ancestors": "codes",
    "describe": "codes",
    "is_known": "codes",
    "label_names": "codes",
    "normalize_code": "codes",
    "to_label": "codes",
    "SharkConfig": "configuration_shark",
    "VisitCollator": "data",
    "build_cohort": "data",
    "write_synthetic_cohort": "data",
    "CodeEmbeddings": "embeddings",
    "embed_codes": "embeddings",
    "load_embeddings": "embeddings",
    "push_model_and_tokenizer": "hub",
    "accuracy_at_k": "metrics",
    "compute_metrics": "metrics",
    "precision_at_k": "metrics",
    "recall_at_k": "metrics",
    "SharkForDiagnosisPrediction": "modeling_shark",
    "SharkOutput": "modeling_shark",
    "DiagnosisPredictionPipeline": "pipelines",
    "load_model_and_tokenizer": "pipelines",
    "ResidualKMeans": "rkmeans",
    "SharkTokenizer": "tokenization_shark",
}
"""Public name -> the submodule that defines it, imported on first access."""

if TYPE_CHECKING:
    from .codes import all_codes, ancestors, describe, is_known, label_names, normalize_code, to_label
    from .configuration_shark import SharkConfig
    from .data import VisitCollator, build_cohort, write_synthetic_cohort
    from .embeddings import CodeEmbeddings, embed_codes, load_embeddings
    from .hub import push_model_and_tokenizer
    from .metrics import accuracy_at_k, compute_metrics, precision_at_k, recall_at_k
    from .modeling_shark import SharkForDiagnosisPrediction, SharkOutput
    from .pipelines import DiagnosisPredictionPipeline, load_model_and_tokenizer
    from .rkmeans import ResidualKMeans
    from .tokenization_shark import SharkTokenizer


def __getattr__(name: str):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


_install_auto_registration()

__all__ = [
    "UNIVERSAL_TOKENIZER",
    "CodeEmbeddings",
    "DiagnosisPredictionPipeline",
    "ResidualKMeans",
    "SharkConfig",
    "SharkForDiagnosisPrediction",
    "SharkOutput",
    "SharkTokenizer",
    "VisitCollator",
    "accuracy_at_k",
    "all_codes",
    "ancestors",
    "build_cohort",
    "compute_metrics",
    "describe",
    "embed_codes",
    "is_known",
    "label_names",
    "load_embeddings",
    "load_model_and_tokenizer",
    "normalize_code",
    "precision_at_k",
    "push_model_and_tokenizer",
    "recall_at_k",
    "to_label",
    "write_synthetic_cohort",
]
