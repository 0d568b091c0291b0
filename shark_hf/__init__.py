"""shark-hf: SHARK semantic IDs for medical codes, as a Hugging Face package.

Importing `shark_hf` registers `SharkConfig` and `SharkForDiagnosisPrediction` with the transformers Auto
classes (`AutoConfig`, `AutoModel`, `AutoModelForSequenceClassification`), so saved and pushed SHARK models
load with `AutoModel.from_pretrained(...)` without `trust_remote_code`.

`UNIVERSAL_TOKENIZER` is the folder of the tokenizer shipped with the package (every ICD-9-CM and ICD-10-CM
code, L=4, K=128): `SharkTokenizer.from_pretrained(shark_hf.UNIVERSAL_TOKENIZER)`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from .codes import all_codes, ancestors, describe, is_known, label_names, normalize_code, to_label
from .configuration_shark import SharkConfig
from .data import VisitCollator, build_cohort, write_synthetic_cohort
from .embeddings import CodeEmbeddings, embed_codes, load_embeddings
from .hub import push_model_and_tokenizer
from .metrics import accuracy_at_k, compute_metrics, precision_at_k, recall_at_k
from .modeling_shark import SharkForDiagnosisPrediction, SharkOutput
from .rkmeans import ResidualKMeans
from .tokenization_shark import SharkTokenizer
from .universal import UNIVERSAL_TOKENIZER

__version__ = "0.1.0"

AutoConfig.register(SharkConfig.model_type, SharkConfig, exist_ok=True)
AutoModel.register(SharkConfig, SharkForDiagnosisPrediction, exist_ok=True)
AutoModelForSequenceClassification.register(SharkConfig, SharkForDiagnosisPrediction, exist_ok=True)

__all__ = [
    "UNIVERSAL_TOKENIZER",
    "CodeEmbeddings",
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
    "normalize_code",
    "precision_at_k",
    "push_model_and_tokenizer",
    "recall_at_k",
    "to_label",
    "write_synthetic_cohort",
]
