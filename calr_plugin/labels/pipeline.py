"""One call per epoch: features in, CALR pseudo labels out.

Shape shorthand: N images, D feature dims, C cameras, K global clusters, K' refined clusters.

Stage 1 (once): ``stage1_labels`` -> per-camera local labels (``intra_camera_labels``).
Stage 2 (every epoch), ``stage2_labels``:
    [camera centring] -> kNN (k incl. self) -> edges >= min_sim -> Infomap -> drop clusters
    < min_size -> Eq. 4 scores -> pivots -> p = decay(epoch) -> Eq. 5 refinement ->
    contiguous relabel -> Eq. 6 weights of the refined clusters.

``LabelParams`` defaults follow the PAPER where paper and code differ, except the pivot
rule (one highest-scoring pivot per cluster; see docs/PRESETS.md for the measurement);
``LabelParams.official_code()`` gives the authors' shipped behaviour (reference §12).
"""
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .infomap_cluster import infomap_cluster
from .intra_camera import LocalLabels, intra_camera_labels
from .knn import (HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, KNN_METHODS, camera_centre, knn_search,
                  l2_normalize)
from .pivots import MEAN_DIST_MODES, NEIGHBOUR_MODES, PIVOT_RULES, pivot_scores, select_pivots
from .refine import REFINE_MODES, refine_labels, relabel_contiguous
from .schedules import DECAY_KINDS, decay_p
from .weights import cluster_weights

__all__ = ["LabelParams", "Stage2Result", "edge_quantile", "stage1_labels", "stage2_labels"]


@dataclass
class LabelParams:
    """Pseudo-label settings; field names mirror the future config keys.

    Stage 1: k1, k2 (Jaccard), local_ratio (K_c = floor(N_c * ratio)), local_num_clusters
    (fixed K_c instead). Stage 2: k (kNN incl. self), min_sim, min_sim_quantile (0 = off: the
    fixed min_sim), min_size, knn_method, knn_use_gpu, the approximate kNN's hnsw_* / ivf_*
    (``knn_search``'s arguments), camera_centre (beyond the paper, off), pivot_rule,
    pivot_mean_dist, pivot_neighbours, refine_mode, refine_enabled, decay, p_end, decay_power,
    weight_warmup_epochs, infomap_trials, seed.
    """

    k1: int = 15
    k2: int = 4
    local_ratio: float = 0.2
    local_num_clusters: Optional[int] = None
    k: int = 15
    min_sim: float = 0.5
    # > 0: each epoch's min_sim is this quantile of that epoch's kNN edge similarities.
    min_sim_quantile: float = 0.0
    min_size: int = 5
    knn_method: str = "exact"
    knn_use_gpu: object = "auto"
    # Approximate kNN settings (knn_search's arguments; docs/SCALING.md has the trade-off).
    # HNSW: the fast mode measured at MSMT17 size (knn.HNSW_*, also CALR.CLUSTER.HNSW_*).
    hnsw_m: int = HNSW_M
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION
    hnsw_ef_search: int = HNSW_EF_SEARCH
    ivf_nlist: int = 0
    ivf_nprobe: int = 0  # 0 = half the lists (knn.ivf_nprobe_for)
    camera_centre: bool = False
    # Default departs from the paper (all_above_mean): measured in docs/PRESETS.md.
    pivot_rule: str = "one_per_cluster_max"
    pivot_mean_dist: str = "all_pairs"
    pivot_neighbours: str = "topk"
    refine_mode: str = "each"
    refine_enabled: bool = True
    decay: str = "cosine"
    p_end: float = 0.75
    decay_power: float = 2.0
    weight_warmup_epochs: int = 5
    infomap_trials: int = 1
    # Collapse guard (beyond the paper): while more than this share of the images are
    # outliers, halve min_size (down to 2), then lower min_sim to keep more edges;
    # 1.0 = off. ``stage2_labels`` says what it did in ``Stage2Result.guard``.
    max_outliers: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name, value, allowed in (
            ("knn_method", self.knn_method, KNN_METHODS),
            ("pivot_rule", self.pivot_rule, PIVOT_RULES),
            ("pivot_mean_dist", self.pivot_mean_dist, MEAN_DIST_MODES),
            ("pivot_neighbours", self.pivot_neighbours, NEIGHBOUR_MODES),
            ("refine_mode", self.refine_mode, REFINE_MODES),
            ("decay", self.decay, DECAY_KINDS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not 0.0 <= self.min_sim_quantile < 1.0:
            raise ValueError(f"min_sim_quantile must be in [0, 1), got {self.min_sim_quantile}")
        if not 0.0 < self.max_outliers <= 1.0:
            raise ValueError(f"max_outliers must be in (0, 1], got {self.max_outliers}")
        if not 0.0 <= self.p_end <= 1.0:
            raise ValueError(f"p_end must be in [0, 1], got {self.p_end}")

    def knn_options(self) -> dict:
        """``knn_search`` keyword arguments of the kNN graph these settings build."""
        return {"method": self.knn_method, "use_gpu": self.knn_use_gpu, "hnsw_m": self.hnsw_m,
                "hnsw_ef_construction": self.hnsw_ef_construction, "hnsw_ef_search": self.hnsw_ef_search,
                "ivf_nlist": self.ivf_nlist, "ivf_nprobe": self.ivf_nprobe}

    @classmethod
    def defaults(cls, **overrides) -> "LabelParams":
        """calr-reid's defaults: the paper, except one (highest-scoring) pivot per cluster."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def paper(cls, **overrides) -> "LabelParams":
        """Paper reading: all above-mean pivots, all-pairs mean, top-k, cosine decay."""
        return dataclasses.replace(cls(pivot_rule="all_above_mean"), **overrides)

    @classmethod
    def official_code(cls, **overrides) -> "LabelParams":
        """Authors' code: one pivot per cluster (last above-mean), kNN mean, edges only, p = 1."""
        base = cls(
            pivot_rule="one_per_cluster_last",
            pivot_mean_dist="knn",
            pivot_neighbours="edges",
            decay="none",
        )
        return dataclasses.replace(base, **overrides)


@dataclass
class Stage2Result:
    """Output of ``stage2_labels``.

    Attributes:
        global_labels: (N,) int64 Infomap clusters 0..K-1, -1 = outlier (before refinement).
        refined_labels: (N,) int64 training labels 0..K'-1, -1 = outlier or discarded.
        weights: (K',) float32 Eq. 6 weights of the refined clusters.
        use_weights: epoch >= weight_warmup_epochs (pass None as loss weights otherwise).
        scores: (N,) float64 Eq. 4 scores. pivots: (N,) bool pivot mask.
        p: discard probability used. discard_ratio: discarded / clustered images.
        num_discarded: int. kept_edge_fraction: kNN edges kept by min_sim.
        min_sim: the threshold used (``params.min_sim``, the epoch's quantile, or the
            guard's). min_size: the MIN_SIZE used (``params.min_size`` or the guard's).
        guard: what the collapse guard changed and why, one line per step ([] = nothing).
        timings: {step: seconds}.
    """

    global_labels: np.ndarray
    refined_labels: np.ndarray
    weights: np.ndarray
    use_weights: bool
    scores: np.ndarray
    pivots: np.ndarray
    p: float
    discard_ratio: float
    num_discarded: int
    kept_edge_fraction: float
    min_sim: float
    min_size: int = 0
    guard: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def num_clusters(self) -> int:
        return int(len(self.weights))


def edge_quantile(sims: np.ndarray, idx: np.ndarray, q: float) -> float:
    """The q-quantile of the non-self kNN edge similarities (missing neighbours skipped).

    The ``auto`` MIN_SIM rule ("Infomap keeps the stronger half of the graph", q = 0.5)
    read once at start-up stops meaning that after an epoch or two: training pulls
    neighbours together and on CUHK01 a frozen median kept 92 % of the edges at epoch 2 and
    99.9 % at the end (mean cluster 13 images for ~4.5 per person). Re-read every epoch, the
    threshold keeps the same share of the graph.

    Args:
        sims: (N, k) float32 similarities, column 0 = self. idx: (N, k) int64, -1 = missing.
        q: quantile in (0, 1).
    Returns:
        float: the threshold (1.0 when there is no edge).
    """
    edges = sims[:, 1:][idx[:, 1:] >= 0]
    return float(np.quantile(edges, q)) if edges.size else 1.0


def stage1_labels(features: np.ndarray, cams: np.ndarray, params: Optional[LabelParams] = None,
                  silhouette: bool = True) -> LocalLabels:
    """Stage-1 local labels with ``params.k1/k2/local_ratio/local_num_clusters``.

    Args:
        features: (N, D) float features. cams: (N,) int camera ids.

    Returns:
        ``LocalLabels`` (labels (N,) int64 unique across cameras, per-camera silhouettes).
    """
    params = params or LabelParams()
    return intra_camera_labels(
        features, cams, k1=params.k1, k2=params.k2, ratio=params.local_ratio,
        num_clusters=params.local_num_clusters, silhouette=silhouette,
    )


def stage2_labels(
    features: np.ndarray,
    cams: np.ndarray,
    local_labels: np.ndarray,
    epoch: int,
    max_epoch: int,
    params: Optional[LabelParams] = None,
) -> Stage2Result:
    """CALR stage-2 pseudo labels for one epoch.

    Args:
        features: (N, D) float32 features (L2-normalised here without a copy when they
            already are; camera centring makes one (N, D) copy).
        cams: (N,) int camera ids.
        local_labels: (N,) int64 stage-1 labels, >= 0, unique within each camera.
        epoch: 0-based epoch; max_epoch: E for the decay schedule.
        params: ``LabelParams`` (default: paper reading).

    Returns:
        ``Stage2Result``. The random refinement draws use ``params.seed + epoch``.
    """
    params = params or LabelParams()
    features = np.asarray(features)
    cams = np.asarray(cams)
    n = len(cams)
    if features.ndim != 2 or features.shape[0] != n or np.shape(local_labels) != (n,):
        raise ValueError(
            f"need features (N, D), cams (N,), local_labels (N,); got {features.shape}, "
            f"{cams.shape}, {np.shape(local_labels)}"
        )
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()

    def tick(name):
        nonlocal t0
        now = time.perf_counter()
        timings[name] = now - t0
        t0 = now

    x = camera_centre(features, cams) if params.camera_centre else l2_normalize(features)
    tick("prepare")
    sims, idx = knn_search(x, params.k, normalize=False, seed=params.seed, **params.knn_options())
    tick("knn")
    min_sim = params.min_sim
    if params.min_sim_quantile > 0:
        min_sim = edge_quantile(sims, idx, params.min_sim_quantile)
    glob, min_sim, min_size, guard = _guarded_infomap(sims, idx, min_sim, params)
    tick("infomap")
    scores, _ = pivot_scores(sims, idx, x, params.pivot_mean_dist, params.pivot_neighbours, min_sim)
    pivots = select_pivots(scores, glob.labels, params.pivot_rule)
    del sims, idx
    tick("pivots")
    if params.refine_enabled:
        p = decay_p(params.decay, epoch, max_epoch, params.p_end, params.decay_power)
        refined, stats = refine_labels(glob.labels, local_labels, cams, pivots, p,
                                       params.refine_mode, seed=params.seed + epoch)
    else:
        p = 0.0
        refined, stats = glob.labels.copy(), {"discard_ratio": 0.0, "num_discarded": 0}
    refined = relabel_contiguous(refined)
    tick("refine")
    num_clusters = int(refined.max(initial=-1)) + 1
    weights = cluster_weights(refined, cams, num_clusters)
    tick("weights")
    timings["total"] = float(sum(timings.values()))
    return Stage2Result(
        global_labels=glob.labels,
        refined_labels=refined,
        weights=weights,
        use_weights=epoch >= params.weight_warmup_epochs,
        scores=scores,
        pivots=pivots,
        p=float(p),
        discard_ratio=float(stats["discard_ratio"]),
        num_discarded=int(stats["num_discarded"]),
        kept_edge_fraction=glob.kept_edge_fraction,
        min_sim=float(min_sim),
        min_size=int(min_size),
        guard=guard,
        timings=timings,
    )


def _guarded_infomap(sims: np.ndarray, idx: np.ndarray, min_sim: float, params: LabelParams):
    """Infomap clusters, with the collapse guard of ``LabelParams.max_outliers``.

    Images become outliers in two ways: their cluster is smaller than min_size, or none of
    their kNN edges reaches min_sim. The guard undoes them in that order, the smaller
    change first: min_size halves down to 2, then min_sim falls to the quantile of the
    edges that keeps half of the dropped ones, until the outliers are at most
    ``max_outliers`` or fewer than 5 % of the edges are dropped. A third (the default
    key) is where a run stops training on most of its images: on a 3-camera set with 22
    images per person and camera, MIN_SIZE 21 left 96 % outliers and the run ended at
    chance level with nothing in the log.

    Args:
        sims, idx: (N, k) kNN similarities and ids (``knn_search``). min_sim: the threshold.
        params: ``LabelParams`` (min_size, max_outliers, seed, infomap_trials).
    Returns:
        tuple: ``GlobalClusters``, the min_sim and min_size used, and the guard's lines.
    """
    min_size, guard = params.min_size, []
    while True:
        glob = infomap_cluster(sims, idx, min_sim, min_size, seed=params.seed, num_trials=params.infomap_trials)
        share = float(np.mean(glob.labels < 0))
        if share <= params.max_outliers:
            return glob, min_sim, min_size, guard
        dropped = 1.0 - glob.kept_edge_fraction
        if min_size > 2:
            step = f"MIN_SIZE {min_size} -> {max(2, min_size // 2)}"
            min_size = max(2, min_size // 2)
        elif dropped >= 0.05:
            new = edge_quantile(sims, idx, dropped / 2)
            step = f"MIN_SIM {min_sim:.4f} -> {new:.4f} (keeps {1 - dropped / 2:.0%} of the kNN edges)"
            min_sim = new
        else:
            guard.append(f"{share:.0%} of the images are outliers (> {params.max_outliers:.0%}) with MIN_SIZE "
                         f"{min_size} and {glob.kept_edge_fraction:.0%} of the kNN edges kept: nothing left to lower")
            return glob, min_sim, min_size, guard
        guard.append(f"{share:.0%} of the images are outliers (> {params.max_outliers:.0%}): {step}")
