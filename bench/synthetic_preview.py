#!/usr/bin/env python
"""Write a contact sheet of the embedded synthetic dataset (a few ids x cameras) as PNG.

    python bench/synthetic_preview.py /tmp/synth_preview.png [--ids 8] [--images 2] [--seed 0]

Rows are identities; columns are grouped by camera (c1 | c2 | c3 ...), with --images
images of the id per camera. Images are rendered in memory with the same code that
generate() uses, so nothing is written except the PNG.
"""
import argparse
import importlib
import os
import sys
import types

from PIL import Image, ImageDraw


def _load_synthetic():
    # Load the module by path: it needs only numpy and PIL, and this way the preview
    # works without importing the calr_plugin package (which pulls in FastReID). A stand-in
    # package over calr_plugin/data/ lets synthetic_render import synthetic_looks without
    # running calr_plugin's (or calr_plugin.data's) __init__.
    pkg = types.ModuleType("calr_synthetic_preview")
    pkg.__path__ = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "calr_plugin", "data")]
    sys.modules[pkg.__name__] = pkg
    return importlib.import_module(pkg.__name__ + ".synthetic_render")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output PNG path")
    ap.add_argument("--ids", type=int, default=8, help="number of identities (rows)")
    ap.add_argument("--first-id", type=int, default=1)
    ap.add_argument("--images", type=int, default=2, help="images per id per camera")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--camera-strength", type=float, default=1.0)
    ap.add_argument("--zoom", type=int, default=2, help="pixel zoom of the sheet")
    args = ap.parse_args(argv)

    syn = _load_synthetic()
    spec = syn.SyntheticSpec(num_cameras=args.cameras, seed=args.seed, camera_strength=args.camera_strength,
                             images_per_id_per_camera=max(2, args.images))
    w, h = spec.width, spec.height
    gap, label_h, label_w = 6, 14, 40
    cols = args.cameras * args.images
    sheet_w = label_w + cols * w + (args.cameras - 1) * gap
    sheet_h = label_h + args.ids * h
    sheet = Image.new("RGB", (sheet_w, sheet_h), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for c in range(args.cameras):
        x0 = label_w + c * (args.images * w + gap)
        d.text((x0 + 2, 1), "camera %d" % (c + 1), fill=(0, 0, 0))
    for row in range(args.ids):
        pid = args.first_id + row
        d.text((2, label_h + row * h + h // 2 - 5), "id %d" % pid, fill=(0, 0, 0))
        for c in range(args.cameras):
            for k in range(args.images):
                img = syn.render_image(spec, pid, c + 1, k)
                x = label_w + c * (args.images * w + gap) + k * w
                sheet.paste(img, (x, label_h + row * h))
    if args.zoom > 1:
        sheet = sheet.resize((sheet_w * args.zoom, sheet_h * args.zoom), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    sheet.save(args.out)
    print("wrote %s (%d ids x %d cameras x %d images)" % (args.out, args.ids, args.cameras, args.images))


if __name__ == "__main__":
    main()
