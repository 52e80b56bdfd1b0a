"""Crops and tracklets from one camera's video: detect (or read detections), track, sample, write.

Shape shorthand: n boxes, k boxes in a frame, T frames, H x W the frame size.

One camera, two passes over its video:

1. boxes: the given MOT detections (no decoding: the tracker needs only the boxes), or the
   offline detector on every frame (``video_io.HogDetector``); each box is assigned a
   tracklet by BoxMOT's ByteTrack (Zhang et al. 2022: IoU matching of high-score boxes, then
   low-score ones, with a Kalman filter; motion only, so no weights and nothing to download),
   keeping the detection's own box, not the filter's;
2. selection (``select``): boxes with a score below ``min_score``, shorter than
   ``min_height`` pixels, within ``edge`` pixels of the frame border (a person cut by the
   frame), or overlapping another tracked box by ``max_overlap`` of the smaller box (two
   people in one crop) are dropped. A tracklet is then cut in two wherever it passed such an
   overlap, went more than ``max_gap`` frames without a box, or its box height jumped by more
   than ``max_height_change`` from one box to the next (another person took the track while
   the first was hidden): that is where a motion tracker swaps people. Pieces with fewer than
   ``min_length`` boxes are dropped; a longer one keeps at most ``max_per_tracklet`` boxes
   spread evenly over it (the first, the last and equal steps between). Tracklets are
   numbered 1.. in order of their first frame. Measured (``bench/video_crops.py --purity 8``:
   8 generated 3-camera sites, 282 tracklets): crop purity against the true people 0.998, 3
   tracklets impure (the worst 0.75: a swap while one person was hidden for a few frames and
   the other had the same height), nobody lost. In sample: the cut rules and their values
   (max_overlap 0.3, max_gap 5, max_height_change 1.25) were chosen after looking at the
   impure tracklets of sites 0, 4, 5 and 7 of these 8. Before the cuts, a site had 1 tracklet in 21
   at purity 0.81 or worse;
3. crops: only the frames holding a kept box are decoded and cut, to
   ``OUT/train/<camera>/<tracklet>/<frame>.jpg``.

Why ByteTrack: a tracklet is taken as one person's images (a must-link for training to use),
so it must hold one person (purity) more than it must follow a person through an occlusion
(a person split into two tracklets costs little). ByteTrack is motion only and ends a track when IoU matching fails,
which keeps tracklets short and pure; appearance trackers (DeepSORT, BoT-SORT) would need a
Re-ID model before we have trained one. It comes from BoxMOT, which the tracker extra installs.

Detection scores outside [0, 1] (some MOT detectors write raw margins) are clipped to it.
"""
import dataclasses
import os

import numpy as np

from ..errors import CalrError
from .boxes import cover, iou, to_boxmot, with_area
from .video_io import frames

__all__ = ["CropOptions", "track", "select", "write_crops", "true_people", "CSV_COLUMNS"]

CSV_COLUMNS = ("camera", "tracklet", "frame", "x", "y", "w", "h", "score", "path")


@dataclasses.dataclass(frozen=True)
class CropOptions:
    max_per_tracklet: int = 16
    min_height: int = 64
    min_score: float = 0.3
    edge: int = 2
    min_length: int = 3
    max_overlap: float = 0.3
    max_gap: int = 5
    max_height_change: float = 1.25  # between consecutive boxes of a tracklet
    quality: int = 92  # JPEG

    def validate(self):
        if self.max_per_tracklet < 1 or self.min_length < 1 or self.min_height < 1:
            raise CalrError(f"crop options {self}: max_per_tracklet, min_length and min_height must be >= 1")


def _byte_track(frame_rate):
    try:
        from boxmot import ByteTrack
    except ImportError:
        raise CalrError("BoxMOT is not installed (make install installs it: pip install --no-deps boxmot==25.0.0 "
                        "and pip install -e .[tracker])") from None
    return ByteTrack(frame_rate=int(round(frame_rate)) or 25, min_conf=0.1)


def track(boxes_of_frames, frame_rate=25):
    """Tracklet ids for the boxes of consecutive frames.

    Args:
        boxes_of_frames: iterable of (frame number, (k, 5) x, y, w, h, score), in order.
        frame_rate (float): the video's, for the tracker's buffer of lost tracks.
    Returns:
        ndarray: (n, 7) float64 rows frame, tracklet id (from 1), x, y, w, h, score, the
        detection's own box; boxes the tracker left unassigned are not in it.
    """
    tracker = _byte_track(frame_rate)
    ids, rows = {}, []
    for t, dets in boxes_of_frames:
        dets = with_area(dets)
        inp = to_boxmot(dets)
        out = np.asarray(tracker.update(inp, None)).reshape(-1, 8)
        for tid, det in zip(out[:, 4].astype(int), out[:, 7].astype(int)):
            if det < 0:
                continue  # a predicted box without a detection: not an image of the person
            x, y, w, h = dets[det, :4]
            rows.append((t, ids.setdefault(tid, len(ids) + 1), x, y, w, h, inp[det, 4]))
    return np.asarray(rows, np.float64).reshape(-1, 7)


def _overlap(rows):
    """(n,) per row, the largest share of the smaller box that another box of the frame covers."""
    out = np.zeros(len(rows))
    for t in np.unique(rows[:, 0]):
        idx = np.flatnonzero(rows[:, 0] == t)
        if len(idx) > 1:
            c = cover(rows[idx, 2:6], rows[idx, 2:6])
            np.fill_diagonal(c, 0)
            out[idx] = c.max(1)
    return out


def select(rows, width, height, options):
    """The boxes to crop, with tracklets cut at overlaps and gaps, and the drop counts.

    Args:
        rows (ndarray): (n, 7) from ``track``. width, height (int): the frame size.
        options (CropOptions): the limits.
    Returns:
        tuple: ((m, 7) kept rows sorted by frame, tracklet ids renumbered 1.., {reason:
        count of boxes}) with reasons low_score, small, at_edge, overlapping, short_tracklet,
        over_budget, and "cuts": the number of tracklets cut.
    """
    o = options
    dropped = {}
    keep = np.ones(len(rows), bool)
    crowd = _overlap(rows) >= o.max_overlap
    for reason, bad in (("low_score", rows[:, 6] < o.min_score), ("small", rows[:, 5] < o.min_height),
                        ("at_edge", (rows[:, 2] <= o.edge) | (rows[:, 3] <= o.edge)
                         | (rows[:, 2] + rows[:, 4] >= width - o.edge) | (rows[:, 3] + rows[:, 5] >= height - o.edge)),
                        ("overlapping", crowd)):
        dropped[reason] = int((keep & bad).sum())
        keep &= ~bad
    pieces, cuts = [], 0
    for tid in np.unique(rows[:, 1]):
        mine = rows[(rows[:, 1] == tid) & keep]
        mine = mine[np.argsort(mine[:, 0], kind="stable")]
        crowded = rows[crowd & (rows[:, 1] == tid), 0]  # frames where this tracklet overlapped another
        start = 0
        for j in range(1, len(mine) + 1):
            if j < len(mine):
                a, b = mine[j - 1, 0], mine[j, 0]
                ratio = mine[j, 5] / mine[j - 1, 5]
                if b - a - 1 <= o.max_gap and not ((crowded > a) & (crowded < b)).any() \
                        and 1 / o.max_height_change <= ratio <= o.max_height_change:
                    continue
                cuts += 1
            pieces.append(mine[start:j])
            start = j
    kept, short, over = [], 0, 0
    for piece in sorted((p for p in pieces if len(p)), key=lambda p: p[0, 0]):
        if len(piece) < o.min_length:
            short += len(piece)
            continue
        if len(piece) > o.max_per_tracklet:
            pick = np.unique(np.round(np.linspace(0, len(piece) - 1, o.max_per_tracklet)).astype(int))
            over += len(piece) - len(pick)
            piece = piece[pick]
        piece = piece.copy()
        piece[:, 1] = len(kept) + 1
        kept.append(piece)
    dropped["short_tracklet"], dropped["over_budget"], dropped["cuts"] = short, over, cuts
    kept = np.concatenate(kept) if kept else np.zeros((0, 7))
    return kept[np.argsort(kept[:, 0], kind="stable")], dropped


def write_crops(source, kept, out_dir, camera, quality=92):
    """Decode the frames of ``kept`` and write each box's crop; returns crops.csv rows.

    Args:
        source (str): the camera's video or frame folder. kept (ndarray): (m, 7) from ``select``.
        out_dir (str): OUT; crops go to OUT/train/<camera>/t<tracklet>/<frame>.jpg.
        camera (str): the camera's name.
    Returns:
        list[dict]: one per crop, keys ``CSV_COLUMNS`` (path relative to OUT).
    """
    import sys

    import cv2
    from tqdm import tqdm

    wanted = {int(t) for t in kept[:, 0]}
    by_frame = {t: kept[kept[:, 0] == t] for t in wanted}
    out = []
    for t, frame in tqdm(frames(source, wanted=wanted), total=len(wanted), desc=f"crops {camera}", unit="frame",
                         leave=False, disable=not sys.stderr.isatty()):
        fh, fw = frame.shape[:2]
        for _, tid, x, y, w, h, score in by_frame.get(t, ()):
            x1, y1 = max(0, int(round(x))), max(0, int(round(y)))
            x2, y2 = min(fw, int(round(x + w))), min(fh, int(round(y + h)))
            if x2 <= x1 or y2 <= y1:
                continue
            rel = os.path.join("train", camera, f"t{int(tid):05d}", f"{t:06d}.jpg")
            path = os.path.join(out_dir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not cv2.imwrite(path, frame[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, quality]):
                raise CalrError(f"{path}: could not write the crop")
            out.append({"camera": camera, "tracklet": f"t{int(tid):05d}", "frame": t, "x": round(float(x), 1),
                        "y": round(float(y), 1), "w": round(float(w), 1), "h": round(float(h), 1),
                        "score": round(float(score), 4), "path": rel})
    return out


def true_people(rows, gt_of, min_iou=0.5):
    """(n,) int64 the true person of each crop (for scoring only): the ground-truth box of its
    camera and frame it overlaps most, or -1 below ``min_iou``.

    Args:
        rows (list[dict]): crops.csv rows (camera, frame, x, y, w, h).
        gt_of (dict): camera -> (k, >=6) MOT ground-truth rows (frame, id, x, y, w, h, ...).
    """
    out = np.full(len(rows), -1, np.int64)
    boxes = np.array([[float(r[k]) for k in "xywh"] for r in rows]).reshape(-1, 4)
    by_frame = {}
    for i, r in enumerate(rows):
        by_frame.setdefault((r["camera"], int(r["frame"])), []).append(i)
    for (cam, t), idx in by_frame.items():
        g = gt_of[cam][gt_of[cam][:, 0] == t]
        if len(g):
            m = iou(boxes[idx], g[:, 2:6])
            best = m.argmax(1)
            out[idx] = np.where(m.max(1) > min_iou, g[best, 1], -1)
    return out
