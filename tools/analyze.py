#!/usr/bin/env python
"""Turn a training output folder into pictures and a one-page report.

    python tools/analyze.py output/demo_synthetic [--queries 6] [--topk 8] [--tsne-points 1500]

Reads OUTPUT_DIR/config.yaml, the latest checkpoint, metrics.json and labels/, and writes
into OUTPUT_DIR/analysis/: tsne.png (train features by camera and by pseudo label),
quality.png (label quality of local, global and refined labels, first and last epoch),
curves.png (+ curves.csv: discard ratio, p, clusters, precision, mAP over epochs),
ranked_lists.png (queries with their top matches) and report.md. Works on a running job.
"""
import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import calr_plugin  # noqa: E402,F401
from calr_plugin import CALRTrainer, CalrError, load_config  # noqa: E402


def latest_checkpoint(output_dir):
    tag = os.path.join(output_dir, "last_checkpoint")
    if os.path.isfile(tag):
        path = os.path.join(output_dir, open(tag).read().strip())
        if os.path.isfile(path):
            return path
    for name in ("model_final.pth", "model_last.pth"):
        if os.path.isfile(os.path.join(output_dir, name)):
            return os.path.join(output_dir, name)
    return None


def analyze(output_dir, queries=6, topk=8, tsne_points=1500):
    """Write the analysis of OUTPUT_DIR; returns the analysis folder."""
    import numpy as np
    import torch
    from fastreid.utils.checkpoint import Checkpointer

    from calr_plugin.report import analysis
    from calr_plugin.data.datasets import TrainSet
    from calr_plugin.engine.features import extract_features
    from calr_plugin.data.build import load_dataset, train_items

    cfg_path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(cfg_path):
        raise CalrError(f"{output_dir}: no config.yaml; expected a training OUTPUT_DIR")
    cuda = torch.cuda.is_available()
    cfg = load_config(cfg_path, ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cuda" if cuda else "cpu",
                                 "SOLVER.AMP.ENABLED", str(cuda)], freeze=False)
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    out = os.path.join(output_dir, "analysis")
    os.makedirs(out, exist_ok=True)
    rows = analysis.read_metrics(output_dir)
    iters = cfg.CALR.ITERS_PER_EPOCH or 1
    series = analysis.curves(rows, iters)
    analysis.write_curves_csv(series, os.path.join(out, "curves.csv"))
    analysis.plot_curves(series, os.path.join(out, "curves.png"))
    table = analysis.quality_table(rows)
    if table:
        analysis.plot_quality(table, os.path.join(out, "quality.png"))

    model = CALRTrainer.build_model(cfg)
    ckpt = latest_checkpoint(output_dir)
    if ckpt:
        Checkpointer(model).load(ckpt)
    train_set = TrainSet(train_items(cfg))
    feats = extract_features(model, train_set.paths, cfg, desc="train features")
    label_files = sorted(glob.glob(os.path.join(output_dir, "labels", "epoch_*.npz")))
    last = np.load(label_files[-1]) if label_files else None
    labels = last["labels"] if last is not None else np.full(len(train_set), -1)
    if len(labels) != len(train_set):
        raise CalrError(f"{label_files[-1]}: {len(labels)} labels for {len(train_set)} training images; "
                        f"was the dataset changed?")
    cams = train_set.cams
    # Camera folders have names ("Lobby 2"); Market cameras are numbers ("camera 1" then).
    cam_names = train_set.cam_names if not all(n.isdigit() for n in train_set.cam_names) else None
    if cfg.DATASETS.CAMERAS == "infer" and last is not None:
        cams = last["cams"]  # the pseudo-cameras training used
        cam_names = [f"pseudo-camera {c + 1}" for c in range(int(cams.max()) + 1)]
    analysis.plot_tsne(feats, cams, labels, os.path.join(out, "tsne.png"), max_points=tsne_points,
                       cam_names=cam_names)

    test = load_dataset(cfg, cfg.DATASETS.TESTS[0])
    has_test = getattr(test, "has_test_split", True)
    if has_test:
        qf = extract_features(model, [q[0] for q in test.query], cfg, desc="query features")
        gf = extract_features(model, [g[0] for g in test.gallery], cfg, desc="gallery features")
        analysis.plot_ranked_lists(test.query, test.gallery, qf, gf, os.path.join(out, "ranked_lists.png"),
                                   num_queries=queries, topk=topk)
    write_report(out, output_dir, cfg, rows, table, ckpt, has_test)
    return out


def write_report(out, output_dir, cfg, rows, table, ckpt, has_test=True):
    evals = [r for r in rows if "mAP" in r]
    lines = [f"# Training report: `{output_dir}`", "",
             f"Checkpoint: `{ckpt or 'none (untrained weights)'}`. Method: `{cfg.MODEL.META_ARCHITECTURE}`, "
             f"backbone `{cfg.MODEL.BACKBONE.NAME}` {cfg.MODEL.BACKBONE.DEPTH}, training sets "
             f"{', '.join(cfg.DATASETS.NAMES)}, test {', '.join(cfg.DATASETS.TESTS)}.", ""]
    if evals:
        last = evals[-1]
        lines += ["## Final evaluation", "", "| mAP | Rank-1 | Rank-5 | Rank-10 |", "|---|---|---|---|",
                  f"| {last['mAP']:.2f} | {last['Rank-1']:.2f} | {last['Rank-5']:.2f} | {last['Rank-10']:.2f} |", ""]
    if table:
        lines += ["## Label quality (pairwise, vs ground truth; reporting only)", "",
                  "| labels | " + " | ".join(table[next(iter(table))]) + " |",
                  "|---" * (len(table[next(iter(table))]) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals.values()) + " |" for name, vals in table.items()]
        lines += ["", "![label quality](quality.png)", ""]
    if not has_test:
        lines += ["No labeled test split: mAP, Rank-k and ranked lists need `query/` and `bounding_box_test/` "
                  "with Market names (`<person id>_c<camera>_...jpg`).", ""]
    if not table:
        lines += ["No person ids in the training set: label quality against ground truth is not measured; the "
                  "curves below show what the labels look like (clusters, sizes, cameras per cluster, discards).", ""]
    lines += ["## Over epochs", "", "![curves](curves.png)", "", "Data: `curves.csv`.", "",
              "## Features", "", "![t-SNE](tsne.png)", ""]
    if has_test:
        lines += ["## Ranked lists", "", "![ranked lists](ranked_lists.png)", ""]
    lines += ["## CALR settings", "", "```", cfg.CALR.dump().strip(), "```", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir")
    p.add_argument("--queries", type=int, default=6)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--tsne-points", type=int, default=1500)
    args = p.parse_args(argv)
    try:
        out = analyze(args.output_dir, args.queries, args.topk, args.tsne_points)
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}/: " + " ".join(sorted(os.listdir(out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
