"""How the training images are spread over people and cameras, read from unlabeled features.

Shape shorthand: N images, N_c images of camera c, C cameras, D feature dims, s sampled
rows of one camera, J the largest neighbour rank read, m images of one person in one camera.

The ``auto`` settings (``labels.auto``) derive from three numbers, estimated here with their
evidence; nothing reads a person id:

* ``m``, images per person and camera (``estimate_images_per_cell``). Within one camera
  an image's m - 1 other images of its person are its nearest neighbours, so the sorted
  similarities s_(1) >= s_(2) >= ... of a row drop after rank m - 1. The drop is read
  against a null with no people in it: Gaussian features with the camera's own mean and
  covariance (the reference distribution of the gap statistic, Tibshirani, Walther &
  Hastie 2001). R(j) = sum over rows of the spacing s_(j) - s_(j+1), divided by the same
  sum under the null, pooled over cameras; m - 1 is the rank of R's peak. Where no rank
  reaches ``PEAK_MIN`` the camera holds no repeated person: m = 1.
  ``PEAK_MIN`` = 1.6 was set on the synthetic grid (``bench/auto_grid.py``) alone: the
  largest R of its m = 1 cells is 1.14 and the smallest peak of its m >= 2 cells 2.23;
  1.6 is their geometric midpoint. docs/RESULTS.md 2d has the table on the real sets.
  A peak below ``WEAK_PEAK`` (2.0) is used but called weak in the log; so is a peak at the
  last rank read. Where no rank reaches ``PEAK_MIN`` but every rank read has a ratio
  below 0.5 in a camera larger than the range (neighbours packed tighter than chance all
  the way), m is the end of the range and the log says people may have more images.
* cameras per person (``cameras_per_person``): an untrained model barely matches a
  person across cameras (reference §13: 0.8 % of the nearest neighbours on CUHK01), so
  it cannot be counted at start-up. It is bounded instead: with P_c = N_c / m people in
  camera c and at least max_c P_c people in all, a person is in at most
  U = sum_c P_c / max_c P_c cameras; the start-up value is min(2, U to 0.1), the fewest cameras
  that give cross-camera pairs. Too few is the safe side (smaller clusters and batches
  per person); too many made MIN_SIZE and NUM_INSTANCE swallow whole clusters (C * m = 42
  on a 3-camera set with 22 images per person and camera). During training the clusters'
  camera span measures it (``engine.hooks``).
* images per person = m x cameras per person.

With tracklets and their frame numbers (``DATASETS.TRACKLETS folder``, crops cut from video)
``images_per_cell_from_tracklets`` reads m from them instead: each camera where tracklets
are seen at the same time is cut by stage 1's cannot-link rule (``intra_camera.cluster_camera``)
into about one cluster per person, and m = images / clusters over those cameras.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from .intra_camera import cluster_camera
from .knn import l2_normalize
from .tracklet_links import co_occurring

__all__ = ["PEAK_MIN", "MAX_RANK", "Structure", "spacing_ratio", "estimate_images_per_cell",
           "images_per_cell_from_tracklets", "cameras_per_person", "estimate_structure"]

PEAK_MIN = 1.6
MAX_RANK = 256  # J: m is searched in 1..J+1 (crops cut from a video's tracklets: tens to hundreds)
ROW_CHUNK = 256
WEAK_PEAK = 2.0  # below the smallest peak of the synthetic grid's m >= 2 cells (2.23): said in the log
NULL_DRAWS = 4
MAX_ROWS = 2000  # rows sampled per camera for the spacings (all rows below that)


def _camera_sizes(cams) -> np.ndarray:
    """(C,) images per camera, in the order of the sorted camera ids."""
    return np.unique(np.asarray(cams), return_counts=True)[1]


def _gaussian_like(x: np.ndarray, rng: np.random.Generator, draws: int = 1):
    """Yields ``draws`` (n, D) arrays of Gaussian rows with the mean and covariance of x's
    rows (no cluster in them), one at a time."""
    mean = x.mean(axis=0)
    xc = x - mean
    n, d = xc.shape
    if n <= d:  # rank <= n: the SVD of the rows is the cheaper square root
        _, sv, vt = np.linalg.svd(xc, full_matrices=False)
        root = (sv[:, None] / np.sqrt(n)) * vt
    else:
        w, v = np.linalg.eigh(xc.T @ xc / n)
        root = np.sqrt(np.maximum(w, 0.0))[:, None] * v.T
    for _ in range(draws):
        yield (rng.standard_normal((n, len(root))) @ root + mean).astype(np.float32)


def _spacing_sums(x: np.ndarray, rows: np.ndarray, j: int) -> np.ndarray:
    """Sum over ``rows`` of s_(r) - s_(r+1), r = 1..j, of each row's similarities to the
    other rows of x (self excluded): (j,) float64."""
    x = l2_normalize(x, copy=True)
    out = np.zeros(j, np.float64)
    for start in range(0, len(rows), ROW_CHUNK):  # (chunk, N_c) similarities at a time
        part = rows[start:start + ROW_CHUNK]
        s = x[part] @ x.T
        s[np.arange(len(part)), part] = -np.inf
        top = -np.sort(-np.partition(s, -(j + 1), axis=1)[:, -(j + 1):], axis=1)
        out += (top[:, :-1] - top[:, 1:]).sum(axis=0)
    return out


def spacing_ratio(features: np.ndarray, cams: np.ndarray, max_rank: int = MAX_RANK, seed: int = 0,
                  max_rows: int = MAX_ROWS):
    """R(j), the neighbour-similarity spacings within cameras over a Gaussian null's.

    Args:
        features: (N, D) float features. cams: (N,) int camera ids.
        max_rank: J, the largest rank read.
        seed: fixes the null draws and the sampled rows.
        max_rows: rows read per camera (all when N_c is at most this).
    Returns:
        tuple: R (J,) float64 (NaN at ranks no camera is large enough for), and the
        (J,) number of rows behind each rank.
    """
    feats = np.asarray(features, dtype=np.float32)
    cams = np.asarray(cams)
    rng = np.random.default_rng(seed)
    obs, null, rows_at = np.zeros(max_rank), np.zeros(max_rank), np.zeros(max_rank, np.int64)
    for c in np.unique(cams):
        x = l2_normalize(feats[cams == c], copy=True)
        n = len(x)
        j = min(max_rank, n - 2)
        if j < 1:
            continue
        x = x - x.mean(axis=0)  # camera-centred: the camera's common component is no person
        rows = np.arange(n) if n <= max_rows else np.sort(rng.choice(n, max_rows, replace=False))
        obs[:j] += _spacing_sums(x, rows, j)
        for y in _gaussian_like(x, rng, NULL_DRAWS):  # several draws: the null's noise is not a peak
            null[:j] += _spacing_sums(y, rows, j) / NULL_DRAWS
        rows_at[:j] += len(rows)
    ratio = np.full(max_rank, np.nan)
    ok = null > 0
    ratio[ok] = obs[ok] / null[ok]
    return ratio, rows_at


def estimate_images_per_cell(features: np.ndarray, cams: np.ndarray, seed: int = 0, max_rank: int = MAX_RANK,
                             peak_min: float = PEAK_MIN):
    """m, images per person and camera (module docstring), with its evidence.

    Args:
        features: (N, D) float features (untrained or trained). cams: (N,) int camera ids.
        seed: fixes the null and the sampled rows. max_rank: J. peak_min: the R a peak needs.
    Returns:
        tuple: m (float, an integer >= 1), evidence dict (``peak_rank``, ``peak_ratio``,
        ``ratio`` the (J,) curve rounded, ``searched`` 1..J+1) and warnings (list of str).
    Raises:
        ValueError: no camera has 3 images or more.
    """
    ratio, rows_at = spacing_ratio(features, cams, max_rank, seed)
    valid = np.flatnonzero(rows_at > 0)
    if not len(valid):
        raise ValueError("need a camera with at least 3 images to estimate images per person and camera")
    top = int(valid[np.nanargmax(ratio[valid])])
    peak = float(ratio[top])
    warnings: List[str] = []
    truncated = _camera_sizes(cams).max() - 2 > max_rank
    if peak < peak_min and truncated and np.nanmedian(ratio[valid]) < 0.5:
        # No drop, but every searched neighbour is packed far tighter than chance: the
        # person's images go on past the last rank read.
        m = float(valid[-1] + 2)
        warnings.append(f"m = {m:g} is at the edge of the searched range 1..{m:g}: the neighbours are closer "
                        f"than chance up to the last rank read (median spacing ratio "
                        f"{np.nanmedian(ratio[valid]):.2f}); people may have more images per camera")
    elif peak >= peak_min:
        m = float(top + 2)  # spacing after rank j = m - 1 (index top = j - 1)
        if top == valid[-1]:
            warnings.append(f"m = {m:g} is at the edge of the searched range 1..{top + 2}: "
                            f"people may have more images per camera")
        elif peak < WEAK_PEAK:
            warnings.append(f"m = {m:g} from weak evidence (spacing ratio {peak:.2f}, {peak_min} needed)")
    else:
        m = 1.0
        warnings.append(f"no repeated person found within a camera (largest spacing ratio {peak:.2f} "
                        f"< {peak_min}): m = 1")
    evidence = {"peak_rank": top + 1, "peak_ratio": round(peak, 3), "peak_min": peak_min,
                "searched": [1, int(valid[-1]) + 2],
                "ratio": [None if np.isnan(v) else round(float(v), 3) for v in ratio[:int(valid[-1]) + 1]]}
    return m, evidence, warnings


def images_per_cell_from_tracklets(features: np.ndarray, cams: np.ndarray, groups: np.ndarray, frames: np.ndarray,
                                   k1: int = 15, k2: int = 4, tolerance: float = 0.01):
    """m from tracklets seen at the same time: images over stage 1's cannot-link clusters.

    Tracklets cut from video split a person's crops in one camera into several pieces, so
    their lengths undercount m; the cannot-link cut merges the pieces back into about one
    cluster per person (on 11 generated sites, 27 and 26 clusters for 28.2 and 30.7
    person-camera pairs a site, docs/RESULTS.md 2f). On the generated video of 2f the
    spacing estimate read m = 24-32 against the truth's 37.5.

    Args:
        features: (N, D) float features. cams: (N,) int camera ids.
        groups: (N,) int tracklet ids (-1: none). frames: (N,) int frame numbers (-1: unknown).
        k1, k2: stage 1's Jaccard parameters. tolerance: CALR.STAGE1.CANNOT_LINK_SHARE.
    Returns:
        tuple: m (float) or None when no camera has two tracklets seen at the same time, and
        evidence {"from": "tracklets", "cameras", "images", "clusters", "tracklets"}.
    """
    cams, groups, frames = np.asarray(cams), np.asarray(groups), np.asarray(frames)
    feats = np.asarray(features, dtype=np.float32)  # once, not a full copy per camera
    used, images, clusters, tracklets = [], 0, 0, 0
    for c in np.unique(cams):
        sel = np.flatnonzero(cams == c)
        g, f = groups[sel], frames[sel]
        if not len(co_occurring(g, f)):
            continue  # the cut needs cannot-links; such a camera says nothing about m
        labels, _ = cluster_camera(l2_normalize(feats[sel]), 1, k1, k2, False,
                                   groups=g, frames=f, tolerance=tolerance)
        used.append(int(c))
        images += len(sel)
        clusters += int(labels.max()) + 1
        tracklets += len(np.unique(g[g >= 0]))
    if not used:
        return None, {"from": "tracklets", "cameras": []}
    m = round(images / clusters, 2)
    return m, {"from": "tracklets", "cameras": used, "images": images, "clusters": clusters,
               "tracklets": tracklets, "m": m}


def cameras_per_person(cams: np.ndarray, m: float) -> Tuple[float, Dict]:
    """The start-up cameras per person: min(2, U), U the upper bound of the module docstring.

    Args:
        cams: (N,) int camera ids. m: images per person and camera.
    Returns:
        tuple: the value (float in [1, 2]) and its evidence (people per camera, U).
    """
    people = _camera_sizes(cams) / max(m, 1.0)
    upper = float(people.sum() / people.max())
    value = min(2.0, round(upper, 1))  # to 0.1: cameras of 494 and 498 images are no evidence of 1.99
    return value, {"people_per_camera": [round(float(p), 1) for p in people], "upper_bound": round(upper, 3),
                   "rule": "min(2, upper bound): the fewest cameras that give cross-camera pairs"}


@dataclass
class Structure:
    """Result of ``estimate_structure``.

    Attributes:
        m: images per person and camera. cams_per_person: cameras that see a person.
        images_per_person: m * cams_per_person. num_cameras: C (of the cams given).
        evidence: JSON-able dict, per estimate. warnings: what the log should say.
    """

    m: float
    cams_per_person: float
    num_cameras: int
    evidence: Dict = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    @property
    def images_per_person(self) -> float:
        return self.m * self.cams_per_person


def estimate_structure(features: np.ndarray, cams: np.ndarray, seed: int = 0, m: float = None,
                       m_evidence: dict = None) -> Structure:
    """m, cameras per person and images per person from unlabeled features and cameras.

    Args:
        features: (N, D) float features. cams: (N,) int camera ids (given or inferred).
        seed: fixes the null draws. m: a known m (skips its estimate).
        m_evidence: where a known m came from (e.g. ``images_per_cell_from_tracklets``'s
            evidence); None = ``{"given": m}``.
    Returns:
        ``Structure``.
    """
    cams = np.asarray(cams)
    evidence, warnings = {}, []
    if m is None:
        m, evidence["m"], warnings = estimate_images_per_cell(features, cams, seed)
    else:
        evidence["m"] = dict(m_evidence) if m_evidence is not None else {"given": float(m)}
    k, evidence["cameras_per_person"] = cameras_per_person(cams, m)
    return Structure(float(m), k, int(len(np.unique(cams))), evidence, warnings)
