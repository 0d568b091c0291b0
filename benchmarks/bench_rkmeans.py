"""Benchmark: shark_hf ResidualKMeans vs faiss greedy ResidualQuantizer vs a scikit-learn KMeans loop.

All methods quantize the same L2-normalised code-description embeddings (all-MiniLM-L6-v2, D = 384) with
L levels of K codewords (default L=4, K=128), greedily level by level, on the same cores:

- faiss ``ResidualQuantizer`` with ``max_beam_size=1``, trained two ways: "plain" (``Train_default``:
  k-means per level, 10 iterations) and "progressive" (the library's default ``train_type``);
- a scikit-learn ``KMeans`` loop (``n_init=1``, its defaults otherwise) on the residuals;
- ``ResidualKMeans`` with its defaults ("ours default") and with ``OURS_FAST`` ("ours fast").

Each method runs in a fresh process (faiss and scikit-learn bundle their own OpenMP runtime besides
torch's; in one process, one runtime's spinning threads slow the other down) and is fitted once per seed
(``--seeds``). Reported: mean fit wall time and process CPU time, and the reconstruction error of the
training matrix: ``MSE/vec`` = mean over vectors of the squared L2 error (summed over the D coordinates;
1.0 = as large as the unit vectors themselves), with its min and max over seeds, and ``MSE/elem`` =
``MSE/vec / D`` (the unit of ``ResidualKMeans.level_errors``). The error of every method is computed by
the same function from its own reconstruction.

Matrices: (a) ``icd9``, all 14,567 billable ICD-9-CM v32 codes; (b) ``icd9+icd10``, those plus the 23,643
billable ICD-10-CM codes without a 7th-character extension (38,210 codes). Descriptions are embedded by
``shark_hf.embeddings.embed_codes`` once and cached as safetensors under ``benchmarks/.cache/``.

    python benchmarks/bench_rkmeans.py                  # both matrices, seeds 0, 1, 2
    python benchmarks/bench_rkmeans.py --matrix icd9 --seeds 5 --json icd9.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from shark_hf.codes import all_codes
from shark_hf.embeddings import embed_codes
from shark_hf.rkmeans import ResidualKMeans

CACHE_DIR = Path(__file__).resolve().parent / ".cache"

#: Our two documented settings. "fast" trades a little quality for time (faiss-like budget).
OURS_DEFAULT: dict = {}
OURS_FAST: dict = {"init_dims": 32, "n_local_trials": 8, "max_iter": 6}


# ----------------------------------------------------------------------------------------------- data


def benchmark_codes(matrix: str) -> list[str]:
    """Codes of a benchmark matrix.

    ``icd9``: all 14,567 billable ICD-9-CM v32 codes. ``icd9+icd10``: those plus every billable ICD-10-CM
    code without a 7th-character extension (at most 6 characters), 38,210 codes in all.
    """
    codes = all_codes("ICD9CM")
    if matrix == "icd9+icd10":
        codes += [code for code in all_codes("ICD10CM") if len(code.split(":", 1)[1]) <= 6]
    return codes


def load_matrix(matrix: str) -> torch.Tensor:
    """L2-normalised description embeddings ``[N, 384]`` of ``benchmark_codes(matrix)`` (float32).

    ``embed_codes`` caches the text vectors as safetensors under ``benchmarks/.cache/``; the first call
    embeds (minutes on 2 cores), later calls read the cache.
    """
    codes = benchmark_codes(matrix)
    start = time.perf_counter()
    embeddings = embed_codes(codes, cache_dir=CACHE_DIR, show_progress=True)
    print(f"{matrix}: {len(codes)} code vectors in {time.perf_counter() - start:.1f} s")
    return embeddings.vectors


# -------------------------------------------------------------------------------------------- methods


def mse_per_vector(X: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean over rows of the squared L2 reconstruction error (float64); the same for every method."""
    diff = X.astype(np.float64) - reconstruction.astype(np.float64)
    return float((diff * diff).sum(axis=1).mean())


def fit_faiss(X: np.ndarray, levels: int, k: int, seed: int, progressive: bool) -> np.ndarray:
    """faiss ``ResidualQuantizer``, greedy (``max_beam_size=1``), faiss' own k-means (10 iterations).

    ``progressive=True`` is the library default ``train_type`` (k-means on progressively more PCA
    dimensions); ``False`` is plain k-means per level (``Train_default``).
    """
    import faiss

    rq = faiss.ResidualQuantizer(X.shape[1], levels, int(np.log2(k)))
    rq.max_beam_size = 1
    rq.cp.seed = seed
    if not progressive:
        rq.train_type = faiss.ResidualQuantizer.Train_default
    rq.train(X)
    return rq.decode(rq.compute_codes(X))


def fit_sklearn(X: np.ndarray, levels: int, k: int, seed: int) -> np.ndarray:
    """scikit-learn ``KMeans`` (greedy k-means++, Lloyd, tol 1e-4, n_init=1) on the residuals, per level."""
    from sklearn.cluster import KMeans

    residual = X.copy()
    for level in range(levels):
        km = KMeans(n_clusters=k, n_init=1, random_state=seed + level).fit(residual)
        residual -= km.cluster_centers_[km.labels_]
    return X - residual


def fit_ours(X: np.ndarray, levels: int, k: int, seed: int, **settings) -> np.ndarray:
    rk = ResidualKMeans(num_levels=levels, codebook_size=k, seed=seed, **settings)
    ids = rk.fit_encode(torch.from_numpy(X))
    return rk.decode(ids).numpy()


METHODS: dict[str, Callable[..., np.ndarray]] = {
    "faiss RQ plain": lambda X, L, K, seed: fit_faiss(X, L, K, seed, progressive=False),
    "faiss RQ progressive": lambda X, L, K, seed: fit_faiss(X, L, K, seed, progressive=True),
    "sklearn KMeans loop": fit_sklearn,
    "ours default": lambda X, L, K, seed: fit_ours(X, L, K, seed, **OURS_DEFAULT),
    "ours fast": lambda X, L, K, seed: fit_ours(X, L, K, seed, **OURS_FAST),
}


def run_matrix(name: str, X: np.ndarray, args: argparse.Namespace) -> dict:
    """Time every method on one matrix, each in its own process -> per-method means and per-seed runs."""
    stats = {method: _summary(_run_in_subprocess(method, name, args), X.shape[1]) for method in METHODS}
    _print_table(name, X, args, stats)
    goals = _goals(stats)
    for goal, met in goals.items():
        print(f"  goal {goal:<48} {'met' if met else 'NOT met'}")
    return {"matrix": name, "shape": list(X.shape), "seeds": args.seeds, "results": stats, "goals": goals}


def _run_in_subprocess(method: str, matrix: str, args: argparse.Namespace) -> list[dict]:
    """Run ``--worker`` for one method in a fresh Python process and return its per-seed runs."""
    command = [sys.executable, __file__, "--worker", method, "--matrix", matrix, "--seeds", str(args.seeds)]
    command += ["--levels", str(args.levels), "--codebook-size", str(args.codebook_size)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(method: str, X: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Fit ``method`` once per seed: wall and CPU seconds of each fit and its MSE per vector."""
    runs = []
    for seed in range(args.seeds):
        start, start_cpu = time.perf_counter(), time.process_time()
        reconstruction = METHODS[method](X, args.levels, args.codebook_size, seed)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        runs.append({"fit_s": wall, "cpu_s": cpu, "mse": mse_per_vector(X, reconstruction)})
    return runs


def _summary(values: list[dict], dim: int) -> dict:
    errors = [v["mse"] for v in values]
    return {
        "fit_s": float(np.mean([v["fit_s"] for v in values])),
        "cpu_s": float(np.mean([v["cpu_s"] for v in values])),
        "mse_per_vector": float(np.mean(errors)),
        "mse_per_vector_min": min(errors),
        "mse_per_vector_max": max(errors),
        "mse_per_element": float(np.mean(errors)) / dim,
        "runs": values,
    }


REFERENCES = {"fp": "faiss RQ plain", "fg": "faiss RQ progressive", "sk": "sklearn KMeans loop"}


def _print_table(name: str, X: np.ndarray, args: argparse.Namespace, stats: dict) -> None:
    print(
        f"\n== {name}: N={X.shape[0]}, D={X.shape[1]}, L={args.levels}, K={args.codebook_size}, "
        f"seeds 0..{args.seeds - 1} (means) =="
    )
    columns = ["fit s", "cpu s", "MSE/vec", "min", "max", "MSE/elem"]
    columns += [f"t/{r}" for r in REFERENCES] + [f"e/{r}" for r in REFERENCES]
    print(f"{'method':<22}" + "".join(f"{c:>9}" for c in columns))
    for method, st in stats.items():
        t, e = st["fit_s"], st["mse_per_vector"]
        cells = [t, st["cpu_s"], e, st["mse_per_vector_min"], st["mse_per_vector_max"]]
        row = "".join(f"{c:9.3f}" if i < 2 else f"{c:9.4f}" for i, c in enumerate(cells))
        row += f"{st['mse_per_element']:9.6f}"
        row += "".join(f"{t / stats[r]['fit_s']:9.2f}" for r in REFERENCES.values())
        row += "".join(f"{e / stats[r]['mse_per_vector']:9.3f}" for r in REFERENCES.values())
        print(f"{method:<22}{row}")
    print("  t/x: fit-time ratio, e/x: MSE ratio; " + ", ".join(f"{k} = {v}" for k, v in REFERENCES.items()))


def _goals(stats: dict) -> dict[str, bool]:
    ours, fast, sk = stats["ours default"], stats["ours fast"], stats["sklearn KMeans loop"]
    pairs = zip(ours["runs"], sk["runs"], strict=True)
    goals = {
        "default: mean MSE <= sklearn": ours["mse_per_vector"] <= sk["mse_per_vector"],
        "default: MSE <= sklearn for every seed": all(a["mse"] <= b["mse"] for a, b in pairs),
        "default: time <= 0.5 x sklearn": ours["fit_s"] <= 0.5 * sk["fit_s"],
    }
    for ref in ("faiss RQ plain", "faiss RQ progressive"):
        goals[f"fast: mean MSE <= {ref}"] = fast["mse_per_vector"] <= stats[ref]["mse_per_vector"]
        goals[f"fast: time <= 1.5 x {ref}"] = fast["fit_s"] <= 1.5 * stats[ref]["fit_s"]
    return goals


def _limit_threads(threads: int) -> None:
    import faiss
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    threadpool_limits(threads)  # scikit-learn's OpenMP and BLAS pools


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--matrix", choices=["icd9", "icd9+icd10", "all"], default="all")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="fit every method with seeds 0..SEEDS-1")
    parser.add_argument(
        "--threads", type=int, help="threads for torch, faiss and scikit-learn (default: all)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", choices=list(METHODS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        _limit_threads(args.threads)
    names = ["icd9", "icd9+icd10"] if args.matrix == "all" else [args.matrix]
    if args.worker:
        with contextlib.redirect_stdout(sys.stderr):
            X = load_matrix(names[0]).numpy()
            runs = worker(args.worker, X, args)
        print(json.dumps(runs))
        return

    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, {os.cpu_count()} CPUs")
    print(f"ours default = {OURS_DEFAULT or 'constructor defaults'}, ours fast = {OURS_FAST}")
    matrices = {name: load_matrix(name) for name in names}
    report = [run_matrix(name, X.numpy(), args) for name, X in matrices.items()]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
