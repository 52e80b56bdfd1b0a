"""Global (inter-camera) clustering: thresholded kNN edges + directed two-level Infomap.

Shape shorthand: N images, k neighbours per image (self included), E kept edges, K clusters.

Follows the authors' ``calr/utils/infomap_cluster.py`` (reference §6.2): for every image i,
walk its neighbours in descending cosine, skip self, and add a directed edge i -> j with
weight s_ij while s_ij >= min_sim. Because rows are sorted, "stop at the first neighbour
below the threshold" is the same as a mask. Infomap's modules become clusters; images
without edges are singletons; clusters smaller than ``min_size`` become outliers (-1).
"""
import warnings
from dataclasses import dataclass
from typing import Tuple

import infomap
import numpy as np

__all__ = ["knn_edges", "infomap_cluster", "GlobalClusters", "relabel_by_first_member"]


def knn_edges(
    sims: np.ndarray, idx: np.ndarray, min_sim: float = 0.5
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Directed, weighted kNN edges above a cosine threshold.

    Args:
        sims: (N, k) float32 cosine similarities, descending per row (``knn_search``).
        idx: (N, k) int64 neighbour ids, self included, -1 for missing.
        min_sim: keep i -> j when s_ij >= min_sim (the authors' ``--eps`` 0.5).

    Returns:
        src: (E,) int64 source ids, ascending; dst: (E,) int64 target ids;
        weight: (E,) float32 s_ij; kept_fraction: E / number of non-self neighbour slots.
        Reference §13: a kept fraction of 1.0 means the threshold does nothing (e.g. ReLU
        features whose random pairs already have cos ~0.7), which Infomap then turns into a
        few giant clusters.
    """
    n = idx.shape[0]
    candidate = (idx >= 0) & (idx != np.arange(n)[:, None])
    keep = candidate & (sims >= min_sim)
    src = np.nonzero(keep)[0]
    dst = idx[keep]
    weight = sims[keep]
    n_candidates = int(candidate.sum())
    return src.astype(np.int64), dst, weight, (len(src) / n_candidates if n_candidates else 0.0)


def relabel_by_first_member(labels: np.ndarray) -> np.ndarray:
    """Renumber non-negative labels 0..K-1 by their smallest member index; -1 stays.

    Args:
        labels: (N,) int labels, -1 = outlier.

    Returns:
        (N,) int64 labels where cluster 0 contains the lowest-index clustered image, etc.
        Infomap's module ids depend on its internal order; this makes output ids a pure
        function of the partition.
    """
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    clustered = np.flatnonzero(labels >= 0)
    if clustered.size == 0:
        return out
    uniq, first, inv = np.unique(labels[clustered], return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    out[clustered] = rank[inv]
    return out


@dataclass
class GlobalClusters:
    """Result of ``infomap_cluster``.

    Attributes:
        labels: (N,) int64 cluster ids 0..K-1 ordered by smallest member, -1 = outlier.
        kept_edge_fraction: fraction of non-self kNN slots that passed ``min_sim``.
        num_edges: E, edges given to Infomap.
        num_modules: Infomap modules + edgeless singletons, before the size filter.
    """

    labels: np.ndarray
    kept_edge_fraction: float
    num_edges: int
    num_modules: int

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels.size and self.labels.max() >= 0 else 0


def infomap_cluster(
    sims: np.ndarray,
    idx: np.ndarray,
    min_sim: float = 0.5,
    min_size: int = 5,
    seed: int = 0,
    num_trials: int = 1,
) -> GlobalClusters:
    """Cluster the kNN graph with directed two-level Infomap (the authors' global step).

    Args:
        sims: (N, k) float32 descending cosine similarities, self included (``knn_search``).
        idx: (N, k) int64 neighbour ids.
        min_sim: edge threshold on cosine (authors: 0.5).
        min_size: clusters with fewer members become -1 (authors drop size <= 4, so 5).
        seed: >= 0; Infomap gets seed + 1 (it rejects 0). Same input and seed give
            identical labels.
        num_trials: Infomap trials; the best codelength wins.

    Returns:
        ``GlobalClusters``; labels are (N,) int64, 0..K-1 by smallest member index, -1 outliers.
    """
    n = idx.shape[0]
    src, dst, weight, kept = knn_edges(sims, idx, min_sim)
    modules = np.full(n, -1, dtype=np.int64)
    if len(src):
        im = infomap.Infomap(
            "--two-level --directed --silent", seed=int(seed) + 1, num_trials=int(num_trials)
        )
        # One float64 (E, 3) array goes through infomap's C++ bulk path (~0.4 s per 3M
        # links); node ids < 2^53 are exact in float64.
        links = np.empty((len(src), 3), dtype=np.float64)
        links[:, 0] = src
        links[:, 1] = dst
        links[:, 2] = weight
        _add_links(im, links)
        del links
        im.run()
        # Not ``result.modules()``: it walks SWIG vectors with a Python iterator, and once
        # faiss (another SWIG module) is loaded that iterator resolves to faiss's class and
        # segfaults (infomap 2.16 + faiss 1.15). ``get_modules`` converts in C++.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            mods = im.get_modules()
        nodes = np.fromiter(mods.keys(), dtype=np.int64, count=len(mods))
        modules[nodes] = np.fromiter(mods.values(), dtype=np.int64, count=len(mods))
    # Edgeless images are their own singleton modules, numbered after Infomap's.
    lonely = np.flatnonzero(modules < 0)
    modules[lonely] = modules.max(initial=0) + 1 + np.arange(len(lonely))
    _, inv, sizes = np.unique(modules, return_inverse=True, return_counts=True)
    labels = np.where(sizes[inv] >= min_size, modules, -1)
    return GlobalClusters(
        labels=relabel_by_first_member(labels),
        kept_edge_fraction=float(kept),
        num_edges=int(len(src)),
        num_modules=int(len(sizes)),
    )


def _add_links(im: "infomap.Infomap", links: np.ndarray) -> None:
    try:
        im.add_links(links)
    except (TypeError, ValueError):
        # infomap < 2.16 has no numpy bulk path; fall back to one call per link.
        for s, t, w in zip(links[:, 0].astype(np.int64).tolist(),
                           links[:, 1].astype(np.int64).tolist(), links[:, 2].tolist()):
            im.add_link(s, t, w)
