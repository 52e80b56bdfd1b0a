"""Benchmark of the CALR pseudo-label step (not a test).

Shape shorthand: N images, D feature dims, C cameras, k neighbours.

Data: synthetic features shaped like MSMT17 train (N = 32,621, D = 2048, 15 cameras, 1,041
ids): f = normalise(id centre + camera offset + (id, camera) appearance + noise), float32,
so images cluster by camera as well as by id; every id is seen by 2-6 cameras. Fake stage-1
labels are the (id, camera) cells with 15 % of cells merged and 15 % of images split off.

Method: the parent writes the inputs to ``--workdir`` and runs every measured step in a fresh
child process (``--child STEP``) that first loads its inputs, then resets the peak-RSS
counter (``echo 5 > /proc/self/clear_refs``), runs the step once, and reports wall time
(``time.perf_counter``) and peak RSS minus the RSS before the step (``VmHWM - VmRSS`` from
``/proc/self/status``). Fresh processes keep memory freed by an earlier step from hiding a
later step's peak, and unlike tracemalloc RSS includes faiss's and infomap's C++ allocations.
The floor is the exact faiss kNN search alone, measured in the same run.

    python bench/label_step.py                       # MSMT17-sized stage-2 step
    python bench/label_step.py --intra               # stage-1 step on one 20,000-image camera
    python bench/label_step.py --scale               # N = 1,000,000, D = 256, HNSW 32/100/96
    python bench/label_step.py --fast hnsw           # exact vs the fast mode, one table

``--fast METHOD`` runs the whole stage-2 step twice per round, with exact kNN and with METHOD
(``--hnsw M EFC EF`` / ``--ivf NLIST NPROBE`` set it), and prints seconds, the ratio,
recall@15 of the fast graph over all N rows against the exact one, cluster counts and the
pairwise F of the fast labels against the exact labels (global and refined).
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import types
from importlib.util import find_spec
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Load calr_plugin.labels without running calr_plugin/__init__ (torch + fastreid, ~5-10 s).
if "calr_plugin" not in sys.modules:
    sys.path.insert(0, str(ROOT))
    _stub = types.ModuleType("calr_plugin")
    _stub.__path__ = list(find_spec("calr_plugin").submodule_search_locations)
    sys.modules["calr_plugin"] = _stub

from calr_plugin.labels import (  # noqa: E402
    LabelParams, cluster_camera, cluster_metrics, cluster_weights, decay_p, infomap_cluster,
    knn_recall, knn_search, label_agreement, pivot_scores, refine_labels, relabel_contiguous, select_pivots,
    stage2_labels,
)
from calr_plugin.labels.intra_camera import num_local_clusters  # noqa: E402


def _status_kib(key):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))


def make_features(n, d, n_cams, n_ids, seed=0, chunk=8192):
    """Synthetic (N, D) float32 unit features, (N,) cams, (N,) ids."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(d)
    centres = rng.standard_normal((n_ids, d), dtype=np.float32) * scale
    offsets = rng.standard_normal((n_cams, d), dtype=np.float32) * scale
    ids = np.sort(rng.integers(0, n_ids, n))
    n_views = rng.integers(2, min(6, n_cams) + 1, n_ids)
    view_cams = np.argsort(rng.random((n_ids, n_cams)), axis=1)
    cams = view_cams[ids, (rng.random(n) * n_views[ids]).astype(np.int64)]
    _, cell = np.unique(ids * n_cams + cams, return_inverse=True)
    appearance = rng.standard_normal((cell.max() + 1, d), dtype=np.float32) * scale
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        block = centres[ids[s:e]] + 1.2 * offsets[cams[s:e]] + 0.6 * appearance[cell[s:e]]
        block += 0.6 * scale * rng.standard_normal((e - s, d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[s:e] = block
    return x, cams.astype(np.int64), ids.astype(np.int64)


def fake_local_labels(ids, cams, seed=0, merge=0.15, split=0.15):
    """Stage-1-like labels: (id, camera) cells, some merged with another cell of the camera,
    some images split off into singletons."""
    rng = np.random.default_rng(seed)
    _, cell = np.unique(ids * (cams.max() + 1) + cams, return_inverse=True)
    n_cells = cell.max() + 1
    cell_cam = np.zeros(n_cells, dtype=np.int64)
    cell_cam[cell] = cams
    target = np.arange(n_cells)
    for c in np.unique(cams):  # one pass per camera, not per image
        members = np.flatnonzero(cell_cam == c)
        pick = members[rng.random(len(members)) < merge]
        target[pick] = rng.choice(members, len(pick))
    local = target[cell]
    fresh = rng.random(len(ids)) < split
    local[fresh] = n_cells + np.arange(fresh.sum())
    return local


# ----------------------------------------------------------------------------------- child
def child(step, w, opts):
    ld = lambda name: np.load(w / f"{name}.npy")  # noqa: E731
    knn_kwargs = opts.get("knn_kwargs", {})
    params = LabelParams.paper(knn_method=opts["knn_method"], **knn_kwargs)
    tag = opts.get("tag", "")
    info = {}
    if step in ("knn_floor", "knn"):
        x = ld("x")
        if step == "knn_floor":
            run = lambda: knn_search(x, params.k, method="exact", seed=opts["seed"])  # noqa: E731
        else:
            run = lambda: knn_search(x, params.k, method=opts["knn_method"], seed=opts["seed"],  # noqa: E731
                                     **knn_kwargs)
    elif step == "infomap":
        sims, idx = ld("sims"), ld("idx")
        run = lambda: infomap_cluster(sims, idx, params.min_sim, params.min_size, seed=opts["seed"])  # noqa: E731
    elif step == "pivots":
        x, sims, idx, glob = ld("x"), ld("sims"), ld("idx"), ld("global")

        def run():
            scores, _ = pivot_scores(sims, idx, x, params.pivot_mean_dist, params.pivot_neighbours)
            return select_pivots(scores, glob, params.pivot_rule)
    elif step == "refine":
        glob, local, cams, piv = ld("global"), ld("local"), ld("cams"), ld("pivots")

        def run():
            refined, stats = refine_labels(glob, local, cams, piv, opts["p"], params.refine_mode,
                                           opts["seed"])
            return relabel_contiguous(refined), stats
    elif step == "weights":
        refined, cams = ld("refined"), ld("cams")
        run = lambda: cluster_weights(refined, cams)  # noqa: E731
    elif step == "metrics":
        glob, refined, ids = ld("global"), ld("refined"), ld("ids")
        run = lambda: (cluster_metrics(glob, ids), cluster_metrics(refined, ids))  # noqa: E731
    elif step == "stage2":
        x, cams, local = ld("x"), ld("cams"), ld("local")
        run = lambda: stage2_labels(x, cams, local, opts["epoch"], opts["max_epoch"], params)  # noqa: E731
    elif step == "recall":
        import faiss
        x, idx = ld("x"), ld("idx")
        q = np.sort(np.random.default_rng(opts["seed"]).choice(len(x), opts["recall_queries"], replace=False))

        def run():
            return faiss.knn(x[q], x, params.k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    elif step in ("intra", "intra_sil"):
        x = ld("x_cam")
        k_c = num_local_clusters(len(x), 0.2)
        run = lambda: cluster_camera(x, k_c, silhouette=step == "intra_sil")  # noqa: E731
    else:
        raise SystemExit(f"unknown child step {step}")

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss0 = _status_kib("VmRSS")
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    info.update(seconds=seconds, peak_mib=(_status_kib("VmHWM") - rss0) / 1024,
                base_mib=rss0 / 1024, hwm_mib=_status_kib("VmHWM") / 1024)

    if step in ("knn_floor", "knn"):
        if step == opts["save_from"]:
            np.save(w / f"sims{tag}.npy", out[0])
            np.save(w / f"idx{tag}.npy", out[1])
    elif step == "infomap":
        np.save(w / "global.npy", out.labels)
        info.update(kept_edge_fraction=out.kept_edge_fraction, num_clusters=out.num_clusters)
    elif step == "pivots":
        np.save(w / "pivots.npy", out)
        info.update(num_pivots=int(out.sum()))
    elif step == "refine":
        np.save(w / "refined.npy", out[0])
        info.update(out[1])
    elif step == "metrics":
        info.update(global_metrics=out[0], refined_metrics=out[1])
    elif step == "stage2":
        info.update(timings=out.timings, p=out.p, discard_ratio=out.discard_ratio,
                    kept_edge_fraction=out.kept_edge_fraction, num_clusters=out.num_clusters)
        np.save(w / f"global{tag}.npy", out.global_labels)
        np.save(w / f"refined{tag}.npy", out.refined_labels)
    elif step == "recall":
        q_idx = ld("idx")[np.sort(np.random.default_rng(opts["seed"]).choice(
            len(x), opts["recall_queries"], replace=False))]
        info.update(recall=knn_recall(q_idx, out))
    elif step in ("intra", "intra_sil"):
        info.update(silhouette=out[1], num_clusters=int(out[0].max()) + 1)
        ids = ld("ids_cam")
        m = cluster_metrics(out[0], ids)
        info.update(precision=m["precision"], recall=m["recall"])
    print("RESULT " + json.dumps(info, default=float))


def run_child(step, w, opts):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--workdir", str(w),
           "--child-opts", json.dumps(opts)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {step} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    print(f"  {step}: {res['seconds']:.2f} s, +{res['peak_mib']:.0f} MiB peak "
          f"(process peak {res['hwm_mib']:.0f} MiB)", flush=True)
    return res


# ---------------------------------------------------------------------------------- parent
def table(rows, floor=None):
    head = ("| step | seconds | " + ("x kNN floor | " if floor else "")
            + "peak RSS increase (MiB) | process peak RSS (MiB) |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in rows:
        ratio = f"{r['seconds'] / floor:.3f} | " if floor else ""
        out.append(f"| {name} | {r['seconds']:.2f} | {ratio}{r['peak_mib']:.0f} | {r['hwm_mib']:.0f} |")
    return "\n".join(out)


def write_inputs(args, w):
    """Writes the synthetic features, cameras, ids and fake local labels to w; returns the
    feature matrix's size in MiB (the children load them, so the parent drops its copy)."""
    x, cams, ids = make_features(args.n, args.d, args.cams, args.ids, args.seed)
    for name, arr in (("x", x), ("cams", cams), ("ids", ids), ("local", fake_local_labels(ids, cams, args.seed))):
        np.save(w / f"{name}.npy", arr)
    feat_mib = x.nbytes / 2**20
    print(f"features ({args.n}, {args.d}) float32 = {feat_mib:.0f} MiB", flush=True)
    return feat_mib


def parent_stage2(args, w, opts):
    feat_mib = write_inputs(args, w)
    steps = [("kNN floor: exact faiss search alone", "knn_floor")]
    if args.knn_method != "exact":
        steps.append((f"kNN {args.knn_method}", "knn"))
    steps += [("edges + Infomap", "infomap"), ("pivots (Eq. 4 + selection)", "pivots"),
              ("refinement (Eq. 5) + relabel", "refine"), ("weights (Eq. 6)", "weights"),
              ("metrics (global + refined)", "metrics"), ("whole stage-2 step (stage2_labels)", "stage2")]
    rows = [(name, run_child(step, w, opts)) for name, step in steps]
    res = dict((step, r) for (_, r), (_, step) in zip(rows, steps))
    # Other jobs on a 2-core machine make single timings noisy: alternate floor and whole
    # step --repeat times and keep the fastest run of each (all runs are printed above).
    for _ in range(args.repeat - 1):
        for step in ("knn_floor", "stage2"):
            again = run_child(step, w, opts)
            if again["seconds"] < res[step]["seconds"]:
                res[step].update(again)
    floor = res["knn_floor"]["seconds"]
    whole = res["stage2"]
    print()
    print(table(rows, floor))
    print(f"\nwhole step / kNN floor = {whole['seconds'] / floor:.3f} (target <= 1.3); the non-kNN part of "
          f"the whole step is {whole['seconds'] - whole['timings']['knn']:.2f} s = "
          f"{(whole['seconds'] - whole['timings']['knn']) / floor:.3f} x floor")
    print(f"whole-step peak RSS increase = {whole['peak_mib']:.0f} MiB = "
          f"{whole['peak_mib'] / feat_mib:.2f} x the {feat_mib:.0f} MiB feature matrix (target <= 2); "
          f"process peak incl. features and libraries {whole['hwm_mib']:.0f} MiB")
    print("stage2_labels timings:", json.dumps({k: round(v, 3) for k, v in whole["timings"].items()}))
    print(f"kept_edge_fraction {res['infomap']['kept_edge_fraction']:.3f}, global clusters "
          f"{res['infomap']['num_clusters']}, pivots {res['pivots']['num_pivots']}, p {opts['p']:.3f}, "
          f"discard_ratio {res['refine']['discard_ratio']:.3f}")
    for key in ("global_metrics", "refined_metrics"):
        print(f"{key}:", json.dumps({k: round(v, 4) for k, v in res["metrics"][key].items()}))


def parent_compare(args, w, opts):
    """Exact against ``args.knn_method`` on the same inputs: one table (see the docstring)."""
    write_inputs(args, w)
    exact = dict(opts, knn_method="exact", knn_kwargs={}, tag="_exact", save_from="knn_floor")
    fast = dict(opts, tag="_fast", save_from="knn")
    res = {"knn_exact": run_child("knn_floor", w, exact), "knn_fast": run_child("knn", w, fast)}
    for r in range(args.repeat):  # alternate, keep the fastest whole step of each
        for name, o in (("exact", exact), ("fast", fast)):
            again = run_child("stage2", w, o)
            if name not in res or again["seconds"] < res[name]["seconds"]:
                res[name] = again
    idx_e, idx_f = np.load(w / "idx_exact.npy"), np.load(w / "idx_fast.npy")
    recall = knn_recall(idx_f, idx_e)
    labels = {name: (np.load(w / f"global_{name}.npy"), np.load(w / f"refined_{name}.npy"))
              for name in ("exact", "fast")}
    ids = np.load(w / "ids.npy")
    kw = ", ".join(f"{k} {v}" for k, v in opts["knn_kwargs"].items())
    print("\n| kNN | kNN seconds | whole step seconds | x exact step | recall@15 (all N) | global clusters | "
          "refined clusters | F global vs exact | F refined vs exact | F global vs ids | F refined vs ids |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, title, knn in (("exact", "exact", "knn_exact"), ("fast", f"{args.knn_method} ({kw})", "knn_fast")):
        g, rf = labels[name]
        print(f"| {title} | {res[knn]['seconds']:.2f} | {res[name]['seconds']:.2f} | "
              f"{res[name]['seconds'] / res['exact']['seconds']:.3f} | "
              f"{1.0 if name == 'exact' else recall:.4f} | {g.max() + 1} | {rf.max() + 1} | "
              f"{label_agreement(g, labels['exact'][0]):.4f} | {label_agreement(rf, labels['exact'][1]):.4f} | "
              f"{cluster_metrics(g, ids)['fscore']:.4f} | {cluster_metrics(rf, ids)['fscore']:.4f} |")
    clusters = (labels["fast"][0].max() + 1) / (labels["exact"][0].max() + 1) - 1
    print(f"\nfast whole step {res['fast']['seconds']:.2f} s (target <= 10 s), recall@15 {recall:.4f} "
          f"(target >= 0.95), global clusters {clusters:+.1%} of exact (target within 2 %), pairwise F of the "
          f"global labels vs exact {label_agreement(labels['fast'][0], labels['exact'][0]):.4f}")


def parent_scale(args, w, opts):
    feat_mib = write_inputs(args, w)
    opts["save_from"] = "knn"
    steps = [(f"kNN {args.knn_method} alone", "knn"),
             (f"exact kNN of {args.recall_queries} sample queries (recall reference)", "recall"),
             ("edges + Infomap", "infomap"), ("pivots (Eq. 4 + selection)", "pivots"),
             ("refinement (Eq. 5) + relabel", "refine"), ("weights (Eq. 6)", "weights"),
             ("metrics (global + refined)", "metrics")]
    rows = [(name, run_child(step, w, opts)) for name, step in steps]
    res = dict((step, r) for (_, r), (_, step) in zip(rows, steps))
    total = sum(res[s]["seconds"] for s in ("knn", "infomap", "pivots", "refine", "weights"))
    peak = max(res[s]["hwm_mib"] for s in ("knn", "infomap", "pivots", "refine", "weights"))
    print()
    print(table(rows))
    print(f"\nrecall@15 of {args.knn_method} vs exact on {args.recall_queries} queries: {res['recall']['recall']:.4f}")
    print(f"stage-2 step (kNN + Infomap + pivots + refinement + weights): {total:.0f} s (target < 900 s); "
          f"largest process peak RSS {peak / 1024:.2f} GiB (target < 8 GiB; features {feat_mib / 1024:.2f} GiB)")
    print(f"kept_edge_fraction {res['infomap']['kept_edge_fraction']:.3f}, global clusters "
          f"{res['infomap']['num_clusters']}, discard_ratio {res['refine']['discard_ratio']:.3f}")
    for key in ("global_metrics", "refined_metrics"):
        print(f"{key}:", json.dumps({k: round(v, 4) for k, v in res["metrics"][key].items()}))


def parent_intra(args, w, opts):
    rng = np.random.default_rng(args.seed)
    n, d = args.n, args.d
    n_ids = max(1, n // 8)
    centres = rng.standard_normal((n_ids, d), dtype=np.float32)
    ids = rng.integers(0, n_ids, n)
    x = centres[ids] + 1.2 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(w / "x_cam.npy", x)
    np.save(w / "ids_cam.npy", ids)
    print(f"one camera: features ({n}, {d}) float32 = {x.nbytes / 2**20:.0f} MiB, ~8 images per id, "
          f"K_c = {num_local_clusters(n, 0.2)}", flush=True)
    del x
    rows = [("Jaccard (k1 15, k2 4) + average linkage", run_child("intra", w, opts)),
            ("same + silhouette score", run_child("intra_sil", w, opts))]
    print()
    print(table(rows))
    r = rows[1][1]
    print(f"\nsilhouette {r['silhouette']:.3f}; labels vs ids: pairwise precision {r['precision']:.3f}, "
          f"recall {r['recall']:.3f}; documented estimate 8 * N_c^2 bytes = {8 * n * n / 2**30:.2f} GiB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="images (32621; 20000 with --intra; 1e6 with --scale)")
    ap.add_argument("--d", type=int, default=None, help="feature dims (2048; 256 with --scale)")
    ap.add_argument("--cams", type=int, default=15)
    ap.add_argument("--ids", type=int, default=None, help="ids (1041; N/30 with --scale)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--knn-method", default=None, choices=["exact", "hnsw", "ivf"],
                    help="kNN used by the step (exact; hnsw with --scale)")
    ap.add_argument("--epoch", type=int, default=0, help="epoch for the decay of p (cosine, E=50)")
    ap.add_argument("--scale", action="store_true", help="N=1e6, D=256, approximate kNN")
    ap.add_argument("--recall-queries", type=int, default=2000)
    ap.add_argument("--intra", action="store_true", help="stage-1 clustering of one camera")
    ap.add_argument("--fast", default=None, choices=["hnsw", "ivf"],
                    help="compare the whole stage-2 step with exact kNN and with this method")
    ap.add_argument("--hnsw", type=int, nargs=3, default=None, metavar=("M", "EFC", "EF"),
                    help="HNSW degree, efConstruction, efSearch (default 32 100 96 with --scale, else the config's 32 24 24)")
    ap.add_argument("--ivf", type=int, nargs=2, default=None, metavar=("NLIST", "NPROBE"),
                    help="IVF lists (0 = 4 sqrt(N)) and lists probed")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the floor and whole step (min is kept)")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / "out" / "label_step"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-opts", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    w = Path(args.workdir)
    if args.child:
        return child(args.child, w, json.loads(args.child_opts))
    if args.scale:
        args.n, args.d = args.n or 1_000_000, args.d or 256
        args.ids = args.ids or args.n // 30
        args.knn_method = args.knn_method or "hnsw"
    else:
        args.n = args.n or (20000 if args.intra else 32621)
        args.d = args.d or 2048
        args.ids = args.ids or 1041
        args.knn_method = args.fast or args.knn_method or "exact"
    w.mkdir(parents=True, exist_ok=True)
    import faiss
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
          f"faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads, {faiss.get_num_gpus()} GPUs), "
          f"numpy {np.__version__}")
    print("command: python bench/label_step.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"args: { {k: v for k, v in vars(args).items() if not k.startswith('child')} }", flush=True)
    p = decay_p("cosine", args.epoch, 50, 0.75)
    knn_kwargs = {}
    if args.knn_method == "hnsw":
        # Explicit, so the kNN child and the whole-step child build the same graph: --scale uses
        # 32/100/96 (recall@15 0.967 at 1M in 511 s, docs/SCALING.md), the comparison the
        # config's fast mode (LabelParams' defaults, 32/24/24).
        fast = LabelParams()
        m, efc, ef = args.hnsw or ((32, 100, 96) if args.scale else
                                   (fast.hnsw_m, fast.hnsw_ef_construction, fast.hnsw_ef_search))
        knn_kwargs.update(hnsw_m=m, hnsw_ef_construction=efc, hnsw_ef_search=ef)
    if args.ivf:
        knn_kwargs.update(ivf_nlist=args.ivf[0], ivf_nprobe=args.ivf[1])
    opts = dict(knn_method=args.knn_method, knn_kwargs=knn_kwargs, seed=args.seed, epoch=args.epoch, max_epoch=50, p=p,
                recall_queries=args.recall_queries, save_from="knn_floor" if args.knn_method == "exact" else "knn")
    t0 = time.perf_counter()
    if args.intra:
        parent_intra(args, w, opts)
    elif args.scale:
        parent_scale(args, w, opts)
    elif args.fast:
        parent_compare(args, w, opts)
    else:
        parent_stage2(args, w, opts)
    print(f"benchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
