"""`shark-hf push`: a trained model and its tokenizer to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils import TOKENIZER_SUBFOLDER
from .common import Command, check_model_folder, check_tokenizer_folder


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="A trained model folder (with metrics.json).")
    p.add_argument(
        "--tokenizer", type=Path, default=None, help="Tokenizer folder (default: MODEL/tokenizer)."
    )
    p.add_argument("--repo", required=True, help="Hub repository, ORG/NAME.")
    p.add_argument("--private", action="store_true", help="Create the repository as private.")
    p.add_argument("--revision", default=None, help="Branch to push to (created from main if missing).")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in token or HF_TOKEN).")
    p.add_argument(
        "--license", default=None, help="Licence of the weights (default: the MIMIC data-use terms)."
    )
    p.add_argument("--no-gating", action="store_true", help="Do not ask users to accept terms before access.")


def _push(args: argparse.Namespace) -> None:
    from ..hub import push_model_and_tokenizer

    check_model_folder(args.model)
    check_tokenizer_folder(args.tokenizer or args.model / TOKENIZER_SUBFOLDER)
    url = push_model_and_tokenizer(
        args.model,
        args.repo,
        tokenizer_dir=args.tokenizer,
        private=args.private,
        revision=args.revision,
        token=args.token,
        license=args.license,
        gated=not args.no_gating,
    )
    print(f"Pushed {args.model} (model, tokenizer/, README.md) -> {url}")


COMMANDS: dict[str, Command] = {
    "push": (
        _push_args,
        _push,
        "Push a trained model and its tokenizer to the Hub with model cards.",
        (
            "shark-hf push --model runs/shark --repo my-org/shark-mimic3 --private",
            "shark-hf push --model runs/shark --repo my-org/shark-mimic3 --revision v2 --license other",
        ),
    ),
}
