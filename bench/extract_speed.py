"""Benchmark of the label step's feature extraction: today's path against the engines (not a test).

Shape shorthand: N training images, D feature dims.

Every stage-2 epoch re-extracts all N training images (``calr_plugin/engine/features.py``); on a
CPU that is most of the epoch. This runs, in one process and on the same model:

* ``fastreid`` (the reference, the path before ``CALR.EXTRACT.ENGINE``): FastReID's
  ``inference_on_dataset`` on the training model, eager PyTorch, ``no_grad``;
* ``torch``: ``CALR.EXTRACT.ENGINE torch`` (an eval copy in channels-last, inference_mode);
* ``onnxruntime``: ``CALR.EXTRACT.ENGINE onnxruntime`` (export + ONNX Runtime, export time
  included in every timing).

Each path runs ``--repeat`` times in turn (round robin, so a load change hits all of them);
the fastest run of each is kept. It prints images/s and the speed-up over the reference,
the smallest cosine between a path's feature and the reference's for the same image, and
the pseudo labels built from each path's features (the recipe's stage-2 settings, stage-1
labels from the reference features) against the reference's: pairwise F and cluster counts.

    python bench/extract_speed.py                                   # CUHK01 train, ImageNet weights
    python bench/extract_speed.py --weights output/real/cuhk01/calr_s1/model_final.pth
"""
import argparse
import glob
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import calr_plugin  # noqa: E402,F401  (shims, registries)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from calr_plugin import load_config  # noqa: E402
from calr_plugin.data.datasets import NAME_PATTERN  # noqa: E402
from calr_plugin.engine.features import extract_features  # noqa: E402
from calr_plugin.engine.hooks import label_params  # noqa: E402
from calr_plugin.labels import label_agreement, stage1_labels, stage2_labels  # noqa: E402
from calr_plugin.utils.dist import broadcast_buffers  # noqa: E402

SETS = {"cuhk01": "../shared/data/cuhk01", "pku": "../shared/data/pku_reid74"}


def fastreid_reference(model, paths, cfg):
    """The extraction before CALR.EXTRACT.ENGINE: FastReID's loop on the live model. (N, D)."""
    from fastreid.data import build_reid_test_loader
    from fastreid.data.common import CommDataset
    from fastreid.data.transforms import build_transforms
    from fastreid.evaluation import inference_on_dataset
    from fastreid.evaluation.evaluator import DatasetEvaluator

    class Collector(DatasetEvaluator):
        def reset(self):
            self.feats = []

        def process(self, inputs, outputs):
            self.feats.append(outputs.detach().float().cpu())

        def evaluate(self):
            return torch.cat(self.feats)

    broadcast_buffers(model)
    dataset = CommDataset([(p, 0, 0) for p in paths], build_transforms(cfg, is_train=False), relabel=False)
    loader, _ = build_reid_test_loader(test_set=dataset, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)
    amp = cfg.SOLVER.AMP.ENABLED and torch.cuda.is_available()
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        feats = inference_on_dataset(model, loader, Collector())
    return F.normalize(feats.float(), dim=1).numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="cuhk01", choices=sorted(SETS))
    ap.add_argument("--config-file", default=None, help="recipe (default configs/CALR/<set>_mobilenetv2_tuned.yml)")
    ap.add_argument("--weights", default="", help="a checkpoint to extract with (default: the ImageNet backbone)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--images", type=int, default=0, help="first N training images only (0 = all)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: AMP on, and no onnxruntime row (it runs on CPU)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    opts = ["MODEL.DEVICE", args.device] + (["SOLVER.AMP.ENABLED", "True"] if args.device == "cuda" else [])
    cfg = load_config(args.config_file or f"configs/CALR/{args.set}_mobilenetv2_tuned.yml", opts)
    paths = sorted(glob.glob(os.path.join(SETS[args.set], "bounding_box_train", "*.jpg")))
    if args.images:
        paths = paths[:args.images]
    if not paths:
        raise SystemExit(f"extract_speed.py: no images in {SETS[args.set]}/bounding_box_train")
    cams = np.array([int(NAME_PATTERN.match(os.path.basename(p)).group(2)) for p in paths])

    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    model = build_model(cfg)  # on MODEL.DEVICE
    if args.weights:
        Checkpointer(model).load(args.weights)
    model.train()  # as the label hook finds it
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {platform.processor() or 'cpu'}")
    print("command: python bench/extract_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"{len(paths)} images of {args.set} at {tuple(cfg.INPUT.SIZE_TEST)}, batch {cfg.TEST.IMS_PER_BATCH}, "
          f"{cfg.DATALOADER.NUM_WORKERS} loader workers, {cfg.MODEL.BACKBONE.NAME}, "
          f"weights {args.weights or cfg.MODEL.BACKBONE.PRETRAIN_PATH}", flush=True)

    def engine(name):
        def run():
            c = cfg.clone()
            c.defrost()
            c.CALR.EXTRACT.ENGINE = name
            return extract_features(model, paths, c)
        return run

    paths_ = {"fastreid": lambda: fastreid_reference(model, paths, cfg), "torch": engine("torch")}
    if args.device == "cpu":
        paths_["onnxruntime"] = engine("onnxruntime")
    best, feats = {}, {}
    for r in range(args.repeat):
        for name, run in paths_.items():
            t0 = time.perf_counter()
            feats[name] = run()
            sec = time.perf_counter() - t0
            best[name] = min(best.get(name, np.inf), sec)
            print(f"  run {r + 1} {name}: {sec:.2f} s", flush=True)
            if not model.training:
                raise SystemExit(f"extract_speed.py: the {name} path left the model in eval mode")

    ref = feats["fastreid"]
    params = label_params(cfg)
    local = stage1_labels(ref, cams, params, silhouette=False).labels
    labels = {name: stage2_labels(f, cams, local, 0, cfg.SOLVER.MAX_EPOCH, params) for name, f in feats.items()}
    print("\n| path | images/s | x reference | min cosine to reference | global clusters | "
          "pairwise F, global labels vs reference | refined clusters | pairwise F, refined vs reference |")
    print("|---|---|---|---|---|---|---|---|")
    for name in paths_:
        lab, base = labels[name], labels["fastreid"]
        cos = float(np.min(np.einsum("ij,ij->i", feats[name], ref)))
        print(f"| {name} | {len(paths) / best[name]:.1f} | {best['fastreid'] / best[name]:.2f} | {cos:.6f} | "
              f"{int(lab.global_labels.max()) + 1} | {label_agreement(lab.global_labels, base.global_labels):.4f} | "
              f"{lab.num_clusters} | {label_agreement(lab.refined_labels, base.refined_labels):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
