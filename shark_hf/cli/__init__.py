"""`shark-hf`: the command line of shark-hf.

Each subcommand is a thin layer over the Python API; `shark-hf <command> --help` shows its options and
examples. Exit codes: 0 on success; 1 for a user error (missing file, malformed JSON, unknown code, a folder
that is not a cohort / tokenizer / model, ...), reported as ONE line `shark-hf <command>: error: ...` on
stderr without a traceback (`-v` shows it); 2 for usage errors (argparse). `train` runs a single-process
training in this process (as `python training/train.py` does) and hands over to `accelerate launch` for
`--num-processes N` or `--accelerate-config`, returning the launch's exit code. Heavy modules are
imported inside the commands: the CLI adds nothing to the import of the `shark_hf` package itself.

One module per command group: `data` (build-dataset, embed), `tokenizer` (fit-tokenizer, inspect-tokenizer),
`model` (train, evaluate, predict), `federate`, `app`, `hub` (push), `demo`; `common` holds what they share.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from . import app, data, demo, federate, hub, model, tokenizer
from .common import USER_ERRORS, Command, UserError, examples_epilog

# Help order: the pipeline's order, from codes to a published model.
ORDER = (
    "embed",
    "fit-tokenizer",
    "build-dataset",
    "train",
    "evaluate",
    "predict",
    "federate",
    "app",
    "inspect-tokenizer",
    "push",
    "demo",
)
_GROUPS = {
    **data.COMMANDS,
    **tokenizer.COMMANDS,
    **model.COMMANDS,
    **federate.COMMANDS,
    **app.COMMANDS,
    **hub.COMMANDS,
    **demo.COMMANDS,
}
COMMANDS: dict[str, Command] = {name: _GROUPS[name] for name in ORDER}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="Log progress; show tracebacks.",
    )
    parser = argparse.ArgumentParser(
        prog="shark-hf",
        description="SHARK semantic IDs for medical codes: embed, tokenize, build, train, predict, share.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
        epilog=examples_epilog(
            "shark-hf build-dataset mimic3 --root /data/mimic-iii-1.4 --out cohort/",
            "shark-hf embed --cohort cohort/ --out embeddings.safetensors",
            "shark-hf fit-tokenizer --embeddings embeddings.safetensors --out tokenizer/",
            "shark-hf train --cohort cohort/ --tokenizer tokenizer/ --output_dir runs/shark",
            "shark-hf predict --model runs/shark --input patients.json --top-k 5",
            "shark-hf demo --out demo_output",
        ),
    )
    parser.add_argument("--version", action="version", version=f"shark-hf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (build, run, summary, examples) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=examples_epilog(*examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
            add_help=name != "train",
            allow_abbrev=name != "train",  # train passes unknown flags on: never guess abbreviations
        )
        build(sub)
        sub.set_defaults(run=run, subparser=sub)
    return parser


MAX_MESSAGE = 1000  # characters of an error message shown (a list of 500 unknown codes is not read)


def _one_line(error: BaseException, command: str = "") -> str:
    """The error's message on one line (a plain KeyError's message without the quotes str() adds), in the
    words of `command`'s flags (`cli_wording`)."""
    plain_key_error = isinstance(error, KeyError) and type(error).__str__ is KeyError.__str__
    text = " ".join((str(error.args[0]) if plain_key_error and error.args else str(error)).split())
    text = cli_wording(text, command)
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE]} ... ({len(text) - MAX_MESSAGE} more characters)"
    return text or type(error).__name__


# The library's hints name Python keywords; a command-line user gets the flags that do the same.
_MISMATCH_HINT = (
    ", or pass allow_mismatch=True (allow_tokenizer_mismatch=True in from_pretrained) if the ids are known "
    "to be compatible"
)
_CLI_WORDING = {
    "train": {_MISMATCH_HINT: ", or pass --allow_tokenizer_mismatch if the ids are known to be compatible"},
    "evaluate": {_MISMATCH_HINT: " (leave out --tokenizer)"},
    "predict": {_MISMATCH_HINT: " (leave out --tokenizer)"},
}
_UNKNOWN_WORDING = {
    "add it with add_codes(embeddings), or encode batches of a semantic tokenizer with unknown='embed'": (
        "--unknown embed encodes it with a semantic tokenizer, --unknown skip drops it"
    ),
    "add_codes or unknown='embed'": "--unknown embed",
    "unknown='skip'": "--unknown skip",
    "unknown='embed'": "--unknown embed",
}


def cli_wording(text: str, command: str) -> str:
    """`text` with the library's keyword hints replaced by the flags of `command` (train, evaluate and
    predict have `--unknown`; train has `--allow_tokenizer_mismatch`)."""
    wording = dict(_CLI_WORDING.get(command, {}))
    if command in ("train", "evaluate", "predict"):
        wording.update(_UNKNOWN_WORDING)
    for library, cli in wording.items():
        text = text.replace(library, cli)
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of `shark-hf`; returns the exit code."""
    args, rest = _parser().parse_known_args(argv)
    if rest and args.command != "train":
        args.subparser.error(f"unrecognized arguments: {' '.join(rest)}")
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        format="%(levelname)s %(name)s: %(message)s", level=logging.INFO if verbose else logging.WARNING
    )
    try:
        return (args.run(args, rest) if args.command == "train" else args.run(args)) or 0
    except USER_ERRORS as error:
        if verbose:
            raise
        print(f"shark-hf {args.command}: error: {_one_line(error, args.command)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shark-hf {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "MAX_MESSAGE", "UserError", "main"]
