"""Pairwise precision / recall / F, expansion, NMI, ARI on hand-made labelings."""
import numpy as np
import pytest

from calr_plugin.labels import METRIC_KEYS, cluster_metrics

#              0  1  2  3  4   5
PRED = np.array([0, 0, 0, 1, 1, -1])
GT = np.array([1, 1, 2, 2, 2, 1])
CAMS = np.array([0, 0, 1, 1, 1, 0])


def test_hand_example():
    m = cluster_metrics(PRED, GT)
    assert tuple(m) == METRIC_KEYS
    # predicted pairs among clustered images: cluster 0 {0,1,2} -> 3, cluster 1 {3,4} -> 1 = 4
    # true positives: (0,1) id 1 and (3,4) id 2 = 2                    -> precision 2/4
    # same-id pairs over ALL 6 images: id 1 {0,1,5} -> 3, id 2 {2,3,4} -> 3 = 6 -> recall 2/6
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["fscore"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))  # = 0.4
    # id 1 lies in {0}, id 2 in {0, 1} -> (1 + 2) / 2
    assert m["expansion"] == pytest.approx(1.5)
    # ARI on the 5 clustered images: contingency [[2,1],[0,2]], index 2, expected 4*4/10,
    # max (4+4)/2 -> (2 - 1.6) / (4 - 1.6) = 1/6
    assert m["ari"] == pytest.approx(1 / 6)
    assert 0 < m["nmi"] < 1
    assert m["clustered_fraction"] == pytest.approx(5 / 6)
    assert m["num_clusters"] == 2 and isinstance(m["num_clusters"], int)


def test_within_camera():
    m = cluster_metrics(PRED, GT, CAMS, within_camera=True)
    # same-camera predicted pairs: (0,1) in cluster 0, (3,4) in cluster 1 -> both same id
    # same-camera same-id pairs: id 1 cam 0 {0,1,5} -> 3, id 2 cam 1 {2,3,4} -> 3
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(2 / 6)
    # (id 1, cam 0) in {0}; (id 2, cam 1) in {0, 1}
    assert m["expansion"] == pytest.approx(1.5)


def test_perfect_and_discarding_lowers_recall():
    gt = np.array([0, 0, 0, 1, 1, 1])
    assert cluster_metrics(gt + 5, gt)["fscore"] == pytest.approx(1.0)
    dropped = np.array([0, 0, -1, 1, 1, 1])
    m = cluster_metrics(dropped, gt)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(4 / 6)


def test_nothing_clustered():
    m = cluster_metrics(np.full(4, -1), np.array([0, 0, 1, 1]))
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["num_clusters"] == 0
    assert np.isnan(m["expansion"]) and m["clustered_fraction"] == 0.0
