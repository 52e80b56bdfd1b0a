#!/usr/bin/env python
"""Camera videos in, person crops out: camera folders with one sub-folder per tracklet, no labels.

    python tools/video_to_crops.py --videos VIDEOS --out OUT [--dets DETS]
    python tools/train_net.py --config-file configs/CALR/cuhk01_mobilenetv2.yml \\
        DATASETS.FOLDER OUT DATASETS.TRACKLETS folder OUTPUT_DIR logs/from_video

VIDEOS holds one video per camera (``<camera>.mp4``, .avi, .mkv, ...) or one folder of frame
images per camera (``<camera>/000001.jpg ...``). Detections: ``DETS/<camera>.txt`` in MOT format
(frame, id, x, y, w, h, score, ...; frame from 1, box in pixels), what every detector can write;
without --dets, OpenCV's HOG people detector, which needs no weights but misses small, sitting
and occluded people (calr_plugin/data/video_io.py says more). Tracklets within a camera come
from BoxMOT's ByteTrack (calr_plugin/data/tracklets.py says why).

Writes ``OUT/train/<camera>/<tracklet>/<frame>.jpg`` (ReIDFolder reads it: the camera is the
first sub-folder) and ``OUT/crops.csv`` (camera, tracklet, frame, x, y, w, h, score, path; path
relative to OUT), and ``OUT/contact_sheets/<camera>.png`` (a row of crops per tracklet, the
longest first). Kept per tracklet: at most --max-per-tracklet crops spread over it; dropped:
boxes under --min-score, shorter than --min-height pixels or cut by the frame edge, and tracklets
with fewer than --min-length boxes; one line per camera says what was kept and dropped.

Resumable: a finished camera is recorded in ``OUT/.cameras/<camera>.csv`` and skipped by a rerun
(a killed camera is redone from the start, its folder emptied first). A video that does not open or decode is named and
skipped; the tool then exits 1 after the others are done.
"""
import argparse
import csv
import io
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from calr_plugin.errors import CalrError  # noqa: E402


def boxes_of_frames(source, dets, detector):
    """(frame, (k, 5) boxes) per frame: from the detection file (no decoding), else the detector."""
    import numpy as np

    from calr_plugin.data.video_io import frame_count, frames

    if dets is not None:
        last = max(max(dets, default=0), frame_count(source))
        for t in range(1, last + 1):
            yield t, dets.get(t, np.zeros((0, 5)))
        return
    from tqdm import tqdm

    for t, frame in tqdm(frames(source), total=frame_count(source) or None, desc="detect", unit="frame",
                         leave=False, disable=not sys.stderr.isatty()):
        yield t, detector(frame)


def frame_size_and_rate(source):
    import cv2

    from calr_plugin.data.video_io import frames

    t, frame = next(frames(source, wanted={1}))
    rate = 25.0
    if os.path.isfile(source):
        cap = cv2.VideoCapture(source)
        rate = cap.get(cv2.CAP_PROP_FPS) or 25.0
        cap.release()
    return frame.shape[1], frame.shape[0], rate


def process_camera(name, source, args, detector):
    """Crops of one camera; returns (crops.csv rows, summary line)."""
    from calr_plugin.data.tracklets import CropOptions, select, track, write_crops
    from calr_plugin.data.video_io import dets_by_frame, read_mot

    options = CropOptions(max_per_tracklet=args.max_per_tracklet, min_height=args.min_height,
                          min_score=args.min_score, edge=args.edge, min_length=args.min_length)
    options.validate()
    dets = None
    if args.dets:
        dets = dets_by_frame(read_mot(os.path.join(args.dets, name + ".txt")))
    width, height, rate = frame_size_and_rate(source)
    start = time.time()
    rows = track(boxes_of_frames(source, dets, detector), rate)
    kept, dropped = select(rows, width, height, options)
    cuts = dropped.pop("cuts")
    crops = write_crops(source, kept, args.out, name, options.quality)
    missing = len(kept) - len(crops)
    tracklets = len({c["tracklet"] for c in crops})
    line = (f"camera {name}: {len(rows)} tracked boxes in {len(set(rows[:, 1].astype(int)))} tracklets; kept "
            f"{len(crops)} crops of {tracklets} tracklets; dropped " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                                                 for k, v in dropped.items())
            + (f", {missing} beyond the video's last frame" if missing else "")
            + f"; {cuts} cuts at overlaps or gaps ({time.time() - start:.1f} s)")
    return crops, line


def write_csv(path, rows):
    from calr_plugin.data.tracklets import CSV_COLUMNS
    from calr_plugin.utils.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", required=True, help="one video (or frame folder) per camera")
    p.add_argument("--out", required=True)
    p.add_argument("--dets", help="folder of MOT detection files, <camera>.txt (default: HOG detector)")
    p.add_argument("--max-per-tracklet", type=int, default=16)
    p.add_argument("--min-height", type=int, default=64, help="pixels")
    p.add_argument("--min-score", type=float, default=0.3)
    p.add_argument("--min-length", type=int, default=3, help="boxes a tracklet needs")
    p.add_argument("--edge", type=int, default=2, help="boxes this close to the frame border are dropped")
    p.add_argument("--hog-upscale", type=float, default=1.0, help="HOG: enlarge frames for people under 128 px")
    args = p.parse_args(argv)
    try:
        from calr_plugin.data.video_io import HogDetector, VideoError, list_cameras

        cameras = list_cameras(args.videos)
        if args.dets:
            missing = [n for n, _ in cameras if not os.path.isfile(os.path.join(args.dets, n + ".txt"))]
            if missing:
                raise CalrError(f"--dets {args.dets}: no detection file for camera(s) {', '.join(missing)} "
                                f"(expected {os.path.join(args.dets, missing[0] + '.txt')})")
        detector = None if args.dets else HogDetector(upscale=args.hog_upscale)
        try:  # BoxMOT logs each tracker's settings at INFO; this tool prints its own summary
            import logging

            import boxmot.utils  # noqa: F401  (configures the "boxmot" logger on import)

            logging.getLogger("boxmot").setLevel(logging.WARNING)
        except ImportError:
            pass  # tracklets.track names the missing package
        done_dir = os.path.join(args.out, ".cameras")
        os.makedirs(done_dir, exist_ok=True)
        failed = []
        for name, source in cameras:
            done = os.path.join(done_dir, name + ".csv")
            if os.path.isfile(done):
                print(f"camera {name}: done in an earlier run ({done}), skipped")
                continue
            # a camera killed half-way left crops that this run may not write again
            shutil.rmtree(os.path.join(args.out, "train", name), ignore_errors=True)
            try:
                crops, line = process_camera(name, source, args, detector)
            except VideoError as e:
                print(f"error: camera {name} skipped: {e}", file=sys.stderr)
                failed.append(name)
                continue
            write_csv(done, crops)  # the camera's record, written last
            print(line)
        rows = []
        for name, _ in cameras:
            done = os.path.join(done_dir, name + ".csv")
            if os.path.isfile(done):
                with open(done) as f:
                    rows += list(csv.DictReader(f))
        write_csv(os.path.join(args.out, "crops.csv"), rows)
        from calr_plugin.report.contact_sheet import contact_sheet

        for name, _ in cameras:
            contact_sheet([r for r in rows if r["camera"] == name], args.out,
                          os.path.join(args.out, "contact_sheets", name + ".png"))
        print(f"wrote {len(rows)} crops of {len(cameras) - len(failed)} cameras to {args.out}/train and "
              f"{args.out}/crops.csv" + (f"; skipped {len(failed)} unreadable: {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
