"""Pictures of a training run: t-SNE, label quality, curves over epochs, ranked lists, a report.

Shape shorthand: N training images, Q queries, G gallery images, D feature dims.

Everything is read from a (finished or running) OUTPUT_DIR: ``config.yaml``, the latest
checkpoint, ``metrics.json`` and ``labels/epoch_XXX.npz``. The figures follow the paper's:
t-SNE by camera and by pseudo label (Fig. 1, 5), label-quality bars of the global, local
and refined labels (Fig. 4), discard ratio / clusters / mAP over epochs (Fig. 6).
"""
import csv
import json
import os

import numpy as np

QUALITY_KEYS = ("precision", "recall", "fscore", "nmi", "ari")
CURVE_KEYS = ("calr/discard_ratio", "calr/outlier_fraction", "calr/num_clusters", "calr/p", "calr/mean_cluster_size",
              "calr/cameras_per_cluster", "calr/cross_camera_share", "refined/precision", "global/precision", "mAP",
              "Rank-1")


def read_metrics(output_dir):
    """Rows of metrics.json (one dict per written iteration), in file order."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def curves(rows, iters_per_epoch):
    """Per-epoch series of CURVE_KEYS.

    Returns:
        dict[str, list[tuple[float, float]]]: key -> [(epoch, value)], epoch 1-based for
        evaluations (after the epoch) and 0-based for label statistics (before it).
    """
    out = {k: [] for k in CURVE_KEYS}
    for row in rows:
        for k in CURVE_KEYS:
            if k in row:
                it = row["iteration"]
                epoch = (it + 1) / iters_per_epoch if k in ("mAP", "Rank-1") else it / iters_per_epoch
                out[k].append((round(epoch, 3), float(row[k])))
    return out


def write_curves_csv(series, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "epoch", "value"])
        for k, pts in series.items():
            for epoch, value in pts:
                w.writerow([k, epoch, value])


def quality_table(rows):
    """Label quality of the first and last stage-2 epoch (Fig. 4 in miniature).

    Returns:
        dict[str, dict[str, float]]: e.g. {"global (first)": {"precision": ..}, ...}.
    """
    epochs = [r for r in rows if any(k.startswith("global/") for k in r)]
    table = {}
    local = next((r for r in rows if any(k.startswith("local/") for k in r)), None)
    if local:
        table["local"] = {k: local[f"local/{k}"] for k in QUALITY_KEYS if f"local/{k}" in local}
    for name, row in (("first", epochs[0] if epochs else None), ("last", epochs[-1] if epochs else None)):
        if row is None:
            continue
        for kind in ("global", "refined"):
            table[f"{kind} ({name})"] = {k: row[f"{kind}/{k}"] for k in QUALITY_KEYS if f"{kind}/{k}" in row}
    return table


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(series, path):
    plt = _plt()
    panels = [("Discard ratio, outliers, p, cross-camera clusters",
               ("calr/discard_ratio", "calr/outlier_fraction", "calr/p", "calr/cross_camera_share")),
              ("Clusters", ("calr/num_clusters",)),
              ("Cluster size, cameras per cluster", ("calr/mean_cluster_size", "calr/cameras_per_cluster")),
              ("Pairwise precision (needs ids)", ("global/precision", "refined/precision")),
              ("Test accuracy (%, needs a test split)", ("mAP", "Rank-1"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(20, 3.6))
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            if series.get(k):
                x, y = zip(*series[k])
                ax.plot(x, y, marker="o", ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if any(series.get(k) for k in keys):
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_quality(table, path):
    plt = _plt()
    names = list(table)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(QUALITY_KEYS))
    colors = plt.cm.tab10(np.arange(len(names)))
    for i, name in enumerate(names):
        vals = [table[name].get(k, np.nan) for k in QUALITY_KEYS]
        ax.bar(x + i * width, vals, width, label=name, color=colors[i])
    ax.set_xticks(x + width * (len(names) - 1) / 2)
    ax.set_xticklabels(QUALITY_KEYS)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score vs ground-truth ids")
    ax.set_title("Pseudo-label quality: local (stage 1), global and refined (stage 2)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tsne(feats, cams, labels, path, max_points=1500, seed=0, cam_names=None):
    """t-SNE of training features coloured by camera and by pseudo label (-1 grey).

    Args:
        cam_names (list[str] | None): legend name of camera c (default "camera c+1").
    """
    from sklearn.manifold import TSNE

    plt = _plt()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(feats), min(max_points, len(feats)), replace=False))
    xy = TSNE(n_components=2, perplexity=min(30, max(5, len(idx) // 4)), init="pca",
              random_state=seed).fit_transform(feats[idx])
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for c in np.unique(cams[idx]):
        m = cams[idx] == c
        axes[0].scatter(xy[m, 0], xy[m, 1], s=8, label=cam_names[c] if cam_names else f"camera {c + 1}")
    axes[0].set_title("Training features by camera")
    axes[0].legend(fontsize=8, markerscale=2)
    lab = labels[idx]
    out = lab < 0
    axes[1].scatter(xy[out, 0], xy[out, 1], s=6, c="lightgrey", label="outlier / discarded")
    # tab20 without its two greys, which would read as "outlier".
    palette = np.delete(plt.cm.tab20(np.arange(20)), [14, 15], axis=0)
    axes[1].scatter(xy[~out, 0], xy[~out, 1], s=8, c=palette[lab[~out] % len(palette)])
    axes[1].set_title(f"By pseudo label ({len(np.unique(lab[~out]))} clusters)")
    axes[1].legend(fontsize=8, markerscale=2)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ranked_lists(query, gallery, qf, gf, path, num_queries=6, topk=8):
    """Top-k gallery images of a few queries; green = same id (other camera), red = wrong.

    Args:
        query, gallery: FastReID items (path, pid, camid). qf (Q, D), gf (G, D) normalised.
    """
    from PIL import Image

    plt = _plt()
    sims = qf @ gf.T
    q_idx = np.linspace(0, len(query) - 1, min(num_queries, len(query))).astype(int)
    fig, axes = plt.subplots(len(q_idx), topk + 1, figsize=(1.3 * (topk + 1), 2.6 * len(q_idx)))
    axes = np.atleast_2d(axes)
    g_pids = np.array([g[1] for g in gallery])
    g_cams = np.array([g[2] for g in gallery])
    for row, qi in enumerate(q_idx):
        _, q_pid, q_cam = query[qi]
        valid = ~((g_pids == q_pid) & (g_cams == q_cam))  # Market rule
        order = [j for j in np.argsort(-sims[qi]) if valid[j]][:topk]
        cells = [(query[qi][0], "query", "black")] + [
            (gallery[j][0], f"{sims[qi, j]:.2f}", "green" if g_pids[j] == q_pid else "red") for j in order]
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(cells):
                ax.axis("off")
                continue
            img_path, title, color = cells[col]
            ax.imshow(Image.open(img_path).convert("RGB"))
            ax.set_title(title, fontsize=8, color=color)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
    fig.suptitle("Ranked lists (green: same person, other camera; red: wrong)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
