#!/usr/bin/env python
"""Every ``auto`` estimate against the truth, on a grid of synthetic regimes and the real sets.

    python bench/auto_grid.py                       # the whole grid and every real set
    python bench/auto_grid.py --cells C2_m5_all --real cuhk01

Synthetic cells (``C<C>_m<m>_<all|some>``): C cameras in {2, 3, 6, 8}, m images per person
and camera in {1, 2, 5, 20}, each of 30 people seen by every camera ("all") or by a random
2..C of them ("some"), rendered by ``data.synthetic_render.render_image`` (the demo set's renderer,
its seed 0) into ``--cache/<cell>/`` as JPEGs. Real sets: the training splits of
``../shared/data/`` (cameras from the Market names). Features: the untrained offline
ImageNet MobileNetV2 at 128x64 (``configs/CALR/cuhk01_mobilenetv2.yml``, torch engine),
what ``auto`` reads at the start of a run; cached as ``--cache/<set>.npz``.

The estimates come from ``labels.structure.estimate_structure`` on the features and the
cameras (given, or inferred with ``--infer``); person ids are read only to score them. The
last columns cluster the untrained features as stage 2's first epoch would with the
``auto`` values (``labels.auto.suggest_settings``, batch 32, camera-centred, no
refinement): the outlier share and the pairwise precision / recall against the ids. The truth:
m = images over (person, camera) cells; cameras per person = cells over people; images per
person = images over people. Cameras counted for the truth hold >= 5 % of the images.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REAL = {"cuhk01": "cuhk01", "pku": "pku_reid74", "viper": "viper", "prid": "prid", "caviar": "caviar",
        "grid": "grid"}
CAMERAS, MS, COVERAGE = (2, 3, 6, 8), (1, 2, 5, 20), ("all", "some")
PEOPLE = 30


def cells():
    return [f"C{c}_m{m}_{cov}" for c in CAMERAS for m in MS for cov in COVERAGE]


def _parse_cell(name):
    c, m, cov = name.split("_")
    return int(c[1:]), int(m[1:]), cov


def render_cell(name, out_dir, seed=0):
    """Write the cell's JPEGs (Market names) into out_dir; returns their (path, pid, cam) rows."""
    from calr_plugin.data.synthetic import file_name
    from calr_plugin.data.synthetic_render import SyntheticSpec, render_image

    c, m, cov = _parse_cell(name)
    spec = SyntheticSpec(num_train_ids=PEOPLE, num_test_ids=1, num_cameras=max(CAMERAS), seed=0)
    rng = np.random.default_rng([seed, c, m, cov == "all"])
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for pid in range(1, PEOPLE + 1):
        seen = range(1, c + 1) if cov == "all" else sorted(rng.choice(np.arange(1, c + 1), rng.integers(2, c + 1),
                                                                      replace=False))
        for cam in seen:
            for k in range(m):
                path = os.path.join(out_dir, file_name(pid, cam, k))
                if not os.path.isfile(path):
                    render_image(spec, pid, int(cam), k).save(path, quality=spec.jpeg_quality)
                rows.append((path, pid, int(cam)))
    return rows


def real_rows(name):
    """(path, pid, cam) rows of a real set's training split (Market names)."""
    from calr_plugin.data.synthetic import list_split

    root = os.path.join(ROOT, "..", "shared", "data", REAL[name])
    if not os.path.isdir(os.path.join(root, "bounding_box_train")):
        raise SystemExit(f"{root}/bounding_box_train: not found (the real sets live in ../shared/data)")
    return list_split(root, "bounding_box_train")


_MODEL = {}


def features(name, cache):
    """(N, D) untrained features, (N,) given cameras, (N,) person ids (scoring only)."""
    path = os.path.join(cache, f"{name}.npz")
    if os.path.isfile(path):
        z = np.load(path)
        return z["feats"], z["cams"], z["pids"]
    rows = real_rows(name) if name in REAL else render_cell(name, os.path.join(cache, name))
    if not _MODEL:
        from calr_plugin import CALRTrainer, load_config

        cfg = load_config(os.path.join(ROOT, "configs", "CALR", "cuhk01_mobilenetv2.yml"),
                          ["CALR.EXTRACT.ENGINE", "torch"], freeze=False)
        cfg.CALR.ALIGN.NUM_CAMERAS = 0
        cfg.freeze()
        _MODEL.update(cfg=cfg, model=CALRTrainer.build_model(cfg))
    from calr_plugin.engine.features import extract_features

    feats = extract_features(_MODEL["model"], [r[0] for r in rows], _MODEL["cfg"], desc=name)
    cams = np.array([r[2] for r in rows]) - 1
    pids = np.array([r[1] for r in rows])
    np.savez(path, feats=feats.astype(np.float32), cams=cams, pids=pids)
    return feats, cams, pids


def truth(cams, pids, min_share=0.05):
    """The numbers the estimates are scored against (read from the ids)."""
    n = len(cams)
    cells_ = len(set(zip(pids.tolist(), cams.tolist())))
    people = len(np.unique(pids))
    counts = np.bincount(cams)
    return {"m": n / cells_, "cams_per_person": cells_ / people, "images_per_person": n / people,
            "num_cameras": int((counts >= min_share * n).sum())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="*", default=None, help="synthetic cells (default: all 32)")
    p.add_argument("--real", nargs="*", default=None, choices=sorted(REAL), help="real sets (default: all)")
    p.add_argument("--cache", default=os.path.join(ROOT, "output", "auto_grid"))
    p.add_argument("--features-only", action="store_true", help="only extract and cache the features")
    p.add_argument("--infer", action="store_true", help="estimate on inferred cameras, not the given ones")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import calr_plugin  # noqa: F401  (shims, registries)
    from calr_plugin.labels.cameras import infer_cameras
    from calr_plugin.labels.pipeline import LabelParams, stage2_labels
    from calr_plugin.labels.metrics import cluster_metrics

    if not args.features_only:
        from calr_plugin.labels.auto import suggest_settings

    names = (cells() if args.cells is None else args.cells) + (sorted(REAL) if args.real is None else args.real)
    os.makedirs(args.cache, exist_ok=True)
    if not args.features_only:
        print("| set | N | C true / est | m true / est | cams per person true / est | "
              "images per person true / est | K / MIN_SIZE / NUM_INSTANCE | epoch-0 outliers | "
              "epoch-0 precision / recall | notes | s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    worst = {"m": 0.0, "cams_per_person": 0.0, "images_per_person": 0.0}
    cams_exact = 0
    for name in names:
        feats, cams, pids = features(name, args.cache)
        if args.features_only:
            print(f"{name}: {feats.shape}", flush=True)
            continue
        t = time.time()
        tr = truth(cams, pids)
        use = cams
        c_est = tr["num_cameras"]
        notes = []
        if args.infer:
            r = infer_cameras(feats, seed=args.seed, min_share=0.01)  # the DATASETS.MIN_CAMERA_SHARE default
            use, c_est = r.cams, r.num_cameras
        auto = suggest_settings(feats, use, 32, 32, camera_centre_features=True, seed=args.seed)
        s, v = auto.structure, auto.values
        if args.infer:
            cams_exact += c_est == tr["num_cameras"]
        notes += s.warnings
        params = LabelParams(k=v["CALR.CLUSTER.K"], min_sim=v["CALR.CLUSTER.MIN_SIM"],
                             min_size=v["CALR.CLUSTER.MIN_SIZE"], camera_centre=True, refine_enabled=False,
                             seed=args.seed)
        labels = stage2_labels(feats, use, np.zeros(len(feats), np.int64), 0, 1, params).refined_labels
        q = cluster_metrics(labels, pids)
        outliers = float(np.mean(labels < 0))
        worst["outliers"] = max(worst.get("outliers", 0.0), outliers)
        row = [f"{name}", f"{len(feats)}", f"{tr['num_cameras']} / {c_est}"]
        for key, est in (("m", s.m), ("cams_per_person", s.cams_per_person),
                         ("images_per_person", s.images_per_person)):
            err = est / tr[key] - 1
            worst[key] = max(worst[key], abs(err))
            row.append(f"{tr[key]:.2f} / {est:.2f} ({err:+.0%})")
        row += [f"{v['CALR.CLUSTER.K']} / {v['CALR.CLUSTER.MIN_SIZE']} / {v['DATALOADER.NUM_INSTANCE']}",
                f"{outliers:.0%}", f"{q['precision']:.2f} / {q['recall']:.2f}",
                "; ".join(notes) or "-", f"{time.time() - t:.1f}"]
        print("| " + " | ".join(row) + " |", flush=True)
    if not args.features_only:
        print(f"\nlargest relative error: m {worst['m']:.0%}, cameras per person {worst['cams_per_person']:.0%}, "
              f"images per person {worst['images_per_person']:.0%} (bound 35 %); "
              f"largest epoch-0 outlier share {worst['outliers']:.0%}"
              + (f"; camera count exact on {cams_exact} of {len(names)}" if args.infer else ""))


if __name__ == "__main__":
    sys.exit(main())
