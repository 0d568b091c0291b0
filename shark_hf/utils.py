"""Small helpers and names shared across shark-hf (in the spirit of `transformers.utils`).

Standard library only: importing this module costs nothing and pulls in no framework.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TOKENIZER_SUBFOLDER = "tokenizer"
"""Subfolder of a model folder or Hub repository that holds its `SharkTokenizer`."""

UNKNOWN_POLICIES = ("error", "skip", "embed")
"""What a tokenizer does with codes it does not know (`SharkTokenizer.__call__`'s `unknown`, the CLI's
`--unknown`): raise a KeyError listing them, drop them, or embed them."""

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
"""The file that marks a `SharkTokenizer` folder (`tokenization_shark.CONFIG_NAME`)."""


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call `write(tmp)` on a fresh hidden path in `path`'s folder, then move it over `path` in one step.

    Readers never see a partial file; on any failure the temporary file is removed and `path` is unchanged.
    The folder is created if missing. The file gets the mode of any new file (0o666 less the umask), also
    where `write` creates it private (safetensors' `save_file` writes 0o600): a shared folder stays readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so same filesystem: os.replace is atomic.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def preview(items: Sequence[Any], limit: int = 20) -> str:
    """`a, b, ...` with at most `limit` items, then how many there are in all: `a, b, ... (57 in all)`."""
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def is_local_path(name: str | os.PathLike) -> bool:
    """Whether `name` can only be a filesystem path, never a Hub repo id: it exists, or it starts with
    `.`, `/` or `~` (which no repo id does). Callers add their own rules on the shape of a repo id."""
    return os.path.exists(name) or str(name).startswith((".", "/", "~"))
