"""The transformers pipeline of SHARK: `pipeline("diagnosis-prediction", model=...)`.

`import shark_hf` makes transformers register the task as soon as `transformers.pipelines` loads
(`auto_registration`), so any saved or pushed SHARK model works without `trust_remote_code`:

>>> from transformers import pipeline
>>> predict = pipeline("diagnosis-prediction", model="runs/shark")  # doctest: +SKIP
>>> predict([["401.9", "250.00"], ["414.01", "428.0"]], top_k=3)  # doctest: +SKIP
[{'label': '101', 'name': 'Coronary atherosclerosis and other heart disease', 'score': 0.61}, ...]

The tokenizer comes from the model's `tokenizer/` subfolder (the layout `shark-hf train` and
`push_model_and_tokenizer` write), unless one is passed. Importing this module registers the task.
`load_model_and_tokenizer` loads the two together for library use
(`model.predict(VisitCollator.for_model(tokenizer, model.config)(rows))`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import transformers.pipelines
from transformers import Pipeline

from .data.collator import VisitCollator
from .modeling_shark import SharkForDiagnosisPrediction
from .tokenization_shark import SharkTokenizer
from .utils import TOKENIZER_SUBFOLDER

TASK = "diagnosis-prediction"
DEFAULT_TOP_K = 10
UNKNOWN_CODES = ("error", "skip", "embed")

Patient = Sequence[Sequence[str]]
"""One patient: visits oldest first, each a list of code strings (any spelling `normalize_code` accepts)."""


def load_tokenizer_of(model_name_or_path: str, revision: str | None = None) -> SharkTokenizer:
    """The `SharkTokenizer` in the `tokenizer/` subfolder of a model folder or Hub repo."""
    return SharkTokenizer.from_pretrained(
        model_name_or_path, subfolder=TOKENIZER_SUBFOLDER, revision=revision
    )


def load_model_and_tokenizer(
    model_name_or_path: str | os.PathLike,
    tokenizer: str | os.PathLike | SharkTokenizer | None = None,
    revision: str | None = None,
    allow_tokenizer_mismatch: bool = False,
    **model_kwargs: Any,
) -> tuple[SharkForDiagnosisPrediction, SharkTokenizer]:
    """A SHARK model (in eval mode) and its tokenizer, checked against each other.

    Args:
        model_name_or_path: a model folder (`save_pretrained`, `shark-hf train`) or Hub repo id.
        tokenizer: a `SharkTokenizer` or its folder / repo id; default: the model's `tokenizer/` subfolder
            (at the same `revision`).
        revision: Hub branch, tag or commit of the model.
        allow_tokenizer_mismatch: downgrade a tokenizer fingerprint mismatch to a warning.
        **model_kwargs: passed to `SharkForDiagnosisPrediction.from_pretrained` (`cache_dir`, `token`, ...).
    """
    name = os.fspath(model_name_or_path)
    if tokenizer is None:
        tokenizer = load_tokenizer_of(name, revision=revision)
    elif not isinstance(tokenizer, SharkTokenizer):
        tokenizer = SharkTokenizer.from_pretrained(os.fspath(tokenizer))
    model = SharkForDiagnosisPrediction.from_pretrained(
        name,
        tokenizer=tokenizer,
        allow_tokenizer_mismatch=allow_tokenizer_mismatch,
        revision=revision,
        **model_kwargs,
    )
    return model.eval(), tokenizer


def is_one_patient(inputs: Any) -> bool:
    """Whether `inputs` is one patient (a list of visits of code strings) rather than a list of patients."""
    return (
        isinstance(inputs, list | tuple)
        and bool(inputs)
        and isinstance(inputs[0], list | tuple)
        and bool(inputs[0])
        and isinstance(inputs[0][0], str)
    )


def check_patient(patient: Any, index: int) -> list[list[str]]:
    """`patient` as a list of visits, or a ValueError naming the patient by its position in the input."""
    valid = (
        isinstance(patient, list | tuple)
        and bool(patient)
        and all(
            isinstance(visit, list | tuple) and visit and all(isinstance(code, str) for code in visit)
            for visit in patient
        )
    )
    if not valid:
        raise ValueError(
            f"patient {index}: expected a non-empty list of visits, each a non-empty list of code strings, "
            f"got {patient!r:.200}"
        )
    return [list(visit) for visit in patient]


class DiagnosisPredictionPipeline(Pipeline):
    """Next-visit diagnosis prediction with a `SharkForDiagnosisPrediction` model.

    Input: one patient (a list of visits, oldest first, each a list of code strings) or a list of patients.
    Output per patient: the `top_k` most probable labels of the next visit, highest first, as
    `{"label", "name", "score"}` dicts (`score`: the label's probability, `sigmoid(logit)`; `name`: its
    description, or `None`); with `return_visit_attention=True`, a dict `{"labels": [...],
    "visit_attention": [alpha per visit, oldest first]}` instead. One patient in, one result out; a list
    in, a list out.

    Call options (also accepted by `pipeline(...)`): `top_k` (default 10, capped at the number of labels),
    `return_visit_attention` (default False), `unknown` ("error", "skip" or "embed": what to do with codes
    the tokenizer never saw, as `VisitCollator`), `batch_size` (patients per forward pass, default 64).
    """

    _load_tokenizer = False  # a SharkTokenizer is no AutoTokenizer: it is read from tokenizer/ below
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, model: SharkForDiagnosisPrediction, tokenizer: SharkTokenizer | None = None, **kwargs):
        if tokenizer is None:
            if not model.name_or_path:
                raise ValueError(
                    "the model was not loaded from a folder or repo, so its tokenizer/ cannot be found: "
                    "pass tokenizer="
                )
            local = os.path.isdir(model.name_or_path)
            revision = None if local else getattr(model.config, "_commit_hash", None)
            tokenizer = load_tokenizer_of(model.name_or_path, revision=revision)
        model.check_tokenizer(tokenizer)
        super().__init__(model=model.eval(), tokenizer=tokenizer, **kwargs)

    def _sanitize_parameters(self, top_k=None, return_visit_attention=None, unknown=None, **kwargs):
        if kwargs:
            raise TypeError(f"{TASK} pipeline: unexpected options {sorted(kwargs)}")
        preprocess, forward, postprocess = {}, {}, {}
        if unknown is not None:
            if unknown not in UNKNOWN_CODES:
                raise ValueError(f"unknown must be one of {UNKNOWN_CODES}, got {unknown!r}")
            preprocess["unknown"] = unknown
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
            forward["top_k"] = top_k
        if return_visit_attention is not None:
            postprocess["return_visit_attention"] = bool(return_visit_attention)
        return preprocess, forward, postprocess

    def __call__(self, inputs: Patient | Sequence[Patient], batch_size: int | None = None, **kwargs):
        one = is_one_patient(inputs)
        if not one and (not isinstance(inputs, list | tuple) or not inputs):
            raise ValueError(
                f"{TASK} pipeline: expected one patient (a list of visits, each a list of code strings) or a "
                f"non-empty list of patients, got {inputs!r:.200}"
            )
        patients = [check_patient(patient, i) for i, patient in enumerate([inputs] if one else inputs)]
        size = batch_size or self._batch_size or 64
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        preprocess = {**self._preprocess_params, **preprocess}
        forward = {**self._forward_params, **forward}
        postprocess = {**self._postprocess_params, **postprocess}
        results = []
        for start in range(0, len(patients), size):
            batch = self.preprocess(patients[start : start + size], **preprocess)
            results.extend(self.postprocess(self.forward(batch, **forward), **postprocess))
        return results[0] if one else results

    def preprocess(self, patients: list[list[list[str]]], unknown: str = "error") -> dict:
        """B patients -> one `VisitCollator.for_model` batch (`code_labels` too for a `repeat_head` model)."""
        collator = VisitCollator.for_model(self.tokenizer, self.model.config, unknown=unknown)
        return collator([{"visits": visits} for visits in patients])

    def _forward(self, model_inputs: dict, top_k: int = DEFAULT_TOP_K) -> list[dict]:
        return self.model.predict(model_inputs, top_k=top_k)

    def postprocess(self, predictions: list[dict], return_visit_attention: bool = False) -> list:
        results = []
        for prediction in predictions:
            labels = [
                {"label": top["label"], "name": top["name"], "score": top["probability"]}
                for top in prediction["labels"]
            ]
            attention = {"labels": labels, "visit_attention": prediction["visit_attention"]}
            results.append(attention if return_visit_attention else labels)
        return results


def register_pipeline(pipelines: Any) -> None:
    """Register `DiagnosisPredictionPipeline` as "diagnosis-prediction" in `pipelines.PIPELINE_REGISTRY`."""
    registry = pipelines.PIPELINE_REGISTRY
    if registry.supported_tasks.get(TASK, {}).get("impl") is DiagnosisPredictionPipeline:
        return
    registry.register_pipeline(
        TASK, pipeline_class=DiagnosisPredictionPipeline, pt_model=SharkForDiagnosisPrediction, type="text"
    )


register_pipeline(transformers.pipelines)

__all__ = [
    "DEFAULT_TOP_K",
    "TASK",
    "DiagnosisPredictionPipeline",
    "check_patient",
    "is_one_patient",
    "load_model_and_tokenizer",
    "load_tokenizer_of",
    "register_pipeline",
]
