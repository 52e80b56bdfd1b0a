"""Drawing of the embedded synthetic set: its spec, people and backgrounds in pixels, and ``render_image``.

Shape shorthand: H x W = ``spec.height`` x ``spec.width`` (drawn at S = ``spec.supersample``
times that, then downsampled); the photometric step works on an (H, W, 3) float32 array.

This module draws one image in memory; ``synthetic`` writes and caches the whole set on disk
(layout, manifest, lock) and ``synthetic_video`` draws the same people into video frames, so
the drawing stands apart from both. It also holds ``SyntheticSpec``: the drawing reads it
(size, seed, camera strength, jitter, supersampling), and ``synthetic`` imports it from here
and re-exports it, so the two modules do not import each other. What a person and a camera
look like (the palettes, ``_identity``, ``_camera``) is sampled in ``synthetic_looks``; this
module draws those looks. Like ``synthetic`` it imports only numpy, PIL, the standard library
and ``synthetic_looks``. A change to the drawing needs ``synthetic.GENERATOR_VERSION`` bumped,
so that cached sets are regenerated.

What varies per identity and per camera is listed in ``synthetic_looks``; per image:

* Per image (random stream ``(seed, 3, pid, cam, k)``): the walking pose (stride and
  arm swing), walking direction in side views, a small translation and scale jitter,
  a background crop offset, and a small change in lighting.

The camera change is deliberately strong. On raw pixel features the images cluster
by CAMERA before any training: images of different ids in the same camera are closer
than images of the same id in different cameras. CALR exists to solve exactly this
"IDs merge" problem. Within one camera an identity is still recognisable, and the
ids are meant to be confusable because they share attributes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .synthetic_looks import _camera, _identity, _mix, _rng

__all__ = ["SyntheticSpec", "render_image"]


@dataclass(frozen=True)
class SyntheticSpec:
    num_train_ids: int = 48
    num_test_ids: int = 24
    num_cameras: int = 3
    images_per_id_per_camera: int = 4
    height: int = 128
    width: int = 64
    seed: int = 0
    # Scales every camera effect (colour cast, exposure, blur, geometry, noise,
    # background difference). 0: no camera bias except viewpoint, 1: default.
    camera_strength: float = 1.0
    # Scales the within-camera, per-image jitter (pose, translation, lighting).
    image_jitter: float = 1.0
    jpeg_quality: int = 90
    # Drawing resolution relative to the output (2 = draw at 2x and downsample).
    supersample: int = 2

    def validate(self) -> None:
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            raise ValueError("need at least one train id and one test id")
        if self.num_train_ids + self.num_test_ids > 9999:
            raise ValueError("person ids must fit in 4 digits")
        if self.num_cameras < 2:
            raise ValueError("need at least 2 cameras (queries need a cross-camera match)")
        if self.images_per_id_per_camera < 2:
            raise ValueError("images_per_id_per_camera must be >= 2 (one query + gallery)")
        if self.images_per_id_per_camera > 9999:
            raise ValueError("frame numbers must fit in 6 digits")
        if self.height < 16 or self.width < 8:
            raise ValueError("image too small")
        if self.supersample < 1:
            raise ValueError("supersample must be >= 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
        if self.camera_strength < 0 or self.image_jitter < 0:
            raise ValueError("camera_strength and image_jitter must be >= 0")

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- drawing


def _bg_pad(W: int) -> int:
    return max(2, W // 8)


def _background(cam: Dict, w: int, h: int) -> Image.Image:
    bg = cam["bg"]
    img = Image.new("RGB", (w, h), bg["c1"])
    d = ImageDraw.Draw(img)
    style, p = bg["style"], bg["param"]
    if style == "wallfloor":
        y0 = int(h * p)
        d.rectangle([0, y0, w, h], fill=bg["c2"])
        for i in range(-h, w + h, max(4, w // 5)):  # floor tiles in perspective
            d.line([(w // 2 + (i - w // 2) // 3, y0), (i, h)], fill=bg["c3"], width=max(1, w // 120))
        for j in range(5):
            y = y0 + int((h - y0) * (j / 5) ** 1.6)
            d.line([(0, y), (w, y)], fill=bg["c3"], width=max(1, w // 120))
    elif style == "panels":
        step = max(6, int(w * 0.42))
        for x in range(-step // 3, w, step):
            d.rectangle([x + step // 10, int(h * 0.08), x + step - step // 10, int(h * 0.7)], fill=bg["c2"])
            d.rectangle([x + step // 5, int(h * 0.16), x + step - step // 5, int(h * 0.28)], fill=bg["c3"])
        d.rectangle([0, int(h * 0.78), w, h], fill=_mix(bg["c2"], (0, 0, 0), 0.3))
    elif style == "road":
        y0 = int(h * (p - 0.15))
        d.rectangle([0, 0, w, y0], fill=bg["c3"])
        d.rectangle([0, y0, w, h], fill=bg["c2"])
        for x in range(0, w, max(6, w // 3)):
            d.rectangle([x, int(h * 0.86), x + w // 7, int(h * 0.89)], fill=bg["c3"])
        for i in range(4):
            yy = y0 + int((h - y0) * (0.15 + 0.2 * i))
            d.line([(0, yy), (w, yy)], fill=_mix(bg["c2"], bg["c1"], 0.5), width=max(1, w // 60))
    else:  # brick
        bh = max(4, h // 22)
        bw = max(8, w // 3)
        for row, y in enumerate(range(0, h, bh)):
            off = (bw // 2) * (row % 2)
            for x in range(-off, w, bw):
                d.rectangle([x + 1, y + 1, x + bw - 1, y + bh - 1], fill=bg["c2"] if (row + x // bw) % 3 else bg["c3"])
        d.rectangle([0, int(h * 0.85), w, h], fill=_mix(bg["c1"], (0, 0, 0), 0.4))
    return img


def _poly_limb(d: ImageDraw.ImageDraw, p0, p1, w0: float, w1: float, fill) -> None:
    """A tapered limb from p0 (width w0) to p1 (width w1)."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    d.polygon(
        [(x0 + nx * w0 / 2, y0 + ny * w0 / 2), (x1 + nx * w1 / 2, y1 + ny * w1 / 2),
         (x1 - nx * w1 / 2, y1 - ny * w1 / 2), (x0 - nx * w0 / 2, y0 - ny * w0 / 2)],
        fill=fill,
    )


def _torso_pattern(ident: Dict, size: Tuple[int, int], P: float, view: str) -> Image.Image:
    """Texture for the torso bounding box (size = (w, h))."""
    w, h = size
    img = Image.new("RGB", size, ident["top"])
    d = ImageDraw.Draw(img)
    pat, c2 = ident["pattern"], ident["top2"]
    period = max(3, int(ident["stripe"] * P))
    if pat == "hstripes":
        for y in range(0, h, period):
            d.rectangle([0, y, w, y + period // 2 - 1], fill=c2)
    elif pat == "vstripes":
        for x in range(0, w, period):
            d.rectangle([x, 0, x + period // 2 - 1, h], fill=c2)
    elif pat == "checks":
        for y in range(0, h, period):
            for x in range(0, w, period):
                if ((x // period) + (y // period)) % 2 == 0:
                    d.rectangle([x, y, x + period - 1, y + period - 1], fill=c2)
    elif pat == "logo" and view == "front":
        r = int(min(w, h) * 0.2)
        cx, cy = w // 2, int(h * 0.3)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c2)
    elif pat == "jacket" and view != "side":
        if view == "front":  # open jacket: inner shirt visible in the middle
            d.rectangle([int(w * 0.36), 0, int(w * 0.64), h], fill=c2)
        else:  # jacket back: a yoke of the second colour
            d.rectangle([0, 0, w, int(h * 0.25)], fill=c2)
    elif pat == "jacket":
        d.rectangle([0, int(h * 0.85), w, h], fill=c2)
    return img


def _draw_person(ident: Dict, view: str, pose: Dict, W: int, H: int) -> Image.Image:
    """Person on a transparent RGBA canvas of size (W, H); feet centre at (W/2, 0.955 H)."""
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    P = 0.86 * H * ident["hscale"]
    cx = W / 2.0
    foot_y = 0.955 * H
    top_y = foot_y - P
    ws = ident["wscale"] * (0.62 if view == "side" else 1.0)
    y = lambda f: top_y + f * P  # noqa: E731  (fraction of body height -> pixel row)
    skin, hair = ident["skin"], ident["hair"]

    # ground shadow
    d.ellipse([cx - 0.16 * P, foot_y - 0.018 * P, cx + 0.16 * P, foot_y + 0.018 * P], fill=(0, 0, 0, 70))

    hip_y = foot_y - ident["leg"] * P
    shoulder_y = y(0.19)
    half_sh = 0.125 * P * ws
    half_hip = 0.1 * P * ws
    stride = pose["stride"] * P
    swing = pose["swing"]
    direction = pose["direction"]

    # legs (the back leg first)
    leg_w0, leg_w1 = 0.085 * P * max(ws, 0.8), 0.055 * P
    if view == "side":
        feet = [cx - direction * stride * 1.2, cx + direction * stride * 1.2]
        hips = [cx - 0.01 * P, cx + 0.01 * P]
    else:
        feet = [cx - 0.055 * P - stride * 0.25, cx + 0.055 * P + stride * 0.25]
        hips = [cx - half_hip * 0.5, cx + half_hip * 0.5]
    ankle_y = foot_y - 0.035 * P
    for i in range(2):
        shade = 0.82 if (view == "side" and i == 0) else 1.0
        bottom = _mix(ident["bottom"], (0, 0, 0), 1 - shade)
        lskin = _mix(skin, (0, 0, 0), 1 - shade)
        knee = ((hips[i] + feet[i]) / 2, (hip_y + ankle_y) / 2)
        if ident["bottom_style"] == "trousers":
            _poly_limb(d, (hips[i], hip_y), (feet[i], ankle_y), leg_w0, leg_w1, bottom)
        else:
            _poly_limb(d, (hips[i], hip_y), (feet[i], ankle_y), leg_w0 * 0.8, leg_w1 * 0.85, lskin)
            if ident["bottom_style"] == "shorts":
                _poly_limb(d, (hips[i], hip_y), knee, leg_w0 * 1.05, leg_w0 * 0.95, bottom)
        sx = feet[i] + (direction * 0.03 * P if view == "side" else 0)
        d.ellipse([sx - 0.045 * P, ankle_y - 0.012 * P, sx + 0.045 * P, foot_y + 0.01 * P], fill=ident["shoes"])
    if ident["bottom_style"] == "skirt":
        sk = 0.17 * P * ws + stride * 0.3
        d.polygon([(cx - half_hip, hip_y - 0.02 * P), (cx + half_hip, hip_y - 0.02 * P),
                   (cx + sk, hip_y + 0.2 * P), (cx - sk, hip_y + 0.2 * P)], fill=ident["bottom"])
    elif ident["bottom_style"] != "trousers":
        d.rectangle([cx - half_hip, hip_y - 0.03 * P, cx + half_hip, hip_y + 0.03 * P], fill=ident["bottom"])
    else:
        d.rectangle([cx - half_hip, hip_y - 0.03 * P, cx + half_hip, hip_y + 0.02 * P], fill=ident["bottom"])

    # arms behind the torso (side view: far arm)
    sleeve = ident["top"]
    arm_len = 0.33 * P
    arm_w = 0.055 * P

    def arm(side: float, ang: float, shade: float = 1.0) -> None:
        sx = cx + side * (half_sh + arm_w * 0.1)
        sy = shoulder_y + 0.02 * P
        ex = sx + math.sin(ang) * arm_len + side * 0.015 * P
        ey = sy + math.cos(ang) * arm_len
        mx, my = (sx + ex) / 2, (sy + ey) / 2
        sl = _mix(sleeve, (0, 0, 0), 1 - shade)
        sk = _mix(skin, (0, 0, 0), 1 - shade)
        if ident["long_sleeves"]:
            _poly_limb(d, (sx, sy), (ex, ey), arm_w, arm_w * 0.8, sl)
        else:
            _poly_limb(d, (sx, sy), (ex, ey), arm_w * 0.75, arm_w * 0.65, sk)
            _poly_limb(d, (sx, sy), (mx, my), arm_w * 1.05, arm_w, sl)
        r = arm_w * 0.45
        d.ellipse([ex - r, ey - r, ex + r, ey + r], fill=sk)

    if view == "side":
        arm(0.0, -direction * swing, 0.8)
    else:
        arm(-1.0, swing * 0.35)
        arm(1.0, -swing * 0.35)

    # bag behind the body (front view backpack) / handbag
    bagc = ident["bag_colour"]
    if ident["bag"] == "backpack" and view == "side":
        bx = cx - direction * (half_sh + 0.04 * P)
        d.rounded_rectangle([bx - 0.06 * P, shoulder_y + 0.02 * P, bx + 0.06 * P, shoulder_y + 0.22 * P],
                            radius=0.02 * P, fill=bagc)

    # torso with pattern
    t_top, t_bot = shoulder_y - 0.01 * P, hip_y - 0.02 * P
    box = (int(cx - half_sh), int(t_top), int(math.ceil(cx + half_sh)) + 1, int(math.ceil(t_bot)) + 1)
    bw, bh = box[2] - box[0], box[3] - box[1]
    tex = _torso_pattern(ident, (bw, bh), P, view)
    mask = Image.new("L", (bw, bh), 0)
    md = ImageDraw.Draw(mask)
    md.rounded_rectangle([0, 0, bw - 1, int(bh * 0.55)], radius=max(1, int(0.04 * P)), fill=255)
    md.polygon([(0, int(bh * 0.3)), (bw - 1, int(bh * 0.3)),
                (bw / 2 + half_hip, bh - 1), (bw / 2 - half_hip, bh - 1)], fill=255)
    layer.paste(tex, box[:2], mask)

    if ident["bag"] == "backpack":
        if view == "back":
            d.rounded_rectangle([cx - 0.09 * P * ws, shoulder_y + 0.03 * P, cx + 0.09 * P * ws, shoulder_y + 0.24 * P],
                                radius=0.025 * P, fill=bagc)
        elif view == "front":
            for s in (-1, 1):
                d.line([(cx + s * half_sh * 0.55, shoulder_y), (cx + s * half_sh * 0.6, shoulder_y + 0.2 * P)],
                       fill=bagc, width=max(1, int(0.025 * P)))
    elif ident["bag"] == "shoulder":
        side = 1.0 if view != "side" else -direction
        d.line([(cx - side * half_sh * 0.6, shoulder_y), (cx + side * half_sh, hip_y - 0.02 * P)],
               fill=bagc, width=max(1, int(0.018 * P)))
        bx = cx + side * (half_sh + 0.02 * P)
        d.rectangle([bx - 0.06 * P, hip_y - 0.07 * P, bx + 0.06 * P, hip_y + 0.04 * P], fill=bagc)

    # near arm in side view (over the torso)
    if view == "side":
        arm(0.0, direction * swing, 1.0)
    if ident["bag"] == "handbag":
        hx = cx + (half_sh + 0.01 * P if view != "side" else direction * swing * 0.25 * P)
        hy = shoulder_y + 0.36 * P
        d.rectangle([hx - 0.045 * P, hy, hx + 0.045 * P, hy + 0.08 * P], fill=bagc)

    # neck, head and hair
    hw = 0.052 * P * ident["head"] * (0.95 if view == "side" else 1.0)
    hh = 0.07 * P * ident["head"]
    hcy = shoulder_y - 0.02 * P - hh
    d.rectangle([cx - 0.02 * P, hcy + hh * 0.6, cx + 0.02 * P, shoulder_y + 0.01 * P], fill=skin)
    if ident["long_hair"] and view == "front":  # hair framing the face
        d.rounded_rectangle([cx - hw * 1.15, hcy - hh * 0.4, cx + hw * 1.15, hcy + hh * 1.15],
                            radius=hw * 0.5, fill=hair)
    elif ident["long_hair"] and view == "back":  # hair falling over the shoulders
        d.rounded_rectangle([cx - hw * 1.1, hcy - hh * 0.5, cx + hw * 1.1, shoulder_y + 0.08 * P],
                            radius=hw * 0.5, fill=hair)
    elif ident["long_hair"]:  # side view: hair down the back of the head
        bx = cx - direction * hw * 0.5
        d.rounded_rectangle([bx - hw * 0.7, hcy - hh * 0.5, bx + hw * 0.7, shoulder_y + 0.07 * P],
                            radius=hw * 0.4, fill=hair)
    d.ellipse([cx - hw, hcy - hh, cx + hw, hcy + hh], fill=skin if view != "back" else hair)
    if view == "front":
        d.chord([cx - hw * 1.05, hcy - hh * 1.08, cx + hw * 1.05, hcy + hh * 0.4], 180, 360, fill=hair)
    elif view == "side":
        d.chord([cx - hw * 1.05, hcy - hh * 1.08, cx + hw * 1.05, hcy + hh * 0.5], 180, 360, fill=hair)
        back = cx - direction * hw * 0.45
        d.ellipse([back - hw * 0.6, hcy - hh * 0.9, back + hw * 0.6, hcy + hh * 0.5], fill=hair)
    if ident["cap"] is not None:
        d.chord([cx - hw * 1.1, hcy - hh * 1.15, cx + hw * 1.1, hcy + hh * 0.1], 180, 360, fill=ident["cap"])
        if view == "side":
            x1 = cx + direction * hw * 1.6
            d.rectangle([min(cx, x1), hcy - hh * 0.5, max(cx, x1), hcy - hh * 0.35], fill=ident["cap"])
    return layer


def _hue_matrix(deg: float, sat: float) -> np.ndarray:
    """RGB -> RGB matrix: rotate hue by deg around the grey axis and scale saturation."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    k = np.ones(3) / math.sqrt(3.0)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = c * np.eye(3) + s * K + (1 - c) * np.outer(k, k)
    grey = np.outer(k, k)
    return grey + sat * (R - grey)


def render_image(spec: SyntheticSpec, pid: int, cam: int, k: int) -> Image.Image:
    """Render image k of person pid (1-based) in camera cam (1-based) as an RGB image."""
    ident = _identity(spec.seed, pid)
    camp = _camera(spec.seed, cam - 1, spec.camera_strength)
    return _render(spec, ident, camp, pid, cam, k)


def _render(spec: SyntheticSpec, ident: Dict, camp: Dict, pid: int, cam: int, k: int,
            bg_full: Image.Image = None) -> Image.Image:
    r = _rng(spec.seed, 3, pid, cam, k)
    j = spec.image_jitter
    S = spec.supersample
    W, H = spec.width * S, spec.height * S
    pose = dict(
        stride=float(abs(r.normal(0.0, 0.09))) * min(j, 2.0) + 0.01,
        swing=float(r.uniform(-0.45, 0.45)) * min(j, 2.0),
        direction=1.0 if r.random() < 0.5 else -1.0,
    )
    person = _draw_person(ident, camp["view"], pose, W, H)

    # camera geometry + per-image jitter, anchored at the feet
    scale = camp["scale"] * math.exp(r.normal(0, 0.03) * j)
    tx = (camp["dx"] + r.normal(0, 0.025) * j) * W
    ty = (camp["dy"] + r.normal(0, 0.015) * j) * H
    ax, ay = W / 2.0, 0.955 * H
    fwd = np.array([[scale, camp["shear"] * scale, 0.0], [0.0, scale, 0.0], [0.0, 0.0, 1.0]])
    T1 = np.array([[1, 0, -ax], [0, 1, -ay], [0, 0, 1.0]])
    T2 = np.array([[1, 0, ax + tx], [0, 1, ay + ty], [0, 0, 1.0]])
    inv = np.linalg.inv(T2 @ fwd @ T1)
    # NEAREST at the supersampled size; the BOX downsample below antialiases the edges
    person = person.transform((W, H), Image.AFFINE, tuple(inv[:2].ravel()), resample=Image.NEAREST)

    pad = _bg_pad(W)
    if bg_full is None:
        bg_full = _background(camp, W + 2 * pad, H + 2 * pad)
    ox, oy = (pad + int(round((int(v) - pad) * min(j, 1.0))) for v in r.integers(0, 2 * pad + 1, size=2))
    canvas = bg_full.crop((ox, oy, ox + W, oy + H))
    canvas.paste(person, (0, 0), person)

    # optics: low resolution and blur
    w1, h1 = spec.width, spec.height
    if camp["lowres"] < 0.98:
        lw, lh = max(4, int(round(w1 * camp["lowres"]))), max(8, int(round(h1 * camp["lowres"])))
        canvas = canvas.resize((lw, lh), Image.BOX).resize((w1, h1), Image.BILINEAR)
    else:
        canvas = canvas.resize((w1, h1), Image.BOX)
    if camp["blur"] > 0.15:
        canvas = canvas.filter(ImageFilter.GaussianBlur(camp["blur"]))

    # photometrics: colour cast, exposure, per-image lighting, noise
    x = np.asarray(canvas, dtype=np.float32) / 255.0
    M = _hue_matrix(camp["hue_angle"], camp["saturation"]) * camp["gains"][:, None]
    x = x @ M.T.astype(np.float32)
    x = np.clip(x, 0.0, 1.0) ** camp["gamma"]
    light = math.exp(r.normal(0, 0.06) * j)
    x = (x - 0.5) * camp["contrast"] * light + 0.5 + camp["offset"] / 255.0 + r.normal(0, 0.02) * j
    x = x * 255.0
    if camp["noise"] > 0:
        x += r.standard_normal(size=x.shape, dtype=np.float32) * np.float32(camp["noise"])
    return Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8), "RGB")
