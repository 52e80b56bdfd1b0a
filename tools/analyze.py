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

    from calr_plugin import analysis
    from calr_plugin.data.datasets import TrainSet
    from calr_plugin.features import extract_features
    from calr_plugin.trainer import load_dataset, train_items

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
    labels = np.load(label_files[-1])["labels"] if label_files else np.full(len(train_set), -1)
    if len(labels) != len(train_set):
        raise CalrError(f"{label_files[-1]}: {len(labels)} labels for {len(train_set)} training images; "
                        f"was the dataset changed?")
    analysis.plot_tsne(feats, train_set.cams, labels, os.path.join(out, "tsne.png"), max_points=tsne_points)

    test = load_dataset(cfg, cfg.DATASETS.TESTS[0])
    qf = extract_features(model, [q[0] for q in test.query], cfg, desc="query features")
    gf = extract_features(model, [g[0] for g in test.gallery], cfg, desc="gallery features")
    analysis.plot_ranked_lists(test.query, test.gallery, qf, gf, os.path.join(out, "ranked_lists.png"),
                               num_queries=queries, topk=topk)
    write_report(out, output_dir, cfg, rows, table, ckpt)
    return out


def write_report(out, output_dir, cfg, rows, table, ckpt):
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
    lines += ["## Over epochs", "", "![curves](curves.png)", "", "Data: `curves.csv`.", "",
              "## Features", "", "![t-SNE](tsne.png)", "", "## Ranked lists", "", "![ranked lists](ranked_lists.png)", "",
              "## CALR settings", "", "```", cfg.CALR.dump().strip(), "```", ""]
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
    print(f"wrote {out}/: tsne.png quality.png curves.png curves.csv ranked_lists.png report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
