#!/usr/bin/env python
"""How far two runs of one seed drift apart: label agreement and final mAP, pair by pair.

    python bench/engine_agreement.py output/real/pku/calr_s{1,2,3} --vs output/real/pku/calr_torch_s{1,2,3}

Each pair is the same command and seed with one thing changed (here the extraction engine,
``CALR.EXTRACT.ENGINE`` onnxruntime vs torch). For each pair it prints the adjusted Rand
index of the stage-1 (local) labels, of the first and of the last stage-2 epoch's trained-on
labels (outliers as their own label), the final mAP of each run and the wall time of each
(``wall.json`` of ``bench/real_data.py``), then the means and spreads over the pairs. An ARI of
1 means the two runs made identical labels; the runs compare only their own labels, no
person id is read.
"""
import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from compare_runs import final_metrics  # noqa: E402


def _ari(a, b):
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def _epochs(run):
    folder = os.path.join(run, "labels")
    return sorted(f for f in os.listdir(folder) if f.startswith("epoch_"))


def _outliers_apart(labels):
    """(N,) labels with every -1 turned into a label of its own (ARI would pool them)."""
    out = labels.copy()
    out[out < 0] = labels.max(initial=-1) + 1 + np.arange(int((labels < 0).sum()))
    return out


def compare(a, b):
    """One pair: dict of ARIs (stage 1, first and last epoch), mAPs and wall seconds."""
    row = {"stage 1": _ari(np.load(os.path.join(a, "stage1", "local_labels.npz"))["labels"],
                           np.load(os.path.join(b, "stage1", "local_labels.npz"))["labels"])}
    ea, eb = _epochs(a), _epochs(b)
    for tag, i in (("first epoch", 0), ("last epoch", -1)):
        la, lb = (np.load(os.path.join(r, "labels", e[i]))["labels"] for r, e in ((a, ea), (b, eb)))
        row[tag] = _ari(_outliers_apart(la), _outliers_apart(lb))
    for side, run in (("A", a), ("B", b)):
        row[f"mAP {side}"] = final_metrics(run)["mAP"]
        wall = os.path.join(run, "wall.json")
        row[f"min {side}"] = json.load(open(wall))["seconds"] / 60 if os.path.isfile(wall) else float("nan")
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="runs A")
    p.add_argument("--vs", nargs="+", required=True, help="runs B, paired with runs A in order")
    args = p.parse_args(argv)
    side_a, side_b = args.runs, args.vs
    if len(side_a) != len(side_b):
        p.error(f"{len(side_a)} A runs and {len(side_b)} B runs: expected the same number, at least 1")
    rows = [compare(a, b) for a, b in zip(side_a, side_b)]
    keys = list(rows[0])
    print("| A | B | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for a, b, r in zip(side_a, side_b, rows):
        print(f"| {a} | {b} | " + " | ".join(f"{r[k]:.3f}" if "epoch" in k or k == "stage 1" else f"{r[k]:.2f}"
                                           for k in keys) + " |")
    mean = {k: np.mean([r[k] for r in rows]) for k in keys}
    std = {k: np.std([r[k] for r in rows]) for k in keys}
    print("| mean +- std | | " + " | ".join(f"{mean[k]:.3f} +- {std[k]:.3f}" if "epoch" in k or k == "stage 1"
                                           else f"{mean[k]:.2f} +- {std[k]:.2f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
