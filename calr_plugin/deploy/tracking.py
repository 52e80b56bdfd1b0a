"""Run real trackers with an appearance embedder over a sequence, and score them (IDF1).

Shape shorthand: k detections in a frame, D feature dims.

A sequence is an iterable of (frame number, BGR uint8 (H, W, 3) frame, dets (k, 5) ``x, y,
w, h, score``), what ``data.synthetic_video.frames`` yields (less its ground truth) and a
MOTChallenge ``det/det.txt`` holds. Trackers return rows ``frame, track id, x, y, w, h``.

* ``track_boxmot``: a BoxMOT tracker object (``BotSort(reid_model=CALRReID(...))``: BoxMOT
  calls the embedder's ``get_features(xyxy, frame)`` and L2-normalises; or
  ``BotSort(use_embeddings=False)``, the same tracker without appearance).
* ``track_deepsort``: deep-sort-realtime's ``DeepSort(embedder=None)`` fed
  ``embeds=embed(xyxy, frame)`` (its own embedders load weights from the network; ours are
  local). Boxes with no area are dropped before the call, embeddings with them, because
  deep-sort-realtime drops such boxes itself without dropping their embeddings.
* ``idf1``: IDF1, MOTA and identity switches with py-motmetrics (its CLEAR-MOT and identity
  measures, the definitions of Ristani et al. 2016 that MOTChallenge uses), boxes matched at
  IoU >= 0.5. The IoU distances are computed here: motmetrics 1.4.0's ``iou_matrix`` calls
  ``np.asfarray``, which NumPy 2 removed.
* ``feature_dump``: the MOT feature file DeepSORT's and StrongSORT's offline scripts read:
  one (n, 10 + D) float32 array, each row a det.txt row followed by its feature.
"""
import numpy as np

from ..data.boxes import iou as box_iou
from ..data.boxes import to_boxmot, with_area, xywh_to_xyxy
from ..errors import CalrError

__all__ = ["track_boxmot", "track_deepsort", "iou_distance", "idf1", "feature_dump"]


def track_boxmot(sequence, tracker):
    """Rows (frame, id, x, y, w, h) of a BoxMOT tracker over ``sequence``.

    Args:
        sequence: (frame number, BGR frame, (k, 5) x, y, w, h, score) per frame.
        tracker: a BoxMOT tracker (its numpy ``update(dets, frame)``: (k, 6) x1, y1, x2, y2,
            score, class in; (m, 8) x1, y1, x2, y2, id, score, class, det index out).
    Returns:
        ndarray: (n, 6) float64.
    """
    rows = []
    for t, frame, dets in sequence:
        out = tracker.update(to_boxmot(with_area(dets)), frame)
        for x1, y1, x2, y2, tid in np.asarray(out).reshape(-1, 8)[:, :5]:
            rows.append((t, tid, x1, y1, x2 - x1, y2 - y1))
    return np.asarray(rows, np.float64).reshape(-1, 6)


def track_deepsort(sequence, embed, max_cosine_distance=0.2, max_age=30, n_init=3):
    """Rows (frame, id, x, y, w, h) of deep-sort-realtime's tracker with our embeddings.

    Args:
        sequence: as ``track_boxmot``.
        embed (callable): (xyxy (k, 4), BGR frame) -> (k, D) unit rows (``CALRReID.get_features``).
        max_cosine_distance (float): the appearance gate, a cosine distance (its default 0.2;
            use the calibrated value of tools/calibrate.py).
    Returns:
        ndarray: (n, 6) float64; confirmed tracks matched to a detection in that frame.
    """
    try:
        from deep_sort_realtime.deepsort_tracker import DeepSort
    except ImportError:
        raise CalrError("deep-sort-realtime is not installed (make install installs it)") from None
    tracker = DeepSort(max_age=max_age, n_init=n_init, max_cosine_distance=max_cosine_distance, embedder=None)
    ids, rows = {}, []
    for t, frame, dets in sequence:
        dets = with_area(dets)
        raw = [([float(x), float(y), float(w), float(h)], float(s), 0) for x, y, w, h, s in dets[:, :5]]
        embeds = embed(xywh_to_xyxy(dets), frame) if len(dets) else []
        tracks = tracker.update_tracks(raw, embeds=list(embeds), frame=frame)
        for tr in tracks:
            if not tr.is_confirmed() or tr.time_since_update > 0:
                continue
            x1, y1, x2, y2 = tr.to_ltrb(orig=True)
            rows.append((t, ids.setdefault(tr.track_id, len(ids) + 1), x1, y1, x2 - x1, y2 - y1))
    return np.asarray(rows, np.float64).reshape(-1, 6)


def iou_distance(a, b, iou=0.5):
    """(len(a), len(b)) 1 - IoU of x, y, w, h boxes; NaN (no match allowed) where IoU < ``iou``."""
    d = 1 - box_iou(a, b)
    d[d > 1 - iou] = np.nan
    return d


def idf1(gt, hyp, iou=0.5):
    """Identity and CLEAR-MOT scores of tracker rows against the truth.

    Args:
        gt (ndarray): (n, >=6) frame, person id, x, y, w, h. hyp (ndarray): (m, >=6) the same
            for tracks. iou (float): the least IoU of a match.
    Returns:
        dict: idf1, mota (fractions), id_switches, frames.
    """
    try:
        import motmetrics as mm
    except ImportError:
        raise CalrError("py-motmetrics is not installed: pip install -e .[tracker] (make install installs it)") \
            from None
    acc = mm.MOTAccumulator(auto_id=False)
    frames = sorted(set(gt[:, 0].astype(int)) | set(hyp[:, 0].astype(int)))
    for t in frames:
        g, h = gt[gt[:, 0] == t], hyp[hyp[:, 0] == t]
        dist = iou_distance(g[:, 2:6], h[:, 2:6], iou)
        acc.update(g[:, 1].astype(int).tolist(), h[:, 1].astype(int).tolist(), dist, frameid=t)
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "mota", "num_switches"], name="seq")
    return {"idf1": float(summary["idf1"].iloc[0]), "mota": float(summary["mota"].iloc[0]),
            "id_switches": int(summary["num_switches"].iloc[0]), "frames": len(frames)}


def feature_dump(det_rows, features):
    """DeepSORT's MOT feature array: det.txt rows (n, 10) followed by their features (n, D).

    Args:
        det_rows (ndarray): (n, >=7) MOT det rows (frame, -1, x, y, w, h, score, ...); padded
            with -1 to 10 columns. features (ndarray): (n, D).
    Returns:
        ndarray: (n, 10 + D) float32, what ``np.save("<sequence>.npy", ...)`` writes.
    """
    det_rows = np.asarray(det_rows, np.float64)
    if len(det_rows) != len(features):
        raise CalrError(f"feature dump: {len(det_rows)} detections but {len(features)} features")
    padded = np.full((len(det_rows), 10), -1.0)
    padded[:, :min(10, det_rows.shape[1])] = det_rows[:, :10]
    return np.c_[padded, np.asarray(features)].astype(np.float32)
