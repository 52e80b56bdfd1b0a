"""Training images held out of stage 2, so that a quality signal reads images the model never fit.

Shape shorthand: N training images, K clusters.

Any signal read on the images a model trains on rises as the model fits its own pseudo
labels, right or wrong: on VIPeR the cross-camera mutual-neighbour share of the training
images climbs from 0.21 to 0.31 over the first 7 epochs while test mAP falls from 7.3 to 6.5
(docs/RESULTS.md 2g). A share of the images, drawn once per run in every camera, is
clustered as usual but never trained on (no loss term, no memory slot), and the selection
signal (engine/selection.py) is read on them.

Crops cut from video come as tracklets: a held-out frame whose neighbouring frames are trained
on is not out of sample (docs/RESULTS.md 2g). With tracklets (DATASETS.TRACKLETS folder) whole
tracklets are held out.
"""
import numpy as np

__all__ = ["holdout_mask", "drop_held_out", "scored_units", "MIN_HELD_OUT"]

# A signal read on a few dozen images moves in steps of a few percent: at least this many are
# held out where a quarter of the set allows it (on the 200-image PRID, 50 instead of 20).
MIN_HELD_OUT = 50


def holdout_mask(cams: np.ndarray, share: float, seed: int, groups=None) -> np.ndarray:
    """max(share * N, min(MIN_HELD_OUT, N / 4)) images drawn at random, each camera in proportion.

    Args:
        cams: (N,) int camera ids. share: fraction in [0, 1); 0 = none. seed: the run's seed.
        groups: (N,) int tracklet ids (-1: in none) or None. Given, whole tracklets are drawn
            in each camera until its share is reached (an image in no tracklet is its own).
    Returns:
        (N,) bool, True = held out. A camera keeps at least one image (or tracklet) to train on.
    """
    cams = np.asarray(cams)
    mask = np.zeros(len(cams), dtype=bool)
    if share <= 0:
        return mask
    share = max(share, min(MIN_HELD_OUT, len(cams) // 4) / max(len(cams), 1))
    rng = np.random.default_rng([int(seed), 0x401D])
    for c in np.unique(cams):
        rows = np.flatnonzero(cams == c)
        take = min(int(round(share * len(rows))), len(rows) - 1)
        if groups is None:
            mask[rng.choice(rows, take, replace=False)] = True
            continue
        g = np.asarray(groups)[rows]
        units = np.where(g >= 0, g, -1 - np.arange(len(rows)))  # an image in no tracklet is a unit
        uniq, sizes = np.unique(units, return_counts=True)
        order = rng.permutation(len(uniq))[:-1]  # the last unit always trains
        # Whole units until the camera's share is reached (the unit that crosses it included).
        n_units = int(np.searchsorted(np.cumsum(sizes[order]), take)) + 1 if take > 0 else 0
        mask[rows[np.isin(units, uniq[order[:n_units]])]] = True
    return mask


def drop_held_out(labels: np.ndarray, weights, held_out: np.ndarray):
    """Labels without the held-out images, clusters renumbered 0..K'-1 in their order.

    Args:
        labels: (N,) int64 cluster ids, -1 = unused. weights: (K,) float per-cluster weights or None.
        held_out: (N,) bool.
    Returns:
        (labels (N,) int64 with held-out rows -1, weights (K',) or None): a cluster left with
        no trained member is dropped with its weight.
    """
    out = np.where(held_out, -1, labels).astype(np.int64)
    kept = np.unique(out[out >= 0])
    remap = np.full(int(labels.max(initial=-1)) + 1, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    out[out >= 0] = remap[out[out >= 0]]
    return out, (None if weights is None else np.asarray(weights)[kept])


def scored_units(rows: np.ndarray, groups=None) -> np.ndarray:
    """The independent unit of each scored image: its tracklet, or the image itself.

    Args:
        rows: (R,) int indices of the scored images. groups: (N,) int tracklet ids (-1: in
            none) or None.
    Returns:
        (R,) int64: a tracklet id (>= 0), or -1 - row for an image in no tracklet.
    """
    rows = np.asarray(rows, dtype=np.int64)
    g = np.full(len(rows), -1, np.int64) if groups is None else np.asarray(groups, dtype=np.int64)[rows]
    return np.where(g >= 0, g, -1 - rows)
