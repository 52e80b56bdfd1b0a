#!/usr/bin/env python
"""A labeled test split from video crops: the crops of tools/video_to_crops.py, named by the
person ids of MOT ground-truth files, as Market's query/ and bounding_box_test/.

    python tools/video_test_split.py --crops CROPS --gt GT --out DIR

CROPS is the --out of tools/video_to_crops.py (crops.csv and train/<camera>/<tracklet>/);
GT holds ``<camera>.txt`` in MOT format (frame, id, x, y, w, h, ...) whose ids name the same
person in every camera (what an annotation tool exports). DIR gets ``query/`` and
``bounding_box_test/`` with Market names ``<id>_c<camera>s1_<frame>_<n>.jpg`` (cameras numbered
1.. in name order). Write it into the crops folder of another site (person-disjoint from the
training cameras) to evaluate there, or into the training folder to get test mAP while training.

Each crop takes the id of the ground-truth box it overlaps most (IoU > --min-iou). A crop
with no such box, or whose id is not its tracklet's most common one, is left out, so every
tracklet in the split holds one person; the query of a person and camera is its first crop,
the gallery every other crop. Under the Market rule (gallery images of the query's id *and*
camera are ignored) the query's whole tracklet is then out of its gallery, as MARS leaves out
its junk: near-duplicate frames of the query never count as matches.
"""
import argparse
import csv
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from calr_plugin.errors import CalrError  # noqa: E402


def split_rows(rows, pids):
    """Which crops go where.

    Args:
        rows (list[dict]): crops.csv rows (camera, tracklet, frame, path).
        pids (ndarray): (n,) int64 true id of each crop, -1 = none.
    Returns:
        tuple: (query, gallery) lists of (row, pid, camera number 1..C, name), and a dict of
        the counts left out ("no ground truth", "not the tracklet's person").
    """
    import numpy as np

    cameras = {c: i + 1 for i, c in enumerate(sorted({r["camera"] for r in rows}))}
    owner = {}
    for r, pid in zip(rows, pids):
        owner.setdefault((r["camera"], r["tracklet"]), []).append(int(pid))
    owner = {k: np.bincount(np.array(v)[np.array(v) >= 0]).argmax() if max(v) >= 0 else -1 for k, v in owner.items()}
    left = {"no ground truth": 0, "not the tracklet's person": 0}
    query, gallery, seen, count = [], [], set(), {}
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["camera"], int(rows[i]["frame"]), rows[i]["tracklet"]))
    for i in order:
        r, pid = rows[i], int(pids[i])
        if pid < 0:
            left["no ground truth"] += 1
            continue
        if pid != owner[(r["camera"], r["tracklet"])]:
            left["not the tracklet's person"] += 1
            continue
        cam = cameras[r["camera"]]
        n = count[(pid, cam, int(r["frame"]))] = count.get((pid, cam, int(r["frame"])), -1) + 1
        item = (r, pid, cam, f"{pid:04d}_c{cam}s1_{int(r['frame']):06d}_{n:02d}.jpg")
        (gallery if (pid, cam) in seen else query).append(item)
        seen.add((pid, cam))
    return query, gallery, left


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", required=True, help="the --out folder of tools/video_to_crops.py")
    p.add_argument("--gt", required=True, help="folder of MOT ground-truth files, <camera>.txt")
    p.add_argument("--out", required=True, help="folder that gets query/ and bounding_box_test/")
    p.add_argument("--min-iou", type=float, default=0.5)
    args = p.parse_args(argv)
    try:
        from calr_plugin.data.tracklets import CSV_COLUMNS, true_people
        from calr_plugin.data.video_io import read_mot

        table = os.path.join(args.crops, "crops.csv")
        if not os.path.isfile(table):
            raise CalrError(f"--crops {args.crops}: no crops.csv (expected the --out folder of tools/video_to_crops.py)")
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or set(CSV_COLUMNS) - set(rows[0]):
            raise CalrError(f"{table}: expected the columns {', '.join(CSV_COLUMNS)} and at least one crop")
        gt_of = {}
        for cam in sorted({r["camera"] for r in rows}):
            path = os.path.join(args.gt, cam + ".txt")
            if not os.path.isfile(path):
                raise CalrError(f"--gt {args.gt}: no ground truth for camera {cam} (expected {path})")
            gt_of[cam] = read_mot(path)
        query, gallery, left = split_rows(rows, true_people(rows, gt_of, min_iou=args.min_iou))
        for sub, items in (("query", query), ("bounding_box_test", gallery)):
            folder = os.path.join(args.out, sub)
            if os.path.isdir(folder):
                shutil.rmtree(folder)  # a rerun replaces the split, never mixes two
            os.makedirs(folder)
            for r, _, _, name in items:
                shutil.copyfile(os.path.join(args.crops, r["path"]), os.path.join(folder, name))
    except CalrError as e:
        print(f"video_test_split.py: {e}", file=sys.stderr)
        return 2
    people = len({pid for _, pid, _, _ in query})
    print(f"{args.out}: {len(query)} queries and {len(gallery)} gallery crops of {people} people; left out "
          + ", ".join(f"{n} ({why})" for why, n in left.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
