"""Eq. 4 pivot scores (paper and code readings) and the pivot rules."""
import numpy as np
import pytest

from calr_plugin.labels import all_pairs_mean_distance, knn_search, pivot_scores, select_pivots

# Three unit vectors: cos(f0, f1) = 0.6, cos(f1, f2) = 0.8, cos(f0, f2) = 0
# -> distances d01 = 0.4, d12 = 0.2, d02 = 1.0.
F = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
SIMS = np.array([[1.0, 0.6, 0.0], [1.0, 0.8, 0.6], [1.0, 0.8, 0.0]], dtype=np.float32)
IDX = np.array([[0, 1, 2], [1, 2, 0], [2, 1, 0]])


def test_hand_example_matches_knn_search():
    sims, idx = knn_search(F, k=3, use_gpu=False)
    np.testing.assert_array_equal(idx, IDX)
    np.testing.assert_allclose(sims, SIMS, atol=1e-6)


def test_eq4_all_pairs_mean_topk():
    # mu = mean over the 6 ordered pairs = 2 * (0.4 + 0.2 + 1.0) / 6 = 8/15
    mu = 8 / 15
    scores, got_mu = pivot_scores(SIMS, IDX, F, mean_dist="all_pairs", neighbours="topk")
    assert got_mu == pytest.approx(mu)
    expected = [1 / (0.4 + mu) + 1 / (1.0 + mu),   # = 15/14 + 15/23
                1 / (0.2 + mu) + 1 / (0.4 + mu),   # = 15/11 + 15/14
                1 / (0.2 + mu) + 1 / (1.0 + mu)]   # = 15/11 + 15/23
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    np.testing.assert_allclose(scores, [15 / 14 + 15 / 23, 15 / 11 + 15 / 14, 15 / 11 + 15 / 23], rtol=1e-6)


def test_eq4_knn_mean_edges():
    # mu = mean of the 3 x 3 kNN distance matrix incl. the self column:
    # (0 + 0.4 + 1.0 + 0 + 0.2 + 0.4 + 0 + 0.2 + 1.0) / 9 = 3.2 / 9
    mu = 3.2 / 9
    scores, got_mu = pivot_scores(SIMS, IDX, mean_dist="knn", neighbours="edges", min_sim=0.5)
    assert got_mu == pytest.approx(mu, rel=1e-6)
    # edges (cos >= 0.5): 0 -> 1; 1 -> 2, 1 -> 0; 2 -> 1
    expected = [1 / (0.4 + mu), 1 / (0.2 + mu) + 1 / (0.4 + mu), 1 / (0.2 + mu)]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_eq4_mixed_variants():
    mu_pairs, mu_knn = 8 / 15, 3.2 / 9
    s, _ = pivot_scores(SIMS, IDX, F, mean_dist="all_pairs", neighbours="edges", min_sim=0.5)
    np.testing.assert_allclose(s, [1 / (0.4 + mu_pairs), 1 / (0.2 + mu_pairs) + 1 / (0.4 + mu_pairs),
                                   1 / (0.2 + mu_pairs)], rtol=1e-6)
    s, _ = pivot_scores(SIMS, IDX, mean_dist="knn", neighbours="topk")
    np.testing.assert_allclose(s, [1 / (0.4 + mu_knn) + 1 / (1.0 + mu_knn),
                                   1 / (0.2 + mu_knn) + 1 / (0.4 + mu_knn),
                                   1 / (0.2 + mu_knn) + 1 / (1.0 + mu_knn)], rtol=1e-6)


def test_all_pairs_mean_identity_vs_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((137, 9)) + 0.5  # positive bias: mean cos well above 0
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    d = 1.0 - x.astype(np.float64) @ x.T.astype(np.float64)
    brute = d[~np.eye(137, dtype=bool)].mean()
    assert all_pairs_mean_distance(x, chunk_size=10) == pytest.approx(brute, abs=1e-6)
    assert all_pairs_mean_distance(x[:1]) == 0.0


def test_pivot_rules():
    scores = np.array([5, 1, 4, 2, 6, 4, 3, 3.5, 0.0])
    labels = np.array([0, 0, 0, 1, 1, -1, 2, 2, 2])
    # theta = 28.5 / 9 = 3.17 over ALL images (the outlier's 4 counts in the mean)
    # above theta: 0 (5), 2 (4), 4 (6), 5 (4, outlier: never a pivot), 7 (3.5)
    assert np.flatnonzero(select_pivots(scores, labels, "all_above_mean")).tolist() == [0, 2, 4, 7]
    assert np.flatnonzero(select_pivots(scores, labels, "one_per_cluster_last")).tolist() == [2, 4, 7]
    assert np.flatnonzero(select_pivots(scores, labels, "one_per_cluster_max")).tolist() == [0, 4, 7]
    # cluster without an above-mean member gets no pivot; ties -> smallest index
    tie = select_pivots(np.array([9.0, 9.0, 0, 0, 0]), np.array([0, 0, 1, 1, 1]), "one_per_cluster_max")
    assert np.flatnonzero(tie).tolist() == [0]
    with pytest.raises(ValueError, match="bogus"):
        select_pivots(scores, labels, "bogus")
