"""Residual K-Means (RK-Means): the semantic quantizer of SHARK (paper §2.2), in pure torch.

Level 1 runs k-means on the embeddings; every further level runs k-means on the residuals the previous
levels left, so a vector becomes an L-tuple of codeword ids, coarse to fine. Encoding is greedy: the
nearest codeword of level 1, then the nearest codeword of level 2 to what remains, and so on. Decoding
sums the chosen codewords.

Each level is fitted by greedy k-means++ seeding (``n_local_trials`` candidates per center, as in
scikit-learn, with distances measured in the level's top-``init_dims`` principal subspace so that many
trials stay cheap), then Lloyd iterations in the full space until the inertia improves by less than
``tol`` (relative). ``n_init`` restarts keep the lowest inertia. Empty clusters are re-seeded with the
point farthest from its center (deterministic).

Squared distances are ``||x||^2 - 2 x.c + ||c||^2`` from float32 matrix products on blocks of
``chunk_size`` rows, so the extra memory is ``O(chunk_size * (K + D))``; nothing ``[N, K, D]`` is
built (fitting 100k x 4096 float32 vectors peaks at about 2.6x the data's size). Rows whose two best
distances are within the worst-case float32 rounding difference are decided again in float64, so labels
do not depend on ``chunk_size`` or on which rows are encoded together. On CPU a seed gives bit-identical
results, and every operation is allowed under ``torch.use_deterministic_algorithms(True)`` (on CUDA,
PyTorch also asks for ``CUBLAS_WORKSPACE_CONFIG``). Set ``device="cuda"`` to fit on a GPU; k-means++
sampling draws from a CPU generator there too, so a seed picks the same candidates on every device.

Settings, measured by ``benchmarks/bench_rkmeans.py`` on 14,567 ICD-9-CM and 38,210 ICD-9 + ICD-10-CM
description embeddings (D = 384, L = 4, K = 128), 2 CPU cores:

- defaults (``init_dims=128, n_local_trials=16, max_iter=100, tol=1e-4``): lower reconstruction error
  than a scikit-learn ``KMeans`` loop on every seed, in 15-30% of its time;
- fast: ``ResidualKMeans(init_dims=32, n_local_trials=8, max_iter=6)``: lower error than faiss' greedy
  ``ResidualQuantizer`` trained with plain k-means, in 0.7-1.3x its time. More ``max_iter`` and
  ``init_dims`` move it toward the defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ResidualKMeans"]

_PCA_SAMPLE_ROWS = 8192  # rows used to estimate the principal subspace for seeding
_BLOCK_ROWS = 4096  # rows per block of element-wise passes (fixed, so results never depend on chunk_size)


@dataclass
class _LevelFit:
    """One k-means run on one level: codebook ``[K, D]``, labels ``[N]``, inertia, Lloyd iterations."""

    centers: torch.Tensor
    labels: torch.Tensor
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
            is kept). ``None`` uses ``2 + int(log(K))`` as scikit-learn does; more trials find better
            optima (16 is the tuned default, see ``benchmarks/bench_rkmeans.py``).
        init_dims: k-means++ seeding measures distances in the approximate top-``init_dims`` principal
            subspace of each level's input (randomized PCA), which makes seeding with many trials cheap;
            Lloyd iterations always use all D dimensions. ``None`` (or ``>= D``) seeds in the full space.
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
        n_local_trials: int | None = 16,
        init_dims: int | None = 128,
        device: str | torch.device | None = None,
        chunk_size: int = 16384,
        show_progress: bool = False,
    ) -> None:
        _check_positive(num_levels=num_levels, codebook_size=codebook_size, n_init=n_init)
        _check_positive(max_iter=max_iter, chunk_size=chunk_size)
        if n_local_trials is not None:
            _check_positive(n_local_trials=n_local_trials)
        if init_dims is not None:
            _check_positive(init_dims=init_dims)
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.seed = seed
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.n_local_trials = n_local_trials
        self.init_dims = init_dims
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
            raise ValueError(
                f"codebooks must have shape [L, K, D] with L, K, D >= 1, got {tuple(codebooks.shape)}"
            )
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
        X = _as_matrix(X, self.device, allow_empty=False)
        num_rows, dim = X.shape
        if self.codebook_size > num_rows:
            raise ValueError(
                f"codebook_size={self.codebook_size} is larger than the number of vectors N={num_rows}: "
                f"k-means cannot place {self.codebook_size} distinct centers; use codebook_size <= {num_rows}"
            )
        generator = torch.Generator().manual_seed(self.seed)
        residual = X.clone()
        codebooks = torch.empty(
            self.num_levels, self.codebook_size, dim, dtype=torch.float32, device=X.device
        )
        ids = torch.empty(num_rows, self.num_levels, dtype=torch.long, device=X.device)
        level_errors, usage, num_iter = [], [], []
        sq_norms = _row_sq_norms(residual)
        for level in _progress(range(self.num_levels), self.show_progress):
            best = self._fit_level(residual, sq_norms, generator)
            codebooks[level] = best.centers
            ids[:, level] = best.labels
            _subtract_assigned(residual, best.centers, best.labels)
            sq_norms = _row_sq_norms(residual)
            level_errors.append(float(sq_norms.sum(dtype=torch.float64)) / residual.numel())
            usage.append(int((torch.bincount(best.labels, minlength=self.codebook_size) > 0).sum()))
            num_iter.append(best.num_iter)
        self.codebooks, self.level_errors, self.codebook_usage, self.num_iter = (
            codebooks,
            level_errors,
            usage,
            num_iter,
        )
        return ids

    def encode(self, X: torch.Tensor | np.ndarray) -> torch.LongTensor:
        """Greedy residual encoding: ``X`` ``[N, D]`` -> IDs ``[N, L]`` (int64, on the codebooks' device).

        Level l picks the codeword nearest (squared Euclidean; ties go to the lowest index) to what the
        levels before it left: ``r_0 = x``, ``id_l = argmin_k ||r_{l-1} - C_l[k]||``,
        ``r_l = r_{l-1} - C_l[id_l]``. A row's IDs do not depend on the other rows encoded with it.
        """
        codebooks = self._fitted_codebooks()
        X = _as_matrix(X, codebooks.device, allow_empty=True)
        if X.shape[1] != codebooks.shape[2]:
            raise ValueError(f"X has D={X.shape[1]} columns but the codebooks have D={codebooks.shape[2]}")
        residual = X.clone()
        ids = torch.empty(X.shape[0], self.num_levels, dtype=torch.long, device=X.device)
        for level in range(self.num_levels):
            ids[:, level] = _assign(residual, _row_norms(residual), codebooks[level], self.chunk_size)
            _subtract_assigned(residual, codebooks[level], ids[:, level])
        return ids

    def decode(self, ids: torch.Tensor | np.ndarray) -> torch.FloatTensor:
        """Sum of codewords: IDs ``[N, l]`` (``l <= L``, the first l levels) -> vectors ``[N, D]`` float32."""
        codebooks = self._fitted_codebooks()
        ids = torch.as_tensor(ids, device=codebooks.device)
        if ids.ndim != 2 or ids.shape[1] > self.num_levels:
            raise ValueError(
                f"ids must have shape [N, l] with l <= {self.num_levels}, got {tuple(ids.shape)}"
            )
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

    def _fit_level(self, X: torch.Tensor, sq_norms: torch.Tensor, generator: torch.Generator) -> _LevelFit:
        """Best of ``n_init`` k-means runs on ``X`` ``[N, D]`` (lowest inertia; ties keep the first run).

        ``sq_norms`` ``[N]`` are the rows' squared L2 norms.
        """
        seeding_space = X
        if self.init_dims is not None and self.init_dims < X.shape[1]:
            seeding_space = _project_principal(X, self.init_dims, generator)
        best = None
        for _ in range(self.n_init):
            rows = _kmeans_plusplus(seeding_space, self.codebook_size, self._local_trials(), generator)
            run = _lloyd(X, sq_norms, X[rows.to(X.device)], self.max_iter, self.tol, self.chunk_size)
            if best is None or run.inertia < best.inertia:
                best = run
        return best

    def _local_trials(self) -> int:
        if self.n_local_trials is not None:
            return self.n_local_trials
        return 2 + int(math.log(self.codebook_size))

    def _fitted_codebooks(self) -> torch.Tensor:
        if self.codebooks is None:
            raise RuntimeError(
                "ResidualKMeans is not fitted: call fit(X) or build it with from_codebooks(...)"
            )
        return self.codebooks


def _as_matrix(X: torch.Tensor | np.ndarray, device: torch.device | None, allow_empty: bool) -> torch.Tensor:
    """Validate ``X`` ``[N, D]`` and return it as contiguous float32 on ``device`` (default: its own)."""
    if not isinstance(X, torch.Tensor | np.ndarray):
        raise TypeError(f"X must be a torch.Tensor or numpy.ndarray [N, D], got {type(X).__name__}")
    X = torch.as_tensor(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [N, D], got shape {tuple(X.shape)}")
    if X.shape[1] == 0 or (X.shape[0] == 0 and not allow_empty):
        raise ValueError(f"X must have at least one row and one column, got shape {tuple(X.shape)}")
    if X.dtype == torch.bool or X.is_complex():
        raise ValueError(f"X must be a real-valued array, got dtype {X.dtype}")
    X = X.to(device=device if device is not None else X.device, dtype=torch.float32).contiguous()
    bad = [(~torch.isfinite(block)).any(dim=1).nonzero().flatten() + i for i, block in _blocks(X)]
    bad = torch.cat(bad) if bad else torch.empty(0, dtype=torch.long)
    if bad.numel():
        raise ValueError(
            f"X has NaN or inf values in {bad.numel()} row(s): {_preview(bad)} (0-based row indices)"
        )
    return X


def _blocks(X: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``(start, X[start : start + _BLOCK_ROWS])`` for consecutive blocks of rows."""
    return [(start, X[start : start + _BLOCK_ROWS]) for start in range(0, X.shape[0], _BLOCK_ROWS)]


def _project_principal(
    X: torch.Tensor, dims: int, generator: torch.Generator, power_iter: int = 2
) -> torch.Tensor:
    """Coordinates ``[N, dims]`` of the centred rows of ``X`` ``[N, D]`` in its approximate top-``dims``
    principal subspace.

    Randomized range finder (Halko et al. 2011): a seeded Gaussian ``[D, dims]`` start, ``power_iter`` power
    iterations with QR, on at most ``_PCA_SAMPLE_ROWS`` rows drawn with ``generator``. Cost
    ``O(min(N, _PCA_SAMPLE_ROWS) * D * dims)`` per iteration, never a ``[D, D]`` matrix.
    """
    num_rows, dim = X.shape
    sample = X
    if num_rows > _PCA_SAMPLE_ROWS:
        rows = torch.randperm(num_rows, generator=generator)[:_PCA_SAMPLE_ROWS].sort().values
        sample = X[rows.to(X.device)]
    mean = sample.mean(dim=0)
    centred = sample - mean
    basis = torch.randn(dim, dims, generator=generator).to(X.device)
    for _ in range(power_iter):
        basis, _ = torch.linalg.qr(centred.T @ (centred @ basis))
    return (X @ basis - mean @ basis).contiguous()


def _kmeans_plusplus(
    X: torch.Tensor, num_centers: int, n_local_trials: int, generator: torch.Generator
) -> torch.Tensor:
    """Greedy k-means++ seeding: indices ``[K]`` (int64, CPU) of the rows of ``X`` ``[N, d]`` to start from.

    Each new center is the best (lowest total squared distance) of ``n_local_trials`` rows sampled with
    probability proportional to their squared distance to the nearest chosen center. Sampling draws
    from the CPU ``generator`` and runs on CPU in float64, so it is the same on every device.
    """
    num_rows = X.shape[0]
    x_sq = _row_sq_norms(X)
    # ||p - x||^2 = [p, ||p||^2, 1] . [-2x, 1, ||x||^2]: one product per step, no broadcast passes.
    points = torch.cat([X, x_sq[:, None], torch.ones_like(x_sq)[:, None]], dim=1)
    columns = torch.cat([-2 * X.T, torch.ones_like(x_sq)[None], x_sq[None]])
    chosen = torch.empty(num_centers, dtype=torch.long)
    chosen[0] = int(torch.randint(num_rows, (1,), generator=generator))
    closest = (points[chosen[0].item()] @ columns).clamp_(min=0)
    for k in range(1, num_centers):
        cumulative = torch.cumsum(closest.to(device="cpu", dtype=torch.float64), dim=0)
        draws = torch.rand(n_local_trials, generator=generator, dtype=torch.float64) * cumulative[-1]
        candidates = torch.searchsorted(cumulative, draws, right=True).clamp_(max=num_rows - 1)
        trial = points[candidates.to(X.device)] @ columns  # [trials, N] squared distances
        trial = torch.minimum(trial, closest, out=trial)
        best = int(torch.argmin(trial.sum(dim=1)))
        chosen[k] = candidates[best]
        closest = trial[best].clamp_(min=0)
    return chosen


def _lloyd(
    X: torch.Tensor, sq_norms: torch.Tensor, centers: torch.Tensor, max_iter: int, tol: float, chunk_size: int
) -> _LevelFit:
    """Lloyd iterations on ``X`` ``[N, D]`` (rows' squared norms ``sq_norms`` ``[N]``) from ``centers``.

    The returned labels are the assignment to the returned centers (what ``encode`` gives), and the
    inertia is theirs. Inertia comes from per-cluster sums (see ``_inertia``), so it does not depend on
    ``chunk_size``.
    """
    num_centers = centers.shape[0]
    x_norms = sq_norms.sqrt()
    total_sq = float(sq_norms.sum(dtype=torch.float64))
    labels = _assign(X, x_norms, centers, chunk_size)
    sums, counts = _cluster_sums(X, labels, num_centers)
    inertia = _inertia(total_sq, centers, sums, counts)
    num_iter = 0
    while num_iter < max_iter:
        num_iter += 1
        if bool((counts == 0).any()):
            labels = _repair_empty_clusters(labels, _sq_dist_to_assigned(X, centers, labels), counts)
            sums, counts = _cluster_sums(X, labels, num_centers)
        centers = sums / counts[:, None].to(sums.dtype)
        new_labels = _assign(X, x_norms, centers, chunk_size)
        sums, counts = _cluster_sums(X, new_labels, num_centers)
        new_inertia = _inertia(total_sq, centers, sums, counts)
        unchanged = torch.equal(new_labels, labels)
        improvement = inertia - new_inertia
        labels, inertia = new_labels, new_inertia
        if unchanged or improvement <= tol * inertia:
            break
    return _LevelFit(centers, labels, inertia, num_iter)


def _repair_empty_clusters(labels: torch.Tensor, sq_dist: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Give every empty cluster one point, deterministically; returns new labels ``[N]``.

    Empty clusters are handled in index order; each takes the point farthest from its current center
    (``sq_dist`` ``[N]``; lowest row index on ties) among points whose cluster keeps another point.
    """
    counts = counts.clone()
    labels, sq_dist = labels.clone(), sq_dist.clone()
    for cluster in (counts == 0).nonzero().flatten().tolist():
        movable = counts[labels] > 1
        row = int(torch.argmax(torch.where(movable, sq_dist, -1.0)))
        counts[labels[row]] -= 1
        counts[cluster] += 1
        labels[row] = cluster
        sq_dist[row] = 0.0
    return labels


def _cluster_sums(
    X: torch.Tensor, labels: torch.Tensor, num_centers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums of the rows of ``X`` ``[K, D]`` (float32) and sizes ``[K]`` (int64)."""
    sums = torch.zeros(num_centers, X.shape[1], dtype=X.dtype, device=X.device).index_add_(0, labels, X)
    return sums, torch.bincount(labels, minlength=num_centers)


def _inertia(total_sq: float, centers: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> float:
    """Sum of squared distances of the points to their assigned centers, from cluster statistics.

    ``sum_i ||x_i - c_{l_i}||^2 = sum_i ||x_i||^2 - 2 sum_k c_k . S_k + sum_k n_k ||c_k||^2`` with ``S_k`` and
    ``n_k`` the sum and size of cluster k; evaluated in float64.
    """
    centers, sums = centers.double(), sums.double()
    cross = (centers * sums).sum()
    own = (counts.double() * (centers * centers).sum(dim=1)).sum()
    return max(total_sq - 2 * float(cross) + float(own), 0.0)


def _assign(X: torch.Tensor, x_norms: torch.Tensor, centers: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Index ``[N]`` (int64) of the nearest center (squared Euclidean) for each row of ``X`` ``[N, D]``.

    ``x_norms`` ``[N]`` are the rows' L2 norms. Scores ``||c||^2 - 2 x.c`` come from a float32 matrix
    product on blocks of ``chunk_size`` rows. Its rounding depends on the block's shape, so a row whose
    runner-up score is within the worst-case rounding difference of its best is decided again in float64
    among those near centers (``_exact_nearest``). Labels therefore do not depend on ``chunk_size`` or on
    which rows are encoded together; distances equal up to float64 rounding are ties, and ties go to
    the lowest index.
    """
    c_sq = _row_sq_norms(centers)
    labels = torch.empty(X.shape[0], dtype=torch.long, device=X.device)
    for start in range(0, X.shape[0], chunk_size):
        block, norms = X[start : start + chunk_size], x_norms[start : start + chunk_size]
        scores = torch.addmm(c_sq, block, centers.T, beta=1, alpha=-2)
        nearest = scores.argmin(dim=1, keepdim=True)
        labels[start : start + chunk_size] = nearest[:, 0]
        bound = scores.gather(1, nearest) + _rounding_slack(norms, centers)[:, None]
        scores.scatter_(1, nearest, math.inf)  # leaves each row's runner-up as its minimum
        ambiguous = (scores.amin(dim=1, keepdim=True) <= bound).flatten().nonzero().flatten()
        for part in ambiguous.split(_BLOCK_ROWS):
            near = (scores[part] <= bound[part]).scatter_(1, nearest[part], True)
            labels[start + part] = _exact_nearest(block[part], norms[part], centers, near)
    return labels


def _exact_nearest(
    rows: torch.Tensor, norms: torch.Tensor, centers: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """Nearest center ``[r]`` among ``candidates`` (bool ``[r, K]``) for ``rows`` ``[r, D]``, in float64.

    Candidates whose float64 score is within float64 rounding of the best tie; the lowest index wins.
    """
    centers = centers.double()
    scores = torch.addmm(_row_sq_norms(centers), rows.double(), centers.T, beta=1, alpha=-2)
    scores.masked_fill_(~candidates, math.inf)
    ties = scores <= (scores.amin(dim=1) + _rounding_slack(norms.double(), centers))[:, None]
    return ties.to(torch.uint8).argmax(dim=1)  # first maximum: the lowest tied index


def _rounding_slack(norms: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Per row ``[r]``: how much two evaluations of a row's score gap ``s_j - s_k`` can differ by rounding.

    Scores are ``||c||^2 - 2 x.c`` computed in the dtype of ``norms`` (the rows' ``||x||``). Whatever the
    summation order, a D-term dot product is within ``D * u * ||x|| * ||c||`` of its exact value
    (u = eps / 2), so a score is within ``E = D * eps * ||x|| * ||c||`` plus the rounding of its two
    additions; two evaluations of a gap (two scores each) differ by at most ``4 E``.
    """
    eps = torch.finfo(norms.dtype).eps
    c_max = float(_row_sq_norms(centers).max().sqrt())
    dim = centers.shape[1]
    return 4 * (dim * eps * c_max * norms + eps * (c_max**2 + 2 * c_max * norms)) + 1e-30


def _sq_dist_to_assigned(X: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared distance ``[N]`` (float64) of each row of ``X`` to its assigned center, block by block."""
    out = torch.empty(X.shape[0], dtype=torch.float64, device=X.device)
    for start, block in _blocks(X):
        diff = block.double() - centers[labels[start : start + len(block)]].double()
        out[start : start + len(block)] = (diff * diff).sum(dim=1)
    return out


def _subtract_assigned(residual: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> None:
    """``residual -= centers[labels]`` in place, block by block (no ``[N, D]`` temporary)."""
    for start, block in _blocks(residual):
        block -= centers[labels[start : start + len(block)]]


def _row_sq_norms(X: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of each row ``[N]``, block by block (no ``[N, D]`` temporary)."""
    out = torch.empty(X.shape[0], dtype=X.dtype, device=X.device)
    for start, block in _blocks(X):
        out[start : start + len(block)] = (block * block).sum(dim=1)
    return out


def _row_norms(X: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row ``[N]``."""
    return _row_sq_norms(X).sqrt_()


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
