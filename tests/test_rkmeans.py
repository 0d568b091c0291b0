"""Tests for shark_hf.rkmeans.ResidualKMeans (small data, exact expectations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shark_hf import rkmeans
from shark_hf.rkmeans import ResidualKMeans


def _random_data(rows: int = 300, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


def _blobs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 far-apart blob centers x 3 symmetric offsets x 4 copies = 36 points in 2-D.

    Each blob's points average to its center (the offsets sum to zero), so level 1 must find the three
    centers exactly and level 2 the three offsets exactly. Returns (X, blob index, offset index).
    """
    centers = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    offsets = torch.tensor([[2.0, 0.0], [-1.0, 3.0], [-1.0, -3.0]])
    blob = torch.arange(3).repeat_interleave(12)
    offset = torch.arange(3).repeat(4).repeat(3)
    return centers[blob] + offsets[offset], blob, offset


@pytest.fixture(scope="module")
def fitted() -> tuple[ResidualKMeans, torch.Tensor, torch.Tensor]:
    X = _random_data()
    rk = ResidualKMeans(num_levels=3, codebook_size=6, seed=0)
    return rk, X, rk.fit_encode(X)


def test_same_seed_gives_identical_codebooks_and_ids(fitted):
    rk, X, ids = fitted
    again = ResidualKMeans(num_levels=3, codebook_size=6, seed=0)
    again_ids = again.fit_encode(X)
    assert torch.equal(rk.codebooks, again.codebooks)
    assert torch.equal(ids, again_ids)
    assert rk.level_errors == again.level_errors
    other = ResidualKMeans(num_levels=3, codebook_size=6, seed=1).fit(X)
    assert not torch.equal(rk.codebooks, other.codebooks)


def test_shapes_dtypes_and_usage(fitted):
    rk, X, ids = fitted
    assert rk.codebooks.shape == (3, 6, 8) and rk.codebooks.dtype == torch.float32
    assert ids.shape == (300, 3) and ids.dtype == torch.int64
    assert rk.dim == 8
    assert rk.codebook_usage == [6, 6, 6]
    assert rk.codebook_usage == [int(ids[:, level].unique().numel()) for level in range(3)]
    assert all(1 <= n <= rk.max_iter for n in rk.num_iter)
    assert rk.level_errors[0] > rk.level_errors[1] > rk.level_errors[2] > 0


def test_encode_of_training_data_equals_fit_assignment(fitted):
    rk, X, ids = fitted
    assert torch.equal(rk.encode(X), ids)
    assert torch.equal(rk.encode(X.numpy()), ids)


def test_level_errors_are_decode_mse_per_element(fitted):
    rk, X, ids = fitted
    for level in range(3):
        error = ((X.double() - rk.decode(ids[:, : level + 1]).double()) ** 2).mean().item()
        assert error == pytest.approx(rk.level_errors[level], rel=1e-6)
    # The unit is per coordinate: the first level error of unit-variance data is below 1 and above 0.
    assert 0 < rk.level_errors[0] < X.var().item()


def test_fit_centroids_are_cluster_means(fitted):
    rk, X, ids = fitted
    residual = X.clone()
    for level in range(3):
        for k in range(6):
            members = residual[ids[:, level] == k]
            torch.testing.assert_close(rk.codebooks[level, k], members.mean(dim=0), rtol=1e-5, atol=1e-6)
        residual -= rk.codebooks[level][ids[:, level]]


def test_well_separated_blobs_give_expected_ids_up_to_label_order():
    X, blob, offset = _blobs()
    rk = ResidualKMeans(num_levels=2, codebook_size=3, seed=0)
    ids = rk.fit_encode(X)
    # Level 1 is a relabelling of the blob, level 2 of the offset.
    level1 = {int(b): int(i) for b, i in zip(blob, ids[:, 0], strict=True)}
    level2 = {int(o): int(i) for o, i in zip(offset, ids[:, 1], strict=True)}
    assert sorted(level1.values()) == [0, 1, 2] and sorted(level2.values()) == [0, 1, 2]
    assert torch.equal(ids[:, 0], torch.tensor([level1[int(b)] for b in blob]))
    assert torch.equal(ids[:, 1], torch.tensor([level2[int(o)] for o in offset]))
    expected_l1 = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    expected_l2 = torch.tensor([[2.0, 0.0], [-1.0, 3.0], [-1.0, -3.0]])
    assert torch.equal(rk.codebooks[0][[level1[b] for b in range(3)]], expected_l1)
    assert torch.equal(rk.codebooks[1][[level2[o] for o in range(3)]], expected_l2)
    # Level 1 leaves the offsets: mean of (4 + 10 + 10) / 3 = 8 per point over 2 coordinates = 4.
    assert rk.level_errors == [4.0, 0.0]
    assert rk.codebook_usage == [3, 3]


def test_encode_new_vectors_follows_greedy_rule_by_hand():
    codebooks = torch.tensor(
        [
            [[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]],
            [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]],
        ]
    )
    rk = ResidualKMeans.from_codebooks(codebooks)
    # (4.9, 0.8): level 1 squared distances 24.65, 1.45, 34.25 -> 1; residual (0.9, 0.8):
    # level 2 squared distances 0.65, 0.85, 6.85 -> 0.
    # (2, 0) is equidistant (4, 4) from codewords 0 and 1 -> the lower index 0; residual (2, 0) -> 0.
    # (-0.5, 3.0): level 1 distances 9.25, 29.25, 1.25 -> 2; residual (-0.5, -1.0):
    # level 2 distances 3.25, 4.25, 0.25 -> 2.
    X = torch.tensor([[4.9, 0.8], [2.0, 0.0], [-0.5, 3.0]])
    assert rk.encode(X).tolist() == [[1, 0], [0, 0], [2, 2]]
    assert rk.decode(torch.tensor([[1, 0], [2, 2]])).tolist() == [[5.0, 0.0], [-1.0, 3.0]]
    assert rk.decode(torch.tensor([[1], [2]])).tolist() == [[4.0, 0.0], [0.0, 4.0]]


def test_encode_new_vectors_matches_explicit_loop(fitted):
    rk, _, _ = fitted
    new = _random_data(rows=20, seed=7)
    expected = []
    for x in new:
        residual, row = x.double(), []
        for level in range(rk.num_levels):
            dist = ((residual[None] - rk.codebooks[level].double()) ** 2).sum(dim=1)
            row.append(int(dist.argmin()))
            residual = residual - rk.codebooks[level][row[-1]].double()
        expected.append(row)
    assert rk.encode(new).tolist() == expected
    # One vector at a time gives the same IDs as the batch.
    assert torch.cat([rk.encode(new[i : i + 1]) for i in range(20)]).tolist() == expected


def test_chunked_and_unchunked_are_identical():
    X = _random_data(rows=400, dim=16, seed=3)
    whole = ResidualKMeans(num_levels=3, codebook_size=8, seed=0, chunk_size=10_000)
    chunked = ResidualKMeans(num_levels=3, codebook_size=8, seed=0, chunk_size=37)
    ids_whole, ids_chunked = whole.fit_encode(X), chunked.fit_encode(X)
    assert torch.equal(whole.codebooks, chunked.codebooks)
    assert torch.equal(ids_whole, ids_chunked)
    assert whole.level_errors == chunked.level_errors
    assert torch.equal(chunked.encode(X), ids_whole)


def test_n_init_keeps_the_best_run():
    X = _random_data(rows=200, dim=4, seed=5)
    one = ResidualKMeans(num_levels=1, codebook_size=10, seed=0, n_init=1).fit(X)
    three = ResidualKMeans(num_levels=1, codebook_size=10, seed=0, n_init=3).fit(X)
    # The first of the three runs is the n_init=1 run (same generator state), so the best is no worse.
    assert three.level_errors[0] <= one.level_errors[0]


def test_full_space_seeding_and_sklearn_trial_count():
    X = _random_data(rows=200, dim=6, seed=2)
    rk = ResidualKMeans(num_levels=2, codebook_size=5, init_dims=None, n_local_trials=None).fit(X)
    assert rk._local_trials() == 2 + int(np.log(5))
    assert torch.equal(rk.encode(X), ResidualKMeans.from_codebooks(rk.codebooks).encode(X))


def test_lloyd_repairs_an_empty_cluster_by_hand():
    # Points 0, 1, 10, 11 on a line, start centers 0, 1, 100 (cluster 2 starts empty).
    # it 1: labels [0, 1, 1, 1]; cluster 2 empty -> takes the farthest point, 11 (distance 100)
    #       -> labels [0, 1, 1, 2], centers [0, 5.5, 11]
    # it 2: labels [0, 0, 2, 2]; cluster 1 empty -> farthest movable point: distances [0, 1, 1, 0],
    #       first maximum is row 1 -> labels [0, 1, 2, 2], centers [0, 1, 10.5]; the new assignment
    #       equals the labels these centers came from -> converged. Inertia 0.25 + 0.25.
    X = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    fit = rkmeans._lloyd(
        X, X[:, 0] ** 2, torch.tensor([[0.0], [1.0], [100.0]]), max_iter=100, tol=0.0, chunk_size=3
    )
    assert fit.labels.tolist() == [0, 1, 2, 2]
    assert fit.centers.flatten().tolist() == [0.0, 1.0, 10.5]
    assert fit.inertia == pytest.approx(0.5)
    assert fit.num_iter == 2


def test_repair_empty_clusters_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1])
    sq_dist = torch.tensor([0.1, 0.5, 0.2, 0.3, 0.0], dtype=torch.float64)
    counts = torch.bincount(labels, minlength=4)
    # Cluster 2 takes row 1 (farthest); cluster 3 then takes row 3 (row 1 now alone in cluster 2).
    assert rkmeans._repair_empty_clusters(labels, sq_dist, counts).tolist() == [0, 2, 0, 3, 1]
    assert labels.tolist() == [0, 0, 0, 1, 1]  # inputs untouched


def test_duplicate_points_fewer_distinct_than_codebook_size(monkeypatch):
    # 3 distinct points, K = 4: one codeword must duplicate a point, so a cluster empties and is repaired.
    X = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 2)
    empty_counts = []
    repair = rkmeans._repair_empty_clusters

    def spy(labels, sq_dist, counts):
        empty_counts.append(int((counts == 0).sum()))
        return repair(labels, sq_dist, counts)

    monkeypatch.setattr(rkmeans, "_repair_empty_clusters", spy)
    rk = ResidualKMeans(num_levels=2, codebook_size=4, seed=0)
    ids = rk.fit_encode(X)
    assert empty_counts and all(count > 0 for count in empty_counts)
    assert torch.isfinite(rk.codebooks).all()
    level1 = rk.codebooks[0]
    assert {tuple(row) for row in level1.tolist()} == {(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)}
    # Each point takes the lowest index among the codewords equal to it (ties go to the lowest index).
    expected = [min(k for k in range(4) if torch.equal(level1[k], x)) for x in X]
    assert ids[:, 0].tolist() == expected
    # Level 2 sees all-zero residuals: every codeword is 0 and every ID the lowest index.
    assert torch.equal(rk.codebooks[1], torch.zeros(4, 2)) and ids[:, 1].tolist() == [0] * 12
    assert rk.codebook_usage == [3, 1]
    assert rk.level_errors == [0.0, 0.0]
    assert torch.equal(rk.decode(ids), X)
    assert torch.equal(rk.encode(X), ids)


def test_deterministic_algorithms_mode():
    X = _random_data(rows=120, dim=5, seed=4)
    reference = ResidualKMeans(num_levels=2, codebook_size=4).fit(X)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        strict = ResidualKMeans(num_levels=2, codebook_size=4).fit(X)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert torch.equal(reference.codebooks, strict.codebooks)


def test_numpy_float64_input_and_progress_bar(capsys):
    X = _random_data(rows=50, dim=3, seed=6).numpy().astype(np.float64)
    rk = ResidualKMeans(num_levels=2, codebook_size=3, show_progress=True).fit(X)
    assert rk.codebooks.dtype == torch.float32
    assert torch.equal(rk.encode(X), rk.encode(torch.from_numpy(X).float()))
    assert "residual k-means" in capsys.readouterr().err
    grid = np.array([[0, 0], [0, 9], [9, 0], [9, 9]], dtype=np.uint8)  # integer input is cast to float32
    assert ResidualKMeans(num_levels=1, codebook_size=4).fit(grid).codebook_usage == [4]


def test_from_codebooks_round_trip(fitted):
    rk, X, ids = fitted
    restored = ResidualKMeans.from_codebooks(
        rk.codebooks.numpy(), level_errors=rk.level_errors, codebook_usage=rk.codebook_usage
    )
    assert (restored.num_levels, restored.codebook_size, restored.dim) == (3, 6, 8)
    assert torch.equal(restored.codebooks, rk.codebooks)
    assert torch.equal(restored.encode(X), ids)
    assert torch.equal(restored.decode(ids), rk.decode(ids))
    assert restored.level_errors == rk.level_errors and restored.codebook_usage == rk.codebook_usage
    assert ResidualKMeans.from_codebooks(rk.codebooks).level_errors is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu_ids(fitted):
    rk, X, ids = fitted
    gpu = ResidualKMeans(num_levels=3, codebook_size=6, seed=0, device="cuda")
    gpu_ids = gpu.fit_encode(X)
    assert gpu.codebooks.device.type == "cuda"
    torch.testing.assert_close(gpu.codebooks.cpu(), rk.codebooks, rtol=1e-4, atol=1e-5)
    assert torch.equal(gpu_ids.cpu(), ids)


# ------------------------------------------------------------------------------------------ errors


def test_nan_and_inf_rows_are_named():
    X = _random_data(rows=20, dim=3)
    X[4, 1] = float("nan")
    X[11, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or inf values in 2 row\(s\): \[4, 11\]"):
        ResidualKMeans(num_levels=1, codebook_size=2).fit(X)
    rk = ResidualKMeans(num_levels=1, codebook_size=2).fit(_random_data(rows=20, dim=3))
    with pytest.raises(ValueError, match=r"\[4, 11\]"):
        rk.encode(X)


def test_codebook_size_larger_than_rows():
    with pytest.raises(ValueError, match=r"codebook_size=128 is larger than the number of vectors N=50"):
        ResidualKMeans(codebook_size=128).fit(_random_data(rows=50, dim=4))


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_wrong_number_of_dimensions(shape):
    with pytest.raises(ValueError, match=r"X must be 2-D \[N, D\], got shape"):
        ResidualKMeans(num_levels=1, codebook_size=2).fit(torch.zeros(shape))


def test_other_input_errors(fitted):
    rk, _, ids = fitted
    with pytest.raises(ValueError, match=r"X has D=5 columns but the codebooks have D=8"):
        rk.encode(torch.zeros(3, 5))
    assert rk.encode(torch.zeros(0, 8)).shape == (0, 3)  # encoding nothing is fine, fitting on it is not
    with pytest.raises(ValueError, match=r"at least one row and one column, got shape \(0, 8\)"):
        ResidualKMeans(num_levels=1, codebook_size=1).fit(torch.zeros(0, 8))
    with pytest.raises(ValueError, match=r"at least one row and one column, got shape \(4, 0\)"):
        rk.encode(torch.zeros(4, 0))
    with pytest.raises(TypeError, match=r"torch.Tensor or numpy.ndarray"):
        rk.encode([[0.0] * 8])
    with pytest.raises(ValueError, match=r"real-valued"):
        rk.encode(torch.zeros(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"ids out of range \[0, 6\) in rows \[1\]"):
        rk.decode(torch.tensor([[0, 1, 2], [0, 6, 0]]))
    with pytest.raises(ValueError, match=r"ids must have shape \[N, l\] with l <= 3"):
        rk.decode(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids must be integers"):
        rk.decode(ids.float())
    with pytest.raises(RuntimeError, match=r"not fitted"):
        ResidualKMeans().encode(torch.zeros(2, 8))


def test_parameter_and_codebook_errors():
    with pytest.raises(ValueError, match=r"num_levels must be a positive integer, got 0"):
        ResidualKMeans(num_levels=0)
    with pytest.raises(ValueError, match=r"codebook_size must be a positive integer"):
        ResidualKMeans(codebook_size=2.5)
    with pytest.raises(ValueError, match=r"tol must be >= 0"):
        ResidualKMeans(tol=-1.0)
    with pytest.raises(ValueError, match=r"init_dims must be a positive integer"):
        ResidualKMeans(init_dims=0)
    with pytest.raises(ValueError, match=r"codebooks must have shape \[L, K, D\]"):
        ResidualKMeans.from_codebooks(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"codebooks contain NaN or inf"):
        ResidualKMeans.from_codebooks(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match=r"codebooks must be floating point"):
        ResidualKMeans.from_codebooks(torch.zeros(1, 2, 2, dtype=torch.long))
