"""What the commands of `shark-hf` share: the user error, argparse types, reading inputs and checking
folders, printing results. Heavy modules are imported inside the functions that need them."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..utils import TOKENIZER_CONFIG_NAME, TOKENIZER_SUBFOLDER, atomic_write_text, is_local_path

logger = logging.getLogger("shark_hf")

COHORT_MARKER = "dataset_dict.json"
TOKENIZER_MARKER = TOKENIZER_CONFIG_NAME
BUILDERS = ("mimic3", "mimic4", "meds")

Command = tuple[Callable, Callable, str, tuple[str, ...]]
"""A subcommand: (add its arguments to a parser, run it, one-line summary, usage examples)."""


class UserError(Exception):
    """An error in what the user asked for, reported as one line without a traceback."""


# Errors of the library that describe bad input: missing or unreadable files (OSError, which includes the Hub
# client's HTTP errors), malformed content (ValueError, json.JSONDecodeError) and unknown codes (KeyError).
USER_ERRORS = (UserError, OSError, ValueError, KeyError)


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def examples_epilog(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_code_source(group: argparse._MutuallyExclusiveGroup) -> None:
    """The options naming a set of codes: a codes file, a cohort folder or a whole code system."""
    group.add_argument(
        "--codes", type=Path, help="Text file with one code per line (any spelling; # comments)."
    )
    group.add_argument(
        "--cohort", type=Path, help="A cohort folder (build-dataset): every code in its visits."
    )
    group.add_argument(
        "--system", choices=["ICD9CM", "ICD10CM"], help="Every billable code of a code system."
    )


def read_codes(args: argparse.Namespace) -> list[str]:
    """The codes named by `--codes`, `--cohort` or `--system`."""
    if args.system:
        from ..codes import all_codes

        return all_codes(args.system)
    if args.cohort:
        from ..codes import cohort_codes

        return cohort_codes(load_cohort(args.cohort))
    lines = (line.strip() for line in read_text(args.codes).splitlines())
    codes = [line for line in lines if line and not line.startswith("#")]
    if not codes:
        raise UserError(f"{args.codes} lists no codes")
    return codes


def read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return path.read_text(encoding="utf-8")


def emit(data, out: Path | None) -> None:
    """Print `data` as JSON, or write it to `out` atomically."""
    text = json.dumps(data, indent=2) + "\n"
    if out is None:
        print(text, end="")
        return
    atomic_write_text(out, text)
    print(f"-> {out}")


def is_local(name: str, what: str) -> bool:
    """Whether `name` is a local folder (True) or a Hub repo id (False); a missing path is an error."""
    if Path(name).exists():
        return True
    if is_local_path(name) or name.endswith("/") or name.count("/") != 1:
        raise UserError(f"{name}: no such {what} folder")
    return False


def load_cohort(path: Path, load: bool = True):
    if not path.is_dir():
        raise UserError(f"{path}: no such cohort folder")
    if not (path / COHORT_MARKER).is_file():
        raise UserError(f"{path} is not a cohort folder (no {COHORT_MARKER}); make one with build-dataset")
    if not load:
        return None
    from datasets import load_from_disk

    return load_from_disk(str(path))


def check_tokenizer_folder(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"{path}: no such tokenizer folder")
    if not (path / TOKENIZER_MARKER).is_file():
        raise UserError(
            f"{path} is not a tokenizer folder (no {TOKENIZER_MARKER}); make one with fit-tokenizer"
        )


def check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise UserError(f"{path}: no such model folder")
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{path} is not a model folder (no config.json); train one with `shark-hf train`")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{config} is not a JSON object") from None
    if model_type != "shark":
        raise UserError(f"{path} is not a SHARK model (config.json model_type is {model_type!r})")


def load_tokenizer(model: str, tokenizer: str | None):
    """The tokenizer for `model` (`tokenizer`, else the model's `tokenizer/`), checked against the model's
    config; the weights are loaded later by `load_weights`, once the inputs are known to be valid."""
    from ..configuration_shark import SharkConfig
    from ..tokenization_shark import SharkTokenizer

    subfolder = None
    if is_local(model, "model"):
        check_model_folder(Path(model))
        if tokenizer is None:
            check_tokenizer_folder(Path(model) / TOKENIZER_SUBFOLDER)
    elif tokenizer is None:
        subfolder = TOKENIZER_SUBFOLDER
    if tokenizer is not None and is_local(tokenizer, "tokenizer"):
        check_tokenizer_folder(Path(tokenizer))
    source = tokenizer or (model if subfolder else str(Path(model) / TOKENIZER_SUBFOLDER))
    shark_tokenizer = SharkTokenizer.from_pretrained(source, subfolder=subfolder)
    SharkConfig.from_pretrained(model).check_tokenizer(shark_tokenizer)
    return shark_tokenizer


def load_weights(model: str):
    from ..modeling_shark import SharkForDiagnosisPrediction

    return SharkForDiagnosisPrediction.from_pretrained(model).eval()
