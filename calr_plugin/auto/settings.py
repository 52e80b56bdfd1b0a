"""Settings from the unlabeled data at start-up: inferred cameras and every ``auto`` key.

Shape shorthand: N training images, D feature dims, C cameras.

When ``DATASETS.CAMERAS infer`` is set or a key of ``config.AUTO_KEYS`` is ``auto``, the
CALR trainer calls ``resolve`` before it builds its model: the untrained model (the
pretrained backbone, or MODEL.WEIGHTS) extracts the (N, D) training features once (with
their (N, S) style statistics when cameras are inferred, ``camera_style``), rank 0
infers pseudo-cameras (``labels.cameras``) and chooses the values (``labels.auto``), and
every rank gets the same result. Person ids are never read (the ground-truth cameras only
for reporting agreement). The kNN graphs are built with the configured CALR.CLUSTER.KNN
mode, as the per-epoch label step builds them. The choice, its evidence and the cameras go to
``OUTPUT_DIR/auto_settings.json`` (atomically); a rerun or ``--resume`` with the same
images and inputs reuses that file, so a resumed run trains with the same values.
"""
import hashlib
import json
import logging
import os

import numpy as np
from fastreid.utils import comm

from ..config import AUTO_KEYS, _get, is_auto
from ..errors import DataError
from ..utils.atomic import atomic_write_text

logger = logging.getLogger("fastreid." + __name__)  # shares FastReID's console and log.txt

FILE = "auto_settings.json"


def camera_agreement(inferred, given):
    """ARI and purity of inferred cameras against the given ones.

    Args:
        inferred, given: (N,) int camera ids.
    Returns:
        dict: ``ari`` and ``purity`` (share of images in their pseudo-camera's majority camera).
    """
    from sklearn.metrics import adjusted_rand_score

    cells, counts = np.unique(np.stack([inferred, given]), axis=1, return_counts=True)
    majority = np.zeros(int(np.max(inferred)) + 1)
    np.maximum.at(majority, cells[0], counts)
    return {"ari": float(adjusted_rand_score(given, inferred)), "purity": float(majority.sum() / len(inferred))}


def _digest(names):
    return hashlib.sha1("\n".join(names).encode()).hexdigest()


def knn_options(cfg):
    """``knn_search`` keyword arguments of the configured CALR.CLUSTER.KNN mode, as the
    per-epoch label step uses them (``engine.hooks.label_params``)."""
    c = cfg.CALR.CLUSTER
    return {"method": c.KNN, "hnsw_m": c.HNSW_M, "hnsw_ef_construction": c.HNSW_EF_CONSTRUCTION,
            "hnsw_ef_search": c.HNSW_EF_SEARCH, "ivf_nlist": c.IVF_NLIST, "ivf_nprobe": c.IVF_NPROBE}


def _knn_input(cfg):
    """The kNN settings that change the graphs the choice reads (a list, as in the JSON file)."""
    o = knn_options(cfg)
    extra = {"exact": [], "hnsw": ["hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"],
             "ivf": ["ivf_nlist", "ivf_nprobe"]}[o["method"]]
    return [o["method"]] + [o[k] for k in extra]


def _inputs(cfg, train_set, requested):
    """What the choice depends on; a saved choice is reused only when all of it matches.

    The images are identified by their relative paths (``TrainSet.keys``): bare file names
    repeat across camera folders of frame dumps.
    """
    return {"images": _digest(train_set.keys), "num_images": len(train_set), "requested": requested,
            "cameras": cfg.DATASETS.CAMERAS, "num_cameras": str(cfg.DATASETS.NUM_CAMERAS),
            "camera_features": [cfg.DATASETS.CAMERA_FEATURES, cfg.DATASETS.CAMERA_LAYER]
            if cfg.DATASETS.CAMERAS == "infer" else None,  # a list: compared with the file's JSON
            "camera_limits": [cfg.DATASETS.MAX_CAMERAS, cfg.DATASETS.MIN_CAMERA_SHARE]
            if cfg.DATASETS.CAMERAS == "infer" else None,
            "given_cameras": train_set.cams.tolist() if cfg.DATASETS.CAMERAS == "given" else None,
            "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(),
            "stage1_ims_per_batch": cfg.CALR.STAGE1.IMS_PER_BATCH, "camera_centre": cfg.CALR.CLUSTER.CAMERA_CENTRE,
            "k1": cfg.CALR.STAGE1.K1, "k2": cfg.CALR.STAGE1.K2, "k": str(cfg.CALR.CLUSTER.K), "seed": cfg.SEED,
            "weights": cfg.MODEL.WEIGHTS or cfg.MODEL.BACKBONE.PRETRAIN_PATH, "knn": _knn_input(cfg),
            "tracklets": [cfg.CALR.STAGE1.CANNOT_LINKS, cfg.CALR.STAGE1.CANNOT_LINK_SHARE]
            if train_set.groups is not None else None}


def _with_old_defaults(saved_inputs, inputs, train_set):
    """A saved file's inputs, with what files from before an input existed were chosen with:
    K auto, and pseudo-cameras grouped by the embedding. Such files stay reusable as that.

    Files from before the kNN mode was an input were chosen on the exact graph whatever
    CALR.CLUSTER.KNN said: they stay the choice of the run that made them. Files from
    before images were identified by relative path hashed the bare file names: they match
    when those are what this set hashes to and are all distinct (else the hash could not
    tell the cameras' frames apart).
    """
    infer = saved_inputs.get("cameras") == "infer"
    # Files from before the camera limits were keys are taken as chosen under today's default
    # limits (they were not: no merge of tiny groups, graph k 30), so that a resumed run keeps
    # the cameras it trained with instead of re-inferring them.
    # Files from before m could come from tracklets stay the choice of the run that made them
    # (as files from before the kNN mode do): a resumed run keeps the settings it trained with.
    out = dict({"k": "auto", "camera_features": ["embedding", "auto"] if infer else None, "knn": inputs["knn"],
                "tracklets": inputs["tracklets"],
                "camera_limits": [16, 0.01] if infer else None}, **saved_inputs)
    if out.get("images") != inputs["images"]:
        names = [os.path.basename(p) for p in train_set.paths]
        if len(set(names)) == len(names) and out.get("images") == _digest(names):
            out["images"] = inputs["images"]
    return out


def choose(cfg, train_set, feats, requested, style=None, layer=None):
    """The whole choice from the (N, D) features, as a JSON-able dict (rank 0).

    ``style`` (N, S), from the module ``layer``: what inferred cameras are grouped by.
    """
    from ..labels.auto import suggest_settings
    from ..labels.cameras import infer_cameras
    from ..labels.structure import images_per_cell_from_tracklets

    seed = max(cfg.SEED, 0)
    out = {}
    cams = train_set.cams
    if cfg.DATASETS.CAMERAS == "infer":
        want = None if is_auto(cfg.DATASETS.NUM_CAMERAS) else int(cfg.DATASETS.NUM_CAMERAS)
        if want is not None and want > len(train_set) // 2:
            raise DataError(f"DATASETS.NUM_CAMERAS = {want}: more cameras than {len(train_set)} training images "
                            f"can fill with 2 images each")
        r = infer_cameras(feats, want, seed=seed, style=style, knn=knn_options(cfg),
                          max_cameras=cfg.DATASETS.MAX_CAMERAS, min_share=cfg.DATASETS.MIN_CAMERA_SHARE)
        cams = r.cams
        out["cameras"] = {"num_cameras": r.num_cameras, "chosen_by": r.chosen_by, "graph_k": r.k,
                          "at_cap": r.at_cap, "max_cameras": cfg.DATASETS.MAX_CAMERAS, "tiny_groups": r.tiny,
                          "grouped_by": r.grouped_by if style is None else f"style of {layer}",
                          "laplacian_eigenvalues": [round(float(v), 4) for v in r.eigenvalues[:9]],
                          "sizes": np.bincount(cams).tolist(), "cams": cams.tolist()}
        if train_set.num_cameras > 1:  # the folders' or names' cameras: reported, never used
            out["cameras"].update(camera_agreement(cams, train_set.cams))
    if requested:
        per_process = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        given_k = None if is_auto(cfg.CALR.CLUSTER.K) else int(cfg.CALR.CLUSTER.K)  # MIN_SIM is read at the K in use
        m, m_evidence = None, None
        if train_set.groups is not None and train_set.frames is not None and cfg.CALR.STAGE1.CANNOT_LINKS:
            # Tracklets seen at the same time count the people of a camera better than the
            # neighbour spacings do (labels/structure.py); cameras without them fall back.
            m, m_evidence = images_per_cell_from_tracklets(feats, cams, train_set.groups, train_set.frames,
                                                           cfg.CALR.STAGE1.K1, cfg.CALR.STAGE1.K2,
                                                           cfg.CALR.STAGE1.CANNOT_LINK_SHARE)
        s = suggest_settings(feats, cams, per_process, cfg.CALR.STAGE1.IMS_PER_BATCH,
                             cfg.CALR.CLUSTER.CAMERA_CENTRE, seed, m=m, k=given_k, knn=knn_options(cfg),
                             m_evidence=m_evidence)
        out["values"] = {k: s.values[k] for k in requested}
        out["rules"] = {k: s.rules[k] for k in requested}
        out["images_per_person_and_camera"] = s.m
        st = s.structure
        out["structure"] = {"cameras_per_person": st.cams_per_person, "images_per_person": st.images_per_person,
                            "evidence": st.evidence, "warnings": st.warnings}
        out["kept_edge_fraction"] = s.kept_edge_fraction
    return out


def _log(result):
    cam = result.get("cameras")
    if cam:
        agree = (f"; against the given cameras ARI {cam['ari']:.3f}, purity {cam['purity']:.3f}"
                 if "ari" in cam else "")
        count = ("given" if cam["chosen_by"] == "given" else
                 f"eigengap of the untrained embedding's {cam.get('graph_k', 30)}-NN graph, Laplacian eigenvalues "
                 f"{cam['laplacian_eigenvalues'][:5]}")
        logger.info(f"auto: {cam['num_cameras']} pseudo-cameras (count: {count}; groups: spectral clustering "
                    f"by the {cam.get('grouped_by', 'embedding')}), sizes {cam['sizes']}{agree}")
        if cam.get("at_cap"):
            logger.warning(f"auto: the camera count is at DATASETS.MAX_CAMERAS = {cam['max_cameras']}: there may be "
                           f"more cameras; raise DATASETS.MAX_CAMERAS or set DATASETS.NUM_CAMERAS")
        if cam.get("tiny_groups"):
            logger.warning(f"auto: {len(cam['tiny_groups'])} group(s) of {cam['tiny_groups']} images are below "
                           f"DATASETS.MIN_CAMERA_SHARE of the images (black or duplicate frames, or a camera with "
                           f"a handful of images): not counted as cameras, merged into the nearest pseudo-camera")
    st = result.get("structure")
    if st:
        ev = st["evidence"]
        m_ev = ev["m"]
        how = ("given" if "given" in m_ev else
               f"images over the cannot-link clusters of tracklets seen at the same time: {m_ev['images']} images, "
               f"{m_ev['tracklets']} tracklets, {m_ev['clusters']} clusters in cameras {m_ev['cameras']}"
               if m_ev.get("from") == "tracklets" else
               f"largest ratio of the within-camera neighbour spacings to a Gaussian null's: {m_ev['peak_ratio']} "
               f"at rank {m_ev['peak_rank']}, {m_ev['peak_min']} needed for a peak; m searched in "
               f"{m_ev['searched'][0]}..{m_ev['searched'][1]}")
        logger.info(f"auto: m = {result['images_per_person_and_camera']:g} images per person and camera ({how})")
        cp = ev["cameras_per_person"]
        logger.info(f"auto: {st['cameras_per_person']:g} cameras per person ({cp['rule']}; upper bound "
                    f"{cp['upper_bound']} from people per camera {cp['people_per_camera']}); "
                    f"{st['images_per_person']:g} images per person")
        for w in st["warnings"]:
            logger.warning(f"auto: {w}")
    for key, value in result.get("values", {}).items():
        logger.info(f"auto: {key} = {value}  [{result['rules'][key]}]")


def resolve(cfg, train_set, build_model):
    """Resolve inferred cameras and ``auto`` keys; a no-op when none is asked for.

    Args:
        cfg (CfgNode): the CALR config (frozen).
        train_set (TrainSet): the training images; its ``cams`` are replaced by the
            pseudo-cameras when ``DATASETS.CAMERAS infer`` (the given ones move to
            ``given_cams``).
        build_model (callable): cfg -> model, to extract the untrained features.
    Returns:
        CfgNode: a frozen copy with every auto value filled in.
    """
    from .camera_style import extract_with_style
    from ..engine.features import extract_features
    from ..utils.dist import broadcast_from_main

    requested = [k for k in AUTO_KEYS if k != "DATASETS.NUM_CAMERAS" and is_auto(_get(cfg, k))]
    if cfg.DATASETS.CAMERAS != "infer" and not requested:
        return cfg
    inputs = _inputs(cfg, train_set, requested)
    path = os.path.join(cfg.OUTPUT_DIR, FILE)
    result = None
    if comm.is_main_process() and os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if _with_old_defaults(saved.get("inputs", {}), inputs, train_set) == inputs:
            result = saved
            logger.info(f"auto: reusing {path} (same images and inputs)")
    reuse = broadcast_from_main(result is not None)
    if not reuse:
        logger.info("auto: extracting the untrained model's training features to choose "
                    + ", ".join((["cameras"] if cfg.DATASETS.CAMERAS == "infer" else []) + requested))
        probe = cfg.clone()
        probe.defrost()
        probe.CALR.ALIGN.NUM_CAMERAS = 0  # no camera classifier: features only
        probe.freeze()
        import torch

        # A seeded model that leaves the run's RNG stream as it was: the choice does not
        # depend on what ran before, and training draws the same numbers with or without it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(max(cfg.SEED, 0))
            model = build_model(probe)
        if cfg.MODEL.WEIGHTS:
            from fastreid.utils.checkpoint import Checkpointer

            Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        style = layer = None
        if cfg.DATASETS.CAMERAS == "infer" and cfg.DATASETS.CAMERA_FEATURES == "style":
            feats, style, layer = extract_with_style(model, train_set.paths, probe)
            if layer is None:
                logger.warning("auto: the backbone has no stride-8 feature map to read camera style from "
                               "(DATASETS.CAMERA_LAYER auto); pseudo-cameras are grouped by the embedding")
        else:
            feats = extract_features(model, train_set.paths, probe, desc="auto features")
        del model
        if comm.is_main_process():
            result = dict(choose(cfg, train_set, feats, requested, style, layer), inputs=inputs)
            atomic_write_text(path, json.dumps(result, indent=1))
    result = broadcast_from_main(result)
    if comm.is_main_process():
        _log(result)
    if "cameras" in result:
        train_set.given_cams = train_set.cams
        train_set.cams = np.asarray(result["cameras"]["cams"], dtype=np.int64)
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in result.get("values", {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    cfg.freeze()
    return cfg
