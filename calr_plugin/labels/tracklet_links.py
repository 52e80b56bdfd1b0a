"""Cannot-links between tracklets of one camera, and the stage-1 cut they calibrate.

Shape shorthand: N_c images of one camera, T tracklets, P co-occurring tracklet pairs,
M image pairs across them.

Within one camera a tracklet holds one person (a must-link, ``intra_camera.py``), and two
tracklets seen at the same time hold two people: a cannot-link. The frame spans come from the
crops' file names (``tools/video_to_crops.py`` writes ``<tracklet>/<frame>.jpg``); a tracklet
is cut where it went unseen, so overlapping spans mean both people were in view at once.

The cannot-links do two things in stage 1 (reference §5 step 3 clusters a camera into a fixed
N_c / 5 clusters; the paper gives no rule for tracklets):

1. They choose the cut. On the must-link average-linkage tree the cut is raised merge by merge
   while at most ``tolerance`` of the co-occurring pairs end in one cluster: the pairs are
   known different people, so their share estimates the false merges of the cut, and K_c
   follows from the data instead of a ratio.
2. They hold in the final tree: their image pairs are set so far apart that no average over
   a cluster pair holding one can come below any other merge.
"""
import numpy as np

__all__ = ["co_occurring", "cannot_link_pairs", "cannot_link_distance", "joined_share"]


def co_occurring(groups: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Tracklet pairs of one camera whose frame spans overlap.

    Args:
        groups: (N_c,) int tracklet ids (-1: in none).
        frames: (N_c,) int frame numbers (-1: unknown). A tracklet with an unknown frame
            has no span and no cannot-link.
    Returns:
        (P, 2) int64 tracklet id pairs (a, b), a < b.
    """
    groups, frames = np.asarray(groups), np.asarray(frames)
    inside = groups >= 0
    ids, inv = np.unique(groups[inside], return_inverse=True)
    if len(ids) < 2:
        return np.zeros((0, 2), np.int64)
    f = frames[inside].astype(np.int64)
    lo = np.full(len(ids), np.iinfo(np.int64).max)
    hi = np.full(len(ids), -1, np.int64)
    np.minimum.at(lo, inv, f)
    np.maximum.at(hi, inv, f)
    known = lo >= 0  # lo is -1 when any of the tracklet's frames is unknown
    ids, lo, hi = ids[known], lo[known], hi[known]
    order = np.argsort(lo, kind="stable")
    ids, lo, hi = ids[order], lo[order], hi[order]
    # Sorted by start: b after a overlaps a iff b starts no later than a ends.
    ends = np.searchsorted(lo, hi, side="right")
    counts = np.maximum(ends - np.arange(len(ids)) - 1, 0)
    a = np.repeat(np.arange(len(ids)), counts)
    b = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + a + 1
    pairs = np.sort(np.stack([ids[a], ids[b]], axis=1), axis=1).astype(np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def cannot_link_pairs(groups: np.ndarray, pairs: np.ndarray):
    """Image pairs (i < j) across the co-occurring tracklet pairs.

    Args:
        groups: (N_c,) int tracklet ids. pairs: (P, 2) tracklet pairs (``co_occurring``).
    Returns:
        tuple: rows (M,), cols (M,) int64 image indices, rows < cols.
    """
    members = {}
    for i, g in enumerate(np.asarray(groups)):
        if g >= 0:
            members.setdefault(int(g), []).append(i)
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for a, b in pairs:
        r, c = np.meshgrid(members[int(a)], members[int(b)], indexing="ij")
        rows.append(r.ravel())
        cols.append(c.ravel())
    r, c = np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
    return np.minimum(r, c), np.maximum(r, c)


def cannot_link_distance(n: int) -> float:
    """Distance given to a cannot-linked image pair in an N_c-image tree whose other distances
    are at most 2: an average over any cluster pair holding one is then at least 4 N_c^2 /
    N_c^2 = 4, above every other merge."""
    return 4.0 * n * n


def joined_share(labels: np.ndarray, groups: np.ndarray, pairs: np.ndarray) -> float:
    """Share of the cannot-linked image pairs that ``labels`` put in one cluster (tracklets
    taken whole, so a tracklet pair (a, b) counts |a| |b| image pairs).

    Args:
        labels: (N_c,) int cluster of each image. groups: (N_c,) int tracklet ids.
        pairs: (P, 2) tracklet pairs, P >= 1.
    """
    ids, first, sizes = np.unique(np.asarray(groups), return_index=True, return_counts=True)
    of = np.asarray(labels)[first]  # a tracklet's cluster: that of its first image
    a, b = np.searchsorted(ids, pairs[:, 0]), np.searchsorted(ids, pairs[:, 1])
    weight = sizes[a] * sizes[b]
    return float(np.sum(weight * (of[a] == of[b])) / np.sum(weight))
