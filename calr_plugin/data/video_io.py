"""Camera video in: the videos of a folder, their frames, MOT detection files, an offline detector.

Shape shorthand: k boxes in a frame; H x W the frame size.

* ``list_cameras(folder)``: one camera per video file (``<camera>.mp4|avi|mkv|...``, the
  camera named by the file's stem) or per sub-folder of frame images (``<camera>/``, frames in
  name order), sorted by name.
* ``frames(source)``: (frame number from 1, BGR uint8 (H, W, 3)) of a video (OpenCV's
  ``VideoCapture``: the codecs its FFmpeg build reads) or of a frame folder. A video that does
  not open, or a frame image that does not decode, raises ``VideoError`` naming it.
* ``read_mot(path)``: a MOTChallenge detection/ground-truth file (``frame, id, x, y, w, h,
  score, ...``: what every detector can write and what the MOT benchmarks ship) as (n, >=7)
  rows; a malformed line is one ``DataError`` naming ``path:line``.
* ``HogDetector``: OpenCV's HOG + linear SVM people detector (Dalal and Triggs 2005), the one
  detector that needs no weights file (it ships inside OpenCV). Its limits: upright, mostly
  unoccluded pedestrians of at least its 128-pixel window (``upscale`` enlarges the frame for
  smaller people, at a quadratic cost), no sitting or crouching people, many false boxes on
  clutter, and about 0.1-0.3 s a 720p frame on 2 cores. Give real detections (``--dets``) when
  you have a detector.
"""
import glob
import os

import numpy as np

from ..errors import CalrError, DataError
from .datasets import IMAGE_EXTENSIONS

__all__ = ["VIDEO_EXTENSIONS", "VideoError", "list_cameras", "frame_count", "frames", "read_mot", "dets_by_frame",
           "HogDetector"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv", ".ts")


class VideoError(CalrError):
    """A video or frame that cannot be read (the caller names and skips it)."""


def list_cameras(folder):
    """[(camera name, video file or frame folder)] of ``folder``, sorted by camera.

    Raises:
        DataError: the folder is missing, holds no video or frame folder, or two entries give
            one camera name (``c1.mp4`` and ``c1/``).
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: video folder not found")
    found = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        stem, ext = os.path.splitext(entry)
        if os.path.isfile(path) and ext.lower() in VIDEO_EXTENSIONS:
            name = stem
        elif os.path.isdir(path) and any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in os.listdir(path)):
            name = entry
        else:
            continue
        if name in found:
            raise DataError(f"{folder}: camera {name!r} is given twice ({os.path.basename(found[name])} and {entry}); "
                            f"keep one")
        found[name] = path
    if not found:
        raise DataError(f"{folder}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or folders of frame images in it; "
                        f"expected one per camera: <camera>.mp4 or <camera>/000001.jpg ...")
    return sorted(found.items())


def _frame_files(folder):
    return sorted(p for p in glob.glob(os.path.join(folder, "*")) if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS)


def frame_count(source):
    """The number of frames a video reports (0 when unknown), or of a frame folder's images."""
    import cv2

    if os.path.isdir(source):
        return len(_frame_files(source))
    cap = cv2.VideoCapture(source)
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def frames(source, wanted=None):
    """Yield (frame number from 1, BGR uint8 (H, W, 3)) of a video or frame folder.

    Args:
        source (str): a video file or a folder of frame images.
        wanted (set[int] | None): only these frame numbers are decoded and yielded (the others
            are skipped with ``grab``, which does not convert them); None: every frame.
    Raises:
        VideoError: the video does not open or gives no frame; a frame image does not decode.
    """
    import cv2

    if wanted is not None and not wanted:
        return  # nothing asked for: decode nothing
    if os.path.isdir(source):
        for t, path in enumerate(_frame_files(source), 1):
            if wanted is not None and t not in wanted:
                continue
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                raise VideoError(f"{path}: frame {t} is not a readable image")
            yield t, image
        return
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise VideoError(f"{source}: OpenCV cannot open this video (corrupt, or a codec its FFmpeg lacks)")
    last = max(wanted) if wanted else None
    t = 0
    try:
        while last is None or t < last:
            if wanted is not None and (t + 1) not in wanted:
                if not cap.grab():
                    break
                t += 1
                continue
            ok, image = cap.read()
            if not ok:
                break
            t += 1
            yield t, image
    finally:
        cap.release()
    if t == 0:
        raise VideoError(f"{source}: no frame could be decoded (corrupt or empty video)")


def read_mot(path):
    """MOT rows (n, 10) float64 of a det.txt/gt.txt (shorter rows padded with -1).

    Raises:
        DataError: naming ``path:line`` for a line that is not ``frame,id,x,y,w,h,score,...``
            with frame >= 1 and w, h > 0.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: detection file not found")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                values = [float(v) for v in line.replace(" ", "").split(",")]
            except ValueError:
                values = []
            if len(values) < 7 or values[0] < 1 or values[4] <= 0 or values[5] <= 0:
                raise DataError(f"{path}:{number}: expected 'frame,id,x,y,w,h,score,...' with frame >= 1 and "
                                f"w, h > 0, got {line.strip()!r}")
            rows.append(values[:10] + [-1.0] * (10 - len(values[:10])))
    return np.array(rows, np.float64).reshape(-1, 10)


def dets_by_frame(rows):
    """{frame number: (k, 5) x, y, w, h, score} of MOT rows."""
    out = {}
    for t in np.unique(rows[:, 0]).astype(int):
        out[int(t)] = rows[rows[:, 0] == t][:, [2, 3, 4, 5, 6]]
    return out


class HogDetector:
    """OpenCV's HOG people detector (no weights file); see the module docstring for its limits.

    Args:
        upscale (float): frames are resized by this factor before detection (people shorter
            than 128 / upscale pixels are missed).
        hit_threshold (float): the SVM margin a window needs (OpenCV's ``hitThreshold``).
    """

    def __init__(self, upscale=1.0, hit_threshold=0.0):
        import cv2

        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.upscale, self.hit_threshold = float(upscale), float(hit_threshold)

    def __call__(self, frame):
        """(k, 5) x, y, w, h, score of the people in a BGR frame; score = sigmoid(SVM margin)."""
        import cv2

        image = frame if self.upscale == 1 else cv2.resize(frame, None, fx=self.upscale, fy=self.upscale)
        boxes, weights = self.hog.detectMultiScale(image, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                                   padding=(8, 8), scale=1.05)
        if len(boxes) == 0:
            return np.zeros((0, 5))
        boxes = np.asarray(boxes, np.float64) / self.upscale
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float64).reshape(-1)))
        return np.c_[boxes, scores]
