"""Cosine k-nearest-neighbour graph with faiss, and camera-wise feature centring.

Shape shorthand: N images, D feature dims, k neighbours (self included), C cameras.

The global (stage-2) clustering of CALR starts from the top-k cosine neighbours of every
image (reference §6.2: exact inner-product search on L2-normalised features, k = 15 including
self). Everything here keeps the extra memory at O(N*k) beyond the feature matrix: the exact
search uses ``faiss.knn`` (brute force, no index copy of the features) over query chunks.
"""
from typing import Tuple, Union

import faiss
import numpy as np

__all__ = ["l2_normalize", "knn_search", "camera_centre", "knn_recall", "ivf_nlist_for", "ivf_nprobe_for",
           "hnsw_index", "KNN_METHODS", "HNSW_M", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH",
           "GALLERY_HNSW_EF_CONSTRUCTION", "GALLERY_HNSW_EF_SEARCH"]

KNN_METHODS = ("exact", "hnsw", "ivf")

# HNSW of the label step: the defaults of CALR.CLUSTER.HNSW_*, LabelParams and knn_search.
# Graph degree, beam width while building, beam width while searching (>= k is enforced).
# 32/24/24 is the fast mode measured at MSMT17 size (N 32,621, D 2048): recall@15 0.971, the
# label step 8.5 s instead of 67 s (docs/SCALING.md).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 24
HNSW_EF_SEARCH = 24
# HNSW of a gallery search past deploy.gallery_index.APPROXIMATE_ABOVE images: built once and searched
# many times, its candidates re-ranked exactly, so a wider beam both ways (degree HNSW_M);
# the search beam is at least GALLERY_HNSW_EF_SEARCH, and at least the candidates asked for.
GALLERY_HNSW_EF_CONSTRUCTION = 80
GALLERY_HNSW_EF_SEARCH = 128


def l2_normalize(features: np.ndarray, copy: bool = False, tol: float = 1e-4) -> np.ndarray:
    """L2-normalise rows, avoiding a copy when they already have unit norm.

    Args:
        features: (N, D) float array.
        copy: if True, always return a new array.
        tol: rows whose norm is within ``tol`` of 1 count as normalised.

    Returns:
        (N, D) float32 C-contiguous array with unit rows (zero rows stay zero). It is the
        input itself when the input is float32, contiguous, already normalised and
        ``copy`` is False: for N = 10^6 a spare copy is gigabytes.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if not copy and np.all(np.abs(norms - 1.0) <= tol):
        return x
    if x is features or np.shares_memory(x, features):
        x = x.copy()
    x /= np.maximum(norms, 1e-12)[:, None]
    return x


def _resolve_gpu(use_gpu: Union[str, bool]) -> bool:
    if use_gpu == "auto":
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if not isinstance(use_gpu, bool):
        raise ValueError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
    if use_gpu and not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        raise ValueError("use_gpu=True but faiss sees no GPU (faiss-gpu not installed?)")
    return use_gpu


def _put_self_first(x: np.ndarray, sims: np.ndarray, idx: np.ndarray) -> None:
    """Make column 0 of every row the query itself, in place.

    Exact search normally returns self first (cos = 1), but with duplicate images the
    tie between self and its duplicates is broken arbitrarily by faiss, and an approximate
    index may miss self altogether. Downstream code (edges, Eq. 4) skips j == i by id, so
    this only makes the layout predictable: self at column 0, the rest in search order.
    A row that lacks self loses its last (least similar) neighbour to make room.
    """
    n = idx.shape[0]
    bad = np.flatnonzero(idx[:, 0] != np.arange(n))
    if bad.size == 0:
        return
    sub_idx, sub_sims = idx[bad], sims[bad]
    is_self = sub_idx == bad[:, None]
    order = np.argsort(~is_self, axis=1, kind="stable")
    new_idx = np.take_along_axis(sub_idx, order, axis=1)
    new_sims = np.take_along_axis(sub_sims, order, axis=1)
    miss = ~is_self.any(axis=1)
    if miss.any():
        rows = bad[miss]
        new_idx[miss, 1:] = sub_idx[miss, :-1]
        new_sims[miss, 1:] = sub_sims[miss, :-1]
        new_idx[miss, 0] = rows
        new_sims[miss, 0] = np.einsum("ij,ij->i", x[rows], x[rows])
    idx[bad] = new_idx
    sims[bad] = new_sims


def ivf_nlist_for(n: int, nlist: int = 0) -> int:
    """The number of IVF lists ``knn_search`` builds for N rows.

    Args:
        n: rows. nlist: the requested lists (``CALR.CLUSTER.IVF_NLIST``); 0 = 4 sqrt(N).

    Returns:
        int in [1, max(1, N // 39)]: faiss wants >= 39 training points per list.
    """
    nlist = int(nlist) or int(4 * np.sqrt(n))
    return max(1, min(nlist, n // 39 or 1))


def ivf_nprobe_for(nlist: int, nprobe: int = 0) -> int:
    """Lists scanned per query: ``nprobe``, or half the lists when it is 0, at most ``nlist``.

    Why half by default: on ImageNet MobileNetV2 features of CUHK01 and PKU-Reid (N 1,940 /
    992, D 1,280), with or without camera centring, at K 15 and K 6, recall@K against exact
    search is 0.981-0.997 at nlist / 2 and falls to 0.953 at a third (old default 16 of 49
    lists) and 0.93 at a quarter (docs/BENCHMARKS.md, bench/knn_recall.py). A fixed nprobe
    scans a fraction that depends on N, and recall with it. Scanning half the lists, IVF-Flat
    is slower than exact search (BLAS) on CPU at these sizes.

    Args:
        nlist: lists in the index (``ivf_nlist_for``). nprobe: ``CALR.CLUSTER.IVF_NPROBE``.

    Returns:
        int in [1, nlist].
    """
    return max(1, min(int(nprobe) or -(-nlist // 2), nlist))


def hnsw_index(x: np.ndarray, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION):
    """An inner-product ``faiss.IndexHNSWFlat`` holding the rows of ``x``.

    Args:
        x: (N, D) float32 C-contiguous rows (L2-normalised for cosine similarity).
        m: graph degree. ef_construction: beam width while building.
    Returns:
        faiss.IndexHNSWFlat: set ``index.hnsw.efSearch`` before searching.
    """
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(x)
    return index


def knn_search(
    features: np.ndarray,
    k: int = 15,
    method: str = "exact",
    use_gpu: Union[str, bool] = "auto",
    chunk_size: int = 16384,
    normalize: bool = True,
    hnsw_m: int = HNSW_M,
    hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
    hnsw_ef_search: int = HNSW_EF_SEARCH,
    ivf_nlist: int = 0,
    ivf_nprobe: int = 0,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours of every row among all rows (self included).

    Args:
        features: (N, D) float features; rows are L2-normalised first when ``normalize``.
        k: neighbours per row including self (the authors' k = 15). Clamped to N.
        method: "exact" (brute-force inner product, ``faiss.knn`` on CPU or a
            ``GpuIndexFlatIP``), "hnsw" (``IndexHNSWFlat``, inner-product metric) or
            "ivf" (``IndexIVFFlat``, inner-product metric). The approximate methods run on
            CPU; they keep a copy of the features inside the index (N*D*4 bytes extra).
        use_gpu: "auto" (GPU when ``faiss.get_num_gpus() > 0``), True or False. Exact only.
        chunk_size: queries per search call; the results are the same for any value.
        normalize: L2-normalise the rows (no copy if they already have unit norm).
        hnsw_m, hnsw_ef_construction, hnsw_ef_search: HNSW graph degree and beam widths
            (default: the label step's ``HNSW_*``, 32/24/24; 32/40/32 gave recall@15 0.97 at
            N = 200,000, D = 256 on the benchmark's data).
        ivf_nlist: IVF lists; 0 means 4*sqrt(N), at most N // 39 (``ivf_nlist_for``).
        ivf_nprobe: lists scanned per query; 0 means half of them (``ivf_nprobe_for``).
        seed: seeds the IVF k-means sample and centroids. HNSW construction with more than
            one OpenMP thread depends on thread timing, so "hnsw" is reproducible only with
            ``faiss.omp_set_num_threads(1)``; "exact" and "ivf" are deterministic.

    Returns:
        sims: (N, k) float32 cosine similarities.
        idx: (N, k) int64 neighbour indices; -1 where an approximate index found fewer than k.
        Column 0 is always the row itself (see ``_put_self_first`` for duplicates); the
        other columns are in descending similarity.
    """
    if method not in KNN_METHODS:
        raise ValueError(f"knn method must be one of {KNN_METHODS}, got {method!r}")
    x = l2_normalize(features) if normalize else np.ascontiguousarray(features, dtype=np.float32)
    n, d = x.shape
    k = int(min(k, n))
    if k < 1:
        raise ValueError(f"k must be >= 1 and N >= 1, got k={k}, N={n}")
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)

    if method == "exact" and _resolve_gpu(use_gpu):
        res = faiss.StandardGpuResources()
        index = faiss.GpuIndexFlatIP(res, d)
        index.add(x)
        search = index.search
    elif method == "exact":
        def search(q, kk):
            return faiss.knn(q, x, kk, metric=faiss.METRIC_INNER_PRODUCT)
    elif method == "hnsw":
        index = hnsw_index(x, hnsw_m, hnsw_ef_construction)
        index.hnsw.efSearch = max(hnsw_ef_search, k)
        search = index.search
    else:
        nlist = ivf_nlist_for(n, ivf_nlist)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        # k-means on 64 points per list is plenty for a coarse quantiser and bounds training cost.
        n_train = min(n, 64 * nlist)
        rng = np.random.default_rng(seed)
        train = x[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else x
        index.train(train)
        del train
        index.add(x)
        index.nprobe = ivf_nprobe_for(nlist, ivf_nprobe)
        search = index.search

    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        s, i = search(x[start:stop], k)
        sims[start:stop] = s
        idx[start:stop] = i
    _put_self_first(x, sims, idx)
    return sims, idx


def camera_centre(features: np.ndarray, cams: np.ndarray, chunk_size: int = 16384) -> np.ndarray:
    """Subtract each camera's mean feature, then L2-normalise (beyond the paper).

    Reference §13: on ImageNet features 93 % of kNN neighbours share the query's camera;
    removing the per-camera mean lets cross-camera pairs of the same person compete.

    Args:
        features: (N, D) float features (not modified).
        cams: (N,) int camera ids, any values.
        chunk_size: rows per block; the means are accumulated in float64.

    Returns:
        (N, D) float32 new array: normalise(f_i - mean_{j: cam_j = cam_i} f_j).
    """
    x = np.asarray(features)
    cams = np.asarray(cams)
    if cams.shape != (x.shape[0],):
        raise ValueError(f"cams must have shape ({x.shape[0]},), got {cams.shape}")
    _, inv = np.unique(cams, return_inverse=True)
    n_cams = int(inv.max()) + 1 if inv.size else 0
    sums = np.zeros((n_cams, x.shape[1]), dtype=np.float64)
    for start in range(0, x.shape[0], chunk_size):
        stop = min(start + chunk_size, x.shape[0])
        onehot = np.zeros((stop - start, n_cams), dtype=np.float32)
        onehot[np.arange(stop - start), inv[start:stop]] = 1.0
        sums += onehot.T @ np.asarray(x[start:stop], dtype=np.float32)
    means = (sums / np.bincount(inv, minlength=n_cams)[:, None]).astype(np.float32)
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, x.shape[0], chunk_size):
        stop = min(start + chunk_size, x.shape[0])
        block = out[start:stop]
        np.subtract(x[start:stop], means[inv[start:stop]], out=block)
        block /= np.maximum(np.sqrt(np.einsum("ij,ij->i", block, block)), 1e-12)[:, None]
    return out


def knn_recall(idx_approx: np.ndarray, idx_exact: np.ndarray, chunk_size: int = 65536) -> float:
    """Recall@k of an approximate neighbour list against the exact one.

    Args:
        idx_approx: (M, k) int neighbour ids from an approximate search (-1 = missing).
        idx_exact: (M, k) int exact neighbour ids for the same M queries.

    Returns:
        Mean over rows of |approx_i ∩ exact_i| / |exact_i| (float in [0, 1]).
    """
    a = np.asarray(idx_approx)
    e = np.asarray(idx_exact)
    if a.shape[0] != e.shape[0]:
        raise ValueError(f"row counts differ: {a.shape[0]} vs {e.shape[0]}")
    hits = 0
    total = 0
    for start in range(0, e.shape[0], chunk_size):
        ea = e[start:start + chunk_size]
        aa = a[start:start + chunk_size]
        found = (ea[:, :, None] == aa[:, None, :]).any(axis=2) & (ea >= 0)
        hits += int(found.sum())
        total += int((ea >= 0).sum())
    return hits / max(total, 1)
