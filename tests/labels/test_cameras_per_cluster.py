"""cameras_per_cluster (the per-epoch calr/cameras_per_cluster statistic): the per-cluster loop's numbers."""
import numpy as np
import pytest

from calr_plugin.labels.metrics import cameras_per_cluster


def _loop(labels, cams):
    # What Stage2LabelHook computed before: one boolean mask over N per cluster, O(N K).
    sizes = np.bincount(labels[labels >= 0])
    return np.array([len(np.unique(cams[labels == k])) for k in range(len(sizes))])


@pytest.mark.parametrize("seed", range(5))
def test_equals_the_per_cluster_loop_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2000))
    labels = rng.integers(-1, int(rng.integers(2, 80)), n)  # outliers and unused labels (gaps) included
    cams = rng.choice([3, 7, 11, 15, 20], n)  # arbitrary camera ids
    got = cameras_per_cluster(labels, cams)
    want = _loop(labels, cams)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert np.mean(got) == np.mean(want)


def test_hand_example_and_bad_input():
    labels = np.array([0, 0, 0, 2, 2, -1, -1])
    cams = np.array([1, 1, 5, 5, 5, 9, 1])
    # cluster 0: cameras {1, 5}; label 1 unused: 0; cluster 2: {5}; outliers not counted
    np.testing.assert_array_equal(cameras_per_cluster(labels, cams), [2, 0, 1])
    assert cameras_per_cluster(np.array([-1, -1]), np.array([0, 1])).shape == (0,)
    with pytest.raises(ValueError, match="one length"):
        cameras_per_cluster(labels, cams[:3])
