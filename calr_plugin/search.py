"""Search people across camera folders with a trained model: embed, index, rank, evaluate.

Shape shorthand: N gallery images, Q queries, D feature dims, k matches per query.

* ``gallery_items``: the images of a folder in any layout ReIDFolder reads (Market:
  ``bounding_box_test/``; camera folders: ``train/<camera>/**``), or any folder of crops
  (every image below it; the camera is its first sub-folder, "-" for loose files), with the
  person id when a Market name carries one.
* ``Embedder``: L2-normalised (N, D) features from a PyTorch checkpoint or an exported ONNX
  file, through FastReID's test transform (resize to INPUT.SIZE_TEST).
* ``GalleryIndex``: features saved in an index folder with each file's size and mtime and the
  model's fingerprint; ``update`` extracts only new or changed files and drops removed ones.
  Exact inner-product search (one BLAS product per block of queries), optionally leaving
  out the query's own camera: at N = 100,000 and D = 1280 a query takes 0.07 s on 2
  cores under load (bench/search_speed.py, docs/BENCHMARKS.md); the cost is linear in N, so
  past a million images an HNSW index (saved next to the features) proposes candidates
  that are re-ranked exactly.
* ``evaluate``: mAP and CMC with FastReID's ``evaluate_rank`` on cosine distances (Market
  protocol), the numbers ``--eval-only`` prints for the same model and split.
"""
import hashlib
import json
import os

import numpy as np

from .data.datasets import IMAGE_EXTENSIONS, NAME_PATTERN, list_images
from .errors import CalrError, DataError
from .utils.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["gallery_items", "Embedder", "GalleryIndex", "evaluate"]

# Exact search up to here: 0.07 s a query at 100,000 x 1280 on 2 cores (bench/search_speed.py),
# linear in N, so about 0.7 s and 5 GB of features at a million; past that, HNSW candidates.
APPROXIMATE_ABOVE = 1_000_000


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


class Embedder:
    """L2-normalised features of image files, from a PyTorch model or an ONNX file.

    Args:
        cfg (CfgNode): the model's config (INPUT.SIZE_TEST, TEST.IMS_PER_BATCH, MODEL.*).
        model (nn.Module | None): the PyTorch model (eval mode); None with ``onnx``.
        onnx (str | None): an exported graph (tools/export_onnx.py).
        fingerprint (str): identifies the weights, so an index built with others is not reused.
    """

    def __init__(self, cfg, model=None, onnx=None, fingerprint=""):
        from fastreid.data.transforms import build_transforms

        if (model is None) == (onnx is None):
            raise ValueError("give a model or an ONNX file")
        self.cfg, self.model, self.onnx = cfg, model, onnx
        self.transform = build_transforms(cfg, is_train=False)
        self.fingerprint = fingerprint
        self._session = None

    def _load(self, path):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return self.transform(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"{path}: cannot read this image ({type(e).__name__}: {e})") from None

    def __call__(self, paths, desc="features"):
        """Returns (len(paths), D) float32 unit rows."""
        import sys

        import torch
        from tqdm import tqdm

        batch = max(1, self.cfg.TEST.IMS_PER_BATCH)
        out = []
        for s in tqdm(range(0, len(paths), batch), desc=desc, unit="batch", disable=not sys.stderr.isatty()):
            images = torch.stack([self._load(p) for p in paths[s:s + batch]]).float()
            if self.onnx:
                from .export import onnx_features

                feats = onnx_features(self.onnx, images.numpy())
            else:
                with torch.no_grad():
                    feats = self.model(images).numpy()
            out.append(feats.astype(np.float32))
        feats = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def _stamp(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


class GalleryIndex:
    """A saved, incrementally updated gallery index (features + file stamps + model fingerprint).

    Files in ``folder``: ``features.npy`` (N, D) float32, ``gallery.json`` (items, stamps,
    fingerprint). Written atomically.
    """

    def __init__(self, folder):
        self.folder = folder
        self.items, self.stamps, self.feats, self.fingerprint = [], [], np.zeros((0, 0), np.float32), ""
        meta = os.path.join(folder, "gallery.json")
        if os.path.isfile(meta) and os.path.isfile(os.path.join(folder, "features.npy")):
            with open(meta) as f:
                saved = json.load(f)
            self.items = [tuple(it) for it in saved["items"]]
            self.stamps, self.fingerprint = saved["stamps"], saved["fingerprint"]
            self.feats = np.load(os.path.join(folder, "features.npy"))

    def update(self, items, embed):
        """Bring the index to ``items``: reuse unchanged files' features, extract the rest.

        Args:
            items (list[tuple]): (path, pid, camera) of the gallery now.
            embed (Embedder): extracts features of new or changed files.
        Returns:
            int: the number of images extracted now.
        """
        known = {}
        if self.fingerprint == embed.fingerprint:
            known = {it[0]: (i, st) for i, (it, st) in enumerate(zip(self.items, self.stamps))}
        stamps = [_stamp(it[0]) for it in items]
        reuse = [known[it[0]][0] if it[0] in known and known[it[0]][1] == st else -1 for it, st in zip(items, stamps)]
        todo = [i for i, r in enumerate(reuse) if r < 0]
        new = embed([items[i][0] for i in todo], desc="gallery features") if todo else None
        dim = new.shape[1] if new is not None else self.feats.shape[1]
        feats = np.zeros((len(items), dim), np.float32)
        for i, r in enumerate(reuse):
            if r >= 0:
                feats[i] = self.feats[r]
        if todo:
            feats[todo] = new
        changed = bool(todo) or [tuple(it) for it in items] != self.items
        self.items, self.stamps, self.feats, self.fingerprint = [tuple(it) for it in items], stamps, feats, \
            embed.fingerprint
        if changed:
            self.save()
        return len(todo)

    def save(self):
        import io

        os.makedirs(self.folder, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, self.feats)
        atomic_write_bytes(os.path.join(self.folder, "features.npy"), buf.getvalue())
        self._hnsw = None  # features.npy is newer now: a saved HNSW index is rebuilt when next needed
        atomic_write_text(os.path.join(self.folder, "gallery.json"),
                          json.dumps({"items": self.items, "stamps": self.stamps, "fingerprint": self.fingerprint}))

    def _approximate(self, queries, k, exclude_cameras):
        """HNSW candidates (4k, or more with a camera left out), re-ranked exactly; None where
        a query has fewer than k candidates left (the caller searches those exactly)."""
        import faiss

        path = os.path.join(self.folder, "hnsw.faiss")
        if getattr(self, "_hnsw", None) is None:
            if os.path.isfile(path) and os.path.getmtime(path) >= os.path.getmtime(
                    os.path.join(self.folder, "features.npy")):
                self._hnsw = faiss.read_index(path)
            else:
                self._hnsw = faiss.IndexHNSWFlat(self.feats.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
                self._hnsw.hnsw.efConstruction = 80
                self._hnsw.add(self.feats)
                faiss.write_index(self._hnsw, path)
        self._hnsw.hnsw.efSearch = max(128, 8 * k)
        _, cand = self._hnsw.search(np.ascontiguousarray(queries, dtype=np.float32), 4 * k)
        return cand

    def search(self, queries, k, exclude_cameras=None, chunk=64, approximate_above=APPROXIMATE_ABOVE):
        """Top-k gallery images of each query by cosine similarity.

        Exact (one BLAS product per block of queries) up to ``approximate_above`` gallery
        images; past it, an HNSW index (saved in the index folder) proposes 4k candidates
        that are re-ranked exactly, and a query with fewer than k candidates left after the
        camera filter is searched exactly.

        Args:
            queries (ndarray): (Q, D) float32 unit rows. k (int): matches per query.
            exclude_cameras (list | None): per query, a camera name whose gallery images are
                left out (the query's own camera), or None to keep all.
        Returns:
            tuple: (Q, k') float32 cosine distances (1 - cos), (Q, k') int64 gallery indices,
            k' = min(k, candidates); rows with fewer candidates are padded with -1 / inf.
        """
        if len(self.feats) == 0:
            raise DataError(f"{self.folder}: the gallery index is empty")
        if queries.shape[1] != self.feats.shape[1]:
            raise CalrError(f"query features have {queries.shape[1]} dims, the gallery index {self.feats.shape[1]}: "
                            f"another model built it")
        cams = np.array([it[2] for it in self.items], dtype=object)
        k = min(k, len(self.feats))
        dists = np.full((len(queries), k), np.inf, np.float32)
        idx = np.full((len(queries), k), -1, np.int64)
        exact = np.arange(len(queries))
        if len(self.feats) > approximate_above:
            cand = self._approximate(queries, k, exclude_cameras)
            exact = []
            for q, c in enumerate(cand):
                c = c[c >= 0]
                if exclude_cameras is not None and exclude_cameras[q] is not None:
                    c = c[cams[c] != exclude_cameras[q]]
                if len(c) < k:
                    exact.append(q)
                    continue
                sims = self.feats[c] @ queries[q]
                order = np.argsort(-sims, kind="stable")[:k]
                dists[q], idx[q] = 1.0 - sims[order], c[order]
            exact = np.array(exact, dtype=np.int64)
        for s in range(0, len(exact), chunk):
            rows_ = exact[s:s + chunk]
            sims = np.ascontiguousarray(queries[rows_], dtype=np.float32) @ self.feats.T  # (q, N) BLAS
            for r, q in enumerate(rows_):
                row = sims[r]
                if exclude_cameras is not None and exclude_cameras[q] is not None:
                    row = np.where(cams == exclude_cameras[q], -np.inf, row)
                top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
                top = top[np.argsort(-row[top], kind="stable")]
                top = top[np.isfinite(row[top])]
                dists[q, :len(top)] = 1.0 - row[top]
                idx[q, :len(top)] = top
        return dists, idx


def evaluate(query_feats, query_items, gallery_feats, gallery_items_):
    """FastReID's mAP / CMC (Market protocol) on cosine distances, in %.

    Args:
        query_feats (ndarray): (Q, D) unit rows; gallery_feats (N, D) unit rows.
        query_items, gallery_items_: (path, pid, camera) with integer pids.
    Returns:
        dict: mAP, Rank-1, Rank-5, Rank-10.
    """
    from fastreid.evaluation.rank import evaluate_rank

    cams = {c: i for i, c in enumerate(sorted({it[2] for it in list(query_items) + list(gallery_items_)}))}
    dist = 1.0 - query_feats @ gallery_feats.T
    cmc, all_ap, _ = evaluate_rank(dist, np.array([it[1] for it in query_items]),
                                   np.array([it[1] for it in gallery_items_]),
                                   np.array([cams[it[2]] for it in query_items]),
                                   np.array([cams[it[2]] for it in gallery_items_]))
    return {"mAP": float(np.mean(all_ap) * 100), **{f"Rank-{r}": float(cmc[r - 1] * 100) for r in (1, 5, 10)}}


def fingerprint(*paths):
    """A short hash of files' names, sizes and mtimes (weights, config, ONNX file)."""
    h = hashlib.sha1()
    for p in paths:
        if p and os.path.isfile(p):
            h.update(f"{os.path.abspath(p)}:{_stamp(p)}".encode())
    return h.hexdigest()[:16]
