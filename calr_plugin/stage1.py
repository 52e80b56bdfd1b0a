"""Stage 1 (intra-camera training): one encoder per camera, local pseudo labels kept.

Shape shorthand: N training images, N_c images of camera c.

For each camera c, an encoder initialised from the same pretrained weights trains on
camera c's images for CALR.STAGE1.EPOCHS epochs, re-clustering them every epoch
(k-reciprocal Jaccard + average linkage, Eq. 3 loss). Only the labels are kept: the
final epoch's (paper) or the best-silhouette epoch's (the authors' code).

Outputs under OUTPUT_DIR/stage1/: cam<c>/ (that encoder's checkpoints and per-epoch
labels), cam<c>/local_labels.npz when camera c is done, local_labels.npz when all are.
Everything is written atomically; with --resume a killed run continues at the camera
and epoch where it stopped.
"""
import glob
import logging
import os

import numpy as np
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from .errors import ConfigError
from .hooks import Stage1LabelHook, broadcast_from_main, epoch_seed
from .utils.atomic import atomic_savez

logger = logging.getLogger("fastreid." + __name__)  # shares FastReID's console and log.txt


def stage1_config(cfg, cam):
    """The config of camera ``cam``'s stage-1 encoder."""
    c = cfg.clone()
    c.defrost()
    s1 = c.CALR.STAGE1
    c.OUTPUT_DIR = os.path.join(cfg.OUTPUT_DIR, "stage1", f"cam{cam}")
    c.SOLVER.MAX_EPOCH = s1.EPOCHS
    c.SOLVER.IMS_PER_BATCH = s1.IMS_PER_BATCH
    c.SOLVER.BASE_LR = s1.BASE_LR
    c.DATALOADER.NUM_INSTANCE = s1.NUM_INSTANCE
    c.CALR.ITERS_PER_EPOCH = s1.ITERS
    # Each camera's encoder starts from the pretrained backbone (paper Sec. III-B), not from
    # a MODEL.WEIGHTS checkpoint meant for stage 2.
    c.MODEL.WEIGHTS = ""
    # Eq. 3 only: one camera has nothing to align, weight or refine.
    c.CALR.ALIGN.ENABLED = False
    c.CALR.WEIGHTING.ENABLED = False
    c.CALR.REFINE.ENABLED = False
    c.freeze()
    return c


def _unique_per_camera(cams, labels):
    """Relabel so that equal labels imply equal cameras: ids 0..L-1 over (camera, label)."""
    _, out = np.unique(np.stack([cams, labels]), axis=1, return_inverse=True)
    return out.reshape(-1).astype(np.int64)


def run_stage1(cfg, train_set, resume=False):
    """Train (or resume) every camera's stage-1 encoder and return the local labels.

    Args:
        cfg (CfgNode): the CALR config.
        train_set (TrainSet): all N training images.
        resume (bool): reuse finished cameras and checkpoints found in OUTPUT_DIR/stage1.
    Returns:
        ndarray: (N,) int64 local labels in train_set order, unique across cameras.
    """
    from .trainer import CALRTrainer

    out_dir = os.path.join(cfg.OUTPUT_DIR, "stage1")
    final = os.path.join(out_dir, "local_labels.npz")
    if resume and os.path.isfile(final):
        logger.info(f"stage 1: reusing {final}")
        return load_local_labels(final, train_set)
    names = np.array([os.path.basename(p) for p in train_set.paths])
    labels = np.full(len(train_set), -1, dtype=np.int64)
    if cfg.MODEL.WEIGHTS:
        logger.info(f"stage 1: the per-camera encoders start from MODEL.BACKBONE.PRETRAIN_PATH, not MODEL.WEIGHTS "
                    f"({cfg.MODEL.WEIGHTS}), which stage 2 starts from")
    for cam in range(train_set.num_cameras):
        mask = train_set.cams == cam
        cam_file = os.path.join(out_dir, f"cam{cam}", "local_labels.npz")
        if not (resume and os.path.isfile(cam_file)):
            logger.info(f"stage 1: camera {cam + 1}/{train_set.num_cameras}, {int(mask.sum())} images")
            cam_cfg = stage1_config(cfg, cam)
            seed_all_rng(epoch_seed(cfg.SEED, 0, 1000 + cam))  # same init on every rank
            trainer = CALRTrainer(cam_cfg, train_set=train_set.subset(mask), stage=1)
            trainer.resume_or_load(resume=resume)
            trainer.train()
            if comm.is_main_process():
                hook = next(h for h in trainer._hooks if isinstance(h, Stage1LabelHook))
                atomic_savez(cam_file, names=names[mask], labels=hook.selected_labels())
            comm.synchronize()
        cam_labels = broadcast_from_main(np.load(cam_file)["labels"] if comm.is_main_process() else None)
        labels[mask] = cam_labels
    labels = _unique_per_camera(train_set.cams, labels)
    if comm.is_main_process():
        atomic_savez(final, names=names, labels=labels, cams=train_set.cams)
        logger.info(f"stage 1 done: {labels.max() + 1} local clusters saved to {final}")
    return labels


def load_local_labels(path, train_set):
    """Stage-1 labels for ``train_set``, matched by image file name.

    Args:
        path (str): a ``local_labels.npz`` written by calr-reid, or a folder holding the
            authors' ``cam<k>/pseudo_label.npy`` files (rows: path, label, camera).
        train_set (TrainSet): the images that need labels.
    Returns:
        ndarray: (N,) int64 labels, unique across cameras.
    Raises:
        ConfigError: the file does not cover every training image.
    """
    if os.path.isdir(path):
        names, labels = [], []
        files = sorted(glob.glob(os.path.join(path, "cam*", "pseudo_label.npy")))
        if not files:
            raise ConfigError(f"CALR.STAGE1.LABELS {path!r}: no cam<k>/pseudo_label.npy inside")
        for k, f in enumerate(files):
            rows = np.load(f, allow_pickle=False)
            names += [os.path.basename(str(p)) for p in rows[:, 0]]
            labels += [k * 1_000_000 + int(x) for x in rows[:, 1]]
    else:
        data = np.load(path)
        names, labels = list(data["names"]), list(data["labels"])
    lookup = dict(zip(map(str, names), labels))
    wanted = [os.path.basename(p) for p in train_set.paths]
    missing = [n for n in wanted if n not in lookup]
    if missing:
        raise ConfigError(f"CALR.STAGE1.LABELS {path!r} has no label for {len(missing)} of {len(wanted)} "
                          f"training images (e.g. {missing[0]}); it was made for another training set")
    return _unique_per_camera(train_set.cams, np.array([lookup[n] for n in wanted], dtype=np.int64))
