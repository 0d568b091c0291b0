"""Built-in synthetic cohort: MIMIC-III- or MIMIC-IV-format CSVs with the shape of the paper's Table 1.

`write_synthetic_cohort(out_dir, scale="mimic3")` writes the files the real cohort builders read, and
`cohort_statistics(root)` reads them back (through the builders' MIMIC reader) and measures what Table 1
reports; `shark-hf build-dataset synthetic --out DIR --stats` does both from the command line.

Patients, visits and the maximum visits per patient of `SCALES[scale]` are matched exactly; unique codes
and codes per visit are calibrated in expectation and land within a few percent of their targets. On top of
the cohort, 10% as many single-visit patients are written, which the builders' ">= 2 visits" rule must
filter out. The same seed gives byte-identical files.

- `targets`: `CohortShape` and `SCALES`, the Table 1 targets per scale.
- `world`: the clinical world (`CLUSTERS`, `CHRONIC`, `ACUTE`) and its compilation against the code system.
- `simulator`: the generative story: visit counts and dates, conditions, and the long tail.
- `writer`: ids, MIMIC row order and quoting, and `write_synthetic_cohort`.
- `statistics`: `cohort_statistics` and `format_statistics`.
"""

from shark_hf.data.synthetic.statistics import cohort_statistics, format_statistics
from shark_hf.data.synthetic.targets import SCALES, CohortShape
from shark_hf.data.synthetic.world import ACUTE, CHRONIC, CLUSTERS, Acute, Chronic
from shark_hf.data.synthetic.writer import write_synthetic_cohort

__all__ = [
    "ACUTE",
    "CHRONIC",
    "CLUSTERS",
    "SCALES",
    "Acute",
    "Chronic",
    "CohortShape",
    "cohort_statistics",
    "format_statistics",
    "write_synthetic_cohort",
]
