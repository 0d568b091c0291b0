"""The output folder of a training run: refuse one that holds another run, and lock it while training.

Standard library only, so that `shark-hf train` can check the folder before any training code is loaded.

- `check_output_dir`: a folder holding a previous run (`RUN_MARKERS`) is refused unless the run resumes from
  a checkpoint or `--overwrite_output_dir` is given; the folder of `--init_from` is always refused (training
  would overwrite the model it starts from).
- `OutputDirLock`: `<output_dir>/.shark-train.lock`, created exclusively and holding the pid of the process
  that trains; a second training into the same folder fails with one line naming the folder and that pid.
  A lock whose process is gone (a killed run, on this machine) is taken over with a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_NAME = ".shark-train.lock"
RUN_MARKERS = ("config.json", "metrics.json", "log.jsonl", "checkpoints")
"""What a training run leaves in its output folder: any of them marks the folder as used."""


def check_output_dir(
    output_dir: str | os.PathLike,
    init_from: str | None = None,
    resuming: bool = False,
    overwrite: bool = False,
) -> None:
    """Raise `ValueError` (one line, naming the folder) if training may not write into `output_dir`."""
    output = Path(output_dir)
    if init_from is not None and output.resolve() == Path(init_from).resolve():
        raise ValueError(
            f"--output_dir {output_dir} is the --init_from model folder: training would overwrite the model "
            "it starts from; choose another --output_dir"
        )
    if resuming or overwrite:
        return
    found = [name for name in RUN_MARKERS if (output / name).exists()]
    if found:
        raise ValueError(
            f"--output_dir {output_dir} already holds a training run ({', '.join(found)}): pass "
            "--resume_from_checkpoint latest to continue it, or --overwrite_output_dir to replace it"
        )


class OutputDirLock:
    """`<output_dir>/.shark-train.lock` holding this process's pid, from `acquire()` to `release()`."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME

    def acquire(self) -> None:
        """Create the lock file, or raise `FileExistsError` if a live process holds it."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._create()
        except FileExistsError:
            holder = self._holder()
            if holder is None or _is_running(holder):
                raise FileExistsError(
                    f"--output_dir {self.output_dir} is in use by another training (process "
                    f"{holder or 'unknown'}, lock file {self.path}); wait for it to end, or use another "
                    "--output_dir"
                ) from None
            logger.warning("Taking over %s: its process %d is not running", self.path, holder)
            self.path.unlink(missing_ok=True)
            self._create()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def _create(self) -> None:
        descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(descriptor, "w") as lock:
            lock.write(f"{os.getpid()}\n")

    def _holder(self) -> int | None:
        """The pid in the lock file; None if unreadable (a lock being written: treated as held)."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None


def _is_running(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
