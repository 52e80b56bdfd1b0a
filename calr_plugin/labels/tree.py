"""Cuts of an agglomerative tree (a scipy linkage matrix).

Shape shorthand: N leaves (images), N - 1 merges, K clusters.
"""
from typing import Callable

import numpy as np

from .infomap_cluster import relabel_by_first_member

__all__ = ["cut_tree", "highest_cut"]


def cut_tree(z: np.ndarray, n: int, n_clusters: int) -> np.ndarray:
    """Labels after the first N - K merges of ``z``.

    Args:
        z: (N - 1, 4) linkage matrix, merges in order. n: N. n_clusters: K in [1, N].
    Returns:
        (N,) int64 labels 0..K-1, ordered by first member.
    """
    # Same partition as sklearn's _hc_cut: undoing the last n_clusters - 1 merges equals
    # keeping the first n - n_clusters. Roots are found by pointer jumping (log depth passes).
    m = n - n_clusters
    parent = np.arange(2 * n - 1, dtype=np.int64)
    children = z[:m, :2].astype(np.int64)
    new_ids = n + np.arange(m, dtype=np.int64)
    parent[children[:, 0]] = new_ids
    parent[children[:, 1]] = new_ids
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    return relabel_by_first_member(parent[:n])


def highest_cut(z: np.ndarray, n: int, ok: Callable[[np.ndarray], bool], ceiling: float) -> int:
    """The most merges m, all below ``ceiling``, whose labels still satisfy ``ok``.

    Args:
        z: (N - 1, 4) monotone linkage matrix (heights ascending: average linkage).
        n: N. ok: labels (N,) -> bool, true for no merge and, once false, false for every
            later cut (it may only fail more as clusters grow). ceiling: merges at or above
            this height are never kept.
    Returns:
        int: m in [0, N - 1]; ``cut_tree(z, n, n - m)`` is the cut. Bisection: O(log N) cuts.
    """
    lo, hi = 0, int(np.searchsorted(z[:, 2], ceiling, side="left"))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(cut_tree(z, n, n - mid)):
            lo = mid
        else:
            hi = mid - 1
    return lo
