#!/usr/bin/env python
"""Which features find the cameras: pseudo-camera agreement with the true cameras, per feature.

    python bench/camera_features.py cuhk01 pku [--recipe mobilenetv2] [--seed 1]

For each set (its training split, cameras from the Market names, read only to score), the
untrained recipe model extracts the training features once per candidate: the embedding
(the model's output) and the style statistics (channel mean and std) of the backbone's
output at strides 2, 4, 8, 16 and 32 (``auto.camera_style.layer_at_stride``). Each is clustered
by ``labels.cameras.infer_cameras`` into the true number of cameras, and into the number the
embedding's eigengap chooses (what ``DATASETS.NUM_CAMERAS auto`` uses); the table gives the
ARI and purity with the true cameras, and the count each feature's own eigengap would
choose. No person id is read.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHARED = {"cuhk01": "../shared/data/cuhk01", "pku": "../shared/data/pku_reid74"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", choices=sorted(SHARED))
    p.add_argument("--recipe", default="mobilenetv2", help="configs/CALR/<set>_<recipe>.yml")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    import calr_plugin  # noqa: F401
    from calr_plugin import CALRTrainer, load_config
    from calr_plugin.auto.settings import camera_agreement
    from calr_plugin.auto.camera_style import extract_with_style, layer_at_stride
    from calr_plugin.data.build import load_dataset
    from calr_plugin.labels.cameras import infer_cameras

    print("| set | features | layer | dims | own eigengap C | ARI / purity at the true C | "
          "ARI / purity at the embedding's C | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        cfg = load_config(os.path.join(ROOT, "configs", "CALR", f"{name}_{args.recipe}.yml"),
                          ["DATASETS.FOLDER", SHARED[name], "SEED", str(args.seed)], freeze=False)
        cfg.CALR.ALIGN.NUM_CAMERAS = 0
        model = CALRTrainer.build_model(cfg)
        items = sorted(load_dataset(cfg, cfg.DATASETS.NAMES[0]).train, key=lambda it: it[0])
        paths = [it[0] for it in items]
        true = np.unique([str(it[2]) for it in items], return_inverse=True)[1]
        n_true = int(true.max()) + 1
        candidates = [("embedding", None)]
        for stride in (2, 4, 8, 16, 32):
            layer = layer_at_stride(model, *cfg.INPUT.SIZE_TEST, stride=stride)
            if layer is not None and layer not in [c[1] for c in candidates]:
                candidates.append((f"style, stride {stride}", layer))
        emb = count = None
        for label, layer in candidates:
            t = time.time()
            if layer is None:
                from calr_plugin.engine.features import extract_features

                x = emb = extract_features(model, paths, cfg)
                count = infer_cameras(emb, seed=args.seed).num_cameras
            else:
                cfg.DATASETS.CAMERA_LAYER = layer
                _, x, _ = extract_with_style(model, paths, cfg)
            own = infer_cameras(x, seed=args.seed).num_cameras
            at_true = camera_agreement(infer_cameras(x, n_true, seed=args.seed).cams, true)
            at_count = camera_agreement(infer_cameras(emb, count, seed=args.seed, style=x).cams, true)
            print(f"| {name} | {label} | {layer or '-'} | {x.shape[1]} | {own} (true {n_true}) | "
                  f"{at_true['ari']:.3f} / {at_true['purity']:.3f} | {at_count['ari']:.3f} / {at_count['purity']:.3f} "
                  f"(C {count}) | {time.time() - t:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
