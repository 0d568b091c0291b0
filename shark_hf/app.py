"""The SHARK web app: a trained model behind one Gradio page, locally (`shark-hf app`) or as a Space.

>>> from shark_hf.app import build_app, launch
>>> launch(build_app("runs/shark"), host="127.0.0.1", port=7860)  # doctest: +SKIP

The page: a textbox for a patient's visits (one visit per line, oldest first, codes separated by commas,
any spelling `normalize_code` accepts), a search over the model's codes with their descriptions (a click on
a result adds the code to the last visit), example patients from the built-in synthetic cohort, and a
Predict button. It answers with the top-k labels of the next visit (names and probabilities, as bars), the
attention over the visits with each visit's codes and descriptions (a table, and
`plots.visit_attention_figure`) and the raw result as JSON. The model card's headline test metrics and the
best heuristic baseline (`metrics.json`) are shown at the top. Bad input (a malformed or unknown code, an
empty visit) is one message in the page (`gr.Error`), never a stack trace.

API: `/predict` takes the visits text and top-k and returns (labels, attention table, figure, JSON), so
`gradio_client.Client(url).predict(text, 5, api_name="/predict")` works.

Privacy: nothing a user types is logged or stored: analytics off (`GRADIO_ANALYTICS_ENABLED=False`), no
flagging, no run history (`run_history=False`: gradio would keep each call's inputs in the browser), no
monitoring, no cached examples, and no server-side logging of inputs or error tracebacks.

Gradio is imported here only (it is not needed to import `shark_hf`).
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

# Read by gradio (at import, and by Blocks.launch): no analytics, no run history even for `page.launch()`.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["GRADIO_RUN_HISTORY"] = "False"

import gradio as gr  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from .codes import describe, dotted, normalize_code  # noqa: E402
from .metrics import HEADLINE_METRICS  # noqa: E402
from .pipelines import DiagnosisPredictionPipeline, load_model_and_tokenizer  # noqa: E402
from .plots import visit_attention_figure  # noqa: E402
from .utils import is_local_path  # noqa: E402

DEFAULT_TOP_K = 5
MAX_TOP_K = 30
MAX_CODES = 2000
"""Codes one request may hold (every visit together)."""
SEARCH_RESULTS = 15
NUM_EXAMPLES = 3
EXAMPLE_CODES_PER_VISIT = 4
EXAMPLES_LABEL = "Example patients (built-in synthetic cohort, no real patients; | separates visits)"
VISITS_PLACEHOLDER = "401.9, 250.00\n414.01, 428.0"
THEME = gr.themes.Soft(  # system fonts: the page makes no request outside the app's server
    font=[gr.themes.Font("system-ui"), "Helvetica", "Arial", "sans-serif"],
    font_mono=[gr.themes.Font("ui-monospace"), "Consolas", "monospace"],
)
CSS = (
    ".shark-table table { font-size: 0.9rem; } "
    ".shark-table td:nth-child(-n+2), .shark-table th:nth-child(-n+2) { white-space: nowrap; } "
)
LABEL_KINDS = {"ccs": "CCS", "ccsr": "CCSR", "code": "code"}


class PatientInputError(ValueError):
    """The visits text cannot be read: the message names the visit and the code at fault."""


@dataclass
class SharkApp:
    """A model, its tokenizer and its metrics, with the functions the page calls."""

    predictor: DiagnosisPredictionPipeline
    metrics: dict[str, Any]
    title: str

    @classmethod
    def load(cls, model: str | os.PathLike, revision: str | None = None) -> SharkApp:
        """The app of a model folder (`shark-hf train`) or Hub repo id with its `tokenizer/` subfolder."""
        name = os.fspath(model)
        shark_model, tokenizer = load_model_and_tokenizer(name, revision=revision)
        predictor = DiagnosisPredictionPipeline(model=shark_model, tokenizer=tokenizer)
        return cls(predictor, read_metrics(name, revision), Path(name).name if is_local_path(name) else name)

    @property
    def tokenizer(self):
        return self.predictor.tokenizer

    # ------------------------------------------------------------------------------------ input

    def parse_visits(self, text: str) -> list[list[str]]:
        """The visits of `text` (one per line, codes separated by commas) as canonical code keys.

        Leading and trailing blank lines are ignored, and so are empty items between commas.

        Raises:
            PatientInputError: no visit, an empty visit, a malformed code, a code the tokenizer does not
                know, or more than `MAX_CODES` codes (the message names the visit and the code).
        """
        lines = (text or "").strip().splitlines()
        if not lines:
            raise PatientInputError(
                "Enter at least one visit: one line per visit, oldest first, codes separated by commas "
                "(for example 401.9, 250.00)."
            )
        visits = []
        for number, line in enumerate(lines, start=1):
            codes = [code.strip() for code in line.split(",") if code.strip()]
            if not codes:
                raise PatientInputError(
                    f"Visit {number} is empty: give each visit at least one code, or remove the blank line."
                )
            visits.append([self._known_key(code, number) for code in codes])
        if sum(map(len, visits)) > MAX_CODES:
            raise PatientInputError(f"Too many codes: at most {MAX_CODES} per patient.")
        return visits

    def _known_key(self, code: str, visit: int) -> str:
        try:
            key = normalize_code(code)
        except ValueError as error:
            raise PatientInputError(f"Visit {visit}: {error}") from None
        if key not in self.tokenizer:
            raise PatientInputError(
                f"Visit {visit}: {code!r} ({key}) is not one of the {len(self.tokenizer)} codes this model "
                "knows; use the code search to find one it knows."
            )
        return key

    # ------------------------------------------------------------------------------------ outputs

    def predict(self, text: str, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """`{"labels": [{"label", "name", "score"}...], "visit_attention": [...], "visits": [[key...]...]}`.

        Raises:
            PatientInputError: see `parse_visits`; or a `top_k` outside 1..`MAX_TOP_K`.
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int | float) or not 1 <= top_k <= MAX_TOP_K:
            raise PatientInputError(f"top-k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}.")
        visits = self.parse_visits(text)
        result = self.predictor(visits, top_k=int(top_k), return_visit_attention=True)
        return {**result, "visits": visits}

    def attention_table(self, visits: Sequence[Sequence[str]], attention: Sequence[float]) -> str:
        """A Markdown table: visit number, its attention weight alpha and its codes with descriptions."""
        rows = ["| visit | attention (alpha) | codes |", "|---:|---:|---|"]
        for number, (codes, alpha) in enumerate(zip(visits, attention, strict=True), start=1):
            described = "<br>".join(f"`{dotted(code)}` {_escape(describe_or_blank(code))}" for code in codes)
            rows.append(f"| {number} | {alpha:.3f} | {described} |")
        return "\n".join(rows)

    def search_codes(self, query: str, limit: int = SEARCH_RESULTS) -> list[list[str]]:
        """[[code, description]...] of the model's codes whose spelling or description contains every word
        of `query` (case-insensitive), codes that start with `query` first; at most `limit` rows."""
        words = (query or "").lower().split()
        if not words:
            return []
        prefix = words[0].replace(".", "")
        hits = [
            (not body.startswith(prefix), display, description)
            for display, body, description, haystack in self._search_index
            if all(word in haystack for word in words)
        ]
        return [[display, description] for _, display, description in sorted(hits)[:limit]]

    @cached_property
    def _search_index(self) -> list[tuple[str, str, str, str]]:
        """(dotted code, lower-case dotless body, description, lower-case text to search) per code."""
        index = []
        for key in self.tokenizer.codes:
            display, description = dotted(key), describe_or_blank(key)
            body = key.split(":", 1)[1].lower()
            index.append((display, body, description, f"{display} {body} {key} {description}".lower()))
        return index

    def headline(self) -> str:
        """Markdown: the card's headline test metrics beside the best heuristic baseline's, or a note."""
        test = self.metrics.get("test")
        if not test:
            return "This model has no `metrics.json`: it was not evaluated."
        keys = [k for k in HEADLINE_METRICS if k in test]
        rows = [
            "| | " + " | ".join(keys) + " |",
            "|---|" + "---:|" * len(keys),
            "| this model (test split) | " + " | ".join(f"{test[k]:.4f}" for k in keys) + " |",
        ]
        best = self.metrics.get("best_baseline")
        baseline = self.metrics.get("baselines", {}).get(best, {}).get("test")
        if baseline:
            cells = " | ".join(f"{baseline[k]:.4f}" for k in keys)
            rows.append(f"| heuristic baseline: {best} (best on validation) | {cells} |")
        samples = test.get("num_samples")
        note = f"{samples} test samples. " if samples else ""
        note += "P@k: visit-level precision at k; Acc@k: code-level accuracy at k (as in the model card)."
        return "\n".join(rows) + f"\n\n{note}"

    def examples(self, count: int = NUM_EXAMPLES, seed: int = 0) -> list[str]:
        """Up to `count` patients of the built-in synthetic cohort (no real patient) as visits text: those
        with the fewest visits (2 or more) whose codes the model knows, first `EXAMPLE_CODES_PER_VISIT`
        codes of each visit."""
        patients = [
            [visit[:EXAMPLE_CODES_PER_VISIT] for visit in visits]
            for visits in synthetic_patients(seed)
            if len(visits) >= 2 and all(code in self.tokenizer for visit in visits for code in visit)
        ]
        patients.sort(key=len)
        return ["\n".join(", ".join(dotted(code) for code in visit) for visit in p) for p in patients[:count]]

    # ------------------------------------------------------------------------------------ the page

    def answer(self, text: str, top_k: int = DEFAULT_TOP_K):
        """What `/predict` returns: ({name: probability}, attention table, figure, JSON result). Bad input
        raises `gr.Error` with one message (no traceback is printed: it would log the input)."""
        try:
            result = self.predict(text, top_k)
        except PatientInputError as error:
            # The modal renders HTML: the user's text is escaped. No traceback: it would log the input.
            raise gr.Error(
                html.escape(str(error), quote=False), duration=None, print_exception=False
            ) from None
        kind = LABEL_KINDS.get(self.predictor.model.config.label_space, "label")
        labels = {
            f"{top['name'] or top['label']} ({kind} {top['label']})": top["score"] for top in result["labels"]
        }
        shown = [(top["name"] or top["label"], top["score"]) for top in result["labels"]]
        visits = [[dotted(code) for code in visit] for visit in result["visits"]]
        figure = visit_attention_figure(
            result["visit_attention"], result["visits"], "Attention over the visits", predictions=shown
        )
        plt.close(figure)  # gradio renders the figure object; pyplot need not keep it
        table = self.attention_table(result["visits"], result["visit_attention"])
        raw = {"labels": result["labels"], "visit_attention": result["visit_attention"], "visits": visits}
        return labels, table, figure, raw

    def build(self) -> gr.Blocks:
        """The page (a `gr.Blocks`); `/predict` is its API endpoint."""
        self._search_index  # noqa: B018 - built now (seconds for 90k codes), not on the first keystroke
        with gr.Blocks(title=f"SHARK: {self.title}", analytics_enabled=False) as page:
            gr.Markdown(
                f"# SHARK next-visit diagnosis prediction\nModel: `{self.title}`. Enter a patient's visits; "
                "the model predicts the categories of the next visit. For research only, not for clinical "
                "decisions. Nothing you type is stored."
            )
            with gr.Accordion("Model card: headline test metrics", open=True):
                gr.Markdown(self.headline(), elem_classes="shark-table")
            with gr.Row():
                with gr.Column(scale=3):
                    visits = gr.Textbox(
                        label="Visits: one per line, oldest first; codes separated by commas",
                        placeholder=VISITS_PLACEHOLDER,
                        lines=6,
                        elem_id="visits",
                    )
                    top_k = gr.Slider(1, MAX_TOP_K, value=DEFAULT_TOP_K, step=1, label="top-k categories")
                    predict = gr.Button("Predict", variant="primary", elem_id="predict")
                    examples = self.examples()
                    if examples:
                        gr.Examples(
                            [[text] for text in examples],
                            inputs=[visits],
                            example_labels=[" | ".join(text.splitlines()) for text in examples],
                            label=EXAMPLES_LABEL,
                            cache_examples=False,
                        )
                with gr.Column(scale=2):
                    query = gr.Textbox(
                        label="Code search (code or words of its description)",
                        placeholder="e.g. hypertension, 428, diabetes",
                        elem_id="search",
                    )
                    results = gr.Dataframe(
                        headers=["code", "description"],
                        value=[],
                        interactive=False,
                        wrap=True,
                        column_widths=["22%", "78%"],
                        max_height=360,
                        label="Matching codes (click one to add it to the last visit)",
                        elem_id="search-results",
                    )
            with gr.Row():
                labels = gr.Label(label="Next visit: top CCS categories (probability)", elem_id="labels")
                table = gr.Markdown(elem_id="attention", elem_classes="shark-table")
            figure = gr.Plot(show_label=False, format="png")
            with gr.Accordion("Raw result (JSON)", open=False):
                raw = gr.JSON()
            outputs = [labels, table, figure, raw]
            predict.click(  # first clear the outputs: an error must not stand beside an earlier answer
                lambda: (None, "", None, None), outputs=outputs, queue=False, api_visibility="private"
            ).then(self.answer, inputs=[visits, top_k], outputs=outputs, api_name="predict")
            query.change(
                self.search_codes,
                inputs=[query],
                outputs=[results],
                api_visibility="private",
                trigger_mode="always_last",
            )
            results.select(_add_code, inputs=[visits, results], outputs=[visits], api_visibility="private")
        return page


def _add_code(text: str, rows, event: gr.SelectData) -> str:
    """`text` with the clicked result's code appended to its last visit."""
    code = rows.iloc[event.index[0], 0] if hasattr(rows, "iloc") else rows[event.index[0]][0]
    lines = (text or "").rstrip().splitlines()
    if not lines:
        return code
    lines[-1] = f"{lines[-1].rstrip().rstrip(',')}, {code}" if lines[-1].strip() else code
    return "\n".join(lines)


def describe_or_blank(code: str) -> str:
    try:
        return describe(code)
    except (KeyError, ValueError):
        return ""


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def read_metrics(model: str, revision: str | None = None) -> dict[str, Any]:
    """The `metrics.json` of a model folder or Hub repo; {} when it has none."""
    if is_local_path(model) or Path(model).exists():
        path = Path(model) / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(model, "metrics.json", revision=revision)
    except EntryNotFoundError:
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


def synthetic_patients(seed: int = 0, num_patients: int = 40) -> list[list[list[str]]]:
    """The visits of every patient of a small built-in synthetic cohort (`write_synthetic_cohort`, built
    with the mimic3 builder in a temporary folder that is deleted)."""
    from .data.cohort import build_cohort
    from .data.synthetic import write_synthetic_cohort

    with tempfile.TemporaryDirectory(prefix="shark-hf-app-") as tmp:
        root = write_synthetic_cohort(tmp, scale="mimic3", seed=seed, num_patients=num_patients)
        cohort = build_cohort("mimic3", root=root, seed=seed)
        return [visits for split in ("train", "validation", "test") for visits in cohort[split]["visits"]]


def build_app(model: str | os.PathLike, revision: str | None = None) -> gr.Blocks:
    """The page of a model folder or Hub repo id (see the module docstring)."""
    return SharkApp.load(model, revision).build()


def launch(
    page: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True
) -> gr.Blocks:
    """Serve `page` at http://host:port/ (a free port from 7860 when `port` is None); `block=False` returns
    once it serves (stop it with `page.close()`)."""
    page.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        show_error=False,
        quiet=not block,
        ssr_mode=False,
        theme=THEME,
        css=CSS,
        footer_links=["api"],
        run_history=False,  # else gradio keeps each call's inputs in the browser (and offers to upload them)
        enable_monitoring=False,
        mcp_server=False,
    )
    return page


__all__ = ["PatientInputError", "SharkApp", "build_app", "launch", "read_metrics"]
