"""Benchmark: time to embed the boxes of one video frame for a tracker (not a test).

A tracker calls the embedder once per frame with that frame's boxes (``CALRReID.get_features``:
crop, resize, forward, normalise). This times it for ``--boxes`` boxes of a 1920x1080 frame,
for each recipe and each path:

* ``torch``: the PyTorch checkpoint in eval mode (``inference_mode``), the reference;
* ``onnxruntime``: the same model exported with ``tools/export_onnx.py --profile tracker``
  (one session, ONNX Runtime's default threads).

Recipes: MobileNetV2 at 128x64 (the demo and CUHK01 recipe), EfficientNet-Lite2 at 256x128
(cuhk01_effnetlite2) and ResNet50 at 256x128 (market; random weights: the speed does not depend
on them). Each path runs two rounds, alternating with the other path, each a warm-up call and
the median of ``--repeat`` / 2 calls; the smaller round median is kept. It
prints ms per frame, the frame rate that leaves a tracker (the embedder alone), and the ONNX
path's speed-up over PyTorch, plus the largest difference between the two paths' rows.

    python bench/embed_speed.py [--boxes 32] [--repeat 20]
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import calr_plugin  # noqa: E402,F401
import torch  # noqa: E402
from calr_plugin import CALRReID  # noqa: E402
from calr_plugin.deploy.export import export_onnx  # noqa: E402
from calr_plugin.engine.checkpoint import load_inference_model  # noqa: E402

RECIPES = [
    ("MobileNetV2 128x64", "configs/CALR/demo_synthetic.yml", []),
    ("EffNet-Lite2 256x128", "configs/CALR/cuhk01_effnetlite2.yml", ["MODEL.BACKBONE.PRETRAIN", "False"]),
    ("ResNet50 256x128", "configs/CALR/market.yml", ["MODEL.BACKBONE.PRETRAIN", "False"]),
]


def frame_and_boxes(n, seed=0):
    """A 1080p BGR frame of noise and ``n`` person-shaped boxes (heights 100-400 px) in it."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    h = rng.uniform(100, 400, n)
    x, y = rng.uniform(0, 1920 - h / 2), rng.uniform(0, 1080 - h)
    return frame, np.c_[x, y, x + h / 2.5, y + h].astype(np.float32)


def timed(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boxes", type=int, default=32)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    frame, boxes = frame_and_boxes(args.boxes)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; {args.boxes} boxes of a 1920x1080 frame, median of {args.repeat}")
    print(f"{'recipe':22s} {'torch ms':>9s} {'onnx ms':>9s} {'torch fps':>10s} {'onnx fps':>9s} {'onnx/torch':>11s} "
          f"{'max |diff|':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, opts in RECIPES:
            cfg, model = load_inference_model(os.path.join(ROOT, config), opts)
            weights = os.path.join(tmp, "model.pth")
            torch.save({"model": model.state_dict()}, weights)
            onnx = os.path.join(tmp, "model.onnx")
            export_onnx(model, onnx, *cfg.INPUT.SIZE_TEST, profile="tracker")
            pt = CALRReID(weights, config_file=os.path.join(ROOT, config), device="cpu", opts=opts)
            ox = CALRReID(onnx, device="cpu")
            diff = float(np.abs(pt.get_features(boxes, frame) - ox.get_features(boxes, frame)).max())
            t_pt = t_ox = None
            for _ in range(2):  # alternate, so a load change hits both
                a = timed(lambda: pt.get_features(boxes, frame), args.repeat // 2)
                b = timed(lambda: ox.get_features(boxes, frame), args.repeat // 2)
                t_pt, t_ox = min(a, t_pt or a), min(b, t_ox or b)
            print(f"{name:22s} {t_pt * 1e3:9.1f} {t_ox * 1e3:9.1f} {1 / t_pt:10.1f} {1 / t_ox:9.1f} "
                  f"{t_pt / t_ox:10.2f}x {diff:11.2g}")


if __name__ == "__main__":
    main()
