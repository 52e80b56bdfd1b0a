"""What the people and cameras of the synthetic set look like: palettes, ``_identity`` and ``_camera``.

``_identity(seed, pid)`` samples a person and ``_camera(seed, cam, strength)`` a camera as plain
dicts of colours and numbers, each from its own seeded random stream; nothing here draws. The
looks stand apart from the drawing because two drawers share them: ``synthetic_render`` turns
them into the image set's pixels and ``synthetic_video`` into video frames, and a look is the
same in both. Like them it needs no torch or FastReID: it imports only numpy and the standard
library. A change here changes the images, so it needs ``synthetic.GENERATOR_VERSION`` bumped too.

What varies, and where:

* Per identity (random stream ``(seed, 1, pid)``, so train images do not change when
  num_test_ids changes): the top colour (13-colour palette, so ids share top colours),
  the top pattern (solid, horizontal or vertical stripes, checks, chest logo, or an
  open jacket over a shirt) and its second colour, sleeve length, the bottom colour and
  style (trousers, shorts or skirt), shoe colour, skin tone, hair colour and length,
  sometimes a cap, a bag (none, backpack, shoulder bag or handbag) and its colour, and
  body shape (height, width, leg length, head size).
* Per camera (random stream ``(seed, 2, cam)``; camera c's look does not depend on
  num_cameras): the viewpoint (front, back or side, in turn), the background (base hue
  spaced by the golden ratio around the colour wheel, one of four styles: wall+floor,
  shop-front panels, road, brick), a colour cast (a hue rotation of 18-40 degrees plus
  channel gains and a saturation change), exposure (gamma, contrast, brightness
  offset), optical blur or low resolution, geometry (person scale, shear, horizontal
  and vertical offset), and sensor noise. ``camera_strength`` scales all of these
  (0 removes the camera bias except for viewpoint; 1 is the default).
"""
from __future__ import annotations

import colorsys
import math
from typing import Dict, Tuple

import numpy as np


# --------------------------------------------------------------------------- palettes

_TOP_COLOURS = [
    (200, 40, 40), (30, 40, 110), (232, 232, 226), (30, 30, 34), (230, 200, 40),
    (40, 140, 60), (120, 170, 222), (232, 140, 172), (236, 120, 30), (128, 128, 128),
    (110, 50, 140), (120, 80, 45), (30, 130, 130),
]
_BOTTOM_COLOURS = [
    (40, 55, 95), (25, 25, 28), (192, 172, 130), (110, 110, 116), (110, 142, 182),
    (222, 222, 216), (90, 60, 40), (150, 30, 40), (100, 100, 50),
]
_SKIN = [(245, 205, 170), (226, 176, 136), (192, 136, 96), (142, 96, 62), (96, 66, 46)]
_HAIR = [(20, 18, 18), (62, 40, 25), (112, 76, 40), (216, 186, 112), (172, 172, 172), (150, 62, 30)]
_SHOES = [(20, 20, 20), (235, 235, 235), (100, 64, 36), (120, 120, 120), (180, 30, 30)]
_BAG = [(20, 20, 20), (140, 90, 50), (60, 80, 140), (180, 40, 40), (200, 200, 190), (60, 110, 60)]
_PATTERNS = ["solid", "hstripes", "vstripes", "checks", "logo", "jacket"]
_PATTERN_P = [0.3, 0.16, 0.1, 0.12, 0.18, 0.14]
_BOTTOMS = ["trousers", "shorts", "skirt"]
_BOTTOM_P = [0.64, 0.18, 0.18]
_BAGS = ["none", "backpack", "shoulder", "handbag"]
_BAG_P = [0.5, 0.22, 0.16, 0.12]
_VIEWS = ["front", "back", "side"]
_BG_STYLES = ["wallfloor", "panels", "road", "brick"]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _pick(rng: np.random.Generator, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


def _identity(seed: int, pid: int) -> Dict:
    r = _rng(seed, 1, pid)
    top = _pick(r, _TOP_COLOURS)
    second = _pick(r, [c for c in _TOP_COLOURS if c != top])
    return dict(
        top=top,
        top2=second,
        pattern=_pick(r, _PATTERNS, _PATTERN_P),
        stripe=float(r.uniform(0.045, 0.075)),  # stripe period, fraction of body height
        long_sleeves=bool(r.random() < 0.6),
        bottom=_pick(r, _BOTTOM_COLOURS),
        bottom_style=_pick(r, _BOTTOMS, _BOTTOM_P),
        shoes=_pick(r, _SHOES),
        skin=_pick(r, _SKIN),
        hair=_pick(r, _HAIR),
        long_hair=bool(r.random() < 0.35),
        cap=_pick(r, _TOP_COLOURS) if r.random() < 0.15 else None,
        bag=_pick(r, _BAGS, _BAG_P),
        bag_colour=_pick(r, _BAG),
        hscale=float(r.uniform(0.9, 1.05)),
        wscale=float(r.uniform(0.8, 1.2)),
        leg=float(r.uniform(0.46, 0.52)),  # leg length, fraction of body height
        head=float(r.uniform(0.9, 1.1)),
    )


def _hsv(h: float, s: float, v: float) -> Tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return (int(r * 255), int(g * 255), int(b * 255))


def _mix(a, b, t: float) -> Tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def _camera(seed: int, cam: int, strength: float) -> Dict:
    """Camera cam (0-based). Does not depend on the number of cameras."""
    r = _rng(seed, 2, cam)
    s = strength
    hue = (0.08 + 0.618034 * cam + r.uniform(-0.04, 0.04)) % 1.0
    neutral = (128, 128, 124)
    bg_sat = r.uniform(0.35, 0.6)
    bg_val = r.uniform(0.45, 0.8)
    bg = dict(
        style=_BG_STYLES[(cam + int(r.integers(0, 4))) % 4] if cam >= 4 else _BG_STYLES[cam],
        c1=_mix(neutral, _hsv(hue, bg_sat, bg_val), min(s, 1.0)),
        c2=_mix(neutral, _hsv(hue + r.uniform(-0.08, 0.08), bg_sat * 0.8, bg_val * r.uniform(0.55, 0.8)), min(s, 1.0)),
        c3=_mix(neutral, _hsv(hue + 0.5, r.uniform(0.1, 0.4), r.uniform(0.6, 0.95)), min(s, 1.0)),
        param=float(r.uniform(0.55, 0.75)),
    )
    # Optics/exposure/geometry come from a small table of camera archetypes, so the
    # first cameras are guaranteed to differ a lot, plus a seeded jitter. Every entry is
    # a deviation from "no effect" and is scaled by camera_strength.
    a = dict(zip(_ARCH_KEYS, _CAMERA_ARCHETYPES[cam % len(_CAMERA_ARCHETYPES)]))
    if cam >= len(_CAMERA_ARCHETYPES):  # later cameras: other hue, larger jitter
        a["hue"] = 80.0 * (((cam - 5) * 0.618034 + 0.1) % 1.0) - 40.0
        jit = 2.0
    else:
        jit = 1.0
    u = lambda lo, hi: float(r.uniform(lo, hi)) * jit  # noqa: E731
    gains = np.exp(r.uniform(-0.2, 0.2, size=3) * s)
    return dict(
        view=_VIEWS[cam % 3],
        bg=bg,
        hue_angle=(a["hue"] + u(-6, 6)) * s,
        gains=gains,
        saturation=math.exp((a["log_sat"] + u(-0.1, 0.1)) * s),
        gamma=math.exp((a["log_gamma"] + u(-0.08, 0.08)) * s),
        contrast=math.exp((a["log_contrast"] + u(-0.06, 0.06)) * s),
        offset=(a["offset"] + u(-5, 5)) * s,
        blur=max(0.0, a["blur"] + u(-0.15, 0.15)) * s,
        lowres=1.0 - min(0.7, max(0.0, a["drop"] + u(-0.05, 0.05)) * s),
        scale=math.exp((a["log_scale"] + u(-0.03, 0.03)) * s),
        shear=(a["shear"] + u(-0.03, 0.03)) * s,
        dx=(a["dx"] + u(-0.015, 0.015)) * s,  # fraction of width
        dy=(a["dy"] + u(-0.01, 0.01)) * s,  # fraction of height
        noise=max(0.0, a["noise"] + u(-1.0, 1.0)) * s,
    )


_ARCH_KEYS = ("hue", "log_sat", "log_gamma", "log_contrast", "offset", "blur", "drop",
              "log_scale", "shear", "dx", "dy", "noise")
_CAMERA_ARCHETYPES = [
    # hue  lsat  lgam  lcon   off  blur  drop  lscale shear  dx     dy    noise
    (32.0, 0.0, -0.25, -0.35, 18.0, 0.9, 0.40, -0.16, -0.06, 0.04, 0.04, 3.0),   # far, hazy, bright
    (-32.0, -0.1, 0.25, 0.08, -12.0, 0.0, 0.00, 0.03, 0.04, 0.00, -0.04, 8.0),   # close, dark, sharp, noisy
    (0.0, -0.6, 0.00, -0.10, 0.0, 0.3, 0.30, -0.07, 0.12, -0.05, 0.00, 5.0),     # washed-out colours, sheared
    (-15.0, 0.25, -0.30, -0.15, 10.0, 0.2, 0.00, -0.02, -0.12, 0.02, -0.02, 4.0),  # vivid, overexposed
    (15.0, -0.3, 0.15, 0.05, -8.0, 0.6, 0.50, -0.12, 0.00, -0.03, 0.05, 9.0),    # low-res, noisy
]
