"""Benchmark: what tracklets do to CALR's stage-1 local labels (not a test).

Generated 3-camera sites (``camera_network(3, 20, seed)``, 240 frames of 640x360) are cut into
crops with ``tools/video_to_crops.py`` (given detections); each crop's true person is the one
whose box it overlaps most (IoU > 0.5; crops of nobody are left out). On the untrained ImageNet
features (the demo recipe's MobileNetV2, ``CALRReID``), the stage-1 clustering
(``intra_camera_labels``, k1 15, k2 4, the cluster ratio ``--ratio``) runs without and with
the tracklet folders as must-links (``DATASETS.TRACKLETS folder``). Printed per site and as a
mean: pairwise precision, recall and F of the local labels against the true people, within
each camera (the pairs stage 1 can label).

    python bench/tracklet_labels.py --sites 3 [--ratio 0.2]
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import calr_plugin  # noqa: E402,F401
from calr_plugin import CALRReID  # noqa: E402
from calr_plugin.data.datasets import tracklet_groups  # noqa: E402
from calr_plugin.data.synthetic_video import camera_network, write_network  # noqa: E402
from calr_plugin.data.tracklets import true_people  # noqa: E402
from calr_plugin.data.video_io import read_mot  # noqa: E402
from calr_plugin.labels import cluster_metrics, intra_camera_labels  # noqa: E402


def site(seed, tmp, reid, ratio):
    out = os.path.join(tmp, f"site{seed}")
    specs = camera_network(3, 20, seed=seed, num_frames=240, width=640, height=360, speed=(0.006, 0.012))
    write_network(specs, out)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "video_to_crops.py"), "--videos", f"{out}/videos",
                    "--dets", f"{out}/dets", "--out", f"{out}/crops"], check=True, capture_output=True)
    rows = list(csv.DictReader(open(f"{out}/crops/crops.csv")))
    gt_of = {f"c{s.camera}": read_mot(f"{out}/gt/c{s.camera}.txt") for s in specs}
    pid = true_people(rows, gt_of)
    keep = pid >= 0
    rows = [r for r, k in zip(rows, keep) if k]
    pid = pid[keep]
    paths = [os.path.join(out, "crops", r["path"]) for r in rows]
    cams = np.unique([r["camera"] for r in rows], return_inverse=True)[1]
    groups = tracklet_groups(paths, [r["camera"] for r in rows])
    feats = reid(paths)
    result = {}
    for name, g in (("without tracklets", None), ("with tracklets", groups)):
        labels = intra_camera_labels(feats, cams, k1=15, k2=4, ratio=ratio, silhouette=False, groups=g).labels
        m = cluster_metrics(labels, pid, cams, within_camera=True)
        result[name] = (m["precision"], m["recall"], m["fscore"],
                        int(m["num_clusters"]))
    return len(rows), len(np.unique(groups)), len(np.unique(pid)), result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--config", default="configs/CALR/demo_synthetic.yml")
    args = p.parse_args()
    reid = CALRReID(None, config_file=os.path.join(ROOT, args.config), device="cpu")
    table = {}
    print(f"{'site':>4s} {'crops':>6s} {'tracklets':>9s} {'people':>6s} {'labels':26s} {'precision':>9s} "
          f"{'recall':>7s} {'F':>6s} {'clusters':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.sites):
            n, t, people, result = site(seed, tmp, reid, args.ratio)
            for name, (pr, rc, f, k) in result.items():
                table.setdefault(name, []).append((pr, rc, f))
                print(f"{seed:4d} {n:6d} {t:9d} {people:6d} {name:26s} {pr:9.3f} {rc:7.3f} {f:6.3f} {k:8d}")
    for name, v in table.items():
        v = np.array(v)
        print(f"mean {'':30s} {name:26s} " + " ".join(f"{m:.3f} +- {s:.3f}" for m, s in zip(v.mean(0), v.std(0, ddof=1)
                                                                                                if len(v) > 1
                                                                                                else np.zeros(3))))


if __name__ == "__main__":
    main()
