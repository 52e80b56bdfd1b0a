#!/usr/bin/env python
"""Label-free quality signals against test mAP, epoch by epoch (issue #22, "never worse than
where it started, and it knows").

    python bench/quality_signal.py output/signal/*_calr_s1 [--choose viper grid cuhk01]

Each run folder is a stage-2 run trained with ``TEST.EVAL_PERIOD 1 CALR.SELECT.SAVE_FEATURES
True`` (its training features after e epochs in features/epoch_<e>.npy, e = 0 the untrained
start) next to ``<set>_zero/`` (the untrained model's ``--eval-only`` mAP, the start's mAP).
For every candidate signal it prints, per run, the rank correlation (Spearman) between the
signal and test mAP over the epochs, and the mAP of the epoch the signal selects against the
start, the best epoch and the final one. The shipped signal (CALR.SELECT.SIGNAL on the held-out
images) selects as engine/selection.py does: the start unless a later epoch's paired gain
beats 2 of its standard errors, clustered by held-out tracklet ("paired"); next to it, the
rule before (a later share beats the start's by 2 binomial standard errors over images,
"unpaired"), which the other candidates use (0 for candidates that are not shares). Signals read only the
features and the cameras; mAP is read for scoring. ``--choose`` names the runs a rule is
chosen on; the others are reported as out of sample.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
from scipy.stats import spearmanr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from calr_plugin.labels.knn import camera_centre, knn_search, l2_normalize  # noqa: E402
from calr_plugin.labels.holdout import scored_units  # noqa: E402
from calr_plugin.labels.signals import (MARGIN_Z, SIGNALS, cross_camera_mutual,  # noqa: E402
                                        cross_camera_neighbour_share, mean_of, paired_gain, replaces_kept)


def iters_per_epoch(run):
    with open(os.path.join(run, "config.yaml")) as f:
        return next(int(line.split(":")[1]) for line in f if line.strip().startswith("ITERS_PER_EPOCH:"))


def mean_ap_by_epoch(run):
    """{epochs trained: test mAP} from metrics.json, plus 0: the ``<set>_zero`` run's mAP."""
    iters = iters_per_epoch(run)
    out = {}
    with open(os.path.join(run, "metrics.json")) as f:
        for line in f:
            d = json.loads(line)
            if "mAP" in d:
                out[(d["iteration"] + 1) // iters] = d["mAP"]
    zero = os.path.join(os.path.dirname(run), os.path.basename(run).split("_")[0] + "_zero", "eval_results.json")
    if os.path.isfile(zero):
        with open(zero) as f:
            out[0] = json.load(f)["mAP"]
    return out


# Label-step statistics of metrics.json scored too: what the labels of epoch e (from the model
# after e epochs) say about that model.
LOGGED = {"agreement_with_previous": "signal/agreement_with_previous", "cross_camera_share": "calr/cross_camera_share",
          "inliers": "calr/outlier_fraction"}


def logged_by_epoch(run, iters):
    """{name: {epochs trained: value}} of the LOGGED statistics (inliers = 1 - outliers)."""
    out = {n: {} for n in LOGGED}
    with open(os.path.join(run, "metrics.json")) as f:
        for line in f:
            d = json.loads(line)
            for n, key in LOGGED.items():
                if key in d and d["iteration"] % iters == 0:
                    v = d[key]
                    out[n][d["iteration"] // iters] = 1 - v if n == "inliers" else v
    return out


def effective_rank(x):
    """RankMe (Garrido et al., ICML 2023): exp(entropy of the normalised singular values of the
    (N, D) features), a label-free predictor of downstream quality for self-supervised features."""
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    p = s / max(s.sum(), 1e-12) + 1e-12
    return float(np.exp(-(p * np.log(p)).sum()))


def tracklet_groups_of(run):
    """(N,) int tracklet of each training image of a run with DATASETS.TRACKLETS folder, read
    from its stage-1 keys (``<camera>/<tracklet>/<frame>.jpg``, the training order); else None."""
    with open(os.path.join(run, "config.yaml")) as f:
        if not any(line.strip() == "TRACKLETS: folder" for line in f):
            return None
    from calr_plugin.data.datasets import tracklet_groups  # the grouping training used

    keys = [str(k) for k in np.load(os.path.join(run, "stage1", "local_labels.npz"))["keys"]]
    return tracklet_groups([os.path.join(os.sep, "train", k) for k in keys], [k.split("/")[0] for k in keys])


def candidates(feats, cams, held_out, groups=None):
    """({name: value} of every candidate signal on one epoch's features: on all images, and
    (``@held_out``) on the images stage 2 never trained on, when the run held some out;
    {name@held_out: (R,) per-image values} of the shipped signals, for the paired rule).
    ``groups``: (N,) tracklets of a tracklet run (the selection counts hits by tracklet)."""
    x = l2_normalize(feats.astype(np.float32), copy=True)
    out = {name: mean_of(fn(x, cams, None)) for name, fn in SIGNALS.items()}  # on all images
    per_image = {}
    out["effective_rank"] = effective_rank(x)
    if held_out is not None and held_out.any():
        rows = np.flatnonzero(held_out)
        per_image = {f"{name}@held_out": fn(x, cams, rows, groups=groups) for name, fn in SIGNALS.items()}
        out.update({name: mean_of(v) for name, v in per_image.items()})
        if groups is not None:
            out["mutual_by_image@held_out"] = cross_camera_mutual(x, cams, rows, back_among_rows=True)
        out["effective_rank@held_out"] = effective_rank(x[rows])
        out["mutual_back_all@held_out"] = cross_camera_mutual(x, cams, rows)
        out["mutual_centred@held_out"] = cross_camera_mutual(camera_centre(x, cams), cams, rows,
                                                             back_among_rows=True)
    out["cross_camera_knn"] = cross_camera_neighbour_share(x, cams)
    if held_out is not None and held_out.any():
        _, idx = knn_search(x, 11, normalize=False)
        nb = idx[held_out, 1:]
        out["cross_camera_knn@held_out"] = float(np.mean(cams[nb] != cams[held_out, None]))
    out["mutual_centred"] = mean_of(SIGNALS["cross_camera_mutual"](camera_centre(x, cams), cams, None))
    return out, per_image


def margin_of(name, start, held_out, n):
    """The rule before the paired one, for a share of images (cross_camera_mutual on all or
    the held-out images, camera-centred or not): 2 binomial standard errors of a difference
    of two shares over the scored images; 0 for the other candidates."""
    if not name.startswith(("cross_camera_mutual", "mutual_")):
        return 0.0
    r = int(held_out.sum()) if name.endswith("@held_out") else n
    p = min(max(start, 1.0 / r), 1 - 1.0 / r)
    return MARGIN_Z * np.sqrt(2 * p * (1 - p) / r)


def select_paired(epochs, values, units):
    """The epoch Selector keeps: the start, unless a later epoch's paired gain over the start
    beats MARGIN_Z of its standard errors (clustered by unit); then the best such epoch.

    Args:
        epochs: sorted epochs, 0 first. values: {epoch: (R,) per-image values}. units: (R,).
    """
    chosen, best = epochs[0], mean_of(values[epochs[0]])
    for e in epochs[1:]:
        gain, se = paired_gain(values[epochs[0]], values[e], units)
        if replaces_kept(gain, se, mean_of(values[e]), best):
            chosen, best = e, mean_of(values[e])
    return chosen


def select(epochs, scores, margin):
    """The epoch Selector keeps: the start, unless a later score beats it by the margin."""
    if np.isnan(scores[0]):  # a label-step statistic with no value at the start: its largest value
        return epochs[int(np.nanargmax(scores))]
    chosen, best = epochs[0], scores[0]
    for e, v in zip(epochs[1:], scores[1:]):
        if v > max(best, scores[0] + margin):
            chosen, best = e, v
    return chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--choose", nargs="*", default=[], help="sets (folder name prefixes) a rule is chosen on")
    ap.add_argument("--curves", action="store_true", help="print every epoch's mAP and scores")
    args = ap.parse_args()
    table = {}
    for run in args.runs:
        files = sorted(glob.glob(os.path.join(run, "features", "epoch_*.npy")))
        if not files:
            continue
        with np.load(os.path.join(run, "labels", "epoch_000.npz")) as first:
            cams = first["cams"]
            held_out = first["held_out"] if "held_out" in first.files else None
        groups = tracklet_groups_of(run)
        maps = mean_ap_by_epoch(run)
        rows, per_image = {}, {}
        logged = logged_by_epoch(run, iters_per_epoch(run))
        for path in files:
            e = int(os.path.basename(path)[6:9])
            if e in maps:
                rows[e], per_image[e] = candidates(np.load(path), cams, held_out, groups)
                rows[e].update({n: v.get(e, np.nan) for n, v in logged.items()})
        name = os.path.basename(run)  # two sites' runs may share a name: then "<parent>/<run>"
        table[name if name not in table else os.path.join(os.path.basename(os.path.dirname(run)), name)] = \
            (rows, maps, cams, held_out, per_image, groups)
    names = []
    for rows, *_ in table.values():
        names += [n for n in next(iter(rows.values())) if n not in names]
    if args.curves:
        for run, (rows, maps, *_) in table.items():
            print(f"{run}: epoch, mAP, " + ", ".join(names))
            for e in sorted(rows):
                print(f"  {e:3d} {maps[e]:6.2f} " + " ".join(f"{rows[e].get(n, np.nan):7.4f}" for n in names))
    print("| run | epochs | start mAP | best mAP (epoch) | final mAP | " + " | ".join(names) + " |")
    print("|---|---|---|---|---|" + "---|" * len(names))
    summary = {n: {} for n in names}  # name -> run -> (rho, mAP selected, gap to best, below start)
    for run, (rows, maps, cams, held_out, per_image, groups) in table.items():
        epochs = sorted(rows)
        m = np.array([maps[e] for e in epochs])
        best = epochs[int(np.argmax(m))]
        cells = []
        for n in names:
            if n not in rows[epochs[0]]:
                cells.append("-")
                continue
            s = np.array([rows[e][n] for e in epochs])
            ok = ~np.isnan(s)  # the label-step statistics have no value for the final model
            rho = spearmanr(s[ok], m[ok]).statistic if ok.sum() > 2 else float("nan")
            sel = select(epochs, s, margin_of(n, rows[epochs[0]][n], held_out, len(cams)))
            cell = f"rho {rho:+.2f}, picks {sel} ({maps[sel]:.2f})"
            if n in per_image[epochs[0]]:  # a shipped signal: its pick is the paired rule's
                unpaired = sel
                sel = select_paired(epochs, {e: per_image[e][n] for e in epochs},
                                    scored_units(np.flatnonzero(held_out), groups))
                cell = (f"rho {rho:+.2f}, picks {sel} ({maps[sel]:.2f}) paired, "
                        f"{unpaired} ({maps[unpaired]:.2f}) unpaired")
            summary[n][run] = (rho, maps[sel], m.max() - maps[sel], 0 in maps and maps[sel] < maps[0])
            cells.append(cell)
        print(f"| {run} | {len(epochs)} | {maps.get(0, float('nan')):.2f} | {m.max():.2f} ({best}) | "
              f"{maps[epochs[-1]]:.2f} | " + " | ".join(cells) + " |")
    parts = [("all runs", list(table))]
    if args.choose:
        chosen = [r for r in table if any(r.startswith(c) for c in args.choose)]
        parts += [("chosen on", chosen), ("out of sample", [r for r in table if r not in chosen])]
    for part, runs in parts:
        print(f"\n{part}: {', '.join(runs)}")
        for n in names:
            got = [summary[n][r] for r in runs if r in summary[n]]
            if got:
                rho, _, gap, below = zip(*got)
                print(f"  {n}: {len(got)} run(s), mean rho {np.nanmean(rho):+.3f}, picked below the start in "
                      f"{sum(below)}, mean gap to the best epoch {np.mean(gap):.2f} mAP")

if __name__ == "__main__":
    main()
