#!/usr/bin/env python
"""CALR end to end on a synthetic cell of bench/auto_grid.py, ``auto`` K against the old cap of 15.

    python bench/grid_end_to_end.py --out output/grid_e2e --cell C3_m20_all --seeds 1 2 [--jobs 2]

The ``auto`` K rule lost its cap of 15 after one generated video site (docs/RESULTS.md 2f);
this runs it where it was not chosen. The training set is the cell as bench/auto_grid.py
renders it (30 people, C cameras, m images per person and camera), rebuilt as unlabeled camera
folders (bench/camera_folders.py); the test split is 20 other people of the same renderer in
the same cameras (ids 101-120, 10 images per person and camera, the first one the query).
Arms, same recipe (``configs/CALR/cuhk01_mobilenetv2.yml``, every ``auto`` key): "auto K" and
"K 15" (``CALR.CLUSTER.K 15``, what the rule gave before). Prints per run and as mean +- sd
over seeds: ``model_final.pth`` mAP / Rank-1, the K used, the stage-2 clusters and their
outlier share at the first and last epoch, and the untrained model's mAP. A finished run
(its ``wall.json``) is read, not rerun; ``--jobs 2`` runs two at once with one thread each.
"""
import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from auto_grid import PEOPLE, _parse_cell, render_cell  # noqa: E402
from camera_folders import make_camera_folders  # noqa: E402
from compare_runs import final_metrics  # noqa: E402
from recorded_run import recorded_run  # noqa: E402

ARMS = {"auto K": [], "K 15": ["CALR.CLUSTER.K", "15"]}
TEST_PEOPLE, TEST_M, FIRST_TEST_ID = 20, 10, 101


def make_set(out, cell):
    """``out/market`` (Market layout) and ``out/folders`` (camera folders); returns the latter."""
    from calr_plugin.data.synthetic import file_name
    from calr_plugin.data.synthetic_render import SyntheticSpec, render_image

    folders = os.path.join(out, "folders")
    if os.path.isdir(folders):
        return folders
    market = os.path.join(out, "market")
    train = os.path.join(market, "bounding_box_train")
    render_cell(cell, train)
    c = _parse_cell(cell)[0]
    spec = SyntheticSpec(num_train_ids=PEOPLE, num_test_ids=1, num_cameras=8, seed=0)  # auto_grid's renderer
    for pid in range(FIRST_TEST_ID, FIRST_TEST_ID + TEST_PEOPLE):
        for cam in range(1, c + 1):
            for k in range(TEST_M):
                split = os.path.join(market, "query" if k == 0 else "bounding_box_test")
                os.makedirs(split, exist_ok=True)
                render_image(spec, pid, cam, k).save(os.path.join(split, file_name(pid, cam, k)),
                                                     quality=spec.jpeg_quality)
    make_camera_folders(market, folders + ".tmp")
    os.replace(folders + ".tmp", folders)
    return folders


def train(args, folder, name, opts, threads):
    out = os.path.join(args.out, name)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", args.config,
           "DATASETS.FOLDER", folder, *opts, "OUTPUT_DIR", out]
    return recorded_run(cmd, out, threads, eval_metrics if "--eval-only" in opts else final_metrics, cwd=ROOT)


def eval_metrics(out):
    with open(os.path.join(out, "eval_results.json")) as f:
        return json.load(f)


def label_steps(out):
    """(K used, [(clusters, outlier share) at the first and the last stage-2 epoch])."""
    with open(os.path.join(out, "config.yaml")) as f:
        k = next(int(line.split(":")[1]) for line in f if line.strip().startswith("K:"))
    steps = []
    with open(os.path.join(out, "metrics.json")) as f:
        for line in f:
            d = json.loads(line)
            if "calr/num_clusters" in d:
                steps.append((d["calr/num_clusters"], d["calr/outlier_fraction"]))
    return k, [steps[0], steps[-1]]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/grid_e2e")
    p.add_argument("--cell", default="C3_m20_all")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "CALR", "cuhk01_mobilenetv2.yml"))
    p.add_argument("--jobs", type=int, default=1, choices=(1, 2))
    args = p.parse_args()
    args.out = os.path.abspath(os.path.join(args.out, args.cell))
    folder = make_set(args.out, args.cell)
    threads = 1 if args.jobs == 2 else int(os.environ.get("OMP_NUM_THREADS", 2))
    zero = train(args, folder, "zero_shot", ["--eval-only", "SEED", "1"], threads)
    jobs = [(arm, seed) for seed in args.seeds for arm in ARMS]
    names = [f"{arm.replace(' ', '_')}_s{seed}" for arm, seed in jobs]
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda j: train(args, folder, j[1], [*ARMS[j[0][0]], "SEED", str(j[0][1])], threads),
                                zip(jobs, names)))
    print(f"{args.cell}: untrained mAP {zero['metrics']['mAP']:.2f}, Rank-1 {zero['metrics']['Rank-1']:.2f}")
    print(f"{'arm':8s} {'seed':>4s} {'mAP':>6s} {'Rank-1':>6s} {'K':>4s} {'first: clusters, outliers':>26s} "
          f"{'last: clusters, outliers':>25s} {'min':>5s}")
    table = {}
    for (arm, seed), name, rec in zip(jobs, names, records):
        k, (first, last) = label_steps(os.path.join(args.out, name))
        row = (rec["metrics"]["mAP"], rec["metrics"]["Rank-1"])
        table.setdefault(arm, []).append(row)
        print(f"{arm:8s} {seed:4d} {row[0]:6.2f} {row[1]:6.2f} {k:4d} {first[0]:17.0f} {first[1]:8.1%} "
              f"{last[0]:16.0f} {last[1]:8.1%} {rec['seconds'] / 60:5.1f}")
    print("\n| arm | seeds | mAP | Rank-1 |\n|---|---|---|---|")
    for arm, rows in table.items():
        v = np.array(rows)
        print(f"| {arm} | {len(rows)} | {v[:, 0].mean():.2f} +- {v[:, 0].std():.2f} | "
              f"{v[:, 1].mean():.2f} +- {v[:, 1].std():.2f} |")


if __name__ == "__main__":
    main()
