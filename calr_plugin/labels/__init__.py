"""CALR pseudo-label engine: arrays in, arrays out (numpy / scipy / faiss / infomap / sklearn).

Shape shorthand: N images, D feature dims, C cameras, K clusters, k neighbours.

Nothing here imports torch or fastreid, and nothing depends on the rest of ``calr_plugin``,
so the trainer, the CLI (``tools/pseudo_labels.py``) and the benchmark share one code path.
"""
from .infomap_cluster import GlobalClusters, infomap_cluster, knn_edges, relabel_by_first_member
from .intra_camera import LocalLabels, cluster_camera, intra_camera_labels, jaccard_distance
from .knn import camera_centre, knn_recall, knn_search, l2_normalize
from .metrics import METRIC_KEYS, cluster_metrics, label_agreement
from .pipeline import LabelParams, Stage2Result, stage1_labels, stage2_labels
from .pivots import all_pairs_mean_distance, pivot_scores, select_pivots
from .refine import refine_labels, relabel_contiguous
from .schedules import DECAY_KINDS, decay_p
from .weights import cluster_weights

__all__ = [
    "GlobalClusters", "infomap_cluster", "knn_edges", "relabel_by_first_member",
    "LocalLabels", "cluster_camera", "intra_camera_labels", "jaccard_distance",
    "camera_centre", "knn_recall", "knn_search", "l2_normalize",
    "METRIC_KEYS", "cluster_metrics", "label_agreement",
    "LabelParams", "Stage2Result", "stage1_labels", "stage2_labels",
    "all_pairs_mean_distance", "pivot_scores", "select_pivots",
    "refine_labels", "relabel_contiguous",
    "DECAY_KINDS", "decay_p",
    "cluster_weights",
]
