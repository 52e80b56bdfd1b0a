"""Box geometry shared by the tracker scoring, the tracklet selection and the benchmarks.

Shape shorthand: n and m boxes. Boxes are pixel ``x, y, w, h`` (MOT files' order) unless the
name says ``xyxy``. numpy only.
"""
import numpy as np

__all__ = ["xywh_to_xyxy", "with_area", "to_boxmot", "intersections", "iou", "cover"]


def xywh_to_xyxy(boxes):
    """(n, >=4) x, y, w, h -> (n, 4) x1, y1, x2, y2 float64 (extra columns dropped)."""
    b = np.asarray(boxes, np.float64)
    b = b.reshape(-1, b.shape[-1] if b.size else 4)[:, :4]
    return np.c_[b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]]


def with_area(dets):
    """The rows of (k, >=4) x, y, w, h boxes wider and taller than 1 pixel, as (k', cols) float64.
    deep-sort-realtime drops the others without their embeddings; no detector means them."""
    d = np.asarray(dets, np.float64)
    d = d.reshape(-1, d.shape[-1] if d.size else 5)
    return d[(d[:, 2] > 1) & (d[:, 3] > 1)]


def to_boxmot(dets):
    """(k, 5) x, y, w, h, score -> (k, 6) float32 x1, y1, x2, y2, score clipped to [0, 1], class 0:
    what a BoxMOT tracker's numpy ``update`` takes (it refuses scores outside [0, 1])."""
    return np.c_[xywh_to_xyxy(dets), np.clip(dets[:, 4], 0, 1), np.zeros(len(dets))].astype(np.float32).reshape(-1, 6)


def intersections(a, b):
    """((n, m) intersection areas, (n,) areas of ``a``, (m,) areas of ``b``) of x, y, w, h boxes."""
    a, b = xywh_to_xyxy(a), xywh_to_xyxy(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter, area(a), area(b)


def iou(a, b):
    """(n, m) intersection over union of x, y, w, h boxes."""
    inter, area_a, area_b = intersections(a, b)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def cover(a, b):
    """(n, m) intersection over the smaller of the two boxes: how much of the smaller one the
    other covers (a far, small person behind a near one is covered before the IoU gets large)."""
    inter, area_a, area_b = intersections(a, b)
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-12)
