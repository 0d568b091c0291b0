"""The texts embedded for each code: its description, its place in the hierarchy, or its synonyms."""

from __future__ import annotations

from collections.abc import Iterable

from shark_hf.codes import ancestors, describe, label_names, normalize_code, to_label

TEXT_STRATEGIES = ("description", "hierarchy", "synonyms")


def code_texts(codes: Iterable[str], text: str = "description") -> list[list[str]]:
    """The texts embedded for each code under a text strategy.

    Strategies:
        - `description`: the long description, `["Unspecified essential hypertension"]` for ICD9CM:4019.
        - `hierarchy`: the chapter, section and category descriptions, then the code's long description,
          joined by "; " into one text (hierarchy knowledge injected into the text, as KEPT does). An
          ancestor whose description repeats the one before it is left out.
        - `synonyms`: several names of the code: the long description, the short description, its category
          (3-character) description and its single-level CCS category name, duplicates removed. Their
          vectors are mean-pooled into the code's vector (MSMN represents a code by its synonyms).

    Args:
        codes: canonical keys or any spelling `shark_hf.codes.normalize_code` accepts.
        text: one of `TEXT_STRATEGIES`.

    Returns:
        one list of texts per code (a single text except for `synonyms`).
    """
    if text not in TEXT_STRATEGIES:
        raise ValueError(f"unknown text strategy {text!r}; expected one of {TEXT_STRATEGIES}")
    codes = [normalize_code(code) for code in codes]
    if text == "description":
        return [[describe(code, "long")] for code in codes]
    if text == "hierarchy":
        return [[_hierarchy_text(code)] for code in codes]
    ccs_names = label_names("ccs")
    return [_synonyms(code, ccs_names) for code in codes]


def _hierarchy_text(code: str) -> str:
    parts: list[str] = []
    for description in [a.description for a in ancestors(code)] + [describe(code, "long")]:
        if not parts or description != parts[-1]:
            parts.append(description)
    return "; ".join(parts)


def _synonyms(code: str, ccs_names: dict[str, str]) -> list[str]:
    names = [describe(code, "long"), describe(code, "short")]
    names += [a.description for a in ancestors(code) if a.level == "category"]
    try:
        names.append(ccs_names[to_label(code, "ccs")])
    except KeyError:
        pass  # a code without a CCS category keeps its other names
    return list(dict.fromkeys(name for name in names if name))
