"""Pivot score (Eq. 4) and pivot selection.

Shape shorthand: N images, k neighbours per image (self included), D feature dims.

Eq. 4 (a harmonic-centrality-like utility):
    score(i) = sum_{j in top_k(i), j != i} 1 / (d_ij + mu),   d_ij = 1 - cos(f_i, f_j).
top_k includes i itself, so the sum has k - 1 terms: 14 at the default k = 15, as the
authors' ``get_links`` counts (the paper's "15 nearest neighbours" would be k = 16).
Paper and authors' code differ (reference §6.3, §10 items 7-8), so both readings are options:

- ``mean_dist``: "all_pairs" (paper: mu = mean distance over all pairs i != j) or "knn"
  (code: mu = mean of the whole N x k kNN distance matrix, self column included).
- ``neighbours``: "topk" (paper: every top-k neighbour) or "edges" (code: only neighbours
  that became Infomap edges, cos >= min_sim).
- pivot ``rule``: "all_above_mean" (paper), "one_per_cluster_last" (code: the last
  above-mean member of each cluster in index order) or "one_per_cluster_max" (the
  highest-scoring member of each cluster if it is above the mean).
"""
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "all_pairs_mean_distance",
    "pivot_scores",
    "select_pivots",
    "MEAN_DIST_MODES",
    "NEIGHBOUR_MODES",
    "PIVOT_RULES",
]

MEAN_DIST_MODES = ("all_pairs", "knn")
NEIGHBOUR_MODES = ("topk", "edges")
PIVOT_RULES = ("all_above_mean", "one_per_cluster_last", "one_per_cluster_max")


def all_pairs_mean_distance(features: np.ndarray, chunk_size: int = 65536) -> float:
    """Mean cosine distance over all ordered pairs i != j, without an N x N matrix.

    For unit rows, sum_{i != j} <f_i, f_j> = ||sum_i f_i||^2 - sum_i ||f_i||^2, so
        mean = 1 - (||sum f||^2 - sum ||f_i||^2) / (N (N - 1)),
    which is O(N*D) time and O(D) memory (sums accumulated in float64).

    Args:
        features: (N, D) float features with unit rows (as used for the kNN search).

    Returns:
        float mean distance; 0.0 when N < 2.
    """
    x = np.asarray(features)
    n = x.shape[0]
    if n < 2:
        return 0.0
    total = np.zeros(x.shape[1], dtype=np.float64)
    sq = 0.0
    for start in range(0, n, chunk_size):
        block = x[start:start + chunk_size]
        total += block.sum(axis=0, dtype=np.float64)
        sq += float(np.einsum("ij,ij->", block, block, dtype=np.float64))
    return float(1.0 - (total @ total - sq) / (n * (n - 1)))


def pivot_scores(
    sims: np.ndarray,
    idx: np.ndarray,
    features: Optional[np.ndarray] = None,
    mean_dist: str = "all_pairs",
    neighbours: str = "topk",
    min_sim: float = 0.5,
) -> Tuple[np.ndarray, float]:
    """Eq. 4 pivot score of every image.

    Args:
        sims: (N, k) float32 cosine similarities of the kNN graph (self included).
        idx: (N, k) int64 neighbour ids (-1 = missing); j == i is always skipped by id.
        features: (N, D) unit features, needed for ``mean_dist="all_pairs"``.
        mean_dist: "all_pairs" (paper) or "knn" (authors' code), see module docstring.
        neighbours: "topk" (paper) or "edges" (authors' code: cos >= ``min_sim`` only).
        min_sim: edge threshold for ``neighbours="edges"``.

    Returns:
        scores: (N,) float64; 0 for an image with no counted neighbour.
        mu: the float mean distance used in the denominator.
    """
    if mean_dist not in MEAN_DIST_MODES:
        raise ValueError(f"mean_dist must be one of {MEAN_DIST_MODES}, got {mean_dist!r}")
    if neighbours not in NEIGHBOUR_MODES:
        raise ValueError(f"neighbours must be one of {NEIGHBOUR_MODES}, got {neighbours!r}")
    n = idx.shape[0]
    dist = 1.0 - sims.astype(np.float64)
    if mean_dist == "all_pairs":
        if features is None:
            raise ValueError("mean_dist='all_pairs' needs the features")
        mu = all_pairs_mean_distance(features)
    else:
        # Authors: mean of the N x k distance matrix, including the ~0 self column.
        mu = float(dist[idx >= 0].mean())
    mask = (idx >= 0) & (idx != np.arange(n)[:, None])
    if neighbours == "edges":
        mask &= sims >= min_sim
    with np.errstate(divide="ignore"):
        terms = np.where(mask, 1.0 / (dist + mu), 0.0)
    return terms.sum(axis=1), mu


def select_pivots(scores: np.ndarray, labels: np.ndarray, rule: str = "all_above_mean") -> np.ndarray:
    """Pivots = images whose score is above theta, the mean score over ALL N images.

    Args:
        scores: (N,) float Eq. 4 scores.
        labels: (N,) int global cluster labels, -1 = outlier (never a pivot).
        rule: "all_above_mean" (paper: every clustered image above theta),
            "one_per_cluster_last" (authors' code: per cluster, the above-theta member
            with the largest index, i.e. last in file order), or "one_per_cluster_max"
            (per cluster, the highest-scoring member, smallest index on ties, if above theta).
            A cluster without an above-theta member has no pivot and is not refined.

    Returns:
        (N,) bool mask of pivots.
    """
    if rule not in PIVOT_RULES:
        raise ValueError(f"pivot rule must be one of {PIVOT_RULES}, got {rule!r}")
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    mask = np.zeros(len(scores), dtype=bool)
    if len(scores) == 0:
        return mask
    theta = scores.mean()
    cand = np.flatnonzero((labels >= 0) & (scores > theta))
    if rule == "all_above_mean":
        mask[cand] = True
    elif rule == "one_per_cluster_last":
        # cand is ascending, so the first hit of each label in the reversed list is its last member.
        rev = cand[::-1]
        _, first = np.unique(labels[rev], return_index=True)
        mask[rev[first]] = True
    else:
        order = np.lexsort((cand, -scores[cand], labels[cand]))
        _, first = np.unique(labels[cand][order], return_index=True)
        mask[cand[order][first]] = True
    return mask
