"""Benchmark of tools/video_to_crops.py (not a test): tracklet purity, people lost, speed, real video.

Three parts, each optional:

* ``--purity N``: N generated 3-camera sites (``camera_network(3, 10, seed)``, 120 frames of
  640x360, people passing 1-3 cameras, walking, stopping, turning and hiding each other;
  detections = true boxes jittered by 3 %, 5 % missed, 0.05 false boxes a frame). Each crop is
  given the true person whose box overlaps it most (IoU > 0.5, else "none"); a tracklet's
  purity is the share of its crops of its majority person. A person is lost in a camera when
  they have 10+ fully visible, unclipped boxes there and no tracklet of theirs.
* ``--speed``: a generated 1280x720 25 fps video of ``--seconds`` seconds, with its detections:
  the tool's wall time against the video's duration (the target: at least 4x real time on 2
  cores).
* ``--video FILE``: a real video (OpenCV's sample ``vtest.avi``: Debian's ``opencv-doc``, or
  ``opencv/samples/data/`` in the opencv-python source archive) with the offline HOG detector
  (``--hog-upscale``); prints the summary and copies the contact sheet to ``--sheet``.

    python bench/video_crops.py --purity 8 --speed --video output/video/vtest.avi --sheet docs/img/vtest_contact_sheet.png
"""
import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from calr_plugin.data.synthetic_video import VideoSpec, camera_network, write_network  # noqa: E402
from calr_plugin.data.tracklets import true_people  # noqa: E402
from calr_plugin.data.video_io import read_mot  # noqa: E402

TOOL = os.path.join(ROOT, "tools", "video_to_crops.py")


def run_tool(*args):
    start = time.time()
    run = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True)
    if run.returncode not in (0, 1):
        raise SystemExit(f"video_to_crops failed:\n{run.stderr[-3000:]}")
    return run, time.time() - start


def owners(rows, gt_of):
    """{(camera, tracklet): [true person of each crop, -1 for none]}."""
    out = {}
    for r, pid in zip(rows, true_people(rows, gt_of)):
        out.setdefault((r["camera"], r["tracklet"]), []).append(int(pid))
    return out


def purity(n, tmp):
    print(f"{'site':>4s} {'tracklets':>9s} {'crops':>6s} {'purity':>7s} {'worst':>6s} {'impure':>6s} {'lost':>5s}")
    all_p, lost_all, present_all = [], 0, 0
    for seed in range(n):
        site = os.path.join(tmp, f"site{seed}")
        specs = camera_network(3, 10, seed=seed, num_frames=120, width=640, height=360, speed=(0.006, 0.012))
        write_network(specs, site)
        run_tool("--videos", f"{site}/videos", "--dets", f"{site}/dets", "--out", f"{site}/crops")
        rows = list(csv.DictReader(open(f"{site}/crops/crops.csv")))
        gt_of = {f"c{s.camera}": read_mot(f"{site}/gt/c{s.camera}.txt") for s in specs}
        own = owners(rows, gt_of)
        p = [np.bincount(np.array(v) + 1).max() / len(v) for v in own.values()]
        lost = present = 0
        for s in specs:
            g, cam = gt_of[f"c{s.camera}"], f"c{s.camera}"
            ok = (g[:, 2] > 3) & (g[:, 3] > 3) & (g[:, 2] + g[:, 4] < s.width - 3) & (g[:, 3] + g[:, 5] < s.height - 3) \
                & (g[:, 8] > 0.9)
            people = {int(q) for q in np.unique(g[ok, 1]) if (g[ok, 1] == q).sum() >= 10}
            found = {np.bincount(np.array(v) + 1).argmax() - 1 for (c, _), v in own.items() if c == cam}
            present += len(people)
            lost += len(people - found)
        all_p += p
        lost_all += lost
        present_all += present
        print(f"{seed:4d} {len(own):9d} {len(rows):6d} {np.mean(p):7.3f} {min(p):6.2f} {sum(x < 1 for x in p):6d} "
              f"{lost:2d}/{present}")
    print(f" all {len(all_p):9d} {'':6s} {np.mean(all_p):7.3f} {min(all_p):6.2f} {sum(x < 1 for x in all_p):6d} "
          f"{lost_all:2d}/{present_all}")


def speed(seconds, tmp):
    site = os.path.join(tmp, "speed")
    spec = VideoSpec(num_people=8, num_frames=int(25 * seconds), width=1280, height=720, speed=(0.003, 0.006), seed=0)
    write_network([spec], site, fps=25)
    run, wall = run_tool("--videos", f"{site}/videos", "--dets", f"{site}/dets", "--out", f"{site}/crops")
    print(run.stdout.strip())
    work = float(re.search(r"\(([0-9.]+) s\)", run.stdout).group(1))  # the camera's own line: track, select, crop
    print(f"1280x720, 25 fps, {seconds:.0f} s of video ({spec.num_frames} frames) with detections: the camera took "
          f"{work:.1f} s = {seconds / work:.1f}x real time; the whole tool {wall:.1f} s with its start-up (Python, "
          f"torch and FastReID imports) = {seconds / wall:.1f}x")


def real(video, upscale, sheet, tmp):
    folder = os.path.join(tmp, "real", "videos")
    os.makedirs(folder)
    name = os.path.splitext(os.path.basename(video))[0]
    os.symlink(os.path.abspath(video), os.path.join(folder, os.path.basename(video)))
    out = os.path.join(tmp, "real", "crops")
    run, wall = run_tool("--videos", folder, "--out", out, "--hog-upscale", str(upscale))
    print(run.stdout.strip())
    print(f"{video} with the HOG detector (upscale {upscale}): {wall:.0f} s")
    if sheet:
        shutil.copy(os.path.join(out, "contact_sheets", name + ".png"), sheet)
        print(f"contact sheet: {sheet}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--purity", type=int, default=0, help="generated sites to score")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--video", help="a real video for the HOG path")
    p.add_argument("--hog-upscale", type=float, default=1.0)
    p.add_argument("--sheet", help="where to copy the real video's contact sheet")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.purity:
            purity(args.purity, tmp)
        if args.speed:
            speed(args.seconds, tmp)
        if args.video:
            real(args.video, args.hog_upscale, args.sheet, tmp)


if __name__ == "__main__":
    main()
