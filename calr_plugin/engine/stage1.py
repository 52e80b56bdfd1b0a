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

A labels file holds ``keys`` (N_c or N,) str, each image's path relative to the folder
holding all training images (``TrainSet.keys``: ``cam1/000001.jpg`` and ``cam2/000001.jpg``
stay apart, and moving the dataset folder changes nothing), ``labels`` (int64), ``cams``
(int64, the cameras the labels were made with) and ``names`` (bare file names, for
reports). Reading one matches rows to images by key and stops with a one-line
``ConfigError`` when a row is ambiguous, an image has no row, or the saved cameras differ
from the current ones: labels made within other cameras are never combined with these.
"""
import glob
import logging
import os
from collections import defaultdict

import numpy as np
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from ..errors import ConfigError
from ..utils.atomic import atomic_savez
from ..utils.dist import broadcast_from_main
from .hooks import Stage1LabelHook, epoch_seed

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


def run_stage1(cfg, train_set, trainer_cls, resume=False):
    """Train (or resume) every camera's stage-1 encoder and return the local labels.

    Args:
        cfg (CfgNode): the CALR config.
        train_set (TrainSet): all N training images.
        trainer_cls (type): the trainer of each camera's encoder, built as
            ``trainer_cls(cam_cfg, train_set=..., stage=1)`` (``CALRTrainer``, which calls this:
            the class is passed in so that this module does not import the trainer).
        resume (bool): reuse finished cameras and checkpoints found in OUTPUT_DIR/stage1.
    Returns:
        ndarray: (N,) int64 local labels in train_set order, unique across cameras.
    Raises:
        ConfigError: with ``resume``, a saved labels file does not fit the current images
            and cameras (e.g. the cameras are inferred differently now).
    """
    out_dir = os.path.join(cfg.OUTPUT_DIR, "stage1")
    final = os.path.join(out_dir, "local_labels.npz")
    if resume and os.path.isfile(final):
        logger.info(f"stage 1: reusing {final}")
        return load_local_labels(final, train_set)
    keys = np.array(train_set.keys)
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
            trainer = trainer_cls(cam_cfg, train_set=train_set.subset(mask), stage=1)
            trainer.resume_or_load(resume=resume)
            trainer.train()
            if comm.is_main_process():
                hook = next(h for h in trainer._hooks if isinstance(h, Stage1LabelHook))
                atomic_savez(cam_file, keys=keys[mask], names=names[mask], labels=hook.selected_labels(),
                             cams=train_set.cams[mask])
            comm.synchronize()
        elif comm.is_main_process():
            logger.info(f"stage 1: camera {cam + 1}/{train_set.num_cameras}: reusing {cam_file}")
        labels[mask] = broadcast_from_main(_camera_labels(cam_file, train_set, cam) if comm.is_main_process()
                                           else None)
    labels = _unique_per_camera(train_set.cams, labels)
    if comm.is_main_process():
        atomic_savez(final, keys=keys, names=names, labels=labels, cams=train_set.cams)
        logger.info(f"stage 1 done: {labels.max() + 1} local clusters saved to {final}")
    return labels


def _parts(path):
    """A path's components, '/'-separated, without empty or '.' parts."""
    return tuple(p for p in str(path).replace(os.sep, "/").split("/") if p not in ("", "."))


def _suffix_index(paths):
    """{every trailing run of components of every path: the row indices that end in it}."""
    index = defaultdict(list)
    for i, p in enumerate(paths):
        parts = _parts(p)
        for j in range(1, len(parts) + 1):
            index[parts[-j:]].append(i)
    return index


def _deepest(parts, index):
    """The longest trailing run of ``parts`` present in ``index``, or None."""
    for j in range(len(parts), 0, -1):
        if parts[-j:] in index:
            return parts[-j:]
    return None


def match_rows(saved, wanted, source):
    """Which saved row is which image: the longest path suffix each pair shares, when unambiguous.

    Image w and saved row r are a match when, of all rows, r alone shares w's longest
    suffix shared with any row, and of all images, w alone shares r's longest suffix
    shared with any image (equal keys are the longest possible suffix). So the authors'
    ``/data/x/cam1/000001.jpg`` is the image ``cam1/000001.jpg``, never ``cam2/000001.jpg``.

    Args:
        saved (list[str]): R saved paths or keys. wanted (list[str]): N image keys.
        source (str): what ``saved`` came from, for messages.
    Returns:
        ndarray: (N,) int64 row of each image, -1 for an image no row names (rows that
        match no image are ignored).
    Raises:
        ConfigError: an image that one of several rows could name, none better than the
            others, and not taken by a better-matching image (e.g. rows ``a/0001.jpg`` and
            ``b/0001.jpg`` for images ``day1/0001.jpg`` and ``day2/0001.jpg``).
    """
    saved_parts = [_parts(p) for p in saved]
    rows_by, images_by = _suffix_index(saved), _suffix_index(wanted)
    candidates = []  # per image: the rows sharing its longest suffix shared with any row
    for parts in map(_parts, wanted):
        s = _deepest(parts, rows_by)
        candidates.append(rows_by[s] if s is not None else [])
    out = np.full(len(wanted), -1, dtype=np.int64)
    for i, rows in enumerate(candidates):
        if len(rows) == 1:
            images = images_by[_deepest(saved_parts[rows[0]], images_by)]
            if images == [i]:
                out[i] = rows[0]
    taken = np.zeros(len(saved), dtype=bool)
    taken[out[out >= 0]] = True
    for i, rows in enumerate(candidates):
        free = [r for r in rows if not taken[r]]
        if out[i] < 0 and free:
            if len(rows) > 1:
                why = f"{len(rows)} rows match it equally well ({saved[rows[0]]!r}, {saved[rows[1]]!r})"
            else:
                images = images_by[_deepest(saved_parts[rows[0]], images_by)]
                why = (f"row {saved[rows[0]]!r} matches {len(images)} images equally well "
                       f"({wanted[images[0]]!r}, {wanted[images[1]]!r})")
            raise ConfigError(f"{source}: cannot tell which row is training image {wanted[i]!r}: {why}; the saved "
                              f"paths must tell the images apart by their folders (cam1/000001.jpg, not 000001.jpg)")
    return out


def _read(path):
    """A calr-reid labels file: (keys or bare names, labels, cams or None, keyed)."""
    with np.load(path, allow_pickle=False) as data:
        keyed = "keys" in data.files
        keys = [str(k) for k in (data["keys"] if keyed else data["names"])]
        cams = data["cams"].astype(np.int64) if "cams" in data.files else None
        return keys, data["labels"].astype(np.int64), cams, keyed


def _check_names_unique(path, train_set):
    """A file from before keys were saved names images by file name: usable only when
    every training image has its own file name."""
    seen = {}
    for key in train_set.keys:
        name = key.rsplit("/", 1)[-1]
        if name in seen:
            raise ConfigError(f"{path} names images by file name alone (written before stage-1 labels were keyed by "
                              f"relative path) and training images share file names (e.g. {seen[name]!r} and "
                              f"{key!r}): its labels cannot be told apart; run stage 1 again (remove {path})")
        seen[name] = key


def _camera_mismatch(path, differ, total):
    return ConfigError(f"{path}: the cameras these stage-1 labels were made with differ from the current ones for "
                       f"{differ} of {total} images (DATASETS.CAMERAS, DATASETS.NUM_CAMERAS or the camera folders "
                       f"changed, or the cameras were inferred differently); local clusters are only valid within "
                       f"the cameras they were made in: run stage 1 again for these cameras")


def _camera_labels(path, train_set, cam):
    """Camera ``cam``'s labels from its ``stage1/cam<c>/local_labels.npz``, in train_set order.

    Returns:
        ndarray: (N_c,) int64 labels of the images with ``train_set.cams == cam``.
    Raises:
        ConfigError: the file's images are not exactly camera ``cam``'s images now.
    """
    keys, labels, cams, keyed = _read(path)
    if not keyed:
        _check_names_unique(path, train_set)
    if cams is None:
        cams = np.full(len(keys), cam, dtype=np.int64)  # such a file held its camera's images only
    # Matched against every image, so that images now in another camera are counted, not missed.
    rows = match_rows(keys, train_set.keys, path)
    found = rows >= 0
    mine = train_set.cams == cam
    differ = int(np.sum(found & ((train_set.cams != cam) | (cams[np.maximum(rows, 0)] != cam)))
                 + np.sum(mine & ~found))
    if differ:
        raise _camera_mismatch(path, differ, int(mine.sum()))
    return labels[rows[mine]]


def _partition_differs(saved, current):
    """Images whose saved camera is not the one current camera its camera's images mostly map to."""
    cells, counts = np.unique(np.stack([saved, current]), axis=1, return_counts=True)
    agree, taken = 0, set()
    for k in np.argsort(-counts, kind="stable"):  # largest cells claim their cameras first
        s, c = cells[:, k]
        if ("s", s) not in taken and ("c", c) not in taken:
            agree += int(counts[k])
            taken |= {("s", s), ("c", c)}
    return len(saved) - agree


def load_local_labels(path, train_set):
    """Stage-1 labels for ``train_set``, matched by the image paths relative to the dataset.

    Args:
        path (str): a ``local_labels.npz`` written by calr-reid, or a folder holding the
            authors' ``cam<k>/pseudo_label.npy`` files (rows: path, label, camera), whose
            paths are matched by their longest unambiguous suffix (``match_rows``).
        train_set (TrainSet): the images that need labels.
    Returns:
        ndarray: (N,) int64 labels, unique across cameras.
    Raises:
        ConfigError: the file does not cover every training image, names one ambiguously,
            or was made with other cameras.
    """
    if os.path.isdir(path):
        keys, labels, cams = [], [], []
        files = sorted(glob.glob(os.path.join(path, "cam*", "pseudo_label.npy")))
        if not files:
            raise ConfigError(f"CALR.STAGE1.LABELS {path!r}: no cam<k>/pseudo_label.npy inside")
        for k, f in enumerate(files):
            rows = np.load(f, allow_pickle=False)
            keys += [str(p) for p in rows[:, 0]]
            labels += [int(x) for x in rows[:, 1]]
            cams += [k] * len(rows)  # one file per camera: the authors' camera numbering is theirs
        labels, cams, exact = np.array(labels, np.int64), np.array(cams, np.int64), False
    else:
        keys, labels, cams, keyed = _read(path)
        exact = True
        if not keyed:
            _check_names_unique(path, train_set)
    source = f"stage-1 labels {path}"
    rows = match_rows(keys, train_set.keys, source)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        raise ConfigError(f"{source} has no label for {len(missing)} of {len(train_set)} training images "
                          f"(e.g. {train_set.keys[missing[0]]}); it was made for another training set")
    if cams is not None:
        saved_cams = cams[rows]
        differ = int(np.sum(saved_cams != train_set.cams)) if exact else _partition_differs(saved_cams, train_set.cams)
        if differ:
            raise _camera_mismatch(path, differ, len(train_set))
    # Labels of different saved cameras never merge, whatever numbers they use.
    labels = _unique_per_camera(cams[rows], labels[rows]) if cams is not None else labels[rows]
    return _unique_per_camera(train_set.cams, labels)
