"""Recall of the approximate kNN modes against exact search on real features (not a test).

Shape shorthand: N images, D feature dims, C cameras, K neighbours (self included).

The stage-2 label step builds its graph from the top-K cosine neighbours of every training
image (``calr_plugin/labels/pipeline.py``: ``knn_search`` on the L2-normalised features, or
on ``camera_centre``'d ones when ``CALR.CLUSTER.CAMERA_CENTRE``). This bench measures, for
each mode (``exact`` | ``hnsw`` | ``ivf``) at its config defaults (``CALR.CLUSTER.*`` of the
recipe) and over a small grid around them:

* recall@K against exact search over all N rows (``knn_recall``), on the plain features
  ("raw") and on the camera-centred ones ("centred"), as the label step feeds them;
* seconds of one ``knn_search`` call (best of ``--repeat``, one faiss thread unless
  ``--threads``) and its ratio to exact search on the same features.

Inputs, any mix of:

* a feature file ``.npy`` ((N, D) float32); its cameras are read from ``--cams FILE``, or
  from ``cams.txt`` beside ``features.npy`` (what ``tools/extract_features.py`` writes), or
  ``NAME_cams.txt`` beside ``NAME.npy`` (what ``--save`` writes); without
  cameras the centred column is left empty and ``--k auto`` is not available;
* a dataset folder in Market-1501 layout (``../shared/data/cuhk01``): the training split's
  features are extracted with the recipe (``--config``, ``DATASETS.FOLDER`` set to the
  folder) and ``--weights`` (default: the ImageNet backbone of the recipe, made by
  ``tools/convert_weights.py deep-sort-mobilenetv2 output/weights/mobilenetv2_imagenet.pth``;
  give a trained checkpoint for trained features). ``--save DIR`` keeps them as DIR/NAME.npy
  and DIR/NAME_cams.txt.

``--k 15 auto``: K = 15 (the paper) and the K that ``CALR.CLUSTER.K auto`` picks for that
set (``calr_plugin.labels.auto.suggest_settings``, what the recipes use).

    OMP_NUM_THREADS=1 python bench/knn_recall.py ../shared/data/cuhk01 ../shared/data/pku_reid74
    python bench/knn_recall.py feats/cuhk01/features.npy --k 15
    python bench/knn_recall.py ../shared/data/cuhk01 --weights output/real/cuhk01/model_final.pth
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIG = ROOT / "configs" / "CALR" / "cuhk01_mobilenetv2.yml"
DEFAULT_IMAGENET = ROOT / "output" / "weights" / "mobilenetv2_imagenet.pth"


def _read_cams(path):
    """(N,) int64 camera ids from a text file of one camera name per line (any strings)."""
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    return np.unique(np.asarray(names), return_inverse=True)[1].astype(np.int64)


def load_npy(path, cams_path=None):
    """(name, (N, D) float32 features, (N,) int64 cameras or None) of a feature file."""
    feats = np.load(path)
    if feats.ndim != 2:
        raise SystemExit(f"error: {path}: expected an (N, D) array, got shape {feats.shape}")
    cams = None
    # tools/extract_features.py writes DIR/features.npy + DIR/cams.txt; --save NAME.npy + NAME_cams.txt
    guess = Path(path).with_name("cams.txt" if Path(path).name == "features.npy" else Path(path).stem + "_cams.txt")
    if cams_path or guess.is_file():
        cams = _read_cams(cams_path or guess)
        if len(cams) != len(feats):
            raise SystemExit(f"error: {cams_path or guess}: {len(cams)} cameras for {len(feats)} features")
    name = Path(path).parent.name if Path(path).name == "features.npy" else Path(path).stem
    return name, np.ascontiguousarray(feats, dtype=np.float32), cams


def extract(folder, config, weights, engine):
    """(name, (N, D) float32 features, (N,) int64 cameras) of a dataset's training split.

    The recipe's model (eval mode), ``DATASETS.FOLDER`` = ``folder``; ``weights`` a checkpoint
    (MODEL.WEIGHTS) or "" for the recipe's ImageNet backbone. As tools/extract_features.py,
    but the images are kept in the split's order and cameras are the split's camera ids.
    """
    from fastreid.utils.checkpoint import Checkpointer

    from calr_plugin import CALRTrainer, load_config
    from calr_plugin.data.build import load_dataset
    from calr_plugin.engine.features import extract_features

    opts = ["DATASETS.FOLDER", str(folder), "MODEL.DEVICE", "cpu", "CALR.EXTRACT.ENGINE", engine]
    if weights:
        opts += ["MODEL.WEIGHTS", str(weights)]
    cfg = load_config(str(config), opts, freeze=False)
    pretrain = cfg.MODEL.BACKBONE.PRETRAIN_PATH
    if not weights and pretrain and not os.path.isfile(pretrain):
        raise SystemExit(f"error: {pretrain} is missing: python tools/convert_weights.py deep-sort-mobilenetv2 "
                         f"{pretrain}")
    cfg.CALR.ALIGN.NUM_CAMERAS = 0  # inference only: no camera classifier
    cfg.freeze()
    model = CALRTrainer.build_model(cfg)
    if weights:
        from calr_plugin.engine.checkpoint import check_head_matches

        check_head_matches(model, weights)
        Checkpointer(model).load(weights)
    items = []
    for name in cfg.DATASETS.NAMES:
        items += load_dataset(cfg, name).train
    items.sort(key=lambda it: it[0])
    paths = [it[0] for it in items]
    cams = np.unique(np.asarray([str(it[2]) for it in items]), return_inverse=True)[1].astype(np.int64)
    t0 = time.perf_counter()
    feats = extract_features(model, paths, cfg)
    print(f"# extracted {feats.shape[0]} x {feats.shape[1]} features of {folder} in "
          f"{time.perf_counter() - t0:.1f} s ({'weights ' + str(weights) if weights else 'ImageNet backbone'})",
          flush=True)
    return Path(folder).name, np.ascontiguousarray(feats, dtype=np.float32), cams


def recipe_defaults(config):
    """The CALR.CLUSTER kNN keys of the recipe (its defaults unless the recipe sets them)."""
    from calr_plugin import load_config

    c = load_config(str(config), check=False).CALR.CLUSTER
    return {
        "hnsw": dict(hnsw_m=c.HNSW_M, hnsw_ef_construction=c.HNSW_EF_CONSTRUCTION, hnsw_ef_search=c.HNSW_EF_SEARCH),
        "ivf": dict(ivf_nlist=c.IVF_NLIST, ivf_nprobe=c.IVF_NPROBE),
    }


def grid(defaults, n, full):
    """[(method, kwargs, is_default)] to measure: the defaults first, then a sweep around them."""
    from calr_plugin.labels.knn import ivf_nlist_for

    rows = [("exact", {}, True)]
    rows.append(("hnsw", defaults["hnsw"], True))
    rows.append(("ivf", defaults["ivf"], True))
    if not full:
        return rows
    h = defaults["hnsw"]
    for m, efc, ef in ((16, 24, 24), (32, 40, 32), (32, 64, 64)):
        kw = dict(hnsw_m=m, hnsw_ef_construction=efc, hnsw_ef_search=ef)
        if kw != h:
            rows.append(("hnsw", kw, False))
    auto_nlist = ivf_nlist_for(n, 0)
    old_nlist = ivf_nlist_for(n, int(4 * np.sqrt(n)))
    seen = {tuple(sorted(defaults["ivf"].items()))}
    for nlist in sorted({old_nlist, auto_nlist, max(1, auto_nlist // 2)}):
        for nprobe in sorted({1, 2, 4, 8, 16, max(1, nlist // 4), max(1, nlist // 2), nlist}):
            if nprobe > nlist:
                continue
            kw = dict(ivf_nlist=nlist, ivf_nprobe=nprobe)
            if tuple(sorted(kw.items())) not in seen:
                seen.add(tuple(sorted(kw.items())))
                rows.append(("ivf", kw, False))
    return rows


def _timed(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_set(name, feats, cams, ks, rows, repeat, seed):
    """Print one table per K for one feature set; return its rows as dicts."""
    from calr_plugin.labels import camera_centre, knn_recall, knn_search, l2_normalize
    from calr_plugin.labels.knn import ivf_nlist_for, ivf_nprobe_for

    views = {"raw": l2_normalize(feats)}
    if cams is not None:
        views["centred"] = camera_centre(feats, cams)
    n, d = feats.shape
    out = []
    for k in ks:
        k_label = str(k)
        if k == "auto":
            if cams is None:
                print(f"# {name}: --k auto needs cameras; skipped")
                continue
            from calr_plugin.labels.auto import suggest_settings

            k = int(suggest_settings(feats, cams, seed=seed).values["CALR.CLUSTER.K"])
            k_label = f"{k} (auto)"
        k = int(k)
        print(f"\n## {name}: N {n}, D {d}, C {len(np.unique(cams)) if cams is not None else '?'}, K {k_label}\n")
        print(f"| mode | params | recall@{k} raw | recall@{k} centred | seconds raw | seconds centred "
              f"| time vs exact |")
        print("|---|---|---|---|---|---|---|")
        exact = {}
        for method, kw, is_default in rows:
            res = {}
            for view, x in views.items():
                sec, (_, idx) = _timed(lambda: knn_search(x, k, method=method, use_gpu=False, normalize=False,
                                                          seed=seed, **kw), repeat)
                if method == "exact":
                    exact[view] = (sec, idx)
                res[view] = (knn_recall(idx, exact[view][1]), sec, sec / max(exact[view][0], 1e-9))
            shown = dict(kw)
            if method == "ivf":  # the lists knn_search actually builds and scans
                nl = ivf_nlist_for(n, kw["ivf_nlist"])
                shown = dict(nlist=nl, nprobe=ivf_nprobe_for(nl, kw["ivf_nprobe"]))
            elif method == "hnsw":
                shown = dict(M=kw["hnsw_m"], efC=kw["hnsw_ef_construction"], efS=max(kw["hnsw_ef_search"], k))
            params = (" ".join(f"{a}={b}" for a, b in shown.items()) or "-") + (" (default)" if is_default else "")
            cell = {v: res.get(v) for v in ("raw", "centred")}
            rec = [f"{c[0]:.3f}" if c else "-" for c in cell.values()]
            secs = [f"{c[1]:.4f}" if c else "-" for c in cell.values()]
            ratio = "/".join(f"{c[2]:.2f}" for c in cell.values() if c)
            print(f"| {method} | {params} | {rec[0]} | {rec[1]} | {secs[0]} | {secs[1]} | {ratio} |", flush=True)
            out.append(dict(set=name, k=k, method=method, params=params, default=is_default,
                            **{f"recall_{v}": c[0] for v, c in res.items()}))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help=".npy feature files or dataset folders (Market-1501 layout)")
    p.add_argument("--cams", help="camera file (one name per line) for a single .npy input")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="recipe: extraction model and kNN defaults")
    p.add_argument("--weights", default="", help="checkpoint to extract with (default: the ImageNet backbone)")
    p.add_argument("--engine", default="auto", help="CALR.EXTRACT.ENGINE for extraction")
    p.add_argument("--k", nargs="+", default=["15", "auto"], help="K values; 'auto' = the recipes' auto K")
    p.add_argument("--repeat", type=int, default=3, help="timing: best of this many calls")
    p.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    p.add_argument("--defaults-only", action="store_true", help="measure the defaults only (no sweep)")
    p.add_argument("--save", help="folder to keep extracted features in (NAME.npy, NAME_cams.txt)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    ks = [k if k == "auto" else int(k) for k in args.k]
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, faiss {faiss.__version__}, {args.threads} faiss thread(s); "
          f"config {os.path.relpath(args.config, ROOT)}")
    sets = []
    for item in args.inputs:
        if item.endswith(".npy"):
            sets.append(load_npy(item, args.cams))
        elif os.path.isdir(item):
            sets.append(extract(item, args.config, args.weights, args.engine))
            if args.save:
                from calr_plugin.utils.atomic import atomic_write_bytes, atomic_write_text
                import io

                os.makedirs(args.save, exist_ok=True)
                name, feats, cams = sets[-1]
                buf = io.BytesIO()
                np.save(buf, feats)
                atomic_write_bytes(os.path.join(args.save, f"{name}.npy"), buf.getvalue())
                atomic_write_text(os.path.join(args.save, f"{name}_cams.txt"), "".join(f"{c}\n" for c in cams))
        else:
            raise SystemExit(f"error: {item}: neither an .npy feature file nor a dataset folder")
    defaults = recipe_defaults(args.config)
    for name, feats, cams in sets:
        bench_set(name, feats, cams, ks, grid(defaults, len(feats), not args.defaults_only), args.repeat, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
