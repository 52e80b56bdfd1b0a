#!/usr/bin/env python
"""Export a trained model to ONNX and check it against PyTorch on real images.

    python tools/export_onnx.py --config-file configs/CALR/cuhk01_mobilenetv2.yml \\
        MODEL.WEIGHTS output/real/cuhk01/calr_s1/model_final.pth --out calr_cuhk01.onnx

The graph (calr_plugin/deploy/export.py): input ``images`` (B, 3, H, W) float32 RGB 0-255 at
INPUT.SIZE_TEST, B dynamic, normalised inside; output ``features`` (B, D) float32, to be
L2-normalised for cosine matching as FastReID's evaluator does.

``--profile tracker`` writes what trackers feed instead (BoxMOT's ONNX backend, CALRReID):
input ``images`` RGB divided by 255 and ImageNet-normalised, dynamic axis ``batch``, output
``output`` (B, D) L2-normalised, plus the sidecar ``<out>.metadata.json`` BoxMOT reads (image
size, preprocessing). Name the file with BoxMOT's token for the backbone (the tool prints it,
e.g. calr_mobilenetv2_x1_0.onnx): BoxMOT before 25 picks the architecture from the file name.

After writing the file it
runs ONNX Runtime on --check-images images of the config's test split (its training images
when there is none), prints the largest difference against PyTorch, and exits 1 above
--tolerance. ONNX Runtime: ``pip install -e .[deploy]`` (``make install`` does).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import calr_plugin  # noqa: E402,F401
from calr_plugin import CalrError  # noqa: E402
from calr_plugin.utils.cli import parse_args  # noqa: E402


def check_images(cfg, n):
    """Up to ``n`` real images of the config's test split through FastReID's test transform.

    Only the chosen images are decoded (listing a split opens no image; the dataset loader
    would decode every image of every split): ``n`` evenly spaced over query + gallery, or
    over the training images when there is no test split. An unreadable one is left out
    with a warning and the next image of the split is tried instead.

    Args:
        cfg (CfgNode): the export's config (DATASETS.TESTS, else DATASETS.NAMES).
        n (int): how many images to compare on.
    Returns:
        Tensor: (k, 3, H, W) float32, RGB 0-255, H x W = INPUT.SIZE_TEST; k = n unless the split
        has fewer readable images.
    Raises:
        DataError: the dataset is missing, or none of its images can be read.
    """
    import torch
    from fastreid.data.transforms import build_transforms
    from PIL import Image

    from calr_plugin import DataError
    from calr_plugin.data.build import dataset_root, has_test_split

    name = (cfg.DATASETS.TESTS or cfg.DATASETS.NAMES)[0]
    try:
        with_test, data = has_test_split(cfg, name)
    except RuntimeError as e:  # FastReID's own datasets: a missing folder
        if "is not found" not in str(e):
            raise
        raise DataError(f"dataset {name}: {e}; put it under $FASTREID_DATASETS (now {dataset_root()!r}) "
                        f"in FastReID's layout") from None
    items = (data.query + data.gallery) if with_test else data.train
    if not items:
        raise DataError(f"dataset {name}: no image to check the export on")
    step = max(1, len(items) // n)
    chosen = list(range(0, len(items), step))[:n]
    # Fallbacks for unreadable images: the others, in order; only decoded when needed.
    taken = set(chosen)
    candidates = chosen + [i for i in range(len(items)) if i not in taken]
    transform = build_transforms(cfg, is_train=False)
    images = []
    for i in candidates:
        if len(images) == n:
            break
        path = items[i][0]
        try:
            with Image.open(path) as im:
                images.append(transform(im.convert("RGB")))
        except Exception as e:  # PIL raises many types for broken files
            print(f"warning: {path}: unreadable image ({type(e).__name__}), not used for the check", file=sys.stderr)
    if not images:
        raise DataError(f"dataset {name}: none of its {len(items)} images can be read to check the export on")
    return torch.stack(images).float()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--check-images", type=int, default=8, help="real images to compare on (0: skip)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed |PyTorch - ONNX| feature value")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--profile", default="fastreid", choices=("fastreid", "tracker"),
                   help="fastreid: 0-255 in, features out; tracker: ImageNet-normalised in, unit output out, "
                        "plus the BoxMOT sidecar")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="KEY VALUE config overrides (e.g. MODEL.WEIGHTS w), before, between or after the flags")
    args = parse_args(p, argv)  # flags before or after the KEY VALUE overrides
    try:
        from calr_plugin.engine.checkpoint import load_inference_model
        from calr_plugin.deploy.export import (
            TRACKER_MEAN, TRACKER_STD, boxmot_token, export_onnx, max_difference, write_tracker_metadata)

        cfg, model = load_inference_model(args.config_file, args.opts)
        if not cfg.MODEL.WEIGHTS:
            print("warning: no MODEL.WEIGHTS: exporting the untrained (pretrained-backbone) model", file=sys.stderr)
        h, w = cfg.INPUT.SIZE_TEST
        dim = cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        export_onnx(model, args.out, h, w, args.opset, profile=args.profile)
        if args.profile == "fastreid":
            print(f"wrote {args.out}: input images (B, 3, {h}, {w}) float32 RGB 0-255 (normalised inside with mean "
                  f"{[round(v, 3) for v in cfg.MODEL.PIXEL_MEAN]}, std {[round(v, 3) for v in cfg.MODEL.PIXEL_STD]}); "
                  f"output features (B, {dim}) float32, L2-normalise for cosine")
        else:
            sidecar = write_tracker_metadata(args.out, cfg, dim)
            print(f"wrote {args.out}: input images (batch, 3, {h}, {w}) float32 RGB /255, mean {list(TRACKER_MEAN)}, "
                  f"std {list(TRACKER_STD)}; output output (batch, {dim}) float32 L2-normalised; sidecar {sidecar}")
            token = boxmot_token(cfg)
            if token is None:
                print(f"note: BoxMOT has no name for backbone {cfg.MODEL.BACKBONE.NAME} {cfg.MODEL.BACKBONE.DEPTH}; "
                      f"the sidecar says resnet50 (BoxMOT 25 only takes its default crop size from it, and the "
                      f"graph's fixed {h}x{w} wins)", file=sys.stderr)
            elif token not in os.path.basename(args.out).lower():
                print(f"note: BoxMOT before 25 picks the architecture from the file name: name it e.g. "
                      f"calr_{token}.onnx", file=sys.stderr)
        if args.check_images > 0:
            images = check_images(cfg, args.check_images)
            diff, scale = max_difference(model, args.out, images, profile=args.profile)
            print(f"ONNX Runtime vs PyTorch on {len(images)} real images: max |difference| {diff:.3g} "
                  f"(features up to {scale:.3g}; tolerance {args.tolerance:g})")
            if diff > args.tolerance:
                print(f"error: {args.out}: ONNX Runtime differs from PyTorch by {diff:.3g} > {args.tolerance:g}",
                      file=sys.stderr)
                return 1
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
