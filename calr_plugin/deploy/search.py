"""Search people across camera folders with a trained model: embed, index, rank, evaluate.

Shape shorthand: N gallery images, Q queries, D feature dims, k matches per query.

* ``gallery_items``: the images of a folder in any layout ReIDFolder reads (Market:
  ``bounding_box_test/``; camera folders: ``train/<camera>/**``), or any folder of crops
  (every image below it; the camera is its first sub-folder, "-" for loose files), with the
  person id when a Market name carries one.
* ``Embedder``: L2-normalised (N, D) features from a PyTorch checkpoint or an exported ONNX
  file, through ``features.Extractor``, the extraction training uses (FastReID's test
  transform and loader, DATALOADER.NUM_WORKERS workers, the model's device, CALR.EXTRACT.ENGINE;
  one ONNX Runtime session per run). Unreadable images are skipped and named. Its
  ``fingerprint`` hashes what a feature depends on (``feature_signature``): the config's
  INPUT and MODEL trees and the content of the weights or ONNX file.
* ``GalleryIndex`` (:mod:`calr_plugin.deploy.gallery_index`): the saved, incrementally
  updated index of a gallery's features and its exact or HNSW top-k search; its folder
  layout is described there.
* ``evaluate``: mAP and CMC with FastReID's ``evaluate_rank`` on cosine distances (Market
  protocol), the numbers ``--eval-only`` prints for the same model and split.
"""
import collections
import hashlib
import json
import os

import numpy as np

from ..data.datasets import IMAGE_EXTENSIONS, NAME_PATTERN, list_images
from ..errors import CalrError, DataError

__all__ = ["gallery_items", "feature_signature", "fingerprint_of", "signature_changes", "Embedder",
           "evaluate", "valid_queries", "unmatched_message"]


def _item(path, camera=None):
    m = NAME_PATTERN.match(os.path.basename(path))  # ReIDFolder's own Market-name rule
    pid = int(m.group(1)) if m else None
    cam = camera if camera is not None else (f"c{m.group(2)}" if m else "-")
    return path, pid, cam


def gallery_items(folder, split="bounding_box_test"):
    """(path, person id or None, camera name) of a folder's gallery images, sorted by path.

    Args:
        folder (str): a Market-layout folder (its ``split``), a camera-folder set
            (``train/<camera>/``), or any folder of images.
        split (str): the Market split to read ("bounding_box_test" or "query").
    Raises:
        DataError: the folder is missing or holds no image.
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: gallery folder not found")
    market = os.path.join(folder, split)
    if os.path.isdir(market):
        items = [_item(p) for p in list_images(market)]
        items = [it for it in items if it[1] != -1]  # Market junk
    elif os.path.isdir(os.path.join(folder, "train")) and split == "bounding_box_test":
        train = os.path.join(folder, "train")
        items = [_item(p, os.path.relpath(p, train).split(os.sep)[0]) for p in list_images(train, recursive=True)]
    else:
        items = []
        for p in list_images(folder, recursive=True):
            parts = os.path.relpath(p, folder).split(os.sep)
            items.append(_item(p, parts[0] if len(parts) > 1 else None))
    if not items:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) to search")
    return items


def file_digest(path):
    """sha256 of a file's content (first 16 hex digits), with its size: what a moved or
    touched copy of the same weights keeps, and any retrained file changes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{os.path.getsize(path)} bytes, sha256 {h.hexdigest()[:16]}"


def _flatten(node, prefix, out):
    for key, value in node.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}{key}.", out)
        else:
            out[prefix + key] = json.dumps(value, default=str)  # tuples and lists alike


def feature_signature(cfg, onnx=None):
    """What a search feature depends on, as a flat {name: str}.

    * the config's INPUT tree (the test transform: INPUT.SIZE_TEST, INPUT.CROP; the training
      augmentations are included too, which at worst re-extracts when only they changed);
    * with a PyTorch model: the MODEL tree (backbone, pooling, neck, pixel mean/std, ...)
      without MODEL.WEIGHTS's and PRETRAIN_PATH's paths and MODEL.DEVICE, and the content of
      the weights (or of the pretrained backbone file when no weights are given);
    * with an ONNX file: its content (the graph holds the model and its normalisation).

    The rest of the config (OUTPUT_DIR, DATASETS, SOLVER, DATALOADER, TEST.IMS_PER_BATCH, CALR)
    does not reach the eval forward; search runs without AMP (``load_inference_model``), and the
    engines (torch, onnxruntime) agree to 1e-5.

    Args:
        cfg (CfgNode): the search's config. onnx (str | None): the exported graph.
    Returns:
        dict: {name: JSON-encoded value or file digest}.
    """
    sig = {}
    _flatten(cfg.INPUT, "INPUT.", sig)
    if onnx is not None:
        sig["onnx file"] = file_digest(onnx)
        return sig
    _flatten(cfg.MODEL, "MODEL.", sig)
    for key in ("MODEL.WEIGHTS", "MODEL.DEVICE", "MODEL.BACKBONE.PRETRAIN_PATH"):
        sig.pop(key, None)
    weights = cfg.MODEL.WEIGHTS
    if weights:
        if not os.path.isfile(weights):
            raise CalrError(f"MODEL.WEIGHTS {weights}: file not found")
        sig["weights file"] = file_digest(weights)
    elif cfg.MODEL.BACKBONE.PRETRAIN and cfg.MODEL.BACKBONE.PRETRAIN_PATH \
            and os.path.isfile(cfg.MODEL.BACKBONE.PRETRAIN_PATH):
        sig["pretrained backbone file"] = file_digest(cfg.MODEL.BACKBONE.PRETRAIN_PATH)
    return sig


def fingerprint_of(signature):
    """A short hash of a ``feature_signature``."""
    return hashlib.sha1(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:16]


def signature_changes(old, new, first=3):
    """'KEY old -> new' of the first few entries that differ between two signatures."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = [f"{k} {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in keys[:first]]
    return ", ".join(shown) + (f" and {len(keys) - first} more" if len(keys) > first else "")


class Embedder:
    """L2-normalised features of image files, from a PyTorch model or an ONNX file.

    Args:
        cfg (CfgNode): the model's config (INPUT.SIZE_TEST, TEST.IMS_PER_BATCH,
            DATALOADER.NUM_WORKERS, CALR.EXTRACT.ENGINE with a model, MODEL.*).
        model (nn.Module | None): the PyTorch model, on the device to extract on; None with ``onnx``.
        onnx (str | None): an exported graph (tools/export_onnx.py); one session for the Embedder.
    Attributes:
        signature (dict), fingerprint (str): see ``feature_signature``.
    """

    def __init__(self, cfg, model=None, onnx=None):
        from ..engine.features import Extractor

        self.cfg = cfg
        self.signature = feature_signature(cfg, onnx)
        self.fingerprint = fingerprint_of(self.signature)
        self.extractor = Extractor(cfg, model=model, onnx=onnx)

    @property
    def engine(self):
        """"torch" or "onnxruntime" (after a fallback, the engine actually used)."""
        return self.extractor.engine

    def extract(self, paths, desc="features"):
        """features.Extraction of ``paths``: unreadable images skipped and named."""
        return self.extractor.run(paths, desc=desc, bad="skip", gather="all")

    def __call__(self, paths, desc="features"):
        """(len(paths), D) float32 unit rows.

        Raises:
            DataError: an image cannot be read (one line naming it).
        """
        from ..engine.features import describe_unreadable

        result = self.extract(paths, desc)
        if result.bad:
            raise DataError(describe_unreadable(result.bad))
        return result.feats

    def close(self):
        self.extractor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def unmatched_message(queries, idx, gallery_items_, same_camera):
    """One line about the queries without any match, or None when every query has one.

    Args:
        queries (list[tuple]): (path, pid, camera). idx (ndarray): (Q, k) from ``GalleryIndex.search``.
        gallery_items_ (list[tuple]): the index's items. same_camera (bool): --same-camera given.
    """
    empty = [q for q, row in zip(queries, idx) if not (np.asarray(row) >= 0).any()]
    if not empty:
        return None
    cams = sorted({str(g[2]) for g in gallery_items_})
    shown = ", ".join(f"{q[0]} (camera {q[2]})" for q in empty[:3]) + (", ..." if len(empty) > 3 else "")
    return (f"{len(empty)} of {len(queries)} queries have no gallery image outside their own camera "
            f"(gallery cameras: {', '.join(cams)}): {shown}"
            + ("" if same_camera else "; --same-camera also matches images of the query's camera"))


def valid_queries(query_items, gallery_items_):
    """(Q,) bool: which queries have their person in another camera of the gallery, the
    queries FastReID's Market protocol scores (the others it skips)."""
    cams_of = collections.defaultdict(set)
    for _, pid, cam in gallery_items_:
        cams_of[pid].add(cam)
    return np.array([bool(cams_of.get(pid, set()) - {cam}) for _, pid, cam in query_items], dtype=bool)


def evaluate(query_feats, query_items, gallery_feats, gallery_items_):
    """FastReID's mAP / CMC (Market protocol) on cosine distances, in %.

    Args:
        query_feats (ndarray): (Q, D) unit rows; gallery_feats (N, D) unit rows.
        query_items, gallery_items_: (path, pid, camera) with integer pids.
    Returns:
        dict: mAP, Rank-1, Rank-5, Rank-10.
    Raises:
        CalrError: no query has its person in another gallery camera (nothing to score).
    """
    from fastreid.evaluation.rank import evaluate_rank

    if not valid_queries(query_items, gallery_items_).any():
        qc = sorted({str(it[2]) for it in query_items})
        gc = sorted({str(it[2]) for it in gallery_items_})
        raise CalrError(f"no query has its person in another camera of the gallery (query cameras: {', '.join(qc)}; "
                        f"gallery cameras: {', '.join(gc)}): the Market protocol leaves out the query's own camera, "
                        f"so there is nothing to score")
    cams = {c: i for i, c in enumerate(sorted({it[2] for it in list(query_items) + list(gallery_items_)}))}
    dist = 1.0 - query_feats @ gallery_feats.T
    cmc, all_ap, _ = evaluate_rank(dist, np.array([it[1] for it in query_items]),
                                   np.array([it[1] for it in gallery_items_]),
                                   np.array([cams[it[2]] for it in query_items]),
                                   np.array([cams[it[2]] for it in gallery_items_]))
    return {"mAP": float(np.mean(all_ap) * 100), **{f"Rank-{r}": float(cmc[r - 1] * 100) for r in (1, 5, 10)}}
