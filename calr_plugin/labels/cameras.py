"""Pseudo-cameras for training images whose camera is unknown.

Shape shorthand: N images, D embedding dims, S style dims, k neighbours, C cameras.

Before training, the camera is the strongest signal in ImageNet features (reference §13:
93 % of an image's nearest neighbours on CUHK01 come from its own camera), so the
symmetric kNN graph of the features falls apart into one dense community per camera.
Spectral clustering finds them (Ng, Jordan & Weiss 2002): the top eigenvectors of the
normalised adjacency D^-1/2 A D^-1/2, rows L2-normalised, k-means into C groups. With C
unknown, C is the eigengap: the largest gap among the first ``max_cameras`` eigenvalues
of the normalised Laplacian I - D^-1/2 A D^-1/2 (von Luxburg 2007, §8.3).

Two views of an image serve two purposes. The count C comes from the embedding (the
backbone's output): its eigengap found the true count on all six sets we measured (the
synthetic set at 2 and 6 images per person and camera, CUHK01, PKU-Reid; MobileNetV2 and
EfficientNet-Lite2). The groups come from ``style`` when given: the channel mean and std
of a mid-level feature map (the "style" of AdaIN, Huang & Belongie 2017, and IBN-Net), which
carries the camera's colour and lighting and less of the person: ARI with the true cameras
0.98 / 0.99 on CUHK01 / PKU-Reid, against 0.77 / 0.90 from the embedding (MobileNetV2,
docs/RESULTS.md 2b). The style graph's own eigengap is not used for C: on EfficientNet-Lite2
it chose 4 and 3 for these 2-camera sets.
"""
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
from sklearn.cluster import KMeans

from .knn import knn_search, l2_normalize

__all__ = ["InferredCameras", "infer_cameras"]


@dataclass
class InferredCameras:
    """Result of ``infer_cameras``.

    Attributes:
        cams: (N,) int64 pseudo-cameras 0..C-1, numbered by first appearance.
        num_cameras: C. chosen_by: "given" or "eigengap".
        eigenvalues: (max_cameras + 1,) smallest Laplacian eigenvalues of the embedding
            graph, ascending (of the style graph when C is given and ``style`` is).
        grouped_by: "style" or "embedding": the features whose graph was split.
    """

    cams: np.ndarray
    num_cameras: int
    chosen_by: str
    eigenvalues: np.ndarray
    grouped_by: str = "embedding"


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


def infer_cameras(features: np.ndarray, num_cameras=None, k: int = 30, max_cameras: int = 16,
                  seed: int = 0, style=None, knn=None) -> InferredCameras:
    """Group images into pseudo-cameras by spectral clustering of a kNN graph.

    Args:
        features: (N, D) float embeddings of an untrained (e.g. ImageNet) model; C is
            their graph's eigengap when ``num_cameras`` is None.
        num_cameras: C, or None to choose it by the eigengap (2..max_cameras).
        k: neighbours per image (self excluded) of the symmetric kNN graphs.
        max_cameras: largest C considered when choosing it.
        seed: fixes the eigensolvers' start and k-means.
        style: (N, S) float style statistics to group by, or None to group by ``features``.
        knn: ``knn_search`` keyword arguments of both kNN graphs (CALR.CLUSTER.KNN's
            method, hnsw_*, ivf_*); None = exact.
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
    n_eig = int(min(max_cameras + 1, n - 2))
    chosen_by = "given"
    lap = vecs = None
    if num_cameras is None or style is None:
        lap, vecs = _spectrum(features, k, n_eig, seed, knn)
    if num_cameras is None:
        gaps = np.diff(lap[: max_cameras + 1])
        gaps[0] = -np.inf  # C >= 2: a single camera leaves nothing to refine
        num_cameras, chosen_by = int(np.argmax(gaps)) + 1, "eigengap"
    grouped_by = "embedding" if style is None else "style"
    if num_cameras == 1:
        return InferredCameras(np.zeros(n, np.int64), 1, chosen_by, lap, grouped_by)
    if style is not None:
        style_lap, vecs = _spectrum(style, k, max(n_eig, num_cameras), seed, knn)
        lap = style_lap if lap is None else lap
    emb = l2_normalize(vecs[:, :num_cameras].astype(np.float32), copy=True)
    labels = KMeans(num_cameras, n_init=10, random_state=seed).fit_predict(emb)
    # Number pseudo-cameras by first appearance, so the result does not hinge on k-means' order.
    _, first = np.unique(labels, return_index=True)
    remap = np.empty(num_cameras, np.int64)
    remap[np.argsort(np.argsort(first))] = np.arange(num_cameras)
    return InferredCameras(remap[labels].astype(np.int64), int(num_cameras), chosen_by, lap, grouped_by)
