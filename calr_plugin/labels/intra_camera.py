"""Stage-1 "local" labels: per-camera k-reciprocal Jaccard distance + average-linkage clustering.

Shape shorthand: N images, N_c images of camera c, C cameras, D feature dims, k1/k2 the
k-reciprocal parameters, K_c clusters of camera c.

Reference §5 step 2-3 (authors' ``intra_camera_training.py``): for every camera separately,
J = k-reciprocal Jaccard distance (k1 = 15, k2 = 4), then
``AgglomerativeClustering(n_clusters=N_c // 5, metric="precomputed", linkage="average")``;
every image gets a label (no outliers). The paper only says "N_c / 5 clusters". With tracklets
(beyond the paper), a tracklet is never split, and where tracklets of a camera were seen at the
same time the cut comes from them instead of a count (``tracklet_links.py``).

The Jaccard distance is the algorithm of ``fastreid.utils.compute_dist.compute_jaccard_distance``
(k-reciprocal sets, expansion by half-k sets, softmax V, query expansion over k2, then
J_ij = 1 - sum_l min(V_il, V_jl) / (2 - sum_l min(V_il, V_jl))), but V is a scipy sparse
matrix and every loop is a sparse product or a vectorised gather, so the only O(N_c^2)
arrays are the distance matrices that average linkage and the silhouette score need anyway.

Memory per camera: the condensed float64 distances (4 N_c^2 bytes) plus scipy's working copy
inside ``linkage`` (another 4 N_c^2), then a square float32 matrix (4 N_c^2) for the
silhouette after the linkage arrays are freed: peak about 8 N_c^2 bytes, i.e. 3.2 GB for
N_c = 20,000 and about 50,000 images per camera in 24 GiB.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import faiss
import numpy as np
import scipy.sparse as sp
from scipy.cluster.hierarchy import linkage
from sklearn.metrics import silhouette_score

from .knn import l2_normalize
from .tracklet_links import cannot_link_distance, cannot_link_pairs, co_occurring, joined_share
from .tree import cut_tree, highest_cut

__all__ = [
    "jaccard_distance",
    "cluster_camera",
    "intra_camera_labels",
    "LocalLabels",
    "num_local_clusters",
    "jaccard_average_linkage",
    "cut_tree",
    "num_units",
]


def _k_reciprocal(rank: np.ndarray, k: int) -> sp.csr_matrix:
    # R(i, k) = {j in fwd(i) : i in fwd(j)}, fwd(i) = rank[i, :k + 1] (FastReID slices k + 1
    # columns of a k1-column rank, so for k = k1 this is all k1 columns).
    n = rank.shape[0]
    m = min(k + 1, rank.shape[1])
    fwd = sp.csr_matrix(
        (np.ones(n * m, dtype=np.int32), rank[:, :m].ravel(), np.arange(0, n * m + 1, m)),
        shape=(n, n),
    )
    return fwd.multiply(fwd.T).tocsr()


def _jaccard_overlap(x: np.ndarray, k1: int, k2: int, max_pairs: int = 1 << 21):
    """Upper-triangle sum_l min(V_il, V_jl) of the k-reciprocal encoding V.

    Returns (rows, cols, overlap) float64 for i < j with a non-zero overlap, and the (N,)
    diagonal overlap sum_l V_il.
    """
    n, d = x.shape
    k1 = min(k1, n)
    _, rank = faiss.knn(x, x, k1, metric=faiss.METRIC_L2)  # FastReID: IndexFlatL2, k1 incl. self
    k_half = int(np.around(k1 / 2))
    r1 = _k_reciprocal(rank, k1)
    rh = _k_reciprocal(rank, k_half)

    # Expansion: add R(c, k1/2) for every c in R(i, k1) with |R(c,k1/2) ∩ R(i,k1)| > 2/3 |R(c,k1/2)|.
    inter = (r1 @ rh.T).multiply(r1).tocoo()
    size_h = np.diff(rh.indptr)
    sel = inter.data > (2 / 3) * size_h[inter.col]
    chosen = sp.csr_matrix(
        (np.ones(int(sel.sum()), dtype=np.int32), (inter.row[sel], inter.col[sel])), shape=(n, n)
    )
    expanded = (r1 + chosen @ rh).tocsr()
    expanded.sort_indices()
    del inter, chosen, r1, rh

    # V_ij = softmax_j(-||x_i - x_j||^2) over the expanded set of i.
    rows = np.repeat(np.arange(n), np.diff(expanded.indptr))
    cols = expanded.indices
    sq = np.einsum("ij,ij->i", x, x)
    dots = np.empty(len(cols), dtype=np.float32)
    step = max(1, (1 << 22) // d)  # bounds the gathered rows to ~32 MB per block
    for s in range(0, len(cols), step):
        dots[s:s + step] = np.einsum("ij,ij->i", x[rows[s:s + step]], x[cols[s:s + step]])
    logits = -(sq[rows].astype(np.float64) + sq[cols] - 2.0 * dots)
    starts = expanded.indptr[:-1][np.diff(expanded.indptr) > 0]
    row_max = np.maximum.reduceat(logits, starts) if len(starts) else np.empty(0)
    nonempty_rows = np.flatnonzero(np.diff(expanded.indptr) > 0)
    row_max_full = np.zeros(n)
    row_max_full[nonempty_rows] = row_max
    e = np.exp(logits - row_max_full[rows])
    denom = np.zeros(n)
    if len(starts):
        denom[nonempty_rows] = np.add.reduceat(e, starts)
    v = sp.csr_matrix(((e / denom[rows]).astype(np.float32), cols, expanded.indptr), shape=(n, n))
    del logits, e, dots, rows, expanded

    # Query expansion: V_i <- mean of V over the k2 nearest neighbours (incl. self).
    if k2 != 1:
        kk2 = min(k2, rank.shape[1])
        q = sp.csr_matrix(
            (np.full(n * kk2, 1.0 / kk2, dtype=np.float32), rank[:, :kk2].ravel(),
             np.arange(0, n * kk2 + 1, kk2)),
            shape=(n, n),
        )
        v = (q @ v).tocsr()
    v.eliminate_zeros()
    diag = np.asarray(v.sum(axis=1), dtype=np.float64).ravel()

    # sum_l min(V_il, V_jl): every pair (i, j) sharing a column l, generated column by column.
    vc = v.tocsc()
    vc.sort_indices()
    counts = np.diff(vc.indptr).astype(np.int64)
    grid = counts * counts
    cum = np.concatenate([[0], np.cumsum(grid)])
    overlap = sp.csr_matrix((n, n), dtype=np.float64)
    c0 = 0
    while c0 < n:
        c1 = max(c0 + 1, int(np.searchsorted(cum, cum[c0] + max_pairs, side="right")) - 1)
        c1 = min(c1, n)
        g = grid[c0:c1]
        total = int(g.sum())
        if total:
            offs = np.repeat(cum[c0:c1] - cum[c0], g)
            r = np.arange(total, dtype=np.int64) - offs
            cnt = np.repeat(counts[c0:c1], g)
            a = r // cnt
            b = r - a * cnt
            keep = a < b  # row indices are sorted within a column, so i < j
            base = np.repeat(vc.indptr[c0:c1].astype(np.int64), g)[keep]
            pa = base + a[keep]
            pb = base + b[keep]
            val = np.minimum(vc.data[pa], vc.data[pb]).astype(np.float64)
            overlap = overlap + sp.csr_matrix(
                (val, (vc.indices[pa], vc.indices[pb])), shape=(n, n)
            )
        c0 = c1
    overlap = overlap.tocoo()
    return overlap.row.astype(np.int64), overlap.col.astype(np.int64), overlap.data, diag


def _overlap_to_distance(s: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - s / (2.0 - s), 0.0)


def jaccard_distance(features: np.ndarray, k1: int = 15, k2: int = 4) -> np.ndarray:
    """Dense k-reciprocal Jaccard distance, equal to FastReID's ``compute_jaccard_distance``.

    Args:
        features: (N, D) float features; used as given (the authors' are L2-normalised).
        k1: k-reciprocal neighbourhood size (incl. self); k2: query-expansion size.

    Returns:
        (N, N) float32 symmetric distances in [0, 1]; pairs with no shared k-reciprocal
        support are 1, the diagonal is exactly 0 (FastReID leaves ~1e-7 there).
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    rows, cols, s, _ = _jaccard_overlap(x, k1, k2)
    out = np.ones((n, n), dtype=np.float32)
    dist = _overlap_to_distance(s)
    out[rows, cols] = dist
    out[cols, rows] = dist
    np.fill_diagonal(out, 0.0)
    return out


def _group_pairs(groups: np.ndarray):
    """(rows, cols), i < j, of the pairs of images in the same group (groups >= 0)."""
    order = np.flatnonzero(groups >= 0)
    rows, cols = [], []
    for g in np.unique(groups[order]):
        members = order[groups[order] == g]
        i, j = np.triu_indices(len(members), k=1)
        rows.append(members[i])
        cols.append(members[j])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


def num_units(groups: Optional[np.ndarray], n: int) -> int:
    """How many clusters a camera can have at most: its groups plus its ungrouped images."""
    if groups is None:
        return n
    g = np.asarray(groups)
    return int(len(np.unique(g[g >= 0])) + (g < 0).sum())


def _condensed(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    # Condensed index of (i, j), i < j, in scipy's squareform order.
    return n * rows - rows * (rows + 1) // 2 + (cols - rows - 1)


def jaccard_average_linkage(x: np.ndarray, k1: int = 15, k2: int = 4, groups: Optional[np.ndarray] = None,
                            cannot=None):
    """Average-linkage tree of one camera's images on the k-reciprocal Jaccard distance.

    Args:
        x: (N_c, D) float32 contiguous features.
        groups: (N_c,) int tracklet ids (-1: none) or None. Images of one tracklet are set at
            distance 0 from each other and every other pair 1 further (a must-link): average
            linkage merges each tracklet whole first, so a cut into at most ``num_units``
            clusters never separates one.
        cannot: None, or (rows, cols) image pairs i < j of co-occurring tracklets
            (``tracklet_links.cannot_link_pairs``; needs groups). Then two trees are built:
            the must-link one, and one with these pairs at ``cannot_link_distance``.
    Returns:
        tuple: scipy linkage matrix (N_c - 1, 4) (with ``cannot``: a pair, must-link tree
        and cannot-link tree), and the sparse distances (rows, cols, dist) of the pairs
        i < j with shared support (every other pair is at distance 1).
    """
    n = x.shape[0]
    rows, cols, s, _ = _jaccard_overlap(x, k1, k2)
    dist = _overlap_to_distance(s)
    cond = np.ones(n * (n - 1) // 2, dtype=np.float64)
    cond[_condensed(n, rows, cols)] = dist
    if groups is not None:
        # Every pair of one tracklet at 0, every other pair shifted up by 1: all tracklets are
        # whole before any other merge (a Jaccard distance can itself be 0, so 0 alone would
        # not be first), and since each later cluster pair's average rises by exactly 1, the
        # later merges come in the order plain average linkage of the tracklets gives.
        cond += 1.0
        cond[_condensed(n, *_group_pairs(np.asarray(groups)))] = 0.0
    z = linkage(cond, method="average")
    if cannot is None:
        return z, rows, cols, dist
    cond[_condensed(n, *cannot)] = cannot_link_distance(n)
    return (z, linkage(cond, method="average")), rows, cols, dist


def cluster_camera(
    features: np.ndarray, n_clusters: int, k1: int = 15, k2: int = 4, silhouette: bool = True,
    groups: Optional[np.ndarray] = None, frames: Optional[np.ndarray] = None, tolerance: float = 0.01,
) -> Tuple[np.ndarray, float]:
    """Average-linkage clustering of one camera's images on the Jaccard distance.

    Args:
        features: (N_c, D) float features of one camera (used as given).
        n_clusters: K_c, clamped to [1, N_c] and to the camera's ``num_units`` with groups;
            not used where tracklets co-occur (below).
        k1, k2: Jaccard parameters (authors: 15, 4; a camera smaller than k1 uses k1 = N_c).
        silhouette: also return ``silhouette_score(J, labels, metric="precomputed")``; the
            authors keep the stage-1 epoch with the best silhouette (reference §5 step 5).
        groups: (N_c,) int tracklet ids (-1: none): must-links (``jaccard_average_linkage``).
        frames: (N_c,) int frame numbers (-1: unknown) or None. Where two tracklets'
            frame spans overlap (``tracklet_links``), they never share a cluster, and the
            cut is the highest merge of the must-link tree that joins at most ``tolerance``
            of those pairs: K_c comes from the data, not from ``n_clusters``.

    Returns:
        labels: (N_c,) int64 in 0..K_c-1, every image labelled, ordered by first member.
        silhouette: float, NaN when undefined (K_c = 1 or K_c = N_c) or not requested.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    pairs = co_occurring(groups, frames) if groups is not None and frames is not None else np.zeros((0, 2))
    if len(pairs):
        (z_must, z), rows, cols, dist = jaccard_average_linkage(x, k1, k2, groups, cannot_link_pairs(groups, pairs))
        # Merges at 2 (1 + the shift) join clusters with no shared support at all.
        m = highest_cut(z_must, n, lambda lab: joined_share(lab, groups, pairs) <= tolerance, ceiling=2.0 - 1e-9)
        t = z_must[m - 1, 2] if m else -np.inf
        labels = cut_tree(z, n, n - int(np.searchsorted(z[:, 2], t, side="right")))
    else:
        n_clusters = int(min(max(n_clusters, 1), n, num_units(groups, n)))
        if n_clusters == n:
            return np.arange(n, dtype=np.int64), float("nan")
        if n_clusters == 1:
            return np.zeros(n, dtype=np.int64), float("nan")
        z, rows, cols, dist = jaccard_average_linkage(x, k1, k2, groups)
        labels = cut_tree(z, n, n_clusters)
    score = float("nan")
    if silhouette and 1 < labels.max() + 1 < n:
        square = np.ones((n, n), dtype=np.float32)
        square[rows, cols] = dist
        square[cols, rows] = dist
        np.fill_diagonal(square, 0.0)
        score = float(silhouette_score(square, labels, metric="precomputed"))
    return labels, score


def num_local_clusters(n_images: int, ratio: float = 0.2, num_clusters: Optional[int] = None) -> int:
    """K_c for a camera with N_c images: floor(N_c * ratio) (0.2 gives the authors' N_c // 5),
    or a fixed ``num_clusters`` (the shipped Market/Duke labels use 600); always in [1, N_c]."""
    k = int(num_clusters) if num_clusters is not None else int(np.floor(n_images * ratio + 1e-9))
    return int(min(max(k, 1), max(n_images, 1)))


@dataclass
class LocalLabels:
    """Result of ``intra_camera_labels``.

    Attributes:
        labels: (N,) int64 local labels, unique across cameras: camera cameras[c] owns
            offsets[c] .. offsets[c] + num_clusters[c] - 1, so equal labels imply equal cameras.
        cameras: (C,) camera ids in ascending order.
        num_clusters: (C,) int64 K_c.
        offsets: (C,) int64 first label of each camera.
        silhouette: (C,) float64 per-camera silhouette (NaN where undefined / not computed).
    """

    labels: np.ndarray
    cameras: np.ndarray
    num_clusters: np.ndarray
    offsets: np.ndarray
    silhouette: np.ndarray


def intra_camera_labels(
    features: np.ndarray,
    cams: np.ndarray,
    k1: int = 15,
    k2: int = 4,
    ratio: float = 0.2,
    num_clusters: Optional[int] = None,
    silhouette: bool = True,
    groups: Optional[np.ndarray] = None,
    frames: Optional[np.ndarray] = None,
    tolerance: float = 0.01,
) -> LocalLabels:
    """Stage-1 local labels for all images, one independent clustering per camera.

    Args:
        features: (N, D) float features; each camera's rows are L2-normalised first.
        cams: (N,) int camera ids.
        k1, k2: Jaccard parameters (authors: 15, 4).
        ratio: K_c = floor(N_c * ratio); 0.2 is the paper's / authors' N_c // 5.
        num_clusters: fixed K_c per camera instead of ``ratio`` (clamped to N_c).
        silhouette: compute the per-camera silhouette score.
        groups: (N,) int tracklet ids (-1: none) or None: a tracklet is never split across
            local clusters, and K_c is at most the camera's tracklets plus loose images.
        frames: (N,) int frame numbers (-1: unknown) or None: with groups, co-occurring
            tracklets are cannot-links and set K_c (``cluster_camera``); a camera where no
            two tracklets overlap in time keeps ``ratio``.
        tolerance: share of the co-occurring pairs the cut may join (``cluster_camera``).

    Returns:
        ``LocalLabels`` with (N,) int64 labels unique across cameras; no outliers.
    """
    feats = np.asarray(features)
    cams = np.asarray(cams)
    if feats.ndim != 2 or cams.shape != (feats.shape[0],):
        raise ValueError(f"need features (N, D) and cams (N,), got {feats.shape} and {cams.shape}")
    cameras, inv = np.unique(cams, return_inverse=True)
    labels = np.empty(len(cams), dtype=np.int64)
    n_clusters = np.zeros(len(cameras), dtype=np.int64)
    offsets = np.zeros(len(cameras), dtype=np.int64)
    sil = np.full(len(cameras), np.nan)
    offset = 0
    for c in range(len(cameras)):
        sel = np.flatnonzero(inv == c)
        k_c = num_local_clusters(len(sel), ratio, num_clusters)
        g = None if groups is None else np.asarray(groups)[sel]
        f = None if frames is None else np.asarray(frames)[sel]
        lab, sil[c] = cluster_camera(l2_normalize(feats[sel]), k_c, k1, k2, silhouette, groups=g, frames=f,
                                     tolerance=tolerance)
        k_c = int(lab.max()) + 1
        labels[sel] = lab + offset
        n_clusters[c] = k_c
        offsets[c] = offset
        offset += k_c
    return LocalLabels(labels, cameras, n_clusters, offsets, sil)
