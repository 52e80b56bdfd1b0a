#!/usr/bin/env python
"""Save a model's features of a dataset split for tools/pseudo_labels.py.

    python tools/extract_features.py --config-file configs/CALR/cuhk01_mobilenetv2.yml \\
        --out feats/cuhk01 [--split train|query|gallery] [MODEL.WEIGHTS model_final.pth]

Writes OUT/features.npy (N x D float32, L2-normalised, eval mode), OUT/names.txt (the N
image file names) and OUT/cams.txt (their cameras: the camera folder's name, or the
0-based camera index), in the same order. Without MODEL.WEIGHTS the features
are the (pretrained) backbone's zero-shot ones.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import calr_plugin  # noqa: E402,F401
from calr_plugin import CALRTrainer, CalrError, load_config  # noqa: E402
from calr_plugin.utils.cli import parse_args  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="train", choices=("train", "query", "gallery"))
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="KEY VALUE config overrides (e.g. MODEL.WEIGHTS w), before, between or after the flags")
    args = parse_args(p, argv)  # flags before or after the KEY VALUE overrides
    try:
        from fastreid.utils.checkpoint import Checkpointer

        from calr_plugin.engine.features import extract_features
        from calr_plugin.data.build import load_dataset
        from calr_plugin.utils.atomic import atomic_save_npy, atomic_write_text

        cfg = load_config(args.config_file, args.opts, freeze=False)
        cfg.CALR.ALIGN.NUM_CAMERAS = 0  # no camera classifier: inference only
        cfg.freeze()
        model = CALRTrainer.build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            from calr_plugin.engine.checkpoint import check_head_matches

            check_head_matches(model, cfg.MODEL.WEIGHTS)
            Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        names = cfg.DATASETS.NAMES if args.split == "train" else cfg.DATASETS.TESTS
        items = []
        for name in names:
            items += getattr(load_dataset(cfg, name), args.split)
        items.sort(key=lambda it: it[0])
        paths = [it[0] for it in items]
        cams = [str(it[2]).split("_", 1)[-1] if args.split == "train" else str(it[2]) for it in items]
        feats = extract_features(model, paths, cfg)
        os.makedirs(args.out, exist_ok=True)
        atomic_save_npy(os.path.join(args.out, "features.npy"), feats)
        atomic_write_text(os.path.join(args.out, "names.txt"), "".join(os.path.basename(q) + "\n" for q in paths))
        atomic_write_text(os.path.join(args.out, "cams.txt"), "".join(c + "\n" for c in cams))
        print(f"wrote {feats.shape[0]} x {feats.shape[1]} features and names to {args.out}")
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
