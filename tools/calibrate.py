#!/usr/bin/env python
"""Calibrate a trained model's match threshold on labeled images, for trackers and search.

    python tools/calibrate.py --weights output/demo_synthetic/model_final.pth --out output/demo_synthetic/calibration
    python tools/calibrate.py --weights calr_mobilenetv2_x1_0.onnx --data /data/my_labeled_set --out calib/

Features come from ``CALRReID`` (calr_plugin/deploy/tracker.py), the embedder trackers use:
a ``.pth`` checkpoint with its config (--config-file, or the run's config.yaml next to it) or
an exported ``.onnx`` file. The labeled images: --data, a Market-layout folder (its query/ and
bounding_box_test/, or --split train for bounding_box_train/); without --data, the config's
test split (DATASETS.TESTS, its query + gallery). Writes OUT/calibration.json (the cosine
distance at each --rates false-match rate over pairs, the share of same-person pairs it
accepts, the equal-error distance; under "open_set" the distance at which that share of
strangers would match someone in a gallery of this size, and the share of people found; under
"search" the same for the features tools/search.py computes (FastReID's test transform resizes
with PIL bicubic, trackers with cv2 bilinear: on CUHK01's 160x60 crops the two features of an
image agree at cosine 0.963-1.0 and pair distances differ by up to 0.13), and where the
numbers come from) and OUT/calibration.png (the two distributions). Give a tracker
the pair distance at 1 % (deep-sort-realtime ``max_cosine_distance``, BoxMOT BoT-SORT
``appearance_thresh``), and search ``tools/search.py --threshold OUT/calibration.json`` (it
reads the open-set distance at the smallest rate).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import calr_plugin  # noqa: E402,F401
from calr_plugin import CalrError  # noqa: E402
from calr_plugin.deploy.calibrate import PAIRS  # noqa: E402
from calr_plugin.utils.cli import parse_args  # noqa: E402


# No person id, junk (-1) and Market-1501's distractors (0): not one person, so not same-person pairs.
DISTRACTORS = (None, -1, 0)


def labeled_items(args):
    """(path, person id, camera) of the labeled images to calibrate on (distractors left out)."""
    from calr_plugin.deploy.search import gallery_items

    if args.data:
        splits = ("bounding_box_train",) if args.split == "train" else ("query", "bounding_box_test")
        items = []
        for split in splits:
            if os.path.isdir(os.path.join(args.data, split)):
                items += gallery_items(args.data, split=split)
        items = [it for it in items if it[1] not in DISTRACTORS]
        if not items:
            raise CalrError(f"--data {args.data}: no images with person ids in {' or '.join(splits)}/ "
                            f"(Market names: 0001_c1s1_000101_00.jpg)")
        return items
    from calr_plugin import load_config
    from calr_plugin.data.build import load_dataset
    from calr_plugin.deploy.tracker import config_next_to

    if args.weights.endswith(".onnx") and not args.config_file:
        raise CalrError("an .onnx file has no config: give --data (or --config-file for its test split)")
    cfg = load_config(args.config_file or config_next_to(args.weights), args.opts, check=False)
    items = []
    for name in (cfg.DATASETS.TESTS if args.split == "test" else cfg.DATASETS.NAMES):
        data = load_dataset(cfg, name)
        parts = (data.query + data.gallery) if args.split == "test" else data.train
        items += [(p, pid, str(cam)) for p, pid, cam, *_ in parts if pid not in DISTRACTORS]
    return items


def search_features(args, reid, paths):
    """The features tools/search.py computes for ``paths`` (FastReID's test transform, PIL bicubic
    resize) with ``reid``'s model, or None for an .onnx file without --config-file. (N, D) unit rows."""
    from calr_plugin.deploy.search import Embedder

    if reid.engine == "torch":
        return Embedder(reid.cfg, model=reid.model)(paths)
    if not args.config_file:
        return None
    from calr_plugin import load_config

    return Embedder(load_config(args.config_file, args.opts, check=False), onnx=args.weights)(paths)


def distances(feats, pids, cams, args):
    """``calibrate``'s result on one set of features: pair and open-set thresholds, and the
    (same, different) pair distances for the plot."""
    from calr_plugin.deploy.calibrate import calibrate, nearest_distances, pair_distances

    same, diff = pair_distances(feats, pids, cams, args.pairs, seed=args.seed)
    return calibrate(same, diff, tuple(args.rates), nearest_distances(feats, pids, cams, args.pairs)), same, diff


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="model_final.pth or an exported .onnx")
    p.add_argument("--config-file", help="the model's config (default: config.yaml next to --weights)")
    p.add_argument("--data", help="a Market-layout folder with person ids (default: the config's test split)")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pairs", default="all", choices=PAIRS)
    p.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05], help="false-match rates")
    p.add_argument("--max-images", type=int, default=4000, help="a seeded sample above this many")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parse_args(p, argv)
    try:
        import numpy as np

        from calr_plugin.deploy.calibrate import write_calibration
        from calr_plugin.deploy.tracker import CALRReID

        items = labeled_items(args)
        if len(items) > args.max_images:
            keep = np.sort(np.random.default_rng(args.seed).choice(len(items), args.max_images, replace=False))
            items = [items[i] for i in keep]
        paths, pids, cams = ([it[k] for it in items] for k in range(3))
        reid = CALRReID(args.weights, config_file=args.config_file, opts=args.opts)
        result, same, diff = distances(reid(paths), pids, cams, args)
        search = search_features(args, reid, paths)
        if search is not None:
            result["search"] = distances(search, pids, cams, args)[0]
        meta = {"weights": os.path.abspath(args.weights), "engine": reid.engine, "input_size": list(reid.size),
                "data": os.path.abspath(args.data) if args.data else f"config test split ({args.split})",
                "images": len(items), "people": len({it[1] for it in items}), "pair_kind": args.pairs,
                "distance": "cosine, 1 - cos of L2-normalised features (CALRReID: cv2 bilinear resize, as trackers)"}
        path, png = write_calibration(args.out, result, same, diff, meta)
        for rate, t in result["thresholds"].items():
            print(f"{float(rate):.0%} false matches: distance {t:.4f} (accepts {result['true_match_rate'][rate]:.1%} "
                  f"of same-person pairs)")
        shown = result.get("search", result)["open_set"]
        for rate, t in shown["thresholds"].items():
            print(f"search: no match for {float(rate):.0%} of strangers (a gallery of {len(items)} images): distance "
                  f"{t:.4f} (finds {shown['detection_rate'][rate]:.1%} of the people who are there)")
        print(f"equal error {result['equal_error']['rate']:.1%} at {result['equal_error']['distance']:.4f}; "
              f"{len(items)} images, {len(same)} same / {len(diff)} different pairs; wrote {path} and {png}")
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
