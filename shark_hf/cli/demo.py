"""`shark-hf demo`: the whole pipeline on the built-in cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import Command, positive


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="Output folder (demo_output).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the cohort, tokenizers and training.")
    p.add_argument("--epochs", type=positive, default=30, help="Epoch cap of each training (default: 30).")


def _demo(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    run_demo(args.out, seed=args.seed, num_epochs=args.epochs)


COMMANDS: dict[str, Command] = {
    "demo": (
        _demo_args,
        _demo,
        "Run the whole pipeline on the built-in cohort (what `make demo` runs).",
        ("shark-hf demo --out demo_output",),
    ),
}
