"""Benchmark: shark_hf ResidualKMeans vs faiss greedy ResidualQuantizer vs a scikit-learn KMeans loop.

All methods quantize the same L2-normalised code-description embeddings (all-MiniLM-L6-v2, D = 384) with
L levels of K codewords (default L=4, K=128), greedily level by level, in one process on the same cores:

- faiss ``ResidualQuantizer`` with ``max_beam_size=1``, trained two ways: "plain" (``Train_default``:
  k-means per level, 10 iterations) and "progressive" (the library's default ``train_type``);
- a scikit-learn ``KMeans`` loop (``n_init=1``, its defaults otherwise) on the residuals;
- ``ResidualKMeans`` with its defaults ("ours default") and with ``OURS_FAST`` ("ours fast").

Every method is fitted once per seed (``--seeds``, methods interleaved). Reported: mean fit wall time,
and the reconstruction error of the training matrix, ``MSE/vec`` = mean over vectors of the squared L2
error (summed over the D coordinates; 1.0 = as large as the unit vectors themselves), with its min and
max over seeds, and ``MSE/elem`` = ``MSE/vec / D`` (the unit of ``ResidualKMeans.level_errors``). The
error of every method is computed by the same function from its own reconstruction.

Matrices: (a) ``icd9``, all 14,567 billable ICD-9-CM v32 codes; (b) ``icd9+icd10``, those plus the 23,643
billable ICD-10-CM codes without a 7th-character extension (38,210 codes). Descriptions are embedded by
``shark_hf.embeddings.embed_codes`` once and cached as safetensors under ``benchmarks/.cache/``.

    python benchmarks/bench_rkmeans.py                  # both matrices, seeds 0, 1, 2
    python benchmarks/bench_rkmeans.py --matrix icd9 --seeds 5 --json icd9.json
"""

from __future__ import annotations

import argparse
import json
import platform
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
OURS_FAST: dict = {"max_iter": 10, "n_local_trials": 1}


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
    """Fit every method once per seed (methods interleaved) -> mean time, mean/min/max MSE per vector."""
    runs: dict[str, list[tuple[float, float]]] = {method: [] for method in METHODS}
    for seed in range(args.seeds):
        for method, fit in METHODS.items():
            start = time.perf_counter()
            reconstruction = fit(X, args.levels, args.codebook_size, seed)
            elapsed = time.perf_counter() - start
            runs[method].append((elapsed, mse_per_vector(X, reconstruction)))
    stats = {
        method: {
            "fit_s": float(np.mean([t for t, _ in values])),
            "mse_per_vector": float(np.mean([e for _, e in values])),
            "mse_per_vector_min": min(e for _, e in values),
            "mse_per_vector_max": max(e for _, e in values),
            "mse_per_element": float(np.mean([e for _, e in values])) / X.shape[1],
            "runs": values,
        }
        for method, values in runs.items()
    }
    _print_table(name, X, args, stats)
    goals = _goals(stats)
    for goal, met in goals.items():
        print(f"  goal {goal:<58} {'met' if met else 'NOT met'}")
    return {"matrix": name, "shape": list(X.shape), "seeds": args.seeds, "results": stats, "goals": goals}


def _print_table(name: str, X: np.ndarray, args: argparse.Namespace, stats: dict) -> None:
    refs = {"fp": "faiss RQ plain", "fg": "faiss RQ progressive", "sk": "sklearn KMeans loop"}
    print(
        f"\n== {name}: N={X.shape[0]}, D={X.shape[1]}, L={args.levels}, K={args.codebook_size}, "
        f"seeds 0..{args.seeds - 1} (means) =="
    )
    columns = (
        ["fit s", "MSE/vec", "min", "max", "MSE/elem"] + [f"t/{r}" for r in refs] + [f"e/{r}" for r in refs]
    )
    print(f"{'method':<22}" + "".join(f"{c:>9}" for c in columns))
    for method, st in stats.items():
        t, e = st["fit_s"], st["mse_per_vector"]
        cells = [
            f"{t:9.3f}",
            f"{e:9.4f}",
            f"{st['mse_per_vector_min']:9.4f}",
            f"{st['mse_per_vector_max']:9.4f}",
        ]
        cells.append(f"{st['mse_per_element']:9.6f}")
        cells += [f"{t / stats[r]['fit_s']:9.2f}" for r in refs.values()]
        cells += [f"{e / stats[r]['mse_per_vector']:9.3f}" for r in refs.values()]
        print(f"{method:<22}" + "".join(cells))
    print("  (fp = faiss RQ plain, fg = faiss RQ progressive, sk = sklearn KMeans loop; e = MSE/vec)")


def _goals(stats: dict) -> dict[str, bool]:
    ours, fast = stats["ours default"], stats["ours fast"]
    sk = stats["sklearn KMeans loop"]
    goals = {
        "default: mean MSE <= sklearn mean MSE": ours["mse_per_vector"] <= sk["mse_per_vector"],
        "default: MSE <= sklearn MSE for every seed": all(
            e <= e_sk for (_, e), (_, e_sk) in zip(ours["runs"], sk["runs"], strict=True)
        ),
        "default: time <= 0.5 x sklearn": ours["fit_s"] <= 0.5 * sk["fit_s"],
    }
    for ref in ("faiss RQ plain", "faiss RQ progressive"):
        goals[f"fast: mean MSE <= {ref}"] = fast["mse_per_vector"] <= stats[ref]["mse_per_vector"]
        goals[f"fast: time <= 1.5 x {ref}"] = fast["fit_s"] <= 1.5 * stats[ref]["fit_s"]
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--matrix", choices=["icd9", "icd9+icd10", "all"], default="all")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="fit every method with seeds 0..SEEDS-1")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}")
    print(f"ours default = {OURS_DEFAULT or 'constructor defaults'}, ours fast = {OURS_FAST}")
    names = ["icd9", "icd9+icd10"] if args.matrix == "all" else [args.matrix]
    matrices = {name: load_matrix(name) for name in names}
    report = [run_matrix(name, X.numpy(), args) for name, X in matrices.items()]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
