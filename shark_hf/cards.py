"""Render the Jinja templates of `hub_cards/` into `huggingface_hub.ModelCard`s.

A template is a markdown file whose YAML front matter is the placeholder `{{ card_data }}`; the body may use
any key of the card data and of the context. Rendering is strict: a placeholder the context does not fill is
an error, never a silently empty line in a published card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from huggingface_hub import ModelCard, ModelCardData

# A wheel ships hub_cards/ as the package data `shark_hf/hub_cards/`; a source checkout has it next to shark_hf/.
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
