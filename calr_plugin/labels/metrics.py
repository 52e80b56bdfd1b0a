"""Pseudo-label quality against ground-truth ids (analysis only, never used for training).

Shape shorthand: N images, K predicted clusters, C cameras.

Pairwise scores come from the contingency table (counts per (cluster, id) cell, O(N) with
``np.unique``), never from N x N pair matrices. Outliers (label -1) are not a cluster:

- precision = same-id pairs among same-cluster pairs, over clustered images only;
- recall = same-cluster same-id pairs / ALL same-id pairs among the N images, so
  discarding an image (label -1) loses its pairs and lowers recall;
- fscore = 2PR / (P + R);
- expansion = mean number of distinct clusters per true id, over ids with at least one
  clustered image (1.0 = no id is split);
- nmi, ari = sklearn scores over the clustered images;
- clustered_fraction = clustered images / N; num_clusters = distinct labels >= 0.

``within_camera=True`` (for stage-1 local labels, reference §5) counts only same-camera
pairs in precision and recall and takes expansion over (id, camera) groups.
"""
from typing import Dict, Optional

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = ["cameras_per_cluster", "cluster_metrics", "label_agreement", "METRIC_KEYS"]

METRIC_KEYS = (
    "precision", "recall", "fscore", "expansion", "nmi", "ari", "clustered_fraction", "num_clusters"
)


def _pairs(*keys: np.ndarray) -> int:
    # Number of unordered pairs that agree on every key: sum over cells of C(n, 2).
    if len(keys[0]) == 0:
        return 0
    _, counts = np.unique(np.stack(keys, axis=1), axis=0, return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def cameras_per_cluster(labels: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """Distinct cameras in each cluster, in O(N log N) (one ``np.unique`` of (label, camera) pairs).

    Args:
        labels: (N,) int cluster labels; -1 = outlier (not counted).
        cams: (N,) int camera ids, any values.

    Returns:
        (K,) int64 for K = max(labels) + 1: entry k is the number of cameras among the images
        labelled k (0 for a label no image has).
    """
    labels = np.asarray(labels)
    cams = np.asarray(cams)
    if labels.shape != cams.shape or labels.ndim != 1:
        raise ValueError(f"labels and cams must be (N,) arrays of one length, got {labels.shape} and {cams.shape}")
    keep = labels >= 0
    pairs = np.unique(np.stack([labels[keep], cams[keep]], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=int(labels.max(initial=-1)) + 1).astype(np.int64)


def cluster_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    cams: Optional[np.ndarray] = None,
    within_camera: bool = False,
) -> Dict[str, float]:
    """Pairwise precision/recall/F, expansion, NMI, ARI of a labelling.

    Args:
        pred: (N,) int predicted labels, -1 = outlier / discarded.
        gt: (N,) int ground-truth ids (any integers, -1 is just another id).
        cams: (N,) int camera ids, required when ``within_camera``.
        within_camera: restrict pairs to same-camera pairs (see module docstring).

    Returns:
        dict with exactly the keys of ``METRIC_KEYS``; floats in [0, 1] except expansion
        (>= 1, NaN if nothing is clustered) and num_clusters (int). Precision is 0.0
        when there is no predicted pair, recall 0.0 when there is no true pair.
    """
    pred = np.asarray(pred, dtype=np.int64)
    gt = np.asarray(gt, dtype=np.int64)
    n = len(pred)
    if gt.shape != (n,):
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    if within_camera:
        if cams is None:
            raise ValueError("within_camera=True needs cams")
        cam = np.unique(np.asarray(cams), return_inverse=True)[1].ravel().astype(np.int64)
    else:
        cam = np.zeros(n, dtype=np.int64)
    c = pred >= 0
    pred_pairs = _pairs(pred[c], cam[c])
    tp = _pairs(pred[c], gt[c], cam[c])
    true_pairs = _pairs(gt, cam)
    precision = tp / pred_pairs if pred_pairs else 0.0
    recall = tp / true_pairs if true_pairs else 0.0
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if c.any():
        groups = np.unique(np.stack([gt[c], cam[c]], axis=1), axis=0)
        cells = np.unique(np.stack([gt[c], cam[c], pred[c]], axis=1), axis=0)
        expansion = len(cells) / len(groups)
        nmi = float(normalized_mutual_info_score(gt[c], pred[c]))
        ari = float(adjusted_rand_score(gt[c], pred[c]))
    else:
        expansion = nmi = ari = float("nan")
    return {
        "precision": float(precision),
        "recall": float(recall),
        "fscore": float(fscore),
        "expansion": float(expansion),
        "nmi": nmi,
        "ari": ari,
        "clustered_fraction": float(c.mean()) if n else 0.0,
        "num_clusters": int(len(np.unique(pred[c]))),
    }


def label_agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """Pairwise F of one labelling against another (e.g. fast-kNN labels against exact ones).

    Args:
        labels: (N,) int labels, -1 = outlier (in no pair).
        reference: (N,) int labels, -1 = outlier; its outliers count as singletons, so an
            image clustered in ``labels`` but an outlier in ``reference`` costs precision.
    Returns:
        float in [0, 1]; 1.0 when both put the same images together (and both have pairs).
    """
    ref = np.asarray(reference, dtype=np.int64).copy()
    out = ref < 0
    ref[out] = ref.max(initial=0) + 1 + np.arange(out.sum())
    return cluster_metrics(labels, ref)["fscore"]
