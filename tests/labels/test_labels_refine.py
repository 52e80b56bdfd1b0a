"""Eq. 5 refinement: hand examples, p = 0 / 1, 'each' vs 'union', randomness."""
import numpy as np
import pytest

from calr_plugin.labels import refine_labels, relabel_contiguous

#                  0   1   2   3   4   5   6   7   8   9
CAMS = np.array([0, 0, 0, 0, 1, 1, 0, 0, 1, 0])
GLOBAL = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, -1])
LOCAL = np.array([10, 10, 11, 12, 20, 21, 13, 14, 22, 15])


def _pivots(*ids):
    m = np.zeros(10, dtype=bool)
    m[list(ids)] = True
    return m


def test_p1_is_exactly_eq5_one_pivot():
    # pivot 0 (cluster 0, camera 0, local 10): same-camera members 2 and 3 are in other local
    # clusters -> discarded; 1 shares local 10 -> kept; camera-1 members 4, 5 untouched;
    # cluster 1 has no pivot -> untouched; the outlier stays -1.
    refined, stats = refine_labels(GLOBAL, LOCAL, CAMS, _pivots(0), p=1.0)
    assert refined.tolist() == [0, 0, -1, -1, 0, 0, 1, 1, 1, -1]
    assert stats["num_discarded"] == 2 and stats["num_clustered"] == 9
    assert stats["discard_ratio"] == pytest.approx(2 / 9)


def test_p1_pivots_in_several_cameras():
    # + pivot 5 (cluster 0, camera 1, local 21) discards 4 (local 20);
    # + pivot 6 (cluster 1, camera 0, local 13) discards 7 (local 14), not 8 (camera 1).
    refined, stats = refine_labels(GLOBAL, LOCAL, CAMS, _pivots(0, 5, 6), p=1.0)
    assert refined.tolist() == [0, 0, -1, -1, -1, 0, 1, -1, 1, -1]
    assert stats["num_discarded"] == 4
    # both readings agree when each group has one pivot
    union, _ = refine_labels(GLOBAL, LOCAL, CAMS, _pivots(0, 5, 6), p=1.0, mode="union")
    assert union.tolist() == refined.tolist()


def test_p0_keeps_everything():
    refined, stats = refine_labels(GLOBAL, LOCAL, CAMS, _pivots(0, 5, 6), p=0.0)
    assert refined.tolist() == GLOBAL.tolist() and stats["discard_ratio"] == 0.0


def test_outlier_pivot_is_ignored():
    refined, _ = refine_labels(GLOBAL, LOCAL, CAMS, _pivots(9), p=1.0)
    assert refined.tolist() == GLOBAL.tolist()


def test_each_vs_union_differ():
    # one (cluster, camera) group: pivots a (local 1) and b (local 2), members c (local 1), d (local 3)
    g = np.zeros(4, dtype=np.int64)
    cams = np.zeros(4, dtype=np.int64)
    local = np.array([1, 2, 1, 3])
    piv = np.array([True, True, False, False])
    each, _ = refine_labels(g, local, cams, piv, p=1.0, mode="each")
    union, _ = refine_labels(g, local, cams, piv, p=1.0, mode="union")
    # each (Alg. 1 literally): a is discarded by b, b by a, c by b, d by both
    assert each.tolist() == [-1, -1, -1, -1]
    # union: kept if in ANY pivot's local cluster
    assert union.tolist() == [0, 0, 0, -1]


def test_local_labels_only_need_to_be_unique_within_a_camera():
    # camera 1 reuses local label 10, which is camera 0's pivot label: it must not matter
    g = np.array([0, 0, 0, 0])
    cams = np.array([0, 0, 1, 1])
    local = np.array([10, 11, 10, 10])
    refined, _ = refine_labels(g, local, cams, np.array([True, False, False, False]), p=1.0)
    assert refined.tolist() == [0, -1, 0, 0]


def test_seeded_reproducibility():
    rng = np.random.default_rng(0)
    n = 500
    g = rng.integers(-1, 20, n)
    cams = rng.integers(0, 4, n)
    local = rng.integers(0, 50, n)
    piv = rng.random(n) < 0.1
    a, _ = refine_labels(g, local, cams, piv, p=0.5, seed=7)
    b, _ = refine_labels(g, local, cams, piv, p=0.5, seed=7)
    c, _ = refine_labels(g, local, cams, piv, p=0.5, seed=np.random.default_rng(7))
    d, _ = refine_labels(g, local, cams, piv, p=0.5, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert (a != d).any()


def test_discard_probability_is_p_per_pivot():
    n = 20_001
    g = np.zeros(n, dtype=np.int64)
    cams = np.zeros(n, dtype=np.int64)
    local = np.arange(n)  # every member in its own local cluster
    one = np.zeros(n, dtype=bool)
    one[0] = True
    _, stats = refine_labels(g, local, cams, one, p=0.5, seed=0)
    # 20,000 candidates, each discarded with p = 0.5: std of the ratio ~0.0035
    assert stats["num_discarded"] / 20_000 == pytest.approx(0.5, abs=0.02)
    two = one.copy()
    two[1] = True
    # 'each': two different-local pivots -> kept with (1 - p)^2 = 0.25
    _, stats = refine_labels(g, local, cams, two, p=0.5, seed=0, mode="each")
    assert stats["num_discarded"] / n == pytest.approx(0.75, abs=0.02)
    # 'union': still a single draw with p
    _, stats = refine_labels(g, local, cams, two, p=0.5, seed=0, mode="union")
    assert stats["num_discarded"] / 19_999 == pytest.approx(0.5, abs=0.02)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="1.5"):
        refine_labels(GLOBAL, LOCAL, CAMS, _pivots(0), p=1.5)
    with pytest.raises(ValueError, match="both"):
        refine_labels(GLOBAL, LOCAL, CAMS, _pivots(0), mode="both")
    with pytest.raises(ValueError, match=">= 0"):
        refine_labels(GLOBAL, LOCAL - 20, CAMS, _pivots(0))


def test_relabel_contiguous():
    assert relabel_contiguous(np.array([4, -1, 2, 4, 9])).tolist() == [1, -1, 0, 1, 2]
