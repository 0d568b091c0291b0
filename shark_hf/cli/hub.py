"""`shark-hf push`: a trained model and its tokenizer to the Hub, as a model repository or a Gradio Space."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils import TOKENIZER_SUBFOLDER
from .common import Command, UserError, check_model_folder, check_tokenizer_folder


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="A trained model folder (with metrics.json).")
    p.add_argument(
        "--tokenizer", type=Path, default=None, help="Tokenizer folder (default: MODEL/tokenizer)."
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo", help="Hub model repository, ORG/NAME.")
    where.add_argument(
        "--space",
        help="Hub Space, ORG/NAME: the web app (shark_hf.app) with the model under model/. A public Space "
        "publishes the weights: mind the training data's terms (--private).",
    )
    p.add_argument("--private", action="store_true", help="Create the repository as private.")
    p.add_argument("--revision", default=None, help="Branch to push to (created from main if missing).")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in token or HF_TOKEN).")
    p.add_argument(
        "--license", default=None, help="Licence of the weights (default: the MIMIC data-use terms)."
    )
    p.add_argument("--no-gating", action="store_true", help="Do not ask users to accept terms before access.")
    p.add_argument(
        "--space-requirement",
        default=None,
        help="The Space's requirements.txt line for shark-hf (default: shark-hf==<this version>; e.g. a "
        "wheel URL or 'shark-hf @ git+https://...').",
    )


def _push(args: argparse.Namespace) -> None:
    from ..hub import push_model_and_tokenizer, push_space

    check_model_folder(args.model)
    check_tokenizer_folder(args.tokenizer or args.model / TOKENIZER_SUBFOLDER)
    if args.space:
        if args.revision or args.no_gating:
            raise UserError("--revision and --no-gating apply to --repo only (a Space runs its main branch)")
        url = push_space(
            args.model,
            args.space,
            tokenizer_dir=args.tokenizer,
            private=args.private,
            token=args.token,
            license=args.license,
            requirement=args.space_requirement,
        )
        print(f"Pushed {args.model} as a Space (app.py, requirements.txt, README.md, model/) -> {url}")
        return
    if args.space_requirement:
        raise UserError("--space-requirement applies to --space only")
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
        "Push a trained model and its tokenizer to the Hub with model cards, or as a Gradio Space.",
        (
            "shark-hf push --model runs/shark --repo my-org/shark-mimic3 --private",
            "shark-hf push --model runs/shark --repo my-org/shark-mimic3 --revision v2 --license other",
            "shark-hf push --model runs/shark --space my-org/shark-mimic3-app --private",
        ),
    ),
}
