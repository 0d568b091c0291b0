"""Benchmark: epochs and seconds to the best validation P@10 on the built-in MIMIC-III-scale cohort, under the
old training defaults (AdamW lr 1e-3, constant, paper head) and the new ones (lr 1e-2, 5 % linear warmup then
cosine decay to 0 at --num_epochs, repeat head), plus the new schedule with the paper head and the old
schedule with the repeat head, so that the schedule and the head are measured apart.

Each setting trains with `shark_hf.training.train` (cap `--epochs`, patience 5, batch 64, seed 0, one SID
tokenizer, L=4, K=128). Printed per setting: best epoch, epochs run, whether the best epoch is the cap,
seconds of training to the best epoch (training seconds x best epoch / epochs run: epochs take about the same
time), total training seconds, best validation P@10 and its test P@10; then the ratios new / old.

    OMP_NUM_THREADS=1 python benchmarks/bench_convergence.py --out /tmp/bench_convergence
"""

import argparse
import logging
import os
import platform
import tempfile
from pathlib import Path

import torch

from shark_hf.data.cohort import build_cohort
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.embeddings import embed_codes
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import TrainingArguments, train

OLD = {"learning_rate": 1e-3, "lr_scheduler_type": "constant", "warmup_ratio": 0.0}
NEW = {}  # the TrainingArguments defaults
SETTINGS = {
    "old defaults (lr 1e-3 constant, paper head)": {**OLD, "repeat_head": False},
    "new schedule, paper head": {**NEW, "repeat_head": False},
    "old schedule, repeat head": {**OLD, "repeat_head": True},
    "new defaults (lr 1e-2 cosine, repeat head)": {**NEW, "repeat_head": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_convergence_"))
    cohort_dir, tokenizer_dir = out / "cohort", out / "tokenizer"
    if not (cohort_dir / "dataset_dict.json").is_file():
        build_cohort("mimic3", root=write_synthetic_cohort(out / "raw", scale="mimic3", seed=0)).save_to_disk(
            str(cohort_dir)
        )
    if not tokenizer_dir.is_dir():
        from datasets import load_from_disk

        cohort = load_from_disk(str(cohort_dir))
        codes = sorted({c for s in cohort.values() for visits in s["visits"] for v in visits for c in v})
        SharkTokenizer.fit(embed_codes(codes, text="description"), 4, 128, seed=0).save_pretrained(
            tokenizer_dir
        )
    print(
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.2f}; "
        f"cap {args.epochs} epochs, patience 5, seed {args.seed}"
    )
    columns = ("best", "run", "cap?", "s->best", "s total", "val P@10", "test P@10")
    print(f"{'setting':<46} " + " ".join(f"{c:>9}" for c in columns))
    rows = {}
    for name, options in SETTINGS.items():
        result = train(
            TrainingArguments(
                output_dir=str(out / "runs" / name.split(" (")[0].replace(" ", "_").replace(",", "")),
                cohort=str(cohort_dir),
                tokenizer=str(tokenizer_dir),
                num_epochs=args.epochs,
                seed=args.seed,
                overwrite_output_dir=True,  # a rerun of the benchmark replaces its runs
                **options,
            )
        )
        to_best = result["train_seconds"] * result["best_epoch"] / result["epochs"]
        rows[name] = (result["best_epoch"], to_best)
        print(
            f"{name:<46} {result['best_epoch']:>9} {result['epochs']:>9} {result['best_epoch_at_cap']!s:>9} "
            f"{to_best:>9.1f} {result['train_seconds']:>9.1f} {100 * result['validation']['P@10']:>9.2f} "
            f"{100 * result['test']['P@10']:>9.2f}",
            flush=True,
        )
    (old_epoch, old_s), (new_epoch, new_s) = rows[next(iter(SETTINGS))], rows[list(SETTINGS)[-1]]
    print(
        f"new / old defaults: epochs to best {new_epoch / old_epoch:.2f}x, "
        f"seconds to best {new_s / old_s:.2f}x"
    )


if __name__ == "__main__":
    main()
