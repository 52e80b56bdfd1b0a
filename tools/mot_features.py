#!/usr/bin/env python
"""Write the MOT feature file DeepSORT and StrongSORT read offline: det.txt rows then features.

    python tools/mot_features.py --weights output/demo_synthetic/model_final.pth \\
        --sequence MOT17/train/MOT17-02-FRCNN --out MOT17-02-FRCNN.npy

--sequence is a MOTChallenge sequence folder (img1/000001.jpg ..., det/det.txt with rows
frame, id, x, y, w, h, score, ...; --dets names another detection file). Every detection is
embedded with ``CALRReID`` (the checkpoint with its run's config.yaml, or an exported .onnx),
frame by frame, and OUT gets one (n, 10 + D) float32 array: the det.txt row (padded with -1 to
10 columns) followed by its L2-normalised feature (``calr_plugin.deploy.tracking.feature_dump``),
the layout of DeepSORT's ``generate_detections.py``. The file is written atomically.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import calr_plugin  # noqa: E402,F401
from calr_plugin import CalrError  # noqa: E402
from calr_plugin.utils.cli import parse_args  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="model_final.pth or an exported .onnx")
    p.add_argument("--config-file", help="the model's config (default: config.yaml next to --weights)")
    p.add_argument("--sequence", required=True, help="a MOT sequence folder (img1/, det/det.txt)")
    p.add_argument("--dets", help="detection file (default SEQUENCE/det/det.txt)")
    p.add_argument("--out", required=True, help="the .npy file to write")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_args(p, argv)
    try:
        import cv2
        import numpy as np

        from calr_plugin.data.boxes import xywh_to_xyxy
        from calr_plugin.data.video_io import read_mot
        from calr_plugin.deploy.tracker import CALRReID
        from calr_plugin.deploy.tracking import feature_dump
        from calr_plugin.utils.atomic import atomic_save_npy

        dets_path = args.dets or os.path.join(args.sequence, "det", "det.txt")
        dets = read_mot(dets_path)
        reid = CALRReID(args.weights, config_file=args.config_file, opts=args.opts)
        feats = np.zeros((len(dets), reid.embedding_dim), np.float32)
        for t in np.unique(dets[:, 0]).astype(int):
            image = os.path.join(args.sequence, "img1", f"{t:06d}.jpg")
            frame = cv2.imread(image, cv2.IMREAD_COLOR)
            if frame is None:
                raise CalrError(f"{image}: frame {t} of {dets_path} is missing or unreadable")
            rows = np.flatnonzero(dets[:, 0] == t)
            feats[rows] = reid.get_features(xywh_to_xyxy(dets[rows, 2:6]), frame)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_save_npy(args.out, feature_dump(dets, feats))
        print(f"wrote {args.out}: {len(dets)} detections x (10 + {reid.embedding_dim}) float32 ({reid.engine})")
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
