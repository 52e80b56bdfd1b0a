"""Label-free signals of feature quality, logged every stage-2 epoch (candidates, issue #22).

Shape shorthand: N images, D feature dims, k neighbours.

A user without a labeled test split cannot see when training makes the features worse.
These read only the features, the cameras and the run's own labels; which of them tracks
test mAP over the epochs is measured on the development sets (docs/RESULTS.md 2d) before
any of them selects a checkpoint.

- ``cross_camera_neighbour_share``: the share of an image's k nearest neighbours that
  come from other cameras, on the features as trained (not camera-centred). Untrained, the
  camera dominates (reference §13: 7 % on CUHK01); a model that matches people across
  cameras raises it, one that learns the cameras lowers it.
- label agreement with the previous epoch (``metrics.label_agreement``, pairwise F):
  clusterings that stop changing.
"""
import numpy as np

from .knn import knn_search, l2_normalize

__all__ = ["cross_camera_neighbour_share"]


def cross_camera_neighbour_share(features: np.ndarray, cams: np.ndarray, k: int = 10, seed: int = 0,
                                 knn=None) -> float:
    """Mean share of each image's k nearest neighbours (self excluded) in another camera.

    Args:
        features: (N, D) float features. cams: (N,) int camera ids.
        k: neighbours per image. seed: the approximate index's seed.
        knn: ``knn_search`` keyword arguments (method, hnsw_*, ivf_*); None = exact.
    Returns:
        float in [0, 1]; NaN when N < 2.
    """
    cams = np.asarray(cams)
    n = len(cams)
    if n < 2:
        return float("nan")
    x = l2_normalize(np.asarray(features, dtype=np.float32), copy=True)
    _, idx = knn_search(x, min(k + 1, n), normalize=False, seed=seed, **(knn or {}))
    nb = idx[:, 1:]
    found = nb >= 0  # an approximate index marks neighbours it missed with -1
    other = (cams[np.where(found, nb, 0)] != cams[:, None]) & found
    return float(other.sum() / max(found.sum(), 1))
