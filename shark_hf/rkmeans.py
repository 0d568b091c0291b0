"""Residual K-Means (RK-Means): the semantic quantizer of SHARK (paper §2.2), in pure torch.

Level 1 runs k-means on the embeddings; every further level runs k-means on the residuals the previous
levels left, so a vector becomes an L-tuple of codeword ids, coarse to fine. Encoding is greedy: the
nearest codeword of level 1, then the nearest codeword of level 2 to what remains, and so on. Decoding
sums the chosen codewords.

Each level is fitted by k-means++ seeding with local trials (as scikit-learn's greedy k-means++) followed
by Lloyd iterations. Squared distances are computed as ``||x||^2 - 2 x.c + ||c||^2`` on row chunks, so
memory stays ``O(chunk_size * K)`` beyond the data itself (100k x 4096 float32 vectors fit comfortably).
Empty clusters are re-seeded deterministically. On CPU a given seed gives bit-identical results, and
only operations allowed by ``torch.use_deterministic_algorithms(True)`` are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ResidualKMeans"]


@dataclass
class _LevelFit:
    """One k-means run on one level: codebook ``[K, D]``, labels ``[N]``, squared distances ``[N]``."""

    centers: torch.Tensor
    labels: torch.Tensor
    sq_dist: torch.Tensor
    inertia: float
    num_iter: int


class ResidualKMeans:
    """Residual k-means quantizer: ``num_levels`` codebooks of ``codebook_size`` codewords each.

    Args:
        num_levels: number of levels L (length of each ID tuple).
        codebook_size: codewords per level K.
        seed: seed of the torch.Generator that drives k-means++ seeding (all levels and restarts).
        n_init: k-means restarts per level; the run with the lowest inertia is kept.
        max_iter: maximum Lloyd iterations per run.
        tol: a run stops when an iteration lowers the inertia (sum of squared distances) by less than
            ``tol`` times its value, or when no assignment changes.
        n_local_trials: k-means++ candidates sampled per new center (the one lowering the potential most
            is kept). ``None`` uses ``2 + int(log(K))`` as scikit-learn does.
        device: where to compute (``"cuda"`` for a GPU). ``None`` uses the device of the tensor given to
            ``fit`` (CPU for numpy input).
        chunk_size: rows per block of the ``[rows, K]`` distance matrix; bounds extra memory.
        show_progress: show a tqdm bar over levels during ``fit``.

    Attributes (after ``fit``):
        codebooks: FloatTensor ``[L, K, D]`` (float32).
        level_errors: list of L floats; entry l is the reconstruction MSE of the training data using
            levels ``1..l+1``, averaged over all N * D elements (squared input units per coordinate).
            Multiply by D for the mean squared error per vector.
        codebook_usage: list of L ints, the number of distinct codewords used per level by the training
            data.
        num_iter: list of L ints, Lloyd iterations of the kept run per level.
    """

    def __init__(
        self,
        num_levels: int = 4,
        codebook_size: int = 128,
        seed: int = 0,
        n_init: int = 1,
        max_iter: int = 100,
        tol: float = 1e-4,
        n_local_trials: int | None = None,
        device: str | torch.device | None = None,
        chunk_size: int = 16384,
        show_progress: bool = False,
    ) -> None:
        _check_positive(num_levels=num_levels, codebook_size=codebook_size, n_init=n_init)
        _check_positive(max_iter=max_iter, chunk_size=chunk_size)
        if n_local_trials is not None:
            _check_positive(n_local_trials=n_local_trials)
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.seed = seed
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.n_local_trials = n_local_trials
        self.device = torch.device(device) if device is not None else None
        self.chunk_size = chunk_size
        self.show_progress = show_progress
        self.codebooks: torch.Tensor | None = None
        self.level_errors: list[float] | None = None
        self.codebook_usage: list[int] | None = None
        self.num_iter: list[int] | None = None

    @classmethod
    def from_codebooks(
        cls,
        codebooks: torch.Tensor | np.ndarray,
        level_errors: list[float] | None = None,
        codebook_usage: list[int] | None = None,
        **kwargs,
    ) -> ResidualKMeans:
        """Build a fitted quantizer from codebooks ``[L, K, D]`` (e.g. loaded from safetensors).

        ``level_errors`` / ``codebook_usage`` may be restored too; otherwise they stay ``None``.
        Other keyword arguments go to the constructor (``device``, ``chunk_size``, ...).
        """
        codebooks = torch.as_tensor(codebooks)
        if codebooks.ndim != 3 or 0 in codebooks.shape:
            raise ValueError(f"codebooks must have shape [L, K, D] with L, K, D >= 1, got {tuple(codebooks.shape)}")
        if not codebooks.is_floating_point():
            raise ValueError(f"codebooks must be floating point, got dtype {codebooks.dtype}")
        if not bool(torch.isfinite(codebooks).all()):
            raise ValueError("codebooks contain NaN or inf values")
        num_levels, codebook_size, _ = codebooks.shape
        quantizer = cls(num_levels=num_levels, codebook_size=codebook_size, **kwargs)
        device = quantizer.device if quantizer.device is not None else codebooks.device
        quantizer.codebooks = codebooks.to(device=device, dtype=torch.float32).contiguous()
        quantizer.level_errors = list(level_errors) if level_errors is not None else None
        quantizer.codebook_usage = list(codebook_usage) if codebook_usage is not None else None
        return quantizer

    @property
    def dim(self) -> int:
        """Vector width D of the fitted codebooks."""
        return self._fitted_codebooks().shape[-1]

    def fit(self, X: torch.Tensor | np.ndarray) -> ResidualKMeans:
        """Fit the L codebooks on ``X`` ``[N, D]`` (float, finite, N >= codebook_size). Returns self."""
        self.fit_encode(X)
        return self

    def fit_encode(self, X: torch.Tensor | np.ndarray) -> torch.LongTensor:
        """Fit on ``X`` ``[N, D]`` and return its IDs ``[N, L]`` (equal to ``encode(X)`` afterwards)."""
        X = self._prepare(X, device=self.device)
        num_rows, dim = X.shape
        if self.codebook_size > num_rows:
            raise ValueError(
                f"codebook_size={self.codebook_size} is larger than the number of vectors N={num_rows}: "
                f"k-means cannot place {self.codebook_size} distinct centers; use codebook_size <= {num_rows}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        residual = X.clone()
        codebooks = torch.empty(self.num_levels, self.codebook_size, dim, dtype=torch.float32, device=X.device)
        ids = torch.empty(num_rows, self.num_levels, dtype=torch.long, device=X.device)
        level_errors, usage, num_iter = [], [], []
        for level in _progress(range(self.num_levels), self.show_progress):
            best = self._fit_level(residual, generator)
            codebooks[level] = best.centers
            ids[:, level] = best.labels
            residual -= best.centers[best.labels]
            level_errors.append(_mean_square(residual, self.chunk_size))
            usage.append(int(torch.unique(best.labels).numel()))
            num_iter.append(best.num_iter)
        self.codebooks, self.level_errors, self.codebook_usage, self.num_iter = codebooks, level_errors, usage, num_iter
        return ids

    def encode(self, X: torch.Tensor | np.ndarray) -> torch.LongTensor:
        """Greedy residual encoding: ``X`` ``[N, D]`` -> IDs ``[N, L]`` (int64, on the codebooks' device).

        Level l picks the codeword nearest (squared Euclidean; ties go to the lowest index) to what the
        levels before it left: ``r_0 = x``, ``id_l = argmin_k ||r_{l-1} - C_l[k]||``, ``r_l = r_{l-1} - C_l[id_l]``.
        """
        codebooks = self._fitted_codebooks()
        X = self._prepare(X, device=codebooks.device)
        if X.shape[1] != codebooks.shape[2]:
            raise ValueError(f"X has D={X.shape[1]} columns but the codebooks have D={codebooks.shape[2]}")
        residual = X.clone()
        ids = torch.empty(X.shape[0], self.num_levels, dtype=torch.long, device=X.device)
        for level in range(self.num_levels):
            labels, _ = _nearest(residual, _row_sq_norms(residual), codebooks[level], self.chunk_size)
            ids[:, level] = labels
            residual -= codebooks[level][labels]
        return ids

    def decode(self, ids: torch.Tensor | np.ndarray) -> torch.FloatTensor:
        """Sum of codewords: IDs ``[N, l]`` (``l <= L``, the first l levels) -> vectors ``[N, D]`` float32."""
        codebooks = self._fitted_codebooks()
        ids = torch.as_tensor(ids, device=codebooks.device)
        if ids.ndim != 2 or ids.shape[1] > self.num_levels:
            raise ValueError(f"ids must have shape [N, l] with l <= {self.num_levels}, got {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            bad = ((ids < 0) | (ids >= self.codebook_size)).any(dim=1).nonzero().flatten()
            raise ValueError(
                f"ids out of range [0, {self.codebook_size}) in rows {_preview(bad)} "
                f"(min {int(ids.min())}, max {int(ids.max())})"
            )
        out = torch.zeros(ids.shape[0], codebooks.shape[2], dtype=torch.float32, device=codebooks.device)
        for level in range(ids.shape[1]):
            out += codebooks[level][ids[:, level].long()]
        return out

    def _fit_level(self, X: torch.Tensor, generator: torch.Generator) -> _LevelFit:
        """Best of ``n_init`` k-means runs on ``X`` ``[N, D]`` (lowest inertia; ties keep the first run)."""
        x_sq = _row_sq_norms(X)
        best = None
        for _ in range(self.n_init):
            centers = _kmeans_plusplus(X, x_sq, self.codebook_size, self._local_trials(), generator, self.chunk_size)
            run = _lloyd(X, x_sq, centers, self.max_iter, self.tol, self.chunk_size)
            if best is None or run.inertia < best.inertia:
                best = run
        return best

    def _local_trials(self) -> int:
        if self.n_local_trials is not None:
            return self.n_local_trials
        return 2 + int(math.log(self.codebook_size))

    def _fitted_codebooks(self) -> torch.Tensor:
        if self.codebooks is None:
            raise RuntimeError("ResidualKMeans is not fitted: call fit(X) or build it with from_codebooks(...)")
        return self.codebooks

    def _prepare(self, X: torch.Tensor | np.ndarray, device: torch.device | None) -> torch.Tensor:
        """Validate ``X`` ``[N, D]`` and return it as contiguous float32 on ``device``."""
        if not isinstance(X, torch.Tensor | np.ndarray):
            raise TypeError(f"X must be a torch.Tensor or numpy.ndarray [N, D], got {type(X).__name__}")
        X = torch.as_tensor(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D [N, D], got shape {tuple(X.shape)}")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X must have at least one row and one column, got shape {tuple(X.shape)}")
        if not (X.is_floating_point() or X.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)):
            raise ValueError(f"X must be a real-valued array, got dtype {X.dtype}")
        X = X.to(device=device if device is not None else X.device, dtype=torch.float32).contiguous()
        bad = (~torch.isfinite(X)).any(dim=1).nonzero().flatten()
        if bad.numel():
            raise ValueError(
                f"X has NaN or inf values in {bad.numel()} row(s): {_preview(bad)} (0-based row indices)"
            )
        return X


def _kmeans_plusplus(
    X: torch.Tensor,
    x_sq: torch.Tensor,
    num_centers: int,
    n_local_trials: int,
    generator: torch.Generator,
    chunk_size: int,
) -> torch.Tensor:
    """Greedy k-means++ seeding: ``[K, D]`` centers chosen among the rows of ``X`` ``[N, D]``.

    Each new center is the best (lowest total squared distance) of ``n_local_trials`` rows sampled with
    probability proportional to their squared distance to the nearest chosen center. Sampling draws
    from the CPU ``generator`` and runs on CPU in float64, so it is the same on every device.
    """
    num_rows = X.shape[0]
    chosen = torch.empty(num_centers, dtype=torch.long)
    chosen[0] = int(torch.randint(num_rows, (1,), generator=generator))
    closest = _sq_dist_to_rows(X, x_sq, chosen[:1], chunk_size)[:, 0]
    for k in range(1, num_centers):
        weights = closest.to(device="cpu", dtype=torch.float64)
        cumulative = torch.cumsum(weights, dim=0)
        draws = torch.rand(n_local_trials, generator=generator, dtype=torch.float64) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws, right=True).clamp_(max=num_rows - 1)
        trial = torch.minimum(closest[:, None], _sq_dist_to_rows(X, x_sq, candidates, chunk_size))
        best = int(torch.argmin(trial.sum(dim=0, dtype=torch.float64)))
        chosen[k] = candidates[best]
        closest = trial[:, best].contiguous()
    return X[chosen.to(X.device)].clone()


def _lloyd(
    X: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float, chunk_size: int
) -> _LevelFit:
    """Lloyd iterations from ``centers`` ``[K, D]``; the returned labels are the final assignment."""
    num_centers = centers.shape[0]
    labels, sq_dist = _nearest(X, x_sq, centers, chunk_size)
    inertia = float(sq_dist.sum(dtype=torch.float64))
    num_iter = 0
    while num_iter < max_iter:
        num_iter += 1
        repaired = _repair_empty_clusters(labels, sq_dist, num_centers)
        centers = _centroids(X, repaired, num_centers)
        new_labels, new_sq_dist = _nearest(X, x_sq, centers, chunk_size)
        new_inertia = float(new_sq_dist.sum(dtype=torch.float64))
        unchanged = torch.equal(new_labels, labels)
        improvement = inertia - new_inertia
        labels, sq_dist, inertia = new_labels, new_sq_dist, new_inertia
        if unchanged or improvement <= tol * inertia:
            break
    return _LevelFit(centers, labels, sq_dist, inertia, num_iter)


def _repair_empty_clusters(labels: torch.Tensor, sq_dist: torch.Tensor, num_centers: int) -> torch.Tensor:
    """Give every empty cluster one point, deterministically.

    Empty clusters are handled in index order; each takes the point farthest from its current center
    (lowest row index on ties) among points whose cluster keeps at least one other point.
    """
    counts = torch.bincount(labels, minlength=num_centers)
    empty = (counts == 0).nonzero().flatten().tolist()
    if not empty:
        return labels
    labels, sq_dist = labels.clone(), sq_dist.clone()
    for cluster in empty:
        movable = counts[labels] > 1
        row = int(torch.argmax(torch.where(movable, sq_dist, -1.0)))
        counts[labels[row]] -= 1
        counts[cluster] += 1
        labels[row] = cluster
        sq_dist[row] = 0.0
    return labels


def _centroids(X: torch.Tensor, labels: torch.Tensor, num_centers: int) -> torch.Tensor:
    """Mean of the rows of ``X`` ``[N, D]`` per label -> ``[K, D]``; every label must occur."""
    sums = torch.zeros(num_centers, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, labels, X)
    counts = torch.bincount(labels, minlength=num_centers).to(X.dtype)
    return sums / counts[:, None]


def _nearest(
    X: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest center per row: labels ``[N]`` int64 and squared distances ``[N]`` (clamped at 0)."""
    c_sq = _row_sq_norms(centers)
    labels = torch.empty(X.shape[0], dtype=torch.long, device=X.device)
    sq_dist = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        stop = min(start + chunk_size, X.shape[0])
        scores = torch.addmm(c_sq, X[start:stop], centers.T, beta=1, alpha=-2)  # ||c||^2 - 2 x.c
        values, labels[start:stop] = scores.min(dim=1)
        sq_dist[start:stop] = (values + x_sq[start:stop]).clamp_(min=0)
    return labels, sq_dist


def _sq_dist_to_rows(X: torch.Tensor, x_sq: torch.Tensor, rows: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Squared distances ``[N, len(rows)]`` from every row of ``X`` to the rows ``X[rows]``."""
    rows = rows.to(X.device)
    points, p_sq = X[rows], x_sq[rows]
    out = torch.empty(X.shape[0], rows.numel(), dtype=X.dtype, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        stop = min(start + chunk_size, X.shape[0])
        block = torch.addmm(p_sq, X[start:stop], points.T, beta=1, alpha=-2)
        out[start:stop] = (block + x_sq[start:stop, None]).clamp_(min=0)
    return out


def _row_sq_norms(X: torch.Tensor) -> torch.Tensor:
    return (X * X).sum(dim=1)


def _mean_square(X: torch.Tensor, chunk_size: int) -> float:
    """Mean of ``X**2`` over all elements, accumulated in float64 chunk by chunk."""
    total = 0.0
    for start in range(0, X.shape[0], chunk_size):
        block = X[start : start + chunk_size].double()
        total += float((block * block).sum())
    return total / X.numel()


def _preview(rows: torch.Tensor, limit: int = 10) -> str:
    shown = rows[:limit].tolist()
    return f"{shown}{' ...' if rows.numel() > limit else ''}"


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _progress(levels: range, show: bool):
    if not show:
        return levels
    from tqdm.auto import tqdm

    return tqdm(levels, desc="residual k-means", unit="level")
