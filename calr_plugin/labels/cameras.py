"""Pseudo-cameras for training images whose camera is unknown.

Shape shorthand: N images, D embedding dims, S style dims, k neighbours, C cameras.

Before training, the camera is the strongest signal in ImageNet features (reference §13:
93 % of an image's nearest neighbours on CUHK01 come from its own camera), so the
symmetric kNN graph of the features falls apart into one dense community per camera.
Spectral clustering finds them (Ng, Jordan & Weiss 2002): the top eigenvectors of the
normalised adjacency D^-1/2 A D^-1/2, rows L2-normalised, k-means into C groups. With C
unknown, C is the eigengap: the largest gap among the first ``max_cameras`` eigenvalues
of the normalised Laplacian I - D^-1/2 A D^-1/2 (von Luxburg 2007, §8.3).

The graph's k grows with the set, k = clip(round(sqrt(N)), 10, 100): it must stay below a
camera's size (k = 30 merged cameras of 20 images: 2 found of 6 and 8) and above a
person's images in one camera (k = 30 split people with 20 images per camera into extra
"cameras": 9 and 10 found of 8). On the 38 sets of ``bench/auto_grid.py`` (32 synthetic
cells, 6 real sets) the count was exact on 34 with sqrt(N), 28 with k = 30, 32 with N / 32
and 31 with 2 sqrt(N); this choice was made on all of them (in sample).

A group smaller than ``min_share`` of the images (black or duplicate frames, a camera with
a handful of images) is not counted as a camera: its images join the nearest group in the
spectral embedding, and the result lists it in ``tiny``.

Two views of an image serve two purposes. The count C comes from the embedding (the
backbone's output): with the graph k of 30 its eigengap found the true count on the six sets
measured then (the synthetic set at 2 and 6 images per person and camera, CUHK01, PKU-Reid;
MobileNetV2 and EfficientNet-Lite2); with k = sqrt(N) it misses on VIPeR (3 for 2), GRID (3
for 4) and two 8-camera cells (9), docs/RESULTS.md section 2d. The groups come from ``style`` when given: the channel mean and std
of a mid-level feature map (the "style" of AdaIN, Huang & Belongie 2017, and IBN-Net), which
carries the camera's colour and lighting and less of the person: ARI with the true cameras
0.98 / 0.99 on CUHK01 / PKU-Reid, against 0.77 / 0.90 from the embedding (MobileNetV2,
docs/RESULTS.md 2b). The style graph's own eigengap is not used for C: on EfficientNet-Lite2
it chose 4 and 3 for these 2-camera sets.
"""
from dataclasses import dataclass, field
from typing import List

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
from sklearn.cluster import KMeans

from .knn import knn_search, l2_normalize

__all__ = ["InferredCameras", "infer_cameras", "graph_k"]


@dataclass
class InferredCameras:
    """Result of ``infer_cameras``.

    Attributes:
        cams: (N,) int64 pseudo-cameras 0..C-1, numbered by first appearance.
        num_cameras: C. chosen_by: "given" or "eigengap".
        eigenvalues: (max_cameras + 1,) smallest Laplacian eigenvalues of the embedding
            graph, ascending (of the style graph when C is given and ``style`` is).
        grouped_by: "style" or "embedding": the features whose graph was split.
        k: neighbours per image of the graphs. at_cap: the eigengap chose ``max_cameras``.
        tiny: sizes of the groups below ``min_share`` that were merged into others.
    """

    cams: np.ndarray
    num_cameras: int
    chosen_by: str
    eigenvalues: np.ndarray
    grouped_by: str = "embedding"
    k: int = 0
    at_cap: bool = False
    tiny: List[int] = field(default_factory=list)


def graph_k(n: int) -> int:
    """Neighbours per image of the camera graphs: clip(round(sqrt(N)), 10, 100) (module docstring)."""
    return int(np.clip(round(np.sqrt(n)), 10, 100))


def _spectrum(features, k, n_eig, seed, knn=None):
    """Laplacian eigenvalues (ascending) and eigenvectors of the symmetric kNN graph.

    Args:
        features: (N, D) float. k: neighbours per image (self excluded). n_eig: how many.
        knn: ``knn_search`` keyword arguments (method, hnsw_*, ivf_*); None = exact.
    Returns:
        (n_eig,) float eigenvalues, (N, n_eig) float eigenvectors in the same order.
    """
    x = l2_normalize(np.asarray(features, dtype=np.float32), copy=True)
    n = len(x)
    kk = int(min(k, n - 1))
    _, idx = knn_search(x, kk + 1, normalize=False, seed=seed, **(knn or {}))
    rows = np.repeat(np.arange(n), kk)
    cols = idx[:, 1:].ravel()
    found = cols >= 0  # an approximate index marks neighbours it missed with -1
    a = sp.csr_matrix((np.ones(int(found.sum())), (rows[found], cols[found])), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float64)
    d = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = sp.diags(1.0 / np.sqrt(np.maximum(d, 1e-12)))
    norm_adj = inv_sqrt @ a @ inv_sqrt
    v0 = np.random.default_rng(seed).standard_normal(n)
    vals, vecs = eigsh(norm_adj, k=n_eig, which="LA", v0=v0)
    order = np.argsort(-vals)
    return 1.0 - vals[order], vecs[:, order]  # Laplacian eigenvalues, ascending


def infer_cameras(features: np.ndarray, num_cameras=None, k=None, max_cameras: int = 16,
                  seed: int = 0, style=None, knn=None, min_share: float = 0.0) -> InferredCameras:
    """Group images into pseudo-cameras by spectral clustering of a kNN graph.

    Args:
        features: (N, D) float embeddings of an untrained (e.g. ImageNet) model; C is
            their graph's eigengap when ``num_cameras`` is None.
        num_cameras: C, or None to choose it by the eigengap (2..max_cameras).
        k: neighbours per image (self excluded) of the symmetric kNN graphs; None =
            ``graph_k(N)``.
        max_cameras: largest C considered when choosing it (``at_cap`` says it was chosen).
        seed: fixes the eigensolvers' start and k-means.
        style: (N, S) float style statistics to group by, or None to group by ``features``.
        knn: ``knn_search`` keyword arguments of both kNN graphs (CALR.CLUSTER.KNN's
            method, hnsw_*, ivf_*); None = exact.
        min_share: groups with fewer than this share of the images are merged into the
            nearest other group (``tiny``); 0 = keep every group.
    Returns:
        ``InferredCameras``.
    Raises:
        ValueError: fewer than 2 images per camera asked for, or ``style`` rows differ.
    """
    n = len(features)
    if num_cameras is not None and not 1 <= num_cameras <= n // 2:
        raise ValueError(f"cannot split {n} images into {num_cameras} cameras of 2 images or more")
    if style is not None and len(style) != n:
        raise ValueError(f"{len(style)} style rows for {n} images")
    k = graph_k(n) if k is None else int(k)
    n_eig = int(min(max_cameras + 1, n - 2))
    chosen_by = "given"
    lap = vecs = None
    at_cap = False
    if num_cameras is None or style is None:
        lap, vecs = _spectrum(features, k, n_eig, seed, knn)
    if num_cameras is None:
        # Eigenvalues of disconnected groups are 0 up to solver noise (~1e-15, its sign and
        # order vary by CPU): read them as 0, so that more groups than the window hold gives
        # equal gaps, and the largest C among equal gaps is taken (the cap, said as at_cap).
        window = np.where(lap[: max_cameras + 1] < 1e-6, 0.0, lap[: max_cameras + 1])
        gaps = np.diff(window)
        gaps[0] = -np.inf  # C >= 2: a single camera leaves nothing to refine
        num_cameras, chosen_by = int(np.flatnonzero(gaps == gaps.max())[-1]) + 1, "eigengap"
        at_cap = num_cameras >= min(max_cameras, n_eig - 1)
    grouped_by = "embedding" if style is None else "style"
    if num_cameras == 1:
        return InferredCameras(np.zeros(n, np.int64), 1, chosen_by, lap, grouped_by, k, at_cap)
    if style is not None:
        style_lap, vecs = _spectrum(style, k, max(n_eig, num_cameras), seed, knn)
        lap = style_lap if lap is None else lap
    emb = l2_normalize(vecs[:, :num_cameras].astype(np.float32), copy=True)
    km = KMeans(num_cameras, n_init=10, random_state=seed).fit(emb)
    labels, tiny = _merge_tiny(km.labels_, emb, km.cluster_centers_, min_share)
    num_cameras = int(labels.max()) + 1
    # Number pseudo-cameras by first appearance, so the result does not hinge on k-means' order.
    _, first = np.unique(labels, return_index=True)
    remap = np.empty(num_cameras, np.int64)
    remap[np.argsort(np.argsort(first))] = np.arange(num_cameras)
    return InferredCameras(remap[labels].astype(np.int64), num_cameras, chosen_by, lap, grouped_by, k, at_cap, tiny)


def _merge_tiny(labels: np.ndarray, emb: np.ndarray, centres: np.ndarray, min_share: float):
    """Groups below ``min_share`` of the images join the nearest other group (by k-means'
    (C, C) ``centres`` in the (N, C) spectral embedding ``emb``); returns contiguous labels
    and the tiny sizes."""
    sizes = np.bincount(labels, minlength=len(centres))
    small = sizes < min_share * len(labels)
    if not small.any() or small.all():
        return labels, []
    big = np.flatnonzero(~small)
    centres = centres[big]
    out = labels.copy()
    for g in np.flatnonzero(small):
        rows = labels == g
        out[rows] = big[np.argmax(emb[rows] @ centres.T, axis=1)]
    return np.unique(out, return_inverse=True)[1].astype(np.int64), sorted(int(s) for s in sizes[small])
