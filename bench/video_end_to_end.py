#!/usr/bin/env python
"""Benchmark: CALR trained from generated camera video, with and without tracklets (issue #24).

Site A (training, no labels read): ``camera_network(3, 20, seed=--site)``, 240 frames of
640x360, cut with ``tools/video_to_crops.py`` from its jittered detections. Site B (test,
other people: ids 2001-2020, its own trajectories): cut the same way and written as A's
labeled split with ``tools/video_test_split.py`` (MOT ground truth; a crop leaves the split
when it matches no true box or is not its tracklet's majority person).

Each seed runs ``tools/train_net.py --config-file --config`` on A's folder twice: without
tracklets (the tracklet folders are plain sub-folders) and with ``DATASETS.TRACKLETS folder``
(must-links, and cannot-links between tracklets seen at the same time). Printed per run and
as mean +- sd over seeds: the final mAP / Rank-1 on B, and the stage-1 local labels
(``stage1/local_labels.npz``) against the true people (pairwise, within each camera; the
ids come from the crops' overlap with the true boxes and are read for this report only).

    python bench/video_end_to_end.py --out output/video_e2e --seeds 1 2 3 [--jobs 2] [--arms with] [--tag _k49 CALR.CLUSTER.K 49]

Site B's split is small (38 queries, 20 people): one run's mAP there moves by 10 from one
epoch to the next. ``--wide-test N`` (default 3) also scores each run's ``model_final.pth``
(and the untrained start) on a wider split: B's and N more sites' (generator seeds
site + 1001.., ids 3001.., 4001.., ...), merged into ``OUT/test_wide`` (125 queries, 4502
gallery crops, 75 people with N = 3). 0 = B only.

A finished run (its ``wall.json``) is read, not rerun. ``--jobs 2`` runs two trainings at
once with one thread each (on 2 cores, two default-thread runs fight for the cores).
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from compare_runs import final_metrics  # noqa: E402
from recorded_run import recorded_run  # noqa: E402

ARMS = {"without tracklets": [], "with tracklets": ["DATASETS.TRACKLETS", "folder"]}


def make_site(out, seed, first_pid):
    """Generated video of one site, cut into crops; returns the crops folder."""
    from calr_plugin.data.synthetic_video import camera_network, write_network

    crops = os.path.join(out, "crops")
    if not os.path.isfile(os.path.join(crops, "crops.csv")):
        specs = camera_network(3, 20, seed=seed, num_frames=240, width=640, height=360, speed=(0.006, 0.012),
                               first_pid=first_pid)
        write_network(specs, out)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "video_to_crops.py"), "--videos",
                        os.path.join(out, "videos"), "--dets", os.path.join(out, "dets"), "--out", crops],
                       check=True, capture_output=True)
    return crops


def true_ids(site):
    """{crops.csv path: true person id or -1} of a generated site (report only)."""
    from calr_plugin.data.tracklets import true_people
    from calr_plugin.data.video_io import read_mot

    with open(os.path.join(site, "crops", "crops.csv")) as f:
        rows = list(csv.DictReader(f))
    gt_of = {c: read_mot(os.path.join(site, "gt", f"{c}.txt")) for c in {r["camera"] for r in rows}}
    return dict(zip((r["path"] for r in rows), true_people(rows, gt_of).tolist()))


def local_quality(run, ids):
    """Stage-1 labels of a run against the true people, within each camera (crops of nobody left out)."""
    from calr_plugin.labels import cluster_metrics

    saved = np.load(os.path.join(run, "stage1", "local_labels.npz"))
    by_suffix = {p.split("/", 1)[1]: pid for p, pid in ids.items()}  # "train/<cam>/<t>/<f>.jpg" -> "<cam>/..."
    pid = np.array([by_suffix[str(k)] for k in saved["keys"]])  # keys: "<cam>/<tracklet>/<frame>.jpg"
    cams = np.array([str(k).split("/")[0] for k in saved["keys"]])
    keep = pid >= 0
    m = cluster_metrics(saved["labels"][keep], pid[keep], np.unique(cams[keep], return_inverse=True)[1],
                        within_camera=True)
    return {k: float(m[k]) for k in ("precision", "recall", "fscore", "num_clusters")}


def wide_test(args, train_folder):
    """OUT/test_wide: site B's split (in A's crops folder) and --wide-test more sites' splits."""
    dest = os.path.join(args.out, "test_wide")
    if os.path.isfile(os.path.join(dest, "complete")):
        return dest
    sources = [train_folder]
    for i in range(1, args.wide_test + 1):
        site = os.path.join(args.out, f"site_wide{i}")
        crops = make_site(site, args.site + 1000 + i, 2001 + 1000 * i)
        if not os.path.isdir(os.path.join(crops, "query")):
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "video_test_split.py"), "--crops", crops,
                            "--gt", os.path.join(site, "gt"), "--out", crops], check=True)
        sources.append(crops)
    for split in ("query", "bounding_box_test"):  # the sites' ids are disjoint: names never clash
        os.makedirs(os.path.join(dest, split), exist_ok=True)
        for src in sources:
            for name in os.listdir(os.path.join(src, split)):
                shutil.copy(os.path.join(src, split, name), os.path.join(dest, split, name))
    open(os.path.join(dest, "complete"), "w").close()
    return dest


def wide_map(args, wide, out, weights, threads):
    """mAP on the wide split of a model (weights None: the untrained start), kept in ``out``."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", args.config, "--eval-only",
           "DATASETS.FOLDER", wide, "OUTPUT_DIR", out] + (["MODEL.WEIGHTS", weights] if weights else [])
    return recorded_run(cmd, out, threads, final_metrics, cwd=ROOT)["metrics"]["mAP"]


def run_dir(args, arm, seed):
    return os.path.join(args.out, f"{'with' if ARMS[arm] else 'without'}{args.tag}_s{seed}")


def run(args, train_folder, arm, seed, threads):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", args.config,
           "DATASETS.FOLDER", train_folder, *ARMS[arm], "SEED", str(seed), "OUTPUT_DIR", run_dir(args, arm, seed),
           *args.opts]
    return recorded_run(cmd, run_dir(args, arm, seed), threads, final_metrics, cwd=ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/video_e2e")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--site", type=int, default=0, help="the training site's generator seed")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "CALR", "cuhk01_mobilenetv2.yml"))
    p.add_argument("--jobs", type=int, default=1, choices=(1, 2))
    p.add_argument("--tag", default="", help="suffix of the run folders (with<tag>_s<seed>)")
    p.add_argument("--arms", nargs="+", choices=("with", "without"), default=["with", "without"],
                   help="run only these arms (with / without tracklets)")
    p.add_argument("--wide-test", type=int, default=3, help="more test sites for the wide split (0: none)")
    p.add_argument("opts", nargs="*", help="config overrides for both arms (KEY VALUE ...)")
    args = p.parse_args()
    args.out = os.path.abspath(args.out)
    site_a, site_b = os.path.join(args.out, "site_train"), os.path.join(args.out, "site_test")
    train_folder = make_site(site_a, args.site, 1001)
    test_crops = make_site(site_b, args.site + 1000, 2001)
    if not os.path.isdir(os.path.join(train_folder, "query")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "video_test_split.py"), "--crops", test_crops,
                        "--gt", os.path.join(site_b, "gt"), "--out", train_folder], check=True)
    ids = true_ids(site_a)
    jobs = [(arm, seed) for seed in args.seeds for arm in ARMS if arm.split()[0] in args.arms]
    threads = 1 if args.jobs == 2 else int(os.environ.get("OMP_NUM_THREADS", 2))
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda j: run(args, train_folder, *j, threads), jobs))
    wide = wide_test(args, train_folder) if args.wide_test else None
    eval_threads = int(os.environ.get("OMP_NUM_THREADS", 2))
    if wide:
        print(f"untrained start: mAP on the wide split "
              f"{wide_map(args, wide, os.path.join(args.out, 'zero_wide'), None, eval_threads):.2f}")
    table = {}
    print(f"{'arm':18s} {'seed':>4s} {'mAP':>6s} {'Rank-1':>6s} {'wide':>6s} {'local P':>7s} {'local R':>7s} "
          f"{'local F':>7s} {'K local':>7s} {'min':>5s}")
    for (arm, seed), rec in zip(jobs, records):
        run_out = run_dir(args, arm, seed)
        q = local_quality(run_out, ids)
        w = (wide_map(args, wide, os.path.join(run_out, "eval_wide"), os.path.join(run_out, "model_final.pth"),
                      eval_threads) if wide else float("nan"))
        row = (rec["metrics"]["mAP"], rec["metrics"]["Rank-1"], w, q["precision"], q["recall"], q["fscore"],
               q["num_clusters"])
        table.setdefault(arm, []).append(row)
        print(f"{arm:18s} {seed:4d} {row[0]:6.2f} {row[1]:6.2f} {row[2]:6.2f} {row[3]:7.3f} {row[4]:7.3f} "
              f"{row[5]:7.3f} {row[6]:7.0f} {rec['seconds'] / 60:5.1f}")
    print(f"\n| arm | seeds | mAP | Rank-1 | mAP, wide split | local precision | local recall | local F | local clusters |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, rows in table.items():
        v = np.array(rows)
        cells = [f"{m:.2f} +- {s:.2f}" if i < 3 else (f"{m:.3f} +- {s:.3f}" if i < 6 else f"{m:.0f}")
                 for i, (m, s) in enumerate(zip(v.mean(0), v.std(0)))]
        print(f"| {arm} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
