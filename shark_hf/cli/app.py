"""`shark-hf app`: a trained model's web page (`shark_hf.app`), served on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils import TOKENIZER_SUBFOLDER
from .common import Command, check_model_folder, check_tokenizer_folder, is_local, positive


def _app_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="A trained model folder or Hub repo id (with tokenizer/, metrics.json).",
    )
    p.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub model (default: main).")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface).",
    )
    p.add_argument(
        "--port", type=positive, default=None, help="Port (default: the first free one from 7860)."
    )


def _app(args: argparse.Namespace) -> None:
    if is_local(args.model, "model"):
        check_model_folder(Path(args.model))
        check_tokenizer_folder(Path(args.model) / TOKENIZER_SUBFOLDER)
    from ..app import build_app, launch

    launch(build_app(args.model, args.revision), host=args.host, port=args.port)


COMMANDS: dict[str, Command] = {
    "app": (
        _app_args,
        _app,
        "Serve a trained model's web page: enter visits, see predictions, attention and the card's metrics.",
        (
            "shark-hf app --model demo_output/shark",
            "shark-hf app --model my-org/shark-mimic3 --port 8080 --host 0.0.0.0",
        ),
    ),
}
