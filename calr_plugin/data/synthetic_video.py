"""Generated camera video with known tracks: people of the synthetic set walking across a scene.

Shape shorthand: T frames, H x W frame size, P people.

What a tracker is scored on needs true identities per box over time; this module draws them.
The people are the synthetic set's identities (``synthetic_looks._identity``: same clothes, body
and accessories for a person id and identity seed), drawn in side view with a walking pose
that changes every frame, on camera ``camera``'s background and under its colour cast and
exposure (``synthetic_looks._camera``), so a model trained on the synthetic set sees its domain.

Each person enters from the left or right edge at a random frame and walks at its own speed
on its own lane (feet height; nearer lanes are drawn larger and in front); every frame it
turns back with probability ``turn_rate`` and stops for a while with probability
``stop_rate``, and it leaves at an edge. Lanes are close enough that people cross and hide
each other; a person who turns or stops while hidden is where a motion-only tracker swaps
identities and appearance decides.

Per frame it gives:

* ``gt``: (k, 6) float64 rows ``person id, x, y, w, h, visibility`` of every person whose
  box is at least ``min_visibility`` visible (inside the frame and not hidden by a nearer
  person), boxes tight around the drawn pixels;
* ``dets``: (k', 5) rows ``x, y, w, h, score``, what a detector would report: the visible
  true boxes with Gaussian jitter (``box_jitter`` x box size), each missed with probability
  ``miss_rate``, plus Poisson(``false_positives``) false boxes of a person's size.

``write_sequence`` writes a MOT-style sequence folder: ``img1/000001.jpg ...``,
``gt/gt.txt`` (frame, id, x, y, w, h, 1, 1, visibility) and ``det/det.txt`` (frame, -1, x,
y, w, h, score, -1, -1, -1), the MOTChallenge files. numpy and PIL only.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np
from PIL import Image

from . import synthetic_looks as looks
from . import synthetic_render as render

__all__ = ["VideoSpec", "background", "frames", "write_sequence", "camera_network", "write_network"]


@dataclass(frozen=True)
class VideoSpec:
    num_people: int = 8
    num_frames: int = 120
    width: int = 640
    height: int = 360
    seed: int = 0  # trajectories, detections
    identity_seed: int = 0  # the synthetic set's seed: who the people are
    first_pid: int = 1001  # people first_pid .. first_pid + num_people - 1 (training ids are 1..)
    camera: int = 1  # the synthetic camera whose look the scene has (1-based)
    camera_strength: float = 0.45  # as DATASETS.SYNTHETIC.CAMERA_STRENGTH of the demo
    person_height: Tuple[float, float] = (0.4, 0.7)  # far and near lane, fraction of H
    speed: Tuple[float, float] = (0.006, 0.014)  # fraction of W per frame
    box_jitter: float = 0.03
    miss_rate: float = 0.05
    false_positives: float = 0.05
    min_visibility: float = 0.5
    turn_rate: float = 0.02
    stop_rate: float = 0.02
    pids: Tuple[int, ...] = ()  # explicit people (overrides first_pid / num_people)

    @property
    def people(self):
        return tuple(self.pids) or tuple(range(self.first_pid, self.first_pid + self.num_people))

    def validate(self):
        if len(self.people) < 1 or self.num_frames < 1:
            raise ValueError("need at least one person and one frame")
        if self.width < 64 or self.height < 64:
            raise ValueError(f"frame {self.width}x{self.height} too small (at least 64x64)")
        if not 0 <= self.miss_rate < 1 or self.box_jitter < 0 or self.false_positives < 0:
            raise ValueError("miss_rate must be in [0, 1), box_jitter and false_positives >= 0")


def _people(spec):
    """Per person: (pid, x centre px (T,) NaN when not in the scene, step px/frame (T,), feet y px, height px)."""
    r = looks._rng(spec.seed, 11)
    T = spec.num_frames
    out = []
    for pid in spec.people:
        speed = r.uniform(*spec.speed) * spec.width
        direction = 1.0 if r.random() < 0.5 else -1.0
        # entries spread over the clip so that several people are in view at once
        t0 = int(r.uniform(-0.3, 0.7) * T)
        lane = r.uniform(0.0, 1.0)
        h = (spec.person_height[0] + lane * (spec.person_height[1] - spec.person_height[0])) * spec.height
        feet = spec.height * (0.62 + 0.36 * lane)
        x = -0.3 * h if direction > 0 else spec.width + 0.3 * h
        xs, steps, paused = np.full(T, np.nan), np.zeros(T), 0
        for t in range(min(t0, 0), T):  # a negative entry: already walking when the clip starts
            if t >= t0:
                if paused:
                    paused -= 1
                elif r.random() < spec.stop_rate:
                    paused = int(r.integers(5, 20))
                elif r.random() < spec.turn_rate:
                    direction = -direction
                step = 0.0 if paused else direction * speed
                x += step
                if x < -0.3 * h or x > spec.width + 0.3 * h:
                    break  # left the scene
                if t >= 0:
                    xs[t], steps[t] = x, step
        out.append((pid, xs, steps, feet, h))
    return out


def _camera_look(spec):
    cam = looks._camera(spec.identity_seed, spec.camera - 1, spec.camera_strength)
    M = (render._hue_matrix(cam["hue_angle"], cam["saturation"]) * cam["gains"][:, None]).T.astype(np.float32)
    return cam, M


def _photometric(frame, cam, M):
    """The camera's colour cast and exposure on a whole frame (synthetic_render._render's, without noise)."""
    x = np.asarray(frame, dtype=np.float32) / 255.0
    x = np.clip(x @ M, 0.0, 1.0) ** cam["gamma"]
    x = ((x - 0.5) * cam["contrast"] + 0.5 + cam["offset"] / 255.0) * 255.0
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def background(spec: VideoSpec) -> np.ndarray:
    """The empty scene as the camera sees it: BGR uint8 (H, W, 3)."""
    cam, M = _camera_look(spec)
    return np.ascontiguousarray(_photometric(render._background(cam, spec.width, spec.height), cam, M)[:, :, ::-1])


def frames(spec: VideoSpec) -> Iterator[Tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (frame number 1..T, BGR uint8 (H, W, 3) image, gt (k, 6), dets (k', 5)) per frame."""
    spec.validate()
    cam, M = _camera_look(spec)
    background = render._background(cam, spec.width, spec.height)
    people = _people(spec)
    idents = {p[0]: looks._identity(spec.identity_seed, p[0]) for p in people}
    walked = {p[0]: np.cumsum(np.abs(p[2])) for p in people}  # distance walked: the gait phase
    facing = {p[0]: 1.0 for p in people}
    r = looks._rng(spec.seed, 12)
    for t in range(spec.num_frames):
        canvas = background.copy()
        owner = np.zeros((spec.height, spec.width), np.int32)  # who is drawn on top, per pixel
        drawn = []
        for pid, xs, steps, feet, h in sorted(people, key=lambda p: p[3]):  # far first
            cx = xs[t]
            if np.isnan(cx):
                continue
            phase = walked[pid][t] / (0.35 * h) * math.pi  # one stride per ~0.35 body heights
            if steps[t]:
                facing[pid] = math.copysign(1.0, steps[t])  # a stopped person keeps facing its way
            pose = dict(stride=0.09 * abs(math.sin(phase)) + 0.01, swing=0.45 * math.sin(phase), direction=facing[pid])
            H = int(round(h / 0.86))
            W = int(round(H * 0.5))
            layer = render._draw_person(idents[pid], "side", pose, W, H)
            x0, y0 = int(round(cx - W / 2)), int(round(feet - 0.955 * H))
            ys, xs = slice(max(0, y0), min(spec.height, y0 + H)), slice(max(0, x0), min(spec.width, x0 + W))
            if ys.stop <= ys.start or xs.stop <= xs.start:
                continue  # wholly outside the frame
            canvas.paste(layer, (x0, y0), layer)
            alpha = np.zeros((spec.height, spec.width), bool)
            a = np.asarray(layer.getchannel("A")) > 128
            alpha[ys, xs] = a[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            owner[alpha] = pid
            bx = layer.getchannel("A").point(lambda v: 255 if v > 128 else 0).getbbox()
            if bx is None:
                continue
            full = int(a.sum())
            drawn.append((pid, x0 + bx[0], y0 + bx[1], bx[2] - bx[0], bx[3] - bx[1], full))
        gt, dets = [], []
        for pid, x, y, w, h, full in drawn:
            vis = float((owner == pid).sum()) / max(full, 1)
            if vis < spec.min_visibility:
                continue
            x1, y1 = max(0, x), max(0, y)
            x2, y2 = min(spec.width, x + w), min(spec.height, y + h)
            gt.append((pid, x1, y1, x2 - x1, y2 - y1, vis))
            if r.random() >= spec.miss_rate:
                j = r.normal(0, spec.box_jitter, 4) * [x2 - x1, y2 - y1, x2 - x1, y2 - y1]
                dets.append((x1 + j[0], y1 + j[1], x2 - x1 + j[2], y2 - y1 + j[3], r.uniform(0.6, 1.0)))
        for _ in range(r.poisson(spec.false_positives)):
            h = r.uniform(*spec.person_height) * spec.height
            w = 0.4 * h
            dets.append((r.uniform(0, spec.width - w), r.uniform(0, spec.height - h), w, h, r.uniform(0.3, 0.7)))
        image = _photometric(canvas, cam, M)[:, :, ::-1]  # RGB -> BGR, as OpenCV reads video
        yield (t + 1, np.ascontiguousarray(image), np.asarray(gt, np.float64).reshape(-1, 6),
               np.asarray(dets, np.float64).reshape(-1, 5))


def _mot_lines(t, gt, dets, gt_lines, det_lines):
    """Append frame ``t``'s MOTChallenge gt rows (frame, id, x, y, w, h, 1, 1, visibility) and
    det rows (frame, -1, x, y, w, h, score, -1, -1, -1) to the two lists."""
    gt_lines += [f"{t},{int(p)},{x:.1f},{y:.1f},{w:.1f},{h:.1f},1,1,{v:.3f}\n" for p, x, y, w, h, v in gt]
    det_lines += [f"{t},-1,{x:.1f},{y:.1f},{w:.1f},{h:.1f},{s:.3f},-1,-1,-1\n" for x, y, w, h, s in dets]


def write_sequence(spec: VideoSpec, out_dir: str, quality: int = 92) -> str:
    """Write a MOTChallenge-style sequence folder (img1/, gt/gt.txt, det/det.txt); returns it."""
    for sub in ("img1", "gt", "det"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    gt_lines, det_lines = [], []
    for t, image, gt, dets in frames(spec):
        Image.fromarray(image[:, :, ::-1]).save(os.path.join(out_dir, "img1", f"{t:06d}.jpg"), quality=quality)
        _mot_lines(t, gt, dets, gt_lines, det_lines)
    for name, lines in (("gt/gt.txt", gt_lines), ("det/det.txt", det_lines)):
        with open(os.path.join(out_dir, name), "w") as f:
            f.writelines(lines)
    return out_dir


def camera_network(num_cameras=3, num_people=12, cameras_per_person=(1, 3), seed=0, **video):
    """One ``VideoSpec`` per camera of a site where each person passes a random subset of cameras.

    Args:
        num_cameras (int): C. num_people (int): the pool (ids first_pid .. first_pid + P - 1).
        cameras_per_person (tuple[int, int]): each person is in this many cameras (inclusive,
            capped at C). seed (int): which cameras, and each camera's trajectories.
        **video: other ``VideoSpec`` fields (num_frames, width, first_pid, ...).
    Returns:
        list[VideoSpec]: camera c (1-based) has the synthetic set's camera c look. A camera
        that no person's draw reached gets the first person, so that no video is empty.
    """
    first = video.pop("first_pid", VideoSpec.first_pid)
    r = looks._rng(seed, 13)
    seen = {c: [] for c in range(1, num_cameras + 1)}
    for pid in range(first, first + num_people):
        hi = min(cameras_per_person[1], num_cameras)
        lo = min(max(1, cameras_per_person[0]), hi)
        k = int(r.integers(lo, hi + 1))
        for c in sorted(r.choice(num_cameras, k, replace=False) + 1):
            seen[int(c)].append(pid)
    return [VideoSpec(pids=tuple(seen[c]) or (first,), camera=c, seed=seed * 100 + c, **video)
            for c in range(1, num_cameras + 1)]


def write_network(specs, out_dir, fps=25):
    """``videos/c<k>.mp4``, ``dets/c<k>.txt`` and ``gt/c<k>.txt`` for each camera spec; returns out_dir."""
    import cv2

    for sub in ("videos", "dets", "gt"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    for spec in specs:
        name = f"c{spec.camera}"
        writer = cv2.VideoWriter(os.path.join(out_dir, "videos", name + ".mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                 (spec.width, spec.height))
        gt_lines, det_lines = [], []
        for t, image, gt, dets in frames(spec):
            writer.write(image)
            _mot_lines(t, gt, dets, gt_lines, det_lines)
        writer.release()
        for sub, lines in (("gt", gt_lines), ("dets", det_lines)):
            with open(os.path.join(out_dir, sub, name + ".txt"), "w") as f:
                f.writelines(lines)
    return out_dir
