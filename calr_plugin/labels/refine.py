"""Camera-aware label refinement (Eq. 5) with discard probability p.

Shape shorthand: N images, K global clusters, C cameras, P pivots.

For a pivot v in global cluster G_k seen by camera c, with local (stage-1) cluster L_v:
every member u of G_k with cam(u) = c and local(u) != local(v) is discarded (label -> -1)
with probability p. Members from other cameras are untouched. With p = 1 this is Eq. 5,
    G_refine = (G_k^c ∩ L_v) ∪ (G_k \\ G_k^c).
Membership is always read from the un-refined labels.

With several pivots in one (cluster, camera) group the paper's Algorithm 1 applies them one
after another; two readings are offered (reference §13 measured both):

- ``mode="each"`` (Alg. 1 literally): every same-group pivot with a different local label
  independently discards u with probability p, so u survives with (1 - p)^m, m = number of
  such pivots. A pivot can discard another pivot.
- ``mode="union"``: u is kept if its local label equals that of ANY pivot of its group;
  otherwise, if the group has a pivot, u is discarded with probability p.

Local labels only need to be unique within a camera: they are only ever compared between
two images of the same camera.
"""
from typing import Dict, Tuple, Union

import numpy as np

__all__ = ["refine_labels", "relabel_contiguous", "REFINE_MODES"]

REFINE_MODES = ("each", "union")


def _pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # One int64 key per (a, b) pair, for non-negative a, b.
    span = int(b.max()) + 1 if len(b) else 1
    if len(a) and int(a.max()) >= np.iinfo(np.int64).max // span:
        _, inv = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
        return inv.ravel().astype(np.int64)
    return a.astype(np.int64) * span + b


def _count_in(keys_all: np.ndarray, keys_pivot: np.ndarray) -> np.ndarray:
    # For each entry of keys_all, how many pivots share its key.
    uniq, counts = np.unique(keys_pivot, return_counts=True)
    pos = np.searchsorted(uniq, keys_all)
    pos = np.minimum(pos, max(len(uniq) - 1, 0))
    hit = (uniq[pos] == keys_all) if len(uniq) else np.zeros(len(keys_all), dtype=bool)
    return np.where(hit, counts[pos] if len(uniq) else 0, 0)


def refine_labels(
    global_labels: np.ndarray,
    local_labels: np.ndarray,
    cams: np.ndarray,
    pivots: np.ndarray,
    p: float = 1.0,
    mode: str = "each",
    seed: Union[int, np.random.Generator] = 0,
) -> Tuple[np.ndarray, Dict[str, float]]:
    """Eq. 5 refinement of the global labels with the pivots' local clusters.

    Args:
        global_labels: (N,) int global cluster ids, -1 = outlier (never refined).
        local_labels: (N,) int non-negative stage-1 labels, unique within each camera.
        cams: (N,) int camera ids.
        pivots: (N,) bool pivot mask (``select_pivots``); outlier pivots are ignored.
        p: discard probability in [0, 1] (``decay_p``); 0 keeps everything, 1 is Eq. 5.
        mode: "each" or "union", see the module docstring.
        seed: int or ``np.random.Generator``; exactly N uniforms are drawn whatever the
            mode, so both modes see the same random numbers.

    Returns:
        refined: (N,) int64 labels; kept images keep their original cluster id, discarded
            ones are -1 (use ``relabel_contiguous`` for 0..K'-1).
        stats: dict with ``num_discarded`` (int), ``num_clustered`` (non-outliers before
            refinement) and ``discard_ratio`` = num_discarded / num_clustered.
    """
    if mode not in REFINE_MODES:
        raise ValueError(f"refine mode must be one of {REFINE_MODES}, got {mode!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    g = np.asarray(global_labels, dtype=np.int64)
    loc = np.asarray(local_labels, dtype=np.int64)
    cams = np.asarray(cams)
    piv = np.asarray(pivots, dtype=bool)
    n = len(g)
    if not (loc.shape == cams.shape == piv.shape == (n,)):
        raise ValueError("global_labels, local_labels, cams and pivots must all have shape (N,)")
    if n and loc.min() < 0:
        raise ValueError("local_labels must be >= 0 for every image (stage 1 labels all images)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    u = rng.random(n)

    refined = g.copy()
    clustered = np.flatnonzero(g >= 0)
    stats = {"num_discarded": 0, "num_clustered": int(len(clustered)), "discard_ratio": 0.0}
    if len(clustered) == 0:
        return refined, stats
    _, cam_idx = np.unique(cams[clustered], return_inverse=True)
    gc, lc = g[clustered], loc[clustered]
    group = _pair_key(gc, cam_idx.ravel())            # (cluster, camera)
    sub = _pair_key(group, lc)                        # (cluster, camera, local label)
    is_piv = piv[clustered]
    n_group = _count_in(group, group[is_piv])         # pivots in u's group
    n_same = _count_in(sub, sub[is_piv])              # ... sharing u's local label
    if mode == "each":
        m = n_group - n_same
        discard_prob = 1.0 - (1.0 - p) ** m
    else:
        discard_prob = np.where((n_group > 0) & (n_same == 0), p, 0.0)
    drop = u[clustered] < discard_prob
    refined[clustered[drop]] = -1
    stats["num_discarded"] = int(drop.sum())
    stats["discard_ratio"] = stats["num_discarded"] / len(clustered)
    return refined, stats


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Map non-negative labels to 0..K-1 keeping their order; -1 stays -1.

    Args:
        labels: (N,) int labels.

    Returns:
        (N,) int64 labels; old ids a < b map to new ids a' < b'.
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, dtype=np.int64)
    keep = labels >= 0
    _, out[keep] = np.unique(labels[keep], return_inverse=True)
    return out
