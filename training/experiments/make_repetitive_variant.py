"""A high-repetition variant of a MIMIC-III-format cohort, to test the models where "repeat the last visit"
is strong (independent MIMIC-III-format cohorts reach last-visit P@10 69-70; the built-in one 41).

Each admission of a patient (in ADMITTIME order) keeps each code of the previous, already transformed,
admission with probability KEEP, and each of its own codes with probability NEW (a visit left empty keeps its
first own code). ADMISSIONS.csv is copied unchanged. Seeded: the same arguments give the same files.

    python training/experiments/make_repetitive_variant.py demo_output/raw_mimic3 /tmp/rep/raw_a \
        --keep 0.85 --new 0.3 --seed 1
    shark-hf build-dataset mimic3 --root /tmp/rep/raw_a --out /tmp/rep/cohort_a
    shark-hf train --cohort /tmp/rep/cohort_a --output_dir /tmp/rep/model_a
    shark-hf evaluate --model /tmp/rep/model_a --cohort /tmp/rep/cohort_a --baselines
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def repetitive_diagnoses(
    admissions: pd.DataFrame, diagnoses: pd.DataFrame, keep: float, new: float, seed: int
):
    """DIAGNOSES_ICD rows of the variant (columns ROW_ID, SUBJECT_ID, HADM_ID, SEQ_NUM, ICD9_CODE)."""
    rng = np.random.default_rng(seed)
    own_codes = diagnoses.groupby("HADM_ID")["ICD9_CODE"].apply(list).to_dict()
    rows = []
    for subject, group in admissions.sort_values(["SUBJECT_ID", "ADMITTIME"]).groupby("SUBJECT_ID"):
        previous: list[str] = []
        for hadm in group["HADM_ID"]:
            own = own_codes.get(hadm, [])
            kept = [code for code in previous if rng.random() < keep]
            fresh = [code for code in own if rng.random() < new and code not in kept]
            visit = list(dict.fromkeys(kept + fresh)) or own[:1]
            rows += [(subject, hadm, seq + 1, code) for seq, code in enumerate(visit)]
            previous = visit
    out = pd.DataFrame(rows, columns=["SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"])
    out.insert(0, "ROW_ID", range(1, len(out) + 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="Folder with ADMISSIONS.csv and DIAGNOSES_ICD.csv.")
    parser.add_argument("out", type=Path, help="Folder for the variant's two CSVs.")
    parser.add_argument("--keep", type=float, default=0.85, help="P(a code of the previous visit recurs).")
    parser.add_argument("--new", type=float, default=0.3, help="P(one of the visit's own codes is kept).")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    admissions = pd.read_csv(args.source / "ADMISSIONS.csv")
    diagnoses = pd.read_csv(args.source / "DIAGNOSES_ICD.csv", dtype={"ICD9_CODE": str})
    args.out.mkdir(parents=True, exist_ok=True)
    admissions.to_csv(args.out / "ADMISSIONS.csv", index=False)
    variant = repetitive_diagnoses(admissions, diagnoses, args.keep, args.new, args.seed)
    variant.to_csv(args.out / "DIAGNOSES_ICD.csv", index=False)
    print(f"{len(variant)} diagnosis rows -> {args.out}")


if __name__ == "__main__":
    main()
