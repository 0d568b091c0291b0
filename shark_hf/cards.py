"""Render the Jinja templates of `hub_cards/` into `huggingface_hub.ModelCard`s.

A template is a markdown file whose YAML front matter is the placeholder `{{ card_data }}`; the body may use
any key of the card data and of the context. Rendering is strict: a placeholder the context does not fill is
an error, never a silently empty line in a published card.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .metrics import HEADLINE_METRICS

# A wheel ships hub_cards/ as package data (`shark_hf/hub_cards/`); a checkout has it beside shark_hf/.
_INSTALLED_TEMPLATES = Path(__file__).resolve().parent / "hub_cards"
TEMPLATE_DIR = (
    _INSTALLED_TEMPLATES
    if _INSTALLED_TEMPLATES.is_dir()
    else Path(__file__).resolve().parents[1] / "hub_cards"
)


def render_card(template_name: str, card_data: ModelCardData, **context: Any) -> ModelCard:
    """Render `hub_cards/<template_name>` with `card_data` as YAML metadata and `context` for the body.

    Args:
        template_name: file name inside `hub_cards/`, e.g. `"tokenizer_card.md"`.
        card_data: the card's metadata; written as the YAML front matter (`{{ card_data }}`) and also
            available to the template key by key (`{{ library_name }}`), context values taking priority.
        **context: values for the template's placeholders.

    Raises:
        FileNotFoundError: the template is not in `TEMPLATE_DIR` (names the path looked at).
        jinja2.UndefinedError: the template uses a placeholder that neither `card_data` nor `context` fills.
    """
    path = TEMPLATE_DIR / template_name
    if not path.is_file():
        raise FileNotFoundError(
            f"card template {template_name!r} not found at {path}: the `hub_cards/` folder must sit next to "
            "the `shark_hf` package (install shark-hf with its package data)"
        )
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = environment.from_string(path.read_text(encoding="utf-8"))
    values = {**card_data.to_dict(), **context}
    return ModelCard(template.render(card_data=card_data.to_yaml(), **values))


CARD_METADATA_KEYS = ("license", "license_name", "license_link", "language", "tags")
"""Keyword arguments of `tokenizer_card` that set card metadata rather than template values."""


def tokenizer_card(tokenizer_config: dict[str, Any], metadata: dict[str, Any], **overrides: Any) -> ModelCard:
    """The tokenizer card (`hub_cards/tokenizer_card.md`) describing a `tokenizer_config.json`.

    Args:
        tokenizer_config: `SharkTokenizer.config` (the content of its `tokenizer_config.json`).
        metadata: the card's metadata (`library_name`, `tags`, `license`, ...).
        **overrides: `CARD_METADATA_KEYS` override `metadata`; other keys override template values
            (`repo_id`, `subfolder`).
    """
    metadata = dict(metadata)
    for key in list(overrides):
        if key in CARD_METADATA_KEYS:
            metadata[key] = overrides.pop(key)
    codes = tokenizer_config["codes"]
    systems = Counter(code.split(":", 1)[0] for code in codes)
    examples = codes[:3]
    copied = (
        "kind",
        "num_codes",
        "num_levels",
        "codebook_size",
        "embedding_dim",
        "embedding_model",
        "embedding_text",
        "deduplicated",
        "collision_rate",
        "fingerprint",
        "codebook_fingerprint",
        "format_version",
        "shark_hf_version",
    )
    context = {
        "repo_id": None,
        "subfolder": None,
        "table_stats": None,
        "example_visits": [examples[:2], examples[2:]] if len(examples) == 3 else [examples],
        "systems": dict(sorted(systems.items())),
        **{key: tokenizer_config[key] for key in copied},
        "seed": tokenizer_config.get("seed"),
        "level_errors": tokenizer_config.get("level_errors", []),
        "codebook_usage": tokenizer_config.get("codebook_usage", []),
        **overrides,
    }
    return render_card("tokenizer_card.md", ModelCardData(**metadata), **context)


MIMIC_LICENSE_NAME = "physionet-credentialed-health-data-license-1.5.0"
MIMIC_LICENSE_LINK = "https://physionet.org/about/licenses/physionet-credentialed-health-data-license-150/"
GATED_PROMPT = (
    "This model was trained on credentialed-access clinical data (MIMIC). By requesting access you confirm "
    "that you hold PhysioNet credentialed access and have signed the data use agreement of the source data, "
    "and that you will not attempt to re-identify any individual."
)
GATED_FIELDS = {
    "Name": "text",
    "Affiliation": "text",
    "PhysioNet credentialed user (username)": "text",
    "I have signed the data use agreement of the training data": "checkbox",
    "I will use this model for research only and not for clinical decisions": "checkbox",
}


def model_card(
    config: dict[str, Any],
    tokenizer_config: dict[str, Any],
    metrics: dict[str, Any],
    repo_id: str,
    license: str | None = None,
    gated: bool = True,
    data_source: str | None = None,
    repository_files: Sequence[str] | None = None,
) -> ModelCard:
    """The SHARK model card (`hub_cards/model_card.md`) of a trained model.

    Args:
        config: the model's `config.json` content.
        tokenizer_config: its tokenizer's `tokenizer_config.json` content.
        metrics: the training run's `metrics.json` content (`validation`/`test` metric dicts, `privacy`,
            `args`); `{}` for a model without evaluation (the card then says so).
        repo_id: where the card will live (used in the usage snippet).
        license: a Hub licence id chosen by the user; default: MIMIC's PhysioNet credentialed licence
            (`license: other` with its name and link), because weights trained on MIMIC fall under its DUA.
        gated: ask users to accept terms (`extra_gated_prompt` / `extra_gated_fields`) before access.
        data_source: the training data's name (default: the cohort argument of the run).
        repository_files: the files published beside the card (`tokenizer/` for the tokenizer folder), listed
            with what each holds; default: the model's files, `tokenizer/` and `metrics.json` when given.

    The card holds aggregate numbers only: patients and samples per split, metrics, hyper-parameters. The
    task is rendered from the cohort options recorded in `metrics["cohort"]["task"]` (`cohort_summary`).
    """
    splits = {name: metrics[name] for name in ("validation", "test") if name in metrics}
    args = metrics.get("args", {})
    label_space = config.get("label_space", "ccs")
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="tabular-classification",
        tags=["shark", "ehr", "diagnosis-prediction", "semantic-ids", "medical-codes", label_space],
        model_name=repo_id,
        eval_results=_eval_results(splits, data_source or _source_name(args)) or None,
        **_license_fields(license),
        **(_gating_fields() if gated else {}),
    )
    hyperparameters = {
        key: args[key]
        for key in ("learning_rate", "num_epochs", "batch_size", "patience", "seed", "max_visits")
        if key in args
    }
    hyperparameters.update(
        {
            key: config[key]
            for key in ("embed_dim", "hidden_size", "composition", "dropout", "code_representation")
        }
    )
    if "federated" in metrics:
        hyperparameters["rounds"] = metrics["rounds"]
        hyperparameters["best round"] = metrics["best_round"]
    else:
        hyperparameters["best epoch"] = metrics.get("best_epoch", "n/a")
    if "context_logit_scale" in metrics:
        hyperparameters["context logit scale (chosen on validation)"] = metrics["context_logit_scale"]
    privacy = metrics.get("privacy", {})
    label_space_name = LABEL_SPACE_NAMES.get(label_space, label_space)
    if repository_files is None:
        repository_files = [*DEFAULT_REPOSITORY_FILES, *(["metrics.json"] if metrics else [])]
    return render_card(
        "model_card.md",
        card_data,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        label_space=label_space,
        label_space_name=label_space_name,
        num_labels=len(config.get("id2label", {})),
        data_source=data_source or _source_name(args),
        data_builder=_builder_note(metrics.get("cohort", {}).get("task"), data_source or _source_name(args)),
        split_sizes=_split_sizes(metrics),
        task=_task_text(metrics.get("cohort", {}).get("task"), label_space_name, args.get("max_visits")),
        repository_contents={name: _file_content(name) for name in repository_files},
        tokenizer=_tokenizer_summary(tokenizer_config),
        metrics=splits,
        metrics_note=_metrics_note(metrics, bool(splits)),
        baselines={name: result["test"] for name, result in metrics.get("baselines", {}).items()},
        best_baseline=metrics.get("best_baseline"),
        lift=_lift_text(metrics.get("lift_over_best_baseline", {})),
        privacy_audit=_privacy_text(privacy),
        federation=metrics.get("federated"),
        hyperparameters=hyperparameters,
        license_note=_license_note(license, gated),
    )


def _lift_text(lift: dict[str, float]) -> str:
    """`P@10 +0.0700, P@20 ...`: the headline metrics of the model's lift over the best baseline."""
    return ", ".join(f"{k} {lift[k]:+.4f}" for k in HEADLINE_METRICS if k in lift)


def _metrics_note(metrics: dict[str, Any], evaluated: bool) -> str:
    """What the results table shows, and a warning when the best epoch was the last allowed one."""
    if not evaluated:
        return "This model has not been evaluated: no metrics.json was found next to it."
    if "federated" in metrics:
        note = "Metrics of the best round (selected on pooled validation P@10), pooled over the sites."
        if metrics.get("best_round_at_cap"):
            note += (
                f" **Warning: the best round ({metrics['best_round']}) was the last one: training had not "
                "converged, and these figures may understate the model.**"
            )
        return note
    note = "Metrics of the best epoch (selected on validation P@10)."
    if metrics.get("best_epoch_at_cap"):
        note += (
            f" **Warning: the best epoch ({metrics['best_epoch']}) was the last allowed one: training had "
            "not converged, and these figures may understate the model.**"
        )
    return note


LABEL_SPACE_NAMES = {"ccs": "single-level CCS", "ccsr": "CCSR", "code": "diagnosis code"}
DEFAULT_REPOSITORY_FILES = ("config.json", "model.safetensors", "configuration_shark.py", "modeling_shark.py")
_FILE_CONTENTS = {
    "config.json": "the architecture, the label names and the fingerprint of the tokenizer",
    "configuration_shark.py": "the model's code (for `trust_remote_code`)",
    "modeling_shark.py": "the model's code (for `trust_remote_code`)",
    "metrics.json": "aggregate metrics (validation, test, baselines, privacy audit), patient and sample "
    "counts and the training options",
    "training_curves.png": "training and validation loss and validation P@10 per epoch",
    "tokenizer/": "the code tokenizer: codebooks and the table of ICD codes (derived from public code "
    "descriptions)",
}


def _file_content(name: str) -> str:
    """What a published file holds, for the card's table of the repository."""
    if name.endswith(".safetensors"):
        return "the weights, fitted to the training patients' visits"
    if name.endswith(".safetensors.index.json"):
        return "the index of the weight shards"
    return _FILE_CONTENTS.get(name, "published with the model")


def _split_sizes(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{split: {"patients", "samples"}}: from the run's `cohort` summary, else (a metrics.json of an older
    release) the evaluated samples, with patients not recorded."""
    cohort = metrics.get("cohort")
    if cohort:
        return {
            name: {"patients": cohort["patients"][name], "samples": samples}
            for name, samples in cohort["samples"].items()
        }
    sizes = {}
    if "members" in metrics.get("privacy", {}):
        sizes["train"] = {"patients": "not recorded", "samples": metrics["privacy"]["members"]}
    for name in ("validation", "test"):
        if name in metrics:
            split = metrics[name]
            samples = split["num_samples"] + split.get("num_excluded_empty", 0)
            sizes[name] = {"patients": "not recorded", "samples": samples}
    return sizes


def _builder_note(task: dict[str, Any] | None, source_name: str) -> str:
    """` (built from mimic3 with shark-hf)` when the cohort recorded a source other than its name."""
    if not task or task.get("source") in (None, source_name):
        return ""
    return f" (built from {task['source']} with shark-hf)"


def _task_text(task: dict[str, Any] | None, label_space_name: str, max_visits: int | None) -> str:
    """The prediction task, as the cohort's recorded options (`shark_hf.data.cohort.cohort_task`) say."""
    target = f"the {label_space_name} categories"
    if task is None:
        text = (
            "how the samples were formed was not recorded with the cohort (it was not built by shark-hf's "
            f"`build_cohort`); each sample's input is a sequence of visits and its target is {target} of a "
            "later visit."
        )
    elif task.get("sample") == "all_prefixes":
        text = (
            f"patients with at least {task['min_visits']} visits; one sample per visit after the first: "
            f"input = every visit before it, target = {target} of that visit (a patient gives several "
            "samples)."
        )
    else:
        text = (
            f"patients with at least {task['min_visits']} visits; one sample per patient: input = every "
            f"visit but the last, target = {target} of the last visit."
        )
    if max_visits:
        text += f" Only the {max_visits} most recent input visits are used."
    return text


def _privacy_text(privacy: dict[str, Any]) -> str:
    """The card's account of the membership-inference audit (`shark_hf.privacy`)."""
    if "sites" in privacy:  # a federated model: each site audited it on its own patients
        return " ".join(
            f"At site {name}: {_privacy_text(audit)}"
            if i == 0
            else f"At site {name}: AUC "
            f"{audit['membership_inference_auc']:.3f} (95% CI {audit['auc_95ci'][0]:.3f} to "
            f"{audit['auc_95ci'][1]:.3f}; {audit['members']} training against {audit['nonmembers']} test "
            "samples)."
            for i, (name, audit) in enumerate(privacy["sites"].items())
        )
    auc = privacy.get("membership_inference_auc")
    if auc is None:
        return "No membership-inference audit was run for this model."

    def counted(samples: int, patients: int | None) -> str:
        return f"{samples} " + ("samples" if patients is None else f"samples ({patients} patients)")

    interval = privacy.get("auc_95ci")
    bootstrap = privacy.get("bootstrap", {})
    ci = (
        f" (95% CI {interval[0]:.3f} to {interval[1]:.3f}, bootstrap over "
        f"{bootstrap.get('unit', 'sample')}s, {bootstrap.get('resamples', 'n/a')} resamples)"
        if interval
        else " (no confidence interval was recorded)"
    )
    return (
        "A per-sample loss-threshold membership-inference attack (Yeom et al., 2018: a sample with a low "
        f"loss is guessed to be a training sample) separates the "
        f"{counted(privacy['members'], privacy.get('member_patients'))} of training from the "
        f"{counted(privacy['nonmembers'], privacy.get('nonmember_patients'))} of the held-out test split "
        f"with an ROC AUC of **{auc:.3f}**{ci}; 0.5 is chance. This is a lower bound on the leakage, not a "
        "privacy guarantee: stronger attacks (shadow models, likelihood-ratio tests, pooling a patient's "
        "samples) can do better, so an AUC near 0.5 does not show that the weights are private. An AUC well "
        "above 0.5 means the loss reveals membership, and the model should not be shared beyond the people "
        "allowed to see the training data."
    )


def _eval_results(splits: dict[str, dict], dataset_name: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="multi-label-classification",
            task_name="Next-visit diagnosis prediction",
            dataset_type="ehr-cohort",
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric.lower().replace("@", "_at_"),
            metric_name=metric,
            metric_value=round(float(values[metric]), 6),
        )
        for split, values in splits.items()
        for metric in HEADLINE_METRICS
    ]


def _source_name(args: dict[str, Any]) -> str:
    cohort = str(args.get("cohort", "unknown"))
    return Path(cohort).name if cohort not in ("mimic3", "mimic4", "meds") else cohort


def _tokenizer_summary(tokenizer_config: dict[str, Any]) -> dict[str, Any]:
    errors = tokenizer_config.get("level_errors") or []
    return {
        "kind": tokenizer_config.get("kind"),
        "embedding_model": tokenizer_config.get("embedding_model") or "n/a",
        "embedding_text": tokenizer_config.get("embedding_text") or "n/a",
        "num_levels": tokenizer_config.get("num_levels"),
        "codebook_size": tokenizer_config.get("codebook_size"),
        "num_codes": len(tokenizer_config.get("codes", [])),
        "collision_rate": f"{tokenizer_config.get('collision_rate', 0.0):.4f}",
        "level_errors": ", ".join(f"{e:.4f}" for e in errors) or "n/a",
        "fingerprint": tokenizer_config.get("fingerprint"),
    }


def _license_fields(license: str | None) -> dict[str, str]:
    if license:
        return {"license": license}
    return {"license": "other", "license_name": MIMIC_LICENSE_NAME, "license_link": MIMIC_LICENSE_LINK}


def _gating_fields() -> dict[str, Any]:
    return {"extra_gated_prompt": GATED_PROMPT, "extra_gated_fields": GATED_FIELDS}


def _license_note(license: str | None, gated: bool) -> str:
    note = (
        f"Licence: `{license}`, chosen by the publisher."
        if license
        else (
            "The weights were trained on data distributed under the PhysioNet Credentialed Health Data "
            f"License 1.5.0 ([terms]({MIMIC_LICENSE_LINK})); they are released under the same terms."
        )
    )
    if gated:
        note += (
            " Access is gated: users must state their PhysioNet credentials and accept the terms on the Hub."
        )
    return note
