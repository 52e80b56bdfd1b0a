"""Camera-entropy cluster weights w_k of the inter-camera loss (Eq. 6).

Shape shorthand: N images, K clusters, C cameras, B samples in a batch.

The paper's Eq. 6 multiplies each sample's ClusterNCE term by w_i and says the weights
"follow CaCL"; the authors' code (reference §6.6) uses, for cluster k with camera counts
n_{k,c}:
    pi_{k,c} = n_{k,c} / sum_c n_{k,c},  H_k = -sum_c pi_{k,c} ln pi_{k,c},  w_k = ln(1 + H_k)
so single-camera clusters get 0 and clusters spread over many cameras weigh more. The loss
is ``F.cross_entropy(logits, y, weight=w)``, a normalised weighted mean
sum_i w_{y_i} CE_i / sum_i w_{y_i}, used only from epoch 5 ("warm-up"); before that the
plain mean. If every sample of a batch has w = 0 that ratio is 0/0 = NaN in PyTorch
(reference §9 item 11): the loss must then be 0 (``calr_plugin.modeling.memory``, tested in tests/test_losses.py).
"""
from typing import Optional

import numpy as np

__all__ = ["cluster_weights"]


def cluster_weights(labels: np.ndarray, cams: np.ndarray, num_clusters: Optional[int] = None) -> np.ndarray:
    """Eq. 6 weights w_k = ln(1 + H_k) from each cluster's camera histogram.

    Args:
        labels: (N,) int cluster ids 0..K-1 of the refined labels; -1 (outliers and
            discarded images) is ignored.
        cams: (N,) int camera ids.
        num_clusters: K; default max(labels) + 1. Empty clusters get weight 0.

    Returns:
        (K,) float32 weights, natural log: 0 for one camera, ln(1 + ln 2) = 0.527 for an
        even split over 2 cameras, ln(1 + ln C) for an even split over C.
    """
    labels = np.asarray(labels, dtype=np.int64)
    cams = np.asarray(cams)
    k = int(num_clusters) if num_clusters is not None else int(labels.max(initial=-1)) + 1
    keep = labels >= 0
    if k == 0:
        return np.zeros(0, dtype=np.float32)
    _, cam_idx = np.unique(cams[keep], return_inverse=True)
    n_cams = int(cam_idx.max(initial=-1)) + 1
    counts = np.bincount(labels[keep] * n_cams + cam_idx.ravel(), minlength=k * n_cams)
    counts = counts.reshape(k, n_cams).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    pi = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(pi > 0, pi * np.log(pi), 0.0)
    return np.log1p(-plogp.sum(axis=1)).astype(np.float32)
