#!/usr/bin/env python
"""Training throughput: a CALR stage-2 step against FastReID's supervised Baseline step.

Same backbone, batch and input size, measured in the same run, on synthetic tensors (no
data loading, so the model step is what is compared). CALR's step adds the memory
lookup and momentum update, the camera classifier behind gradient reversal and the
weighted loss; the Baseline step is FastReID's CE + triplet. Target: CALR >= 0.9 x
Baseline images/s.

    python bench/train_throughput.py                                  # CPU: R18, 128x64, batch 32
    python bench/train_throughput.py --device cuda --backbone r50-ibn --size 256 128 --batch 256 --amp --channels-last
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import calr_plugin  # noqa: E402,F401
from calr_plugin import load_config  # noqa: E402
from calr_plugin.engine.trainer import StepRunner  # noqa: E402
from calr_plugin.utils.dist import unwrap  # noqa: E402
from fastreid.engine import DefaultTrainer  # noqa: E402
from fastreid.utils.events import EventStorage  # noqa: E402

BACKBONES = {
    "r18": ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512"],
    "r50": ["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.FEAT_DIM", "2048"],
    "r50-ibn": ["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.FEAT_DIM", "2048", "MODEL.BACKBONE.WITH_IBN", "True"],
    # timm's EfficientNet-Lite2 (the offline ImageNet weights: tools/convert_weights.py efficientnet-lite2)
    "effnet-lite2": ["MODEL.BACKBONE.NAME", "build_timm_backbone", "MODEL.BACKBONE.TIMM_MODEL", "tf_efficientnet_lite2",
                     "MODEL.BACKBONE.FEAT_DIM", "1280"],
}


def batches(n, batch, size, num_classes, num_cams, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append({
            "images": (torch.rand(batch, 3, *size, generator=g) * 255).to(device),
            "targets": torch.randint(0, num_classes, (batch,), generator=g).to(device),
            "camids": torch.randint(0, num_cams, (batch,), generator=g).to(device),
        })
    return out


def measure(config, opts, args, num_classes=500, num_cams=6):
    cfg = load_config(config, opts, freeze=False)
    if cfg.MODEL.META_ARCHITECTURE == "CALR":
        cfg.CALR.ALIGN.NUM_CAMERAS = num_cams
    else:
        cfg.MODEL.HEADS.NUM_CLASSES = num_classes
    cfg.freeze()
    model = DefaultTrainer.build_model(cfg)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.MODEL.META_ARCHITECTURE == "CALR":
        feat_dim = cfg.MODEL.BACKBONE.FEAT_DIM
        centroids = torch.nn.functional.normalize(torch.randn(num_classes, feat_dim), dim=1)
        weights = torch.rand(num_classes)
        unwrap(model).memory.reset(centroids, weights)
        unwrap(model).beta = 1.0
    optimizer, wrapper = DefaultTrainer.build_optimizer(cfg, model)
    data = batches(args.iters + args.warmup, args.batch, tuple(args.size), num_classes, num_cams, args.device)
    runner = StepRunner(model, data, optimizer, wrapper, amp=args.amp, channels_last=args.channels_last)
    times = []
    with EventStorage(0):
        for it in range(args.iters + args.warmup):
            runner.iter = it
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            runner.run_step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if it >= args.warmup:
                times.append(time.perf_counter() - t)
    return args.batch / np.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="r18", choices=sorted(BACKBONES))
    p.add_argument("--size", type=int, nargs=2, default=[128, 64])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--rounds", type=int, default=3, help="alternate Baseline and CALR this many times, keep the best")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    common = ["MODEL.DEVICE", args.device, "SOLVER.AMP.ENABLED", str(args.amp), "MODEL.BACKBONE.PRETRAIN", "False",
              "SOLVER.IMS_PER_BATCH", str(args.batch), "DATALOADER.NUM_INSTANCE", "4"] + BACKBONES[args.backbone]
    # Alternating rounds and keeping each side's best makes the ratio robust to other jobs
    # on a shared machine (a slow spell then hits both sides, not one).
    base = calr = 0.0
    for _ in range(args.rounds):
        base = max(base, measure(os.path.join(repo, "configs", "Base-bagtricks.yml"), common, args))
        calr = max(calr, measure(os.path.join(repo, "configs", "CALR", "Base-CALR.yml"), common, args))
    print(f"device={args.device} backbone={args.backbone} size={args.size[0]}x{args.size[1]} batch={args.batch} "
          f"amp={args.amp} channels_last={args.channels_last} iters={args.iters} (median step, best of {args.rounds} alternating rounds)")
    print("| step | images/s | ratio vs Baseline |")
    print("|---|---|---|")
    print(f"| FastReID Baseline (CE + triplet) | {base:.1f} | 1.00 |")
    print(f"| CALR stage 2 (memory + GRL domain + weights) | {calr:.1f} | {calr / base:.2f} |")


if __name__ == "__main__":
    main()
