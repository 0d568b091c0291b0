"""Benchmark: start-up cost of `shark-hf` and `import shark_hf`, against `import torch, transformers`.

Each command runs in a fresh interpreter (`--repeats` times, interleaved so that load on the shared machine
hits every command alike); reported: median and minimum wall seconds, and the median peak resident memory
(MB, `ru_maxrss` of the finished child), plus each command's ratio to `import torch, transformers` - what
every start cost before `import shark_hf` became lazy. Goal (issue 15): `shark-hf --help` and
`shark-hf CMD --help` under 1 s.

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --repeats 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

PYTHON = sys.executable
SHARK_HF = shutil.which("shark-hf") or ""
CLI = [SHARK_HF] if SHARK_HF else [PYTHON, "-m", "shark_hf.cli"]

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "import torch, transformers (reference)": [PYTHON, "-c", "import torch, transformers"],
    "import shark_hf": [PYTHON, "-c", "import shark_hf"],
    "import shark_hf.codes": [PYTHON, "-c", "import shark_hf.codes"],
    "shark-hf --help": [*CLI, "--help"],
    "shark-hf predict --help": [*CLI, "predict", "--help"],
    "shark-hf train --help": [*CLI, "train", "--help"],
}
REFERENCE = "import torch, transformers (reference)"


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run of `command` in a child process (Linux: ru_maxrss in KB)."""
    start = time.perf_counter()
    pid = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Runs of each command (default: 5).")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            runs[name].append(run_once(command))
    reference = statistics.median(wall for wall, _ in runs[REFERENCE])
    print(f"python {sys.version.split()[0]}, {args.repeats} runs each, load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<40} {'median s':>9} {'min s':>7} {'peak MB':>8} {'vs reference':>13}")
    for name, samples in runs.items():
        walls = [wall for wall, _ in samples]
        median = statistics.median(walls)
        memory = statistics.median(rss for _, rss in samples)
        print(f"{name:<40} {median:>9.2f} {min(walls):>7.2f} {memory:>8.0f} {median / reference:>12.2f}x")


if __name__ == "__main__":
    main()
