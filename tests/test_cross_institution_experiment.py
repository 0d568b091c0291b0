"""training/experiments/cross_institution_experiment.py end to end at tiny scale (1 seed, 1 epoch): the
hospitals share no patient, every row is evaluated on B's test split, and the section it splices into a
RESULTS.md has every row and column."""

import json
import os
import subprocess
import sys
from pathlib import Path

from datasets import load_from_disk

from shark_hf.codes import cohort_codes

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "experiments" / "cross_institution_experiment.py"
HEADER = (
    "| row | tokenizer | P@10 | P@20 | Acc@10 | Acc@20 | P@10 − best heuristic | lr | best epoch / epochs |"
)
MODEL_ROWS = [
    (row, tokenizer)
    for row in ("B from scratch", "B fine-tuned from A", "A zero-shot on B", "pooled A+B")
    for tokenizer in ("universal", "cohort-fitted")
]
HEURISTICS = ("Most frequent labels", "Last visit's labels", "History frequency")


def test_cross_institution_experiment(tmp_path):
    out, results_md = tmp_path / "out", tmp_path / "RESULTS.md"
    results_md.write_text(
        "# Results\n\n<!-- cross-institution:begin -->\nstale\n<!-- cross-institution:end -->\n\n## Other\n"
    )
    command = [sys.executable, str(SCRIPT), "--out", str(out), "--results-md", str(results_md)]
    command += ["--num-patients", "150", "--patients-b", "20", "--seeds", "0", "--epochs", "1"]
    command += ["--learning-rates", "0.01", "--num-levels", "2", "--codebook-size", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    cohorts = {name: load_from_disk(str(out / "cohorts" / name)) for name in ("A", "B", "pooled")}
    patients = {
        name: {split: set(rows["patient_id"]) for split, rows in cohort.items()}
        for name, cohort in cohorts.items()
    }
    every_a = set().union(*patients["A"].values())
    for split in ("train", "validation", "test"):
        assert patients["B"][split] and not patients["B"][split] & every_a
    assert sum(map(len, patients["B"].values())) == 20
    b = patients["B"]
    assert not (b["train"] & b["validation"] or b["train"] & b["test"] or b["validation"] & b["test"])
    # Pooled: A's and B's training splits; B's validation and test splits, row for row.
    assert list(cohorts["pooled"]["train"]["sample_id"]) == (
        list(cohorts["A"]["train"]["sample_id"]) + list(cohorts["B"]["train"]["sample_id"])
    )
    for split in ("validation", "test"):
        assert list(cohorts["pooled"][split]["sample_id"]) == list(cohorts["B"][split]["sample_id"])
    # A codes ICD-9-CM only, B ICD-10-CM only.
    assert {code.split(":")[0] for code in cohort_codes(cohorts["A"])} == {"ICD9CM"}
    assert {code.split(":")[0] for code in cohort_codes(cohorts["B"])} == {"ICD10CM"}

    summary = json.loads((out / "results.json").read_text())
    b_test = len(cohorts["B"]["test"])
    for kind in ("universal", "cohort"):
        for row in ("scratch", "finetuned", "zeroshot", "pooled"):
            (run,) = summary["runs"][kind][row]
            assert run["test"]["num_samples"] == b_test  # every row on B's test split
            assert (run["best_epoch"], run["epochs"]) == (1, 1)
        assert summary["runs"][kind]["A on A"][0]["test"]["num_samples"] == len(cohorts["A"]["test"])
    assert summary["cohorts"]["systems"] == {"A": ["ICD9CM"], "B": ["ICD10CM"]}

    section = (out / "RESULTS.md").read_text()
    lines = section.splitlines()
    assert lines[0] == "<!-- cross-institution:begin -->" and lines[-1] == "<!-- cross-institution:end -->"
    assert lines[1] == "## Cross-institution transfer (issue 12)"
    start = lines.index(HEADER)
    columns = HEADER.count("|") - 1
    table = [line for line in lines[start + 2 :] if line.startswith("| ")]
    assert all(line.count("|") - 1 == columns for line in table)
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    assert [tuple(row[:2]) for row in cells[: len(MODEL_ROWS)]] == MODEL_ROWS
    assert [row[0].startswith(HEURISTICS) for row in cells[len(MODEL_ROWS) :]] == [True] * len(HEURISTICS)
    assert sum("(best on validation)" in row[0] for row in cells) == 1
    assert "Runs whose best epoch is the cap (1): 8 of 8" in section
    assert "- B fine-tuned from A − B from scratch (universal): " in section
    assert "- universal − cohort-fitted, pooled A+B: " in section
    assert (
        "- B fine-tuned from A against B from scratch: universal: one seed, no interval, cohort-fitted: one "
        "seed, no interval." in section
    )

    # Spliced into RESULTS.md: the stale section replaced, the rest kept.
    spliced = results_md.read_text()
    assert "stale" not in spliced and spliced.count("<!-- cross-institution:begin -->") == 1
    assert spliced.startswith("# Results\n\n## Other\n") and spliced.endswith(section)
