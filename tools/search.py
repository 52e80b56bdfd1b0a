#!/usr/bin/env python
"""Find a person from one camera in the others: index a gallery, rank it for query images.

    python tools/search.py --config-file configs/CALR/cuhk01_mobilenetv2.yml \\
        MODEL.WEIGHTS logs/cuhk01/model_final.pth --gallery /data/my_cameras \\
        --query crops/person1.jpg crops/person2.jpg --out search/ [--topk 10] [--onnx model.onnx]
    python tools/search.py --config-file ... MODEL.WEIGHTS ... --gallery ../shared/data/cuhk01 --evaluate --out eval/

The gallery is a folder in any layout (Market: its bounding_box_test/; camera folders:
train/<camera>/; or any folder of crops, the camera being the first sub-folder). Its features
are saved in --index (default OUT/index) with each file's size and mtime: a rerun extracts
only new or changed images. Features come from the PyTorch checkpoint, or from an exported
ONNX file with --onnx (tools/export_onnx.py; the config still gives the input size).
Matches come from the other cameras (the query's camera: the gallery's for a gallery image,
else c<N> of a Market name, else its folder's name); --same-camera keeps its own. Writes OUT/matches.csv and OUT/matches.json
(query, rank, image, camera, cosine distance,
same person when both names carry an id) and OUT/matches.png (query left, matches right;
green / red when ids are known). --evaluate ranks the folder's query/ against its gallery
and prints FastReID's mAP and Rank-k (Market protocol), as --eval-only does.

--threshold (a cosine distance, or the calibration.json of tools/calibrate.py: its open-set
distance at the smallest rate, e.g. 1 % of strangers matched) keeps only matches within it; a query with none is reported as "no match"
(its person is most likely not in the gallery) and listed in OUT/no_match.txt.
"""
import argparse
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import calr_plugin  # noqa: E402,F401
from calr_plugin import CalrError, load_config  # noqa: E402


def build_embedder(config_file, opts, onnx):
    """The run's Embedder (calr_plugin.deploy.search): the PyTorch checkpoint (on the GPU when there is
    one, CALR.EXTRACT.ENGINE choosing the engine) or the --onnx file (one ONNX Runtime session).
    Its fingerprint covers the config's INPUT/MODEL settings and the weights' or ONNX file's content."""
    from calr_plugin.engine.checkpoint import load_inference_model
    from calr_plugin.deploy.search import Embedder

    if onnx:
        if not os.path.isfile(onnx):
            raise CalrError(f"--onnx {onnx}: file not found")
        cfg = load_config(config_file, list(opts), check=False)  # only its input size, transform and loader
        return Embedder(cfg, onnx=onnx)
    cfg, model = load_inference_model(config_file, opts)
    if not cfg.MODEL.WEIGHTS:
        print("warning: no MODEL.WEIGHTS: searching with the untrained (pretrained-backbone) model", file=sys.stderr)
    import torch

    if torch.cuda.is_available():
        model = model.cuda()  # extraction runs where the model is
    return Embedder(cfg, model=model)


def plot(query_items, gallery_items, dists, idx, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    k = idx.shape[1]
    fig, axes = plt.subplots(len(query_items), k + 1, figsize=(1.25 * (k + 1), 2.6 * len(query_items)), squeeze=False)
    for row, q in enumerate(query_items):
        cells = [(q[0], f"query\n{q[2]}", "black")]
        for d, j in zip(dists[row], idx[row]):
            if j < 0:
                break
            g = gallery_items[j]
            known = q[1] is not None and g[1] is not None
            color = ("green" if g[1] == q[1] else "red") if known else "grey"
            cells.append((g[0], f"{g[2]}\n{d:.3f}", color))
        for ax in axes[row][len(cells):]:
            ax.axis("off")
        for ax, (img, title, color) in zip(axes[row], cells):
            ax.imshow(Image.open(img).convert("RGB"))
            ax.set_title(title, fontsize=7, color=color)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3 if color != "black" else 1)
    fig.suptitle("Matches: camera and cosine distance (green same person, red other, grey unknown)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--gallery", required=True, help="folder to search in")
    p.add_argument("--query", nargs="*", default=[], help="query image files")
    p.add_argument("--evaluate", action="store_true", help="rank the folder's query/ and print mAP / Rank-k")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--index", help="index folder (default OUT/index)")
    p.add_argument("--onnx", help="use an exported ONNX file instead of the PyTorch checkpoint")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--threshold", help="a cosine distance or a calibration.json: matches beyond it are dropped, "
                                       "a query with none gets 'no match'")
    p.add_argument("--same-camera", action="store_true",
                   help="also match gallery images from the query's own camera (left out by default)")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="KEY VALUE config overrides (e.g. MODEL.WEIGHTS w), before, between or after the flags")
    from calr_plugin.utils.cli import parse_args

    args = parse_args(p, argv)  # flags before or after the KEY VALUE overrides
    try:
        from calr_plugin.deploy.gallery_index import GalleryIndex
        from calr_plugin.deploy.search import _item, evaluate, gallery_items

        if not args.query and not args.evaluate:
            raise CalrError("nothing to search for: give --query IMAGE [...] or --evaluate")
        if args.topk < 1:
            raise CalrError(f"--topk {args.topk}: expected an integer >= 1")
        import numpy as np

        from calr_plugin.deploy.calibrate import load_threshold
        from calr_plugin.utils.atomic import atomic_write_text

        threshold = load_threshold(args.threshold, kind="open_set") if args.threshold else None
        from calr_plugin.engine.features import describe_unreadable
        from calr_plugin.deploy.search import unmatched_message, valid_queries

        with build_embedder(args.config_file, args.opts, args.onnx) as embed:
            listed = gallery_items(args.gallery)
            index = GalleryIndex(args.index or os.path.join(args.out, "index"))
            done = index.update(listed, embed, log=print)
            if done.unreadable:
                print(f"warning: {args.gallery}: left out {describe_unreadable(done.unreadable)}", file=sys.stderr)
            gallery = index.items  # the readable images: what the search's indices point into
            if not gallery:
                raise CalrError(f"{args.gallery}: no readable image to search")
            print(f"gallery: {len(gallery)} images, {done.extracted} extracted now, {done.reused} reused "
                  f"from {index.folder} (features: {embed.engine})")
            os.makedirs(args.out, exist_ok=True)
            if args.evaluate:
                queries = gallery_items(args.gallery, split="query")
                if any(q[1] is None for q in queries) or any(g[1] is None for g in gallery):
                    raise CalrError(f"{args.gallery}: --evaluate needs query/ and bounding_box_test/ with Market names")
                got = embed.extract([q[0] for q in queries], desc="query features")
                if got.bad:
                    print(f"warning: {args.gallery}: left out {describe_unreadable(got.bad)}", file=sys.stderr)
                queries = [q for q, ok in zip(queries, got.ok) if ok]
                scored = valid_queries(queries, gallery)
                if scored.any() and not scored.all():
                    print(f"{int((~scored).sum())} of {len(queries)} queries have no image of their person in another "
                          f"gallery camera and are not scored (as FastReID does)")
                results = evaluate(got.feats, queries, index.feats, gallery)
                print("  ".join(f"{k} {v:.2f}" for k, v in results.items()))
                with open(os.path.join(args.out, "eval_results.json"), "w") as f:
                    json.dump(results, f, indent=1)
            if args.query:
                missing = [q for q in args.query if not os.path.isfile(q)]
                if missing:
                    raise CalrError(f"query image not found: {missing[0]}")
                # The query's camera: the gallery's name for it when it is a gallery image, else
                # c<N> of a Market name, else its folder's name.
                in_gallery = {os.path.abspath(g[0]): g[2] for g in listed}
                queries = [_item(os.path.abspath(q)) for q in args.query]
                queries = [(p_, pid, in_gallery.get(p_, cam if cam != "-" else os.path.basename(os.path.dirname(p_))))
                           for p_, pid, cam in queries]
                exclude = None if args.same_camera else [q[2] if q[2] != "-" else None for q in queries]
                # The user named these files: an unreadable one is an error, not a skip.
                dists, idx = index.search(embed([q[0] for q in queries], desc="query features"), args.topk, exclude)
                message = unmatched_message(queries, idx, gallery, args.same_camera)
                if message and not (idx >= 0).any():
                    raise CalrError(message)
                if message:
                    print(f"warning: {message}", file=sys.stderr)
                no_match = []
                stale = os.path.join(args.out, "no_match.txt")
                if threshold is None and os.path.isfile(stale):
                    os.remove(stale)  # an earlier run's, with a threshold; it does not describe this one
                if threshold is not None:
                    nearest = dists[:, 0].copy()
                    idx[dists > threshold] = -1
                    for q, row, d in zip(queries, idx, nearest):
                        if row[0] < 0 and np.isfinite(d):
                            no_match.append(q[0])
                            print(f"{q[0]}: no match (nearest distance {d:.4f} > threshold {threshold:.4f})")
                    atomic_write_text(os.path.join(args.out, "no_match.txt"), "".join(p_ + "\n" for p_ in no_match))
                rows = []
                for q, ds, js in zip(queries, dists, idx):
                    for rank, (d, j) in enumerate(zip(ds, js), 1):
                        if j < 0:
                            break
                        g = gallery[j]
                        same = None if q[1] is None or g[1] is None else bool(q[1] == g[1])
                        rows.append({"query": q[0], "rank": rank, "image": g[0], "camera": g[2],
                                     "distance": round(float(d), 6), "same_person": same})
                with open(os.path.join(args.out, "matches.csv"), "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=["query", "rank", "image", "camera", "distance", "same_person"])
                    w.writeheader()
                    w.writerows(rows)
                with open(os.path.join(args.out, "matches.json"), "w") as f:
                    json.dump(rows, f, indent=1)
                plot(queries, gallery, dists, idx, os.path.join(args.out, "matches.png"))
                print(f"wrote {args.out}/matches.csv, matches.json, matches.png ({len(queries)} queries, "
                      f"top {args.topk}" + (f", {len(no_match)} without a match within {threshold:.4f})"
                                            if threshold is not None else ")"))
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
