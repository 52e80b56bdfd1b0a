"""Clustering settings from unlabeled features: the ``auto`` values of the CALR keys.

Shape shorthand: N images, C cameras, D feature dims, m images of one person in one
camera, k cameras that see one person, n = m k images of one person, B images per step.

Every knob that a recipe would otherwise set from ground truth derives from m and k
(``labels.structure``: estimated from the features, with their evidence), plus the kNN
similarities. Nothing here reads an identity: the inputs are features and camera ids only.

- ``CALR.STAGE1.CLUSTER_RATIO`` = 1 / m: one local cluster per person and camera (1.0
  when m = 1: each image its own cluster, what one image per person and camera is);
- ``CALR.STAGE1.NUM_INSTANCE`` = a divisor of the stage-1 batch <= clip(round(m), 2, B / 4);
- ``DATALOADER.NUM_INSTANCE`` = a divisor of the per-process batch <= clip(round(n), 2,
  min(16, B / 4)): a person's images, with at least 4 pseudo-people in a batch (a batch of
  one pseudo-person has no negative in it) and never above the authors' 16;
- ``CALR.CLUSTER.K`` = clip(ceil(n) + 1, 4, 128): self plus a person's images, so that an
  image's neighbours can reach past its own camera. (The +1 form was chosen after seeing
  CUHK01's results, where it lands on the hand-tuned K 6: tuned in part, docs/RESULTS.md 2b.)
  It was capped at the authors' 15 until crops cut from video (n of 40-50) showed what that
  cap does: with K below m, every neighbour of an image is the same person in the same
  camera, no cluster can span cameras, and training learns the cameras (the issue #22
  3-camera set; docs/RESULTS.md 2f: K 15 -> 49 took generated video from 34.0 to 46.3 mAP,
  19.2 to 46.6 with tracklets, 3 seeds; chosen there). On the synthetic m = 20 cells it
  lowers the epoch-0 precision, yet on C3_m20_all (not used to choose) K 41 ended at 18.1 mAP
  against 2.6 with K 15 (2 seeds, 2d). The cap of 128 only bounds the graph's size; reaching
  it is said in the rule.
- ``CALR.CLUSTER.MIN_SIZE`` = clip(round(n / 2), 2, 5): half of a person's images, at most
  the authors' 5. The cap was adopted after a failure, not tuned on a grid: the untrained
  features split a person with tens of images into several clusters, and a MIN_SIZE of half
  of them made 96 % of the images outliers on a 3-camera set with 22 images per person and
  camera (the real set of issue #22).
- ``CALR.CLUSTER.MIN_SIM`` = the median similarity of the kNN edges at that K, on the
  features the clustering uses (camera-centred when CAMERA_CENTRE): Infomap keeps the
  stronger half of the graph. A fixed 0.5 keeps every edge of features with a large
  common component (reference §13) and so does nothing.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .knn import camera_centre, knn_search, l2_normalize
from .structure import Structure, estimate_structure

__all__ = ["AutoSettings", "suggest_settings", "largest_divisor_at_most", "MAX_NUM_INSTANCE", "MAX_MIN_SIZE",
           "MAX_K"]

MAX_NUM_INSTANCE = 16  # the authors' stage-2 NUM_INSTANCE (Base-CALR.yml)
MAX_MIN_SIZE = 5  # the authors' MIN_SIZE
MAX_K = 128  # bounds the kNN graph (N x K edges); not a person's images


def largest_divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of n that is <= cap (at least 1)."""
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


@dataclass
class AutoSettings:
    """Settings chosen from unlabeled features, with the evidence behind each.

    Attributes:
        values: {config key: value}, e.g. {"CALR.CLUSTER.K": 9}.
        rules: {config key: one-line rule and inputs}, for the log.
        structure: the m and cameras-per-person estimates with their evidence and warnings.
        kept_edge_fraction: share of kNN edges >= the chosen MIN_SIM.
    """

    values: Dict[str, object]
    rules: Dict[str, str]
    structure: Structure = field(repr=False)
    kept_edge_fraction: float = 0.0

    @property
    def m(self) -> float:
        return self.structure.m

    @property
    def num_cameras(self) -> int:
        return self.structure.num_cameras

    @property
    def warnings(self) -> List[str]:
        return self.structure.warnings


def suggest_settings(features: np.ndarray, cams: np.ndarray, ims_per_batch: int = 64,
                     stage1_ims_per_batch: int = 64, camera_centre_features: bool = False,
                     seed: int = 0, m: Optional[float] = None, k: Optional[int] = None,
                     knn: Optional[dict] = None, m_evidence: Optional[dict] = None) -> AutoSettings:
    """Every ``auto`` value from unlabeled features and camera ids (rules in the module docstring).

    Args:
        features: (N, D) float features of all training images (before training).
        cams: (N,) int camera ids (given or inferred).
        ims_per_batch: stage-2 images per process and step (NUM_INSTANCE divides it).
        stage1_ims_per_batch: stage-1 images per step (STAGE1.NUM_INSTANCE divides it).
        camera_centre_features: CALR.CLUSTER.CAMERA_CENTRE (MIN_SIM is read on those features).
        seed: fixes the estimates' null draws and the kNN index.
        m: skip the estimate and use this m (e.g. known images per person and camera).
        m_evidence: where that m came from, for the log and ``auto_settings.json``
            (``structure.images_per_cell_from_tracklets``); None = given.
        k: the CALR.CLUSTER.K in use when it is not ``auto``: MIN_SIM is the median edge
            of the graph the clustering will build, so it is read at this K.
        knn: ``knn_search`` keyword arguments (method, hnsw_*, ivf_*) of the graph the
            clustering builds (CALR.CLUSTER.KNN); None = exact.
    Returns:
        ``AutoSettings``.
    """
    feats = np.asarray(features)
    cams = np.asarray(cams)
    st = estimate_structure(feats, cams, seed, m, m_evidence)
    m, per_id = st.m, st.images_per_person
    src = (f"m={m:g} images per person and camera x {st.cams_per_person:g} cameras per person = "
           f"{per_id:g} images per person")
    k_rule = f"clip(ceil(n) + 1, 4, {MAX_K}) with n={per_id:g}"
    if k is None:
        k = int(np.clip(np.ceil(per_id - 1e-6) + 1, 4, MAX_K))  # - 1e-6: n = 5.0 is 5, not 6
        if k == MAX_K:
            k_rule += f" (at the cap: a person's n images do not all fit in K={MAX_K} neighbours)"
    else:
        k_rule = "given (not auto)"
    k = min(k, len(feats))
    x = camera_centre(feats, cams) if camera_centre_features else l2_normalize(feats)
    sims, idx = knn_search(x, k, normalize=False, seed=seed, **(knn or {}))
    edges = sims[:, 1:][idx[:, 1:] >= 0]  # an approximate index marks neighbours it missed with -1
    min_sim = round(float(np.median(edges)), 4)
    cap1 = max(2, stage1_ims_per_batch // 4)
    cap2 = max(2, min(MAX_NUM_INSTANCE, ims_per_batch // 4))
    values = {
        "CALR.STAGE1.CLUSTER_RATIO": round(float(min(1.0, 1.0 / m)), 4),
        "CALR.STAGE1.NUM_INSTANCE": largest_divisor_at_most(stage1_ims_per_batch, int(np.clip(round(m), 2, cap1))),
        "DATALOADER.NUM_INSTANCE": largest_divisor_at_most(ims_per_batch, int(np.clip(round(per_id), 2, cap2))),
        "CALR.CLUSTER.K": k,
        "CALR.CLUSTER.MIN_SIZE": int(np.clip(round(per_id / 2), 2, MAX_MIN_SIZE)),
        "CALR.CLUSTER.MIN_SIM": min_sim,
    }
    rules = {
        "CALR.STAGE1.CLUSTER_RATIO": f"1/m; {src}",
        "CALR.STAGE1.NUM_INSTANCE": f"divisor of the stage-1 batch {stage1_ims_per_batch} <= "
                                    f"clip(round(m), 2, {cap1})",
        "DATALOADER.NUM_INSTANCE": f"divisor of the per-process batch {ims_per_batch} <= "
                                   f"clip(round(n), 2, {cap2}) with n={per_id:g}",
        "CALR.CLUSTER.K": k_rule,
        "CALR.CLUSTER.MIN_SIZE": f"clip(round(n/2), 2, {MAX_MIN_SIZE}) with n={per_id:g}",
        "CALR.CLUSTER.MIN_SIM": (f"median similarity of the {len(edges)} kNN edges at K={k}"
                                 f"{' (camera-centred features)' if camera_centre_features else ''}; "
                                 f"quartiles {np.quantile(edges, 0.25):.3f} / {np.quantile(edges, 0.75):.3f}"),
    }
    return AutoSettings(values, rules, st, float(np.mean(edges >= min_sim)))
