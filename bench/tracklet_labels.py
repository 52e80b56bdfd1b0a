"""Benchmark: what tracklets do to CALR's stage-1 local labels (not a test).

Generated camera sites are cut into crops with ``tools/video_to_crops.py`` (given, jittered
detections); each crop's true person is the one whose box it overlaps most (IoU > 0.5; crops
of nobody are left out). On the untrained ImageNet features (the demo recipe's MobileNetV2,
``CALRReID``), the stage-1 clustering (``intra_camera_labels``, k1 15, k2 4) runs three ways:
without tracklets (K_c from the cluster ratio ``--ratio``), with the tracklet folders as
must-links (``DATASETS.TRACKLETS folder`` with ``CALR.STAGE1.CANNOT_LINKS False``), and with
must-links plus cannot-links between tracklets seen at the same time, which set K_c
(the default with tracklets, ``CALR.STAGE1.CANNOT_LINK_SHARE``). Printed per site and as a
mean: pairwise precision, recall and F of the local labels against the true people, within
each camera (the pairs stage 1 can label), and the number of local clusters. ``--m`` prints
instead, per site, the images per person and camera (m) that ``auto`` reads: from the
neighbour spacings (``estimate_images_per_cell``) and from the cannot-link cut
(``images_per_cell_from_tracklets``), against the truth (crops over person-camera pairs).

Sites: ``dev`` = ``camera_network(3, 20, seed)`` for seeds 0-4, 240 frames of 640x360 (the
cannot-link rule and its share 0.01 were chosen on these); ``validation`` = six other
regimes (2-5 cameras, 8-40 people, 200-500 frames, other speeds, jitter, misses, false
boxes, camera strength, person heights), run once after the rule was fixed.

    python bench/tracklet_labels.py --sites dev [--ratio 0.2]
    python bench/tracklet_labels.py --sites validation
    python bench/tracklet_labels.py --sites dev --m
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
from calr_plugin.data.datasets import tracklet_frames, tracklet_groups  # noqa: E402
from calr_plugin.data.synthetic_video import camera_network, write_network  # noqa: E402
from calr_plugin.data.tracklets import true_people  # noqa: E402
from calr_plugin.data.video_io import read_mot  # noqa: E402
from calr_plugin.labels import cluster_metrics, intra_camera_labels  # noqa: E402
from calr_plugin.labels.structure import estimate_images_per_cell, images_per_cell_from_tracklets  # noqa: E402


# name -> (cameras, people, generator seed, VideoSpec fields)
DEV = {f"dev{s}": (3, 20, s, dict(num_frames=240, speed=(0.006, 0.012))) for s in range(5)}
VALIDATION = {
    "v20": (2, 12, 20, dict(num_frames=300, speed=(0.004, 0.01))),
    "v21": (4, 30, 21, dict(num_frames=240, box_jitter=0.06, miss_rate=0.1, false_positives=0.15)),
    "v22": (3, 30, 22, dict(num_frames=400, camera_strength=0.8, speed=(0.008, 0.016))),
    "v23": (5, 25, 23, dict(num_frames=200, person_height=(0.3, 0.8), stop_rate=0.05, turn_rate=0.05)),
    "v24": (3, 8, 24, dict(num_frames=500, speed=(0.003, 0.006))),
    "v25": (4, 40, 25, dict(num_frames=300, box_jitter=0.05, miss_rate=0.15)),
}
ARMS = ("without tracklets", "must-links", "must- and cannot-links")


def site(name, regime, tmp, reid, ratio, m_only=False):
    cameras, people, seed, video = regime
    out = os.path.join(tmp, name)
    specs = camera_network(cameras, people, seed=seed, width=640, height=360, **video)
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
    frames = tracklet_frames(paths)
    feats = reid(paths)
    if m_only:
        truth = len(pid) / len(np.unique(pid * 100 + cams))
        return truth, estimate_images_per_cell(feats, cams)[0], images_per_cell_from_tracklets(
            feats, cams, groups, frames)[0]
    result = {}
    for arm, kw in zip(ARMS, ({}, dict(groups=groups), dict(groups=groups, frames=frames))):
        labels = intra_camera_labels(feats, cams, k1=15, k2=4, ratio=ratio, silhouette=False, **kw).labels
        m = cluster_metrics(labels, pid, cams, within_camera=True)
        result[arm] = (m["precision"], m["recall"], m["fscore"], int(m["num_clusters"]))
    return len(rows), len(np.unique(groups)), len(np.unique(pid * 100 + cams)), result


def print_m(args, reid):
    """m per site: the truth, the spacing estimate and the tracklet estimate (relative error)."""
    errors = {"spacings": [], "tracklets": []}
    print(f"{'site':>5s} {'true m':>7s} {'spacings':>9s} {'error':>6s} {'tracklets':>9s} {'error':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, regime in (DEV if args.sites == "dev" else VALIDATION).items():
            truth, spacing, tracklets = site(name, regime, tmp, reid, args.ratio, m_only=True)
            row = []
            for key, est in (("spacings", spacing), ("tracklets", tracklets)):
                err = float("nan") if est is None else est / truth - 1
                errors[key].append(abs(err))
                row.append(f"{est if est is not None else float('nan'):9.1f} {err:+6.0%}")
            print(f"{name:>5s} {truth:7.1f} " + " ".join(row), flush=True)
    for key, v in errors.items():
        v = np.array(v)
        print(f"{key}: mean |error| {np.nanmean(v):.0%}, worst {np.nanmax(v):.0%}, within 35 % on "
              f"{int(np.sum(v <= 0.35))} of {len(v)} sites")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", choices=("dev", "validation"), default="dev")
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--config", default="configs/CALR/demo_synthetic.yml")
    p.add_argument("--m", action="store_true", help="print the m estimates against the truth instead")
    args = p.parse_args()
    reid = CALRReID(None, config_file=os.path.join(ROOT, args.config), device="cpu")
    if args.m:
        return print_m(args, reid)
    table = {}
    print(f"{'site':>5s} {'crops':>6s} {'tracklets':>9s} {'people x cameras':>16s} {'labels':24s} {'precision':>9s} "
          f"{'recall':>7s} {'F':>6s} {'clusters':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, regime in (DEV if args.sites == "dev" else VALIDATION).items():
            n, t, people, result = site(name, regime, tmp, reid, args.ratio)
            for arm, (pr, rc, f, k) in result.items():
                table.setdefault(arm, []).append((pr, rc, f, k))
                print(f"{name:>5s} {n:6d} {t:9d} {people:16d} {arm:24s} {pr:9.3f} {rc:7.3f} {f:6.3f} {k:8d}", flush=True)
    print(f"\n| labels ({args.sites} sites, cluster ratio {args.ratio:g}) | precision | recall | F | clusters |")
    print("|---|---|---|---|---|")
    for arm, v in table.items():
        v = np.array(v, dtype=float)
        print(f"| {arm} | " + " | ".join(f"{m:.3f} +- {s:.3f}" for m, s in zip(v.mean(0)[:3], v.std(0, ddof=1)[:3]))
              + f" | {v[:, 3].mean():.0f} |")


if __name__ == "__main__":
    main()
