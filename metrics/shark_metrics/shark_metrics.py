"""The SHARK diagnosis-prediction metrics as an `evaluate` module; it delegates to `shark_hf.metrics`."""

import datasets
import evaluate
import numpy as np

from shark_hf.metrics import DEFAULT_KS, compute_metrics  # From: shark-hf

_CITATION = """\
@misc{zhang_shark,
  title  = {SHARK: Modeling Semantic Hierarchy of Medical Code via Residual K-Means Quantization},
  author = {Zhang, Kaisong and Lv, Hang and Tan, Yanchao and Lin, Zhigang and Zhang, Hengyu and Chen, Xiping
            and Yang, Carl},
}
"""

_DESCRIPTION = """\
Multi-label diagnosis-prediction metrics of the SHARK paper. For sample i with true label set Y_i and its
k highest-scoring labels T_i (stable sort by descending score, ties to the lower label index; all labels
when k > C):
visit-level P@k = mean_i |T_i ∩ Y_i| / min(k, |Y_i|), code-level Acc@k = Σ_i |T_i ∩ Y_i| / Σ_i |Y_i|,
R@k = mean_i |T_i ∩ Y_i| / |Y_i|; plus micro/macro ROC AUC and micro/macro F1 of `scores >= threshold`.
Samples with an empty label set are excluded from every metric and counted in `num_excluded_empty`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of N score vectors of length C (logits or probabilities; higher = more likely).
    references: list of N multi-hot vectors of length C (0/1).
    ks: the k of P@k, R@k and Acc@k; defaults to the `ks` given to `evaluate.load` (default (10, 20)).
    threshold: F1 decision threshold applied to the scores as given (0.5 for probabilities, 0.0 for logits);
        defaults to the `threshold` given to `evaluate.load` (default 0.5).
Returns:
    "P@k", "R@k", "Acc@k" for each k, "micro_auc", "macro_auc" (None when undefined),
    "macro_auc_labels_skipped", "micro_f1", "macro_f1", "macro_f1_labels_skipped", "num_samples" (evaluated),
    "num_excluded_empty".
Examples:
    >>> metric = evaluate.load("metrics/shark_metrics", ks=(1, 2))
    >>> results = metric.compute(predictions=[[0.9, 0.1, 0.5]], references=[[1, 0, 1]])
    >>> results["P@1"], results["P@2"]
    (1.0, 1.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SharkMetrics(evaluate.Metric):
    """P@k, Acc@k, R@k, AUC and F1 for multi-label diagnosis prediction (see `shark_hf.metrics`)."""

    def __init__(self, ks=DEFAULT_KS, threshold=0.5, **kwargs):
        super().__init__(**kwargs)
        self.ks = ks
        self.threshold = threshold

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references, ks=None, threshold=None):
        return compute_metrics(
            np.asarray(predictions, dtype=np.float32),
            np.asarray(references),
            ks=self.ks if ks is None else ks,
            threshold=self.threshold if threshold is None else threshold,
        )
