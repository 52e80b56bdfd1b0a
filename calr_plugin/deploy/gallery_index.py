"""A search's gallery index: saved features, file stamps and fingerprint, updated incrementally; top-k search.

Shape shorthand: N gallery images, Q queries, D feature dims, k matches per query.

``search`` lists galleries, embeds images and scores rankings; this module keeps an embedded
gallery on disk and ranks queries against it. It is apart from ``search`` because the index's
bookkeeping (the index folder, part files, file stamps, HNSW candidate rounds) is a concern of
its own: of an Embedder it needs only ``extract``, ``fingerprint`` and ``signature`` (and
``search.signature_changes`` to say what changed).

* ``GalleryIndex``: features saved in an index folder with each file's size and mtime and the
  fingerprint; ``update`` extracts only new or changed files, drops removed ones, and
  re-extracts everything (saying why in one line) when the fingerprint changed. It saves a
  part file every ``INDEX_CHUNK`` extracted images, so a killed indexing keeps its progress.
  Exact inner-product search (one BLAS product per block of queries), optionally leaving
  out the query's own camera: at N = 100,000 and D = 1280 a query takes 0.07 s on 2
  cores under load (bench/search_speed.py, docs/BENCHMARKS.md); the cost is linear in N, so
  past a million images an HNSW index (saved next to the features) proposes candidates
  that are re-ranked exactly.

Index folder: ``index.npz`` (``features`` (N, D) float32, ``meta``: UTF-8 JSON of the items
(path, pid, camera), stamps (size, mtime_ns), fingerprint and signature); ``part-NNNNNN.npz``
(the same, for the chunks of an update not yet merged); ``hnsw.faiss`` (large galleries).
float32, not float16: the saved features must rank exactly as the query's, which are float32.
"""
import collections
import glob
import json
import logging
import math
import os
import re
import zipfile

import numpy as np

from ..errors import CalrError, DataError
from ..labels.knn import GALLERY_HNSW_EF_CONSTRUCTION, GALLERY_HNSW_EF_SEARCH, HNSW_M, hnsw_index
from ..utils.atomic import _atomic_write
from .search import signature_changes

__all__ = ["GalleryIndex", "IndexUpdate", "APPROXIMATE_ABOVE", "INDEX_CHUNK", "INDEX_FILE"]

logger = logging.getLogger("fastreid." + __name__)

# Exact search up to here: 0.07 s a query at 100,000 x 1280 on 2 cores (bench/search_speed.py),
# linear in N, so about 0.7 s and 5 GB of features at a million; past that, HNSW candidates.
APPROXIMATE_ABOVE = 1_000_000
# Extracted images between saves of an update: about a minute of CPU extraction, a few MB.
INDEX_CHUNK = 4096
# HNSW candidate rounds: each asks for 4x more before a query is searched exactly.
HNSW_RETRIES = 3

INDEX_FILE = "index.npz"
PART_NAME = re.compile(r"part-(\d{6})\.npz")


def _stamp(path):
    try:
        st = os.stat(path)
    except OSError:
        return None  # gone since listed: the extraction names it as unreadable
    return [st.st_size, st.st_mtime_ns]


def _write_index(path, feats, meta):
    """One .npz (features + JSON meta), atomically, streamed to the file (no copy in memory)."""
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    _atomic_write(path, lambda f: np.savez(f, features=np.ascontiguousarray(feats, dtype=np.float32), meta=blob))


def _read_index(path):
    """(meta dict, (N, D) float32) of an index or part file; None (with a warning) when unreadable."""
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            feats = z["features"]
        if len(feats) != len(meta["items"]) or len(meta["items"]) != len(meta["stamps"]):
            raise ValueError(f"{len(feats)} features for {len(meta['items'])} items")
        return meta, feats
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        logger.warning(f"{path}: unreadable index file ({type(e).__name__}: {e}); its images are extracted again")
        return None


IndexUpdate = collections.namedtuple("IndexUpdate", ["extracted", "reused", "unreadable"])
IndexUpdate.__doc__ = """extracted, reused (int): images extracted now / taken from the saved index;
unreadable: list of (path, reason) of gallery images left out."""


class GalleryIndex:
    """A saved, incrementally updated gallery index (features + file stamps + fingerprint).

    Attributes:
        items (list[tuple]): (path, pid, camera) of the indexed (readable) images, in gallery order.
        feats (ndarray): (N, D) float32 unit rows, one per item.
        exact_fallbacks (int): queries of the last ``search`` that the HNSW path left to exact search.
    """

    def __init__(self, folder):
        self.folder = folder
        self.items, self.stamps, self.feats = [], [], np.zeros((0, 0), np.float32)
        self.fingerprint, self.signature = "", {}
        self.exact_fallbacks = 0
        self._hnsw = None
        main = os.path.join(folder, INDEX_FILE)
        loaded = _read_index(main) if os.path.isfile(main) else None
        if loaded is not None:
            meta, self.feats = loaded
            self.items = [tuple(it) for it in meta["items"]]
            self.stamps, self.fingerprint, self.signature = meta["stamps"], meta["fingerprint"], meta["signature"]
        # Chunks of an update that did not finish (killed): their features are reused.
        self._part_files = sorted(p for p in glob.glob(os.path.join(folder, "part-*.npz"))
                                  if PART_NAME.fullmatch(os.path.basename(p)))
        self._parts = [p for p in map(_read_index, self._part_files) if p is not None]

    def update(self, items, embed, chunk=None, log=None):
        """Bring the index to ``items``: reuse unchanged files' features, extract the rest.

        Features saved with another fingerprint (model, weights or config) are not reused; one
        line says which settings changed. Every ``chunk`` extracted images are saved in a part
        file, so a killed update loses at most one chunk; the end merges them into index.npz.

        Args:
            items (list[tuple]): (path, pid, camera) of the gallery now.
            embed (Embedder): extracts features (``extract``); its ``fingerprint``, ``signature``.
            chunk (int | None): images extracted between saves (None: INDEX_CHUNK).
            log (callable | None): where the one-line notes go (default: the logger).
        Returns:
            IndexUpdate: counts, and the unreadable images (left out of the index).
        """
        log = log or logger.info
        chunk = chunk or INDEX_CHUNK
        fp = embed.fingerprint
        sources = [({"fingerprint": self.fingerprint, "signature": self.signature, "items": self.items,
                     "stamps": self.stamps}, self.feats)] + self._parts
        known, stale = {}, []
        for meta, feats in sources:
            if not meta["items"]:
                continue
            if meta["fingerprint"] != fp:
                stale.append(meta)
                continue
            for row, (it, st) in enumerate(zip(meta["items"], meta["stamps"])):
                known[it[0]] = (feats, row, st)  # parts come later: newer than the index
        if not any(m["items"] for m, _ in sources) and os.path.isfile(os.path.join(self.folder, "gallery.json")):
            log(f"index {self.folder}: gallery.json and features.npy are an older format without the config in "
                f"the fingerprint: extracting again into {INDEX_FILE} (the old files can be deleted)")
        if stale:
            log(f"index {self.folder}: {sum(len(m['items']) for m in stale)} saved features come from another "
                f"model or config ({signature_changes(stale[-1]['signature'], embed.signature) or 'another index'}"
                f"): extracting again")
        stamps = [_stamp(it[0]) for it in items]
        rows = [None] * len(items)  # (array, row) of each item's feature
        todo = []
        for i, (it, st) in enumerate(zip(items, stamps)):
            k = known.get(it[0])
            if k is not None and st is not None and list(k[2]) == st:
                rows[i] = (k[0], k[1])
            else:
                todo.append(i)
        unreadable = []
        seq = 1 + max([int(PART_NAME.fullmatch(os.path.basename(p)).group(1)) for p in self._part_files] + [0])
        written = []
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            result = embed.extract([items[i][0] for i in part], desc="gallery features")
            unreadable += result.bad
            done = [i for i, ok in zip(part, result.ok) if ok]
            if not done:
                continue
            path = os.path.join(self.folder, f"part-{seq:06d}.npz")
            _write_index(path, result.feats, {"fingerprint": fp, "signature": embed.signature,
                                              "items": [list(items[i]) for i in done],
                                              "stamps": [stamps[i] for i in done]})
            written.append(path)
            seq += 1
            for row, i in enumerate(done):
                rows[i] = (result.feats, row)
        keep = [i for i, r in enumerate(rows) if r is not None]
        dim = next((r[0].shape[1] for r in rows if r is not None), 0)
        feats = np.zeros((len(keep), dim), np.float32)
        for n, i in enumerate(keep):
            feats[n] = rows[i][0][rows[i][1]]
        new_items = [tuple(items[i]) for i in keep]
        changed = bool(todo) or new_items != self.items or fp != self.fingerprint or bool(self._part_files)
        self.items, self.stamps, self.feats = new_items, [stamps[i] for i in keep], feats
        self.fingerprint, self.signature = fp, embed.signature
        if changed:
            self.save()
            for path in self._part_files + written:  # merged: index.npz holds them now
                if os.path.exists(path):
                    os.remove(path)
            self._part_files, self._parts = [], []
        return IndexUpdate(len(todo) - len(unreadable), len(keep) - (len(todo) - len(unreadable)), unreadable)

    def save(self):
        """Write index.npz (atomically) from items, stamps, feats and the fingerprint."""
        os.makedirs(self.folder, exist_ok=True)
        stamps = self.stamps if len(self.stamps) == len(self.items) else [None] * len(self.items)
        _write_index(os.path.join(self.folder, INDEX_FILE), self.feats,
                     {"fingerprint": self.fingerprint, "signature": self.signature,
                      "items": [list(it) for it in self.items], "stamps": stamps})
        self._hnsw = None  # the features are newer now: a saved HNSW index is rebuilt when next needed

    def _hnsw_index(self):
        import faiss

        path = os.path.join(self.folder, "hnsw.faiss")
        saved = os.path.join(self.folder, INDEX_FILE)
        if self._hnsw is None:
            if os.path.isfile(path) and os.path.isfile(saved) and os.path.getmtime(path) >= os.path.getmtime(saved):
                self._hnsw = faiss.read_index(path)
            else:
                self._hnsw = hnsw_index(self.feats, HNSW_M, GALLERY_HNSW_EF_CONSTRUCTION)
                if os.path.isfile(saved):  # kept next to the features it indexes
                    faiss.write_index(self._hnsw, path)
        return self._hnsw

    def _approximate(self, queries, k, exclude_cameras, cams, dists, idx):
        """HNSW candidates re-ranked exactly, into ``dists`` / ``idx``.

        A query asks for 4k candidates scaled by the share of the gallery its camera filter
        keeps (4k N / kept: with 90 % of the gallery in its own camera, 40k), and 4x more in
        each of HNSW_RETRIES rounds while fewer than k are left after the filter.

        Returns:
            ndarray: the query rows still without k candidates (the caller searches them exactly).
        """
        hnsw = self._hnsw_index()
        n = len(self.feats)
        per_camera = collections.Counter(cams.tolist())
        want = np.zeros(len(queries), np.int64)
        pending, exact = [], []
        for q in range(len(queries)):
            left_out = exclude_cameras[q] if exclude_cameras is not None else None
            kept = n - (per_camera.get(left_out, 0) if left_out is not None else 0)
            if kept < k:
                exact.append(q)  # fewer than k images outside its camera: exact lists them all
                continue
            want[q] = min(n, math.ceil(4 * k * n / kept))
            pending.append(q)
        for attempt in range(HNSW_RETRIES + 1):
            short = []
            for ask in sorted({int(want[q]) for q in pending}):
                group = [q for q in pending if want[q] == ask]
                hnsw.hnsw.efSearch = max(GALLERY_HNSW_EF_SEARCH, ask)
                _, cand = hnsw.search(np.ascontiguousarray(queries[group], dtype=np.float32), ask)
                for q, c in zip(group, cand):
                    c = c[c >= 0]
                    if exclude_cameras is not None and exclude_cameras[q] is not None:
                        c = c[cams[c] != exclude_cameras[q]]
                    if len(c) < k:
                        short.append(q)
                        continue
                    sims = self.feats[c] @ queries[q]
                    order = np.argsort(-sims, kind="stable")[:k]
                    dists[q], idx[q] = 1.0 - sims[order], c[order]
            if attempt == HNSW_RETRIES:
                exact += short
                break
            exact += [q for q in short if want[q] >= n]  # asked for the whole gallery already
            pending = [q for q in short if want[q] < n]
            if not pending:
                break
            want[pending] = np.minimum(n, want[pending] * 4)
        return np.array(sorted(exact), dtype=np.int64)

    def search(self, queries, k, exclude_cameras=None, chunk=64, approximate_above=APPROXIMATE_ABOVE):
        """Top-k gallery images of each query by cosine similarity.

        Exact (one BLAS product per block of queries) up to ``approximate_above`` gallery
        images; past it, an HNSW index (saved in the index folder) proposes candidates, as many
        as the camera filter needs (``_approximate``), that are re-ranked exactly; a query still
        short of k after the retries is searched exactly (counted in ``exact_fallbacks``).

        Args:
            queries (ndarray): (Q, D) float32 unit rows. k (int): matches per query.
            exclude_cameras (list | None): per query, a camera name whose gallery images are
                left out (the query's own camera), or None to keep all.
        Returns:
            tuple: (Q, k') float32 cosine distances (1 - cos), (Q, k') int64 gallery indices,
            k' = min(k, N); rows with fewer matches are padded with inf / -1 (a row of -1: the
            gallery has no image outside the query's camera).
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
        self.exact_fallbacks = 0
        if len(self.feats) > approximate_above:
            exact = self._approximate(queries, k, exclude_cameras, cams, dists, idx)
            self.exact_fallbacks = len(exact)
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
