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
- ``cross_camera_mutual``: the share of images whose nearest neighbour in the other cameras
  has them as its own nearest neighbour in the other cameras. A person seen by two cameras
  makes such a pair once the features match them; a model that learns the cameras, or
  collapses, makes these nearest neighbours arbitrary, and arbitrary ones are mutual by
  chance only. Read on all images it rises as a model fits its own pseudo labels, so the
  selection reads it on held-out images (``labels/holdout.py``). With tracklets, a hit is a
  neighbour's nearest in the image's own tracklet: once a person's frames are pulled together,
  which of their frames is nearest is arbitrary (docs/RESULTS.md 2g: image hits fell in all 12
  video runs, those that gained 15-21 mAP included).
"""
import functools

import faiss
import numpy as np

from .knn import knn_search, l2_normalize

__all__ = ["cross_camera_neighbour_share", "cross_camera_nearest", "cross_camera_mutual_hits", "cross_camera_mutual",
           "mean_of", "paired_gain", "replaces_kept", "MARGIN_Z", "SIGNALS"]


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


def cross_camera_nearest(features: np.ndarray, cams: np.ndarray, rows=None, pool=None) -> np.ndarray:
    """The nearest neighbour (cosine, exact) of images among the images of the other cameras.

    Args:
        features: (N, D) float features (L2-normalised here). cams: (N,) int camera ids.
        rows: (R,) int indices of the images to look up (default: all N).
        pool: (P,) int indices of the images searched (default: all N).
    Returns:
        (R,) int64 indices into the N images; -1 where no other camera has an image in the pool.
    """
    cams = np.asarray(cams)
    x = l2_normalize(np.asarray(features, dtype=np.float32))
    rows = np.arange(len(cams)) if rows is None else np.asarray(rows, dtype=np.int64)
    pool = np.arange(len(cams)) if pool is None else np.asarray(pool, dtype=np.int64)
    nearest = np.full(len(rows), -1, dtype=np.int64)
    for c in np.unique(cams[rows]):
        inside, outside = np.flatnonzero(cams[rows] == c), pool[cams[pool] != c]
        if len(outside):
            _, idx = faiss.knn(np.ascontiguousarray(x[rows[inside]]), np.ascontiguousarray(x[outside]), 1,
                               metric=faiss.METRIC_INNER_PRODUCT)
            nearest[inside] = outside[idx[:, 0]]
    return nearest


def cross_camera_mutual_hits(features: np.ndarray, cams: np.ndarray, rows=None, back_among_rows=False,
                             groups=None) -> np.ndarray:
    """Whether each scored image is its cross-camera nearest neighbour's cross-camera nearest neighbour.

    Args:
        features: (N, D) float features. cams: (N,) int camera ids.
        rows: (R,) int indices of the images scored (default: all); their neighbours are
            searched among all N images.
        back_among_rows: search the neighbour's own nearest among the R scored images only
            (held-out images then never compete with trained ones, which training pulls
            together whatever their true identity).
        groups: (N,) int tracklet ids (-1: in none) or None; given, a neighbour's nearest in
            the image's own tracklet counts as the image.
    Returns:
        (R,) float64: 1.0 a hit, 0.0 a miss, NaN where no other camera has an image.
    """
    rows = np.arange(len(cams)) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.full(len(rows), np.nan)
    nearest = cross_camera_nearest(features, cams, rows)
    ok = nearest >= 0
    if not ok.any():
        return out
    back = cross_camera_nearest(features, cams, nearest[ok], pool=rows if back_among_rows else None)
    hit = back == rows[ok]
    if groups is not None:
        g = np.asarray(groups)
        hit |= (back >= 0) & (g[back] == g[rows[ok]]) & (g[rows[ok]] >= 0)
    out[ok] = hit
    return out


def cross_camera_mutual(features: np.ndarray, cams: np.ndarray, rows=None, back_among_rows=False,
                        groups=None) -> float:
    """Share of the scored images that are hits of ``cross_camera_mutual_hits`` (same arguments).

    Returns:
        float in [0, 1]; NaN with fewer than 2 cameras.
    """
    return mean_of(cross_camera_mutual_hits(features, cams, rows, back_among_rows, groups))


def mean_of(values: np.ndarray) -> float:
    """Mean of the scored values ((R,) float, NaN = not scored); NaN when none is scored."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.mean(v[~np.isnan(v)])) if (~np.isnan(v)).any() else float("nan")


def paired_gain(before: np.ndarray, after: np.ndarray, units: np.ndarray):
    """Mean change of per-image values between two models, and its standard error over units.

    The same images are scored before and after, so the difference is paired: images that
    are hits (or misses) both times add no noise, unlike a difference of two independent
    shares. The images of one unit (a held-out tracklet) are not independent, so the
    standard error is clustered by unit (the sandwich estimator with the small-sample factor
    U / (U - 1), "CR1"): over 11-15 held-out tracklets it is about twice the one that treats
    every image as independent (docs/RESULTS.md 2g).

    Args:
        before, after: (R,) float values of the same R images (NaN = not scored; such an image
            is left out of both).
        units: (R,) int unit of each image (its tracklet, or the image itself).
    Returns:
        (gain, se): floats; se is inf with fewer than 2 units (nothing can be told), NaN
        gain when no image is scored both times.
    """
    before, after, units = np.asarray(before, np.float64), np.asarray(after, np.float64), np.asarray(units)
    ok = ~(np.isnan(before) | np.isnan(after))
    if not ok.any():
        return float("nan"), float("inf")
    d, u = after[ok] - before[ok], units[ok]
    gain = float(d.mean())
    ids, inv = np.unique(u, return_inverse=True)
    if len(ids) < 2:
        return gain, float("inf")
    per_unit = np.bincount(inv, weights=d - gain, minlength=len(ids))
    se = float(np.sqrt(len(ids) / (len(ids) - 1) * np.sum(per_unit ** 2)) / len(d))
    return gain, se


# A gain must exceed this many of its standard errors: a round value, not tuned on mAP.
MARGIN_Z = 2.0


def replaces_kept(gain: float, se: float, score: float, kept_score: float) -> bool:
    """Whether an epoch replaces the kept model (``engine/selection.py``): its paired gain
    over the start is above MARGIN_Z of its standard errors (``paired_gain``), and its score
    is above the kept model's.

    Args:
        gain, se (float): ``paired_gain`` of the epoch against the start. score (float): the
            epoch's signal (``mean_of``). kept_score (float): the kept model's.
    """
    return gain > MARGIN_Z * se and score > kept_score


# The signals CALR.SELECT.SIGNAL can name (bench/quality_signal.py scores them and more):
# name -> fn(features (N, D), cams (N,), rows (R,) or None, groups=(N,) or None) -> (R,) float
# per-image values (NaN = not scored); the signal is their mean (``mean_of``), and two models
# are compared image by image (``paired_gain``).
SIGNALS = {
    # Held-out images (rows) against each other: an image's nearest neighbour in the other
    # cameras is searched among all images, that neighbour's own nearest among the held-out
    # ones (docs/RESULTS.md 2g: searched among all images, the share falls as training pulls
    # the trained images together, while mAP rises).
    "cross_camera_mutual": functools.partial(cross_camera_mutual_hits, back_among_rows=True),
}
