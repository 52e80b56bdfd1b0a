"""Label hooks: pseudo labels every epoch (stage 1 and stage 2).

Shape shorthand: N training images, D feature dims, K clusters, C cameras.

Every epoch, on every rank, ``before_epoch`` of a label hook:
  1. re-seeds python/numpy/torch from (SEED, epoch), so an epoch's sampling and
     augmentation do not depend on what ran before it (a resumed run repeats it);
  2. extracts the features of all N training images (eval mode, sharded, gathered);
  3. on rank 0, computes the labels (stage 2: Infomap + pivots + refinement + weights;
     stage 1: intra-camera clustering) and the cluster centroids, saves the labels
     atomically, then broadcasts them, so every rank trains on the same labels and
     starts from a bit-identical memory;
  4. rebuilds the training loader over the labelled images and swaps it into the trainer.
Ground-truth ids, when the dataset has them, are only used to report label quality.
"""
import logging
import os

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.data import build_reid_train_loader
from fastreid.data.common import CommDataset
from fastreid.data.transforms import build_transforms
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from ..data.sampler import PseudoLabelSampler
from ..labels import LabelParams, cluster_metrics, intra_camera_labels, stage2_labels
from ..labels.holdout import drop_held_out, holdout_mask
from ..labels.metrics import cameras_per_cluster, label_agreement
from ..labels.signals import cross_camera_neighbour_share
from ..utils.atomic import atomic_save_npy, atomic_savez
from ..utils.dist import broadcast_from_main, unwrap
from . import features
from .features import extract_features
from .selection import Selector

logger = logging.getLogger("fastreid." + __name__)  # shares FastReID's console and log.txt


def epoch_seed(seed, epoch, salt=0):
    """A per-epoch seed that is the same on every rank and in a resumed run."""
    return (max(seed, 0) * 1_000_003 + epoch * 7919 + salt) % (2 ** 31)


def label_params(cfg):
    """``LabelParams`` for the pure label engine from the CALR.* config keys."""
    c = cfg.CALR
    return LabelParams(
        k1=c.STAGE1.K1, k2=c.STAGE1.K2, local_ratio=c.STAGE1.CLUSTER_RATIO,
        local_num_clusters=c.STAGE1.NUM_CLUSTERS or None,
        k=c.CLUSTER.K, min_sim=c.CLUSTER.MIN_SIM,
        min_sim_quantile=c.CLUSTER.MIN_SIM_QUANTILE, min_size=c.CLUSTER.MIN_SIZE, knn_method=c.CLUSTER.KNN,
        hnsw_m=c.CLUSTER.HNSW_M, hnsw_ef_construction=c.CLUSTER.HNSW_EF_CONSTRUCTION,
        hnsw_ef_search=c.CLUSTER.HNSW_EF_SEARCH, ivf_nlist=c.CLUSTER.IVF_NLIST, ivf_nprobe=c.CLUSTER.IVF_NPROBE,
        camera_centre=c.CLUSTER.CAMERA_CENTRE, infomap_trials=c.CLUSTER.INFOMAP_TRIALS,
        pivot_rule=c.PIVOT.RULE, pivot_mean_dist=c.PIVOT.MEAN_DIST, pivot_neighbours=c.PIVOT.NEIGHBOURS,
        refine_enabled=c.REFINE.ENABLED, refine_mode=c.REFINE.MODE, decay=c.REFINE.DECAY,
        p_end=c.REFINE.P_END, decay_power=c.REFINE.DECAY_POWER,
        weight_warmup_epochs=c.WEIGHTING.WARMUP_EPOCHS, max_outliers=c.CLUSTER.MAX_OUTLIERS, seed=max(cfg.SEED, 0),
    )


def centroids_of(feats, labels, num_clusters):
    """Mean feature of each cluster (Eq. 1's memory initialisation).

    Args:
        feats (ndarray): (N, D) float32 normalised features.
        labels (ndarray): (N,) int64, -1 = excluded.
        num_clusters (int): K.
    Returns:
        ndarray: (K, D) float32 L2-normalised centroids.
    """
    keep = labels >= 0
    f = torch.from_numpy(feats[keep])
    sums = torch.zeros(num_clusters, f.shape[1]).index_add_(0, torch.from_numpy(labels[keep]), f)
    return F.normalize(sums, dim=1).numpy()


class LabelHook(HookBase):
    """Base of the stage-1 and stage-2 label hooks (see the module docstring).

    Args:
        cfg (CfgNode): the (stage's) config.
        train_set (TrainSet): paths, cameras and (report-only) ground truth, in a fixed order.
    """

    def __init__(self, cfg, train_set):
        self.cfg = cfg
        self.train_set = train_set
        self.label_dir = os.path.join(cfg.OUTPUT_DIR, "labels")

    def make_labels(self, feats, epoch):
        """Returns (labels (N,) int64 with -1 = unused, weights (K,) or None, stats dict)."""
        raise NotImplementedError

    def before_epoch(self):
        trainer, cfg, epoch = self.trainer, self.cfg, self.trainer.epoch
        seed_all_rng(epoch_seed(cfg.SEED, epoch, comm.get_rank()))
        feats = extract_features(trainer.model, self.train_set.paths, cfg)
        payload = None
        if comm.is_main_process():
            labels, weights, stats = self.make_labels(feats, epoch)
            # Which engine made these features (metrics.json): a fallback from onnxruntime to
            # torch changes the labels by float rounding, so a run records it every epoch.
            stats["extract/onnxruntime"] = float(features.last_engine == "onnxruntime")
            num_clusters = int(labels.max(initial=-1)) + 1
            payload = {"labels": labels, "weights": weights, "stats": stats,
                       "centroids": centroids_of(feats, labels, num_clusters)}
            self.save(epoch, labels, weights, stats)
        payload = broadcast_from_main(payload)
        self.start_epoch(payload, epoch)

    def save(self, epoch, labels, weights, stats):
        arrays = {"names": np.array([os.path.basename(p) for p in self.train_set.paths]),
                  "labels": labels, "cams": self.train_set.cams}
        if weights is not None:
            arrays["weights"] = weights
        arrays.update({k: v for k, v in stats.items() if isinstance(v, np.ndarray)})
        atomic_savez(os.path.join(self.label_dir, f"epoch_{epoch:03d}.npz"), **arrays)

    def start_epoch(self, payload, epoch):
        trainer, cfg = self.trainer, self.cfg
        labels, stats = payload["labels"], payload["stats"]
        scalars = {k: float(v) for k, v in stats.items() if np.isscalar(v)}
        # Stamp the epoch's scalars with its first iteration: stamped with the previous
        # epoch's last one, the JSON/TensorBoard writers would skip them as already written.
        trainer.storage.iter = trainer.iter
        if scalars:
            trainer.storage.put_scalars(smoothing_hint=False, **scalars)
        num_clusters = len(payload["centroids"])
        if num_clusters == 0:
            logger.warning(f"epoch {epoch}: every image is an outlier (no cluster of CALR.CLUSTER.MIN_SIZE="
                           f"{cfg.CALR.CLUSTER.MIN_SIZE}); this epoch is skipped")
            trainer.skip_epoch = True
            return
        trainer.skip_epoch = False
        if num_clusters == 1:
            logger.warning(f"epoch {epoch}: a single cluster; the contrastive loss is 0 this epoch "
                           f"(try a higher CALR.CLUSTER.MIN_SIM)")
        model = unwrap(trainer.model)
        model.memory.reset(payload["centroids"], payload["weights"])
        self.swap_loader(labels, epoch)

    def swap_loader(self, labels, epoch):
        cfg, trainer = self.cfg, self.trainer
        keep = np.flatnonzero(labels >= 0)
        items = [(self.train_set.paths[i], int(labels[i]), int(self.train_set.cams[i])) for i in keep]
        dataset = CommDataset(items, build_transforms(cfg, is_train=True), relabel=False)
        world = comm.get_world_size()
        mini = cfg.SOLVER.IMS_PER_BATCH // world
        sampler = PseudoLabelSampler(labels[keep], self.train_set.cams[keep], mini, cfg.DATALOADER.NUM_INSTANCE,
                                     seed=epoch_seed(cfg.SEED, epoch, 104729),
                                     cross_camera=cfg.CALR.SAMPLER == "cross_camera",
                                     rank=comm.get_rank(), world_size=world)
        loader = build_reid_train_loader(dataset, sampler=sampler, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
        old = trainer._trainer.data_loader
        if hasattr(old, "shutdown"):
            old.shutdown()
        trainer._trainer.data_loader = loader
        trainer._trainer._data_loader_iter = iter(loader)

    def quality(self, prefix, labels, within_camera=False):
        """Label quality against ground truth, for reporting only ({} without it)."""
        if not self.cfg.CALR.GT_METRICS or self.train_set.gt is None:
            return {}
        m = cluster_metrics(labels, self.train_set.gt, self.train_set.cams, within_camera=within_camera)
        return {f"{prefix}/{k}": v for k, v in m.items()}


class Stage2LabelHook(LabelHook):
    """Stage 2 (inter-camera): global Infomap clusters refined by local labels (Alg. 1)."""

    def __init__(self, cfg, train_set, local_labels):
        super().__init__(cfg, train_set)
        self.local_labels = local_labels
        self.params = label_params(cfg)
        sel = cfg.CALR.SELECT
        # With tracklets, whole tracklets are held out and scored (labels/holdout.py).
        self.held_out = holdout_mask(train_set.cams, sel.HOLDOUT if sel.SIGNAL else 0.0, max(cfg.SEED, 0),
                                     groups=train_set.groups)
        self.selector = (Selector(cfg, train_set.cams, self.held_out, groups=train_set.groups)
                         if sel.SIGNAL else None)

    def make_labels(self, feats, epoch):
        cfg = self.cfg
        self.save_features(feats, epoch)
        local = self.local_labels if self.local_labels is not None else np.zeros(len(feats), np.int64)
        r = stage2_labels(feats, self.train_set.cams, local, epoch, cfg.SOLVER.MAX_EPOCH, self.params)
        use_weights = cfg.CALR.WEIGHTING.ENABLED and r.use_weights
        # Held-out images (CALR.SELECT.HOLDOUT) are clustered but never trained on.
        labels, weights = drop_held_out(r.refined_labels, r.weights if use_weights else None, self.held_out)
        stats = {
            "calr/num_clusters": r.num_clusters,
            "calr/global_clusters": int(r.global_labels.max(initial=-1)) + 1,
            "calr/outlier_fraction": float(np.mean(r.global_labels < 0)),
            "calr/discard_ratio": r.discard_ratio,
            "calr/p": r.p,
            "calr/beta": self.beta(epoch),
            "calr/grl_lambda": self.grl_lambda(epoch),
            "calr/kept_edge_fraction": r.kept_edge_fraction,
            "calr/min_sim": r.min_sim,
            "calr/min_size": r.min_size,
            "calr/num_pivots": int(r.pivots.sum()),
            "calr/label_seconds": r.timings.get("total", 0.0),
            "global_labels": r.global_labels,
            "held_out": self.held_out,
        }
        if len(r.weights):
            stats["calr/mean_weight"] = float(np.mean(r.weights))
            sizes = np.bincount(labels[labels >= 0])
            stats["calr/mean_cluster_size"] = float(sizes.mean())
            spans = cameras_per_cluster(labels, self.train_set.cams)
            stats["calr/cameras_per_cluster"] = float(np.mean(spans))
            # Label-free cross-camera recall: a person seen by 2 or more cameras makes a
            # cluster that spans them once the features match across cameras.
            stats["calr/cross_camera_share"] = float(np.mean(spans > 1))
        for line in r.guard:
            logger.warning(f"epoch {epoch}: collapse guard: {line}")
        stats.update(self.signals(feats, r.global_labels, epoch))
        if self.selector is not None:
            stats.update(self.selector(self.trainer.model, feats, epoch))
        if self.local_labels is not None and epoch == 0:
            stats.update(self.quality("local", self.local_labels, within_camera=True))
        stats.update(self.quality("global", r.global_labels))
        stats.update(self.quality("refined", labels))
        logger.info(
            f"epoch {epoch}: {r.num_clusters} clusters ({stats['calr/global_clusters']} global, "
            f"{stats['calr/outlier_fraction']:.1%} outliers), p={r.p:.3f}, discarded {r.discard_ratio:.1%}, "
            f"min_sim {r.min_sim:.3f} keeps {r.kept_edge_fraction:.0%} of the kNN edges, "
            + (f"{stats['calr/cross_camera_share']:.0%} of the clusters span cameras, "
               if "calr/cross_camera_share" in stats else "")
            + f"beta={stats['calr/beta']:g}, weights {'on' if use_weights else 'off'}"
            + (f", refined pairwise precision {stats['refined/precision']:.3f} "
               f"(global {stats['global/precision']:.3f})" if "refined/precision" in stats else ""))
        self.warn_within_camera(epoch, stats)
        return labels, weights, stats

    def save_features(self, feats, trained_epochs):
        """CALR.SELECT.SAVE_FEATURES: (N, D) float16 features of the model after
        ``trained_epochs`` stage-2 epochs, for scoring signals offline (rank 0)."""
        if self.cfg.CALR.SELECT.SAVE_FEATURES:
            atomic_save_npy(os.path.join(self.cfg.OUTPUT_DIR, "features", f"epoch_{trained_epochs:03d}.npy"),
                            feats.astype(np.float16))

    def after_train(self):
        # The final model has no label step after it: its features are extracted here, to
        # score it against the earlier epochs (not after an error, nor a finished run resumed).
        trainer = self.trainer
        wanted = self.selector is not None or self.cfg.CALR.SELECT.SAVE_FEATURES
        if not wanted or trainer.iter < trainer.max_iter or trainer.iter == trainer.start_iter:
            return
        feats = extract_features(trainer.model, self.train_set.paths, self.cfg, desc="final features")
        if not comm.is_main_process():
            return
        self.save_features(feats, trainer.max_epoch)
        if self.selector is not None:
            score = self.selector(trainer.model, feats, trainer.max_epoch)
            trainer.storage.put_scalars(smoothing_hint=False, **score)
            logger.info(self.selector.summary())

    def signals(self, feats, labels, epoch):
        """Label-free quality signals of this epoch (labels/signals.py), for metrics.json.

        ``labels`` are the global (Infomap) labels: the refined ones hold random discards whose
        rate p follows a schedule, so their agreement would track the schedule, not the features."""
        out = {"signal/cross_camera_knn": cross_camera_neighbour_share(
            feats, self.train_set.cams, seed=self.params.seed, knn=self.params.knn_options())}
        previous = self.previous_labels(epoch)
        if previous is not None:
            out["signal/agreement_with_previous"] = label_agreement(labels, previous)
        self._previous = (epoch, labels)
        return out

    def previous_labels(self, epoch):
        """The global labels of epoch - 1: kept from the last call, or read back after a resume."""
        kept = getattr(self, "_previous", None)
        if kept is not None and kept[0] == epoch - 1:
            return kept[1]
        path = os.path.join(self.label_dir, f"epoch_{epoch - 1:03d}.npz")
        if epoch > 0 and os.path.isfile(path):
            with np.load(path) as saved:
                return saved["global_labels"] if "global_labels" in saved.files else None
        return None

    def warn_within_camera(self, epoch, stats):
        """Warn when the clusters stay inside cameras (a label-free sign that cross-camera
        association failed). On CUHK01 and PKU-Reid the share of clusters that span two
        or more cameras is 0.19-0.33 in stage 2's first two epochs and 0.46-0.82 after;
        below 0.25 from epoch 2 on, training is learning the cameras, not the people. The 0.25
        was read off those two sets' seed-1 runs (in sample) and has not yet been checked on a
        run that failed."""
        share = stats.get("calr/cross_camera_share")
        if share is None or self.train_set.num_cameras < 2 or epoch < 2 or share >= 0.25:
            return
        logger.warning(f"epoch {epoch}: only {share:.0%} of the clusters span two or more cameras (mean "
                       f"{stats['calr/cameras_per_cluster']:.2f} cameras per cluster): the clusters stay inside "
                       f"cameras, so training learns the cameras rather than the people; check the cameras "
                       f"(DATASETS.CAMERAS) and the camera alignment (CALR.ALIGN)")

    def beta(self, epoch):
        a = self.cfg.CALR.ALIGN
        return a.BETA if a.ENABLED and (a.EPOCHS == 0 or epoch < a.EPOCHS) else 0.0

    def grl_lambda(self, epoch):
        """Gradient reversal scale of this epoch (Eq. 7), constant or DANN's ramp."""
        a = self.cfg.CALR.ALIGN
        if a.LAMBDA_SCHEDULE == "dann":
            return a.LAMBDA * (2.0 / (1.0 + np.exp(-10.0 * epoch / self.cfg.SOLVER.MAX_EPOCH)) - 1.0)
        return a.LAMBDA

    def start_epoch(self, payload, epoch):
        model = unwrap(self.trainer.model)
        model.beta = self.beta(epoch)
        model.align_lambda = self.grl_lambda(epoch)
        super().start_epoch(payload, epoch)


class Stage1LabelHook(LabelHook):
    """Stage 1 (one camera): intra-camera clustering; keeps the final or best-silhouette labels."""

    def __init__(self, cfg, train_set):
        super().__init__(cfg, train_set)
        self.params = label_params(cfg)

    def make_labels(self, feats, epoch):
        p = self.params
        silhouette = self.cfg.CALR.STAGE1.SELECT == "silhouette"
        s1 = self.cfg.CALR.STAGE1
        r = intra_camera_labels(feats, self.train_set.cams, k1=p.k1, k2=p.k2, ratio=p.local_ratio,
                                num_clusters=p.local_num_clusters, silhouette=silhouette, groups=self.train_set.groups,
                                frames=self.train_set.frames if s1.CANNOT_LINKS else None,
                                tolerance=s1.CANNOT_LINK_SHARE)
        stats = {"stage1/num_clusters": int(r.num_clusters.sum())}
        if silhouette:
            stats["stage1/silhouette"] = float(np.nanmean(r.silhouette))
        stats.update(self.quality("local", r.labels, within_camera=True))
        logger.info(f"stage 1 epoch {epoch}: {stats['stage1/num_clusters']} clusters"
                    + (f", silhouette {stats['stage1/silhouette']:.3f}" if silhouette else "")
                    + (f", pairwise precision {stats['local/precision']:.3f}" if "local/precision" in stats else ""))
        return r.labels, None, stats

    def selected_labels(self):
        """The labels stage 2 uses: the final epoch's (paper) or the best-silhouette one (code)."""
        files = sorted(f for f in os.listdir(self.label_dir) if f.startswith("epoch_"))
        if self.cfg.CALR.STAGE1.SELECT == "final":
            chosen = files[-1]
        else:
            scores = np.array([float(np.load(os.path.join(self.label_dir, f))["silhouette"]) for f in files])
            if np.isnan(scores).all():
                # argmax over NaN would silently keep epoch 0's labels.
                logger.warning(f"stage 1 ({self.cfg.OUTPUT_DIR}): the silhouette is undefined at every epoch "
                               f"(one cluster, or one image per cluster); keeping the final epoch's labels")
                chosen = files[-1]
            else:
                chosen = files[int(np.nanargmax(scores))]
        return np.load(os.path.join(self.label_dir, chosen))["labels"]

    def save(self, epoch, labels, weights, stats):
        if "stage1/silhouette" in stats:
            stats = dict(stats, silhouette=np.array(stats["stage1/silhouette"]))
        super().save(epoch, labels, weights, stats)
