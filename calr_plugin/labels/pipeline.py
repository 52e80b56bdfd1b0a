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
from typing import Dict, Optional

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
        if not 0.0 <= self.p_end <= 1.0:
            raise ValueError(f"p_end must be in [0, 1], got {self.p_end}")

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
        min_sim: the threshold used (``params.min_sim``, or the epoch's quantile).
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
    sims, idx = knn_search(x, params.k, method=params.knn_method, use_gpu=params.knn_use_gpu,
                           normalize=False, hnsw_m=params.hnsw_m, hnsw_ef_construction=params.hnsw_ef_construction,
                           hnsw_ef_search=params.hnsw_ef_search, ivf_nlist=params.ivf_nlist,
                           ivf_nprobe=params.ivf_nprobe, seed=params.seed)
    tick("knn")
    min_sim = params.min_sim
    if params.min_sim_quantile > 0:
        min_sim = edge_quantile(sims, idx, params.min_sim_quantile)
    glob = infomap_cluster(sims, idx, min_sim, params.min_size, seed=params.seed,
                           num_trials=params.infomap_trials)
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
        timings=timings,
    )
