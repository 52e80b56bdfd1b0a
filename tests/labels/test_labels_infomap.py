"""kNN edges and Infomap clustering: threshold, determinism, outliers."""
import numpy as np
import pytest

from calr_plugin.labels import infomap_cluster, knn_edges, knn_search, relabel_by_first_member


def _blobs(sizes, d=32, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((d, len(sizes))))[0].T  # orthonormal
    lab = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[lab] + noise * rng.standard_normal((len(lab), d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), lab


def test_knn_edges_hand_example():
    # row 0: self, 2 (0.9), 1 (0.4)   -> keeps 0->2
    # row 1: self, 0 (0.4), 2 (0.3)   -> nothing
    # row 2: 0 (0.9) listed before self, self, 1 (0.3) -> keeps 2->0 (self skipped by id)
    sims = np.array([[1.0, 0.9, 0.4], [1.0, 0.4, 0.3], [0.9, 1.0, 0.3]], dtype=np.float32)
    idx = np.array([[0, 2, 1], [1, 0, 2], [0, 2, 1]])
    src, dst, w, kept = knn_edges(sims, idx, min_sim=0.5)
    assert src.tolist() == [0, 2] and dst.tolist() == [2, 0]
    np.testing.assert_allclose(w, [0.9, 0.9])
    assert kept == pytest.approx(2 / 6)  # 6 non-self slots
    assert knn_edges(sims, idx, min_sim=0.0)[3] == 1.0  # a threshold that keeps every edge


def test_infomap_recovers_blobs_and_small_clusters_become_outliers():
    x, lab = _blobs([8, 7, 3])
    x = np.concatenate([x, np.eye(32, dtype=np.float32)[31:32]])  # one isolated image
    sims, idx = knn_search(x, k=15, use_gpu=False)
    res = infomap_cluster(sims, idx, min_sim=0.5, min_size=5, seed=0)
    labels = res.labels
    assert labels.dtype == np.int64
    assert labels[:8].tolist() == [0] * 8 and labels[8:15].tolist() == [1] * 7
    assert (labels[15:] == -1).all()  # blob of 3 (< min_size) and the isolated image
    assert res.num_clusters == 2
    assert 0 < res.kept_edge_fraction < 1
    kept3 = infomap_cluster(sims, idx, min_sim=0.5, min_size=3, seed=0).labels
    assert (kept3[15:18] == 2).all() and kept3[18] == -1


def test_infomap_is_deterministic_under_a_seed():
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((30, 16))
    x = centres[rng.integers(0, 30, 600)] + 0.6 * rng.standard_normal((600, 16))
    sims, idx = knn_search(x.astype(np.float32), k=15, use_gpu=False)
    a = infomap_cluster(sims, idx, min_sim=0.5, seed=4, num_trials=2).labels
    b = infomap_cluster(sims, idx, min_sim=0.5, seed=4, num_trials=2).labels
    np.testing.assert_array_equal(a, b)
    kept = a[a >= 0]
    assert kept.max() + 1 == len(np.unique(kept))  # contiguous 0..K-1
    first = [np.flatnonzero(a == c)[0] for c in range(kept.max() + 1)]
    assert first == sorted(first)  # numbered by smallest member


def test_relabel_by_first_member():
    out = relabel_by_first_member(np.array([7, -1, 3, 7, 3, 9]))
    assert out.tolist() == [0, -1, 1, 0, 1, 2]
