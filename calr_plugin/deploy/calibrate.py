"""A match threshold that fits the model: cosine distances of same and different people.

Shape shorthand: N images, D feature dims, P same-person pairs, Q different-person pairs.

A tracker gates an appearance match by a fixed cosine distance (deep-sort-realtime's
``max_cosine_distance`` 0.2, BoxMOT BoT-SORT's ``appearance_thresh`` 0.25), and a search
says "no match" only with a threshold; neither value means anything for a new model, whose
distances have their own scale (ImageNet MobileNetV2 features are all within cosine
distance ~0.5 of each other). From labeled images (person ids) this module measures:

* the distances of every same-person pair and of every different-person pair (or of a
  seeded sample of ``max_pairs`` of each);
* the distance below which a fraction ``rate`` of the different-person pairs fall (the
  false-match rate, FMR): the threshold that accepts that many false matches, and the share
  of same-person pairs it accepts (the true-match rate, TMR);
* the equal-error distance (FMR = 1 - TMR);
* for "no match" decisions against a gallery (``open_set``): a pair threshold at 1 % FMR
  still lets most strangers match someone in a gallery of hundreds of people (the nearest of
  many impostors is close). So, per image, the distance to its nearest image of another person
  (the impostor a stranger would match) and to its nearest image of its own person: the
  threshold below which a fraction ``rate`` of the nearest impostors fall, and the share of
  images whose own person is within it (the detection rate). These hold for galleries of about
  the calibration set's size; a larger gallery needs a lower threshold.

Pair thresholds are for a tracker's gate (a track against the few detections near it);
open-set thresholds are for search.

``pairs`` chooses which pairs count: "all", "cross-camera" (multi-camera search: pairs of
images from two cameras) or "same-camera" (a tracker inside one camera).

``calibration.json`` holds ``{"thresholds": {"0.01": d, "0.05": d}, "open_set": {"thresholds":
{...}, "detection_rate": {...}}, ...}``; ``load_threshold`` reads a number or such a file.
"""
import json
import os

import numpy as np

from ..errors import CalrError
from ..utils.atomic import atomic_write_text

__all__ = ["PAIRS", "pair_distances", "nearest_distances", "calibrate", "write_calibration", "load_threshold"]

PAIRS = ("all", "cross-camera", "same-camera")


def pair_distances(features, pids, cams=None, pairs="all", max_pairs=500_000, seed=0):
    """Cosine distances (1 - cos) of same-person and different-person pairs.

    Args:
        features (ndarray): (N, D) unit rows. pids (array-like): (N,) person ids.
        cams (array-like | None): (N,) camera names, needed unless ``pairs`` is "all".
        pairs (str): one of ``PAIRS``. max_pairs (int): at most this many of each kind (a
            seeded uniform sample). seed (int): the sample's seed.
    Returns:
        tuple: (P,) and (Q,) float64 distances.
    """
    if pairs not in PAIRS:
        raise CalrError(f"pairs {pairs!r}: expected one of {', '.join(PAIRS)}")
    f = np.asarray(features, np.float32)
    pids = np.asarray(pids)
    if len(f) != len(pids) or len(f) < 2:
        raise CalrError(f"calibration needs >= 2 images with ids ({len(f)} features, {len(pids)} ids)")
    iu, ju = np.triu_indices(len(f), k=1)
    keep = np.ones(len(iu), bool)
    if pairs != "all":
        if cams is None:
            raise CalrError(f"pairs {pairs!r} needs the images' cameras")
        cams = np.asarray(cams)
        keep = cams[iu] != cams[ju] if pairs == "cross-camera" else cams[iu] == cams[ju]
    same = pids[iu] == pids[ju]
    rng = np.random.default_rng(seed)
    out = []
    for mask in (keep & same, keep & ~same):
        sel = np.flatnonzero(mask)
        if len(sel) > max_pairs:
            sel = np.sort(rng.choice(sel, max_pairs, replace=False))
        d = 1.0 - np.einsum("ij,ij->i", f[iu[sel]], f[ju[sel]]).astype(np.float64)
        out.append(d)
    if not len(out[0]) or not len(out[1]):
        raise CalrError(f"calibration ({pairs} pairs): {len(out[0])} same-person and {len(out[1])} "
                        f"different-person pairs; need both")
    return out[0], out[1]


def nearest_distances(features, pids, cams=None, pairs="all"):
    """Per image: the distance to its nearest image of the same person and of another person.

    Args:
        as ``pair_distances`` (without sampling: an (N, N) product).
    Returns:
        tuple: (N,) nearest same-person distance (inf when the person has no other image among
        the pairs counted), (N,) nearest different-person distance, float64.
    """
    f = np.asarray(features, np.float32)
    pids = np.asarray(pids)
    d = 1.0 - (f @ f.T).astype(np.float64)
    np.fill_diagonal(d, np.inf)
    if pairs != "all":
        cams = np.asarray(cams)
        same_cam = cams[:, None] == cams[None, :]
        d[same_cam if pairs == "cross-camera" else ~same_cam] = np.inf
    same = pids[:, None] == pids[None, :]
    return np.where(same, d, np.inf).min(1), np.where(~same, d, np.inf).min(1)


def _threshold_at(sorted_negatives, rate):
    """The largest distance with at most a fraction ``rate`` of ``sorted_negatives`` at or below it."""
    if not 0 < rate < 1:
        raise CalrError(f"false-match rate {rate}: expected a fraction in (0, 1)")
    k = int(np.floor(rate * len(sorted_negatives)))
    return float(sorted_negatives[k - 1]) if k else float(sorted_negatives[0]) - 1e-6


def calibrate(same, diff, rates=(0.01, 0.05), nearest=None):
    """Thresholds at false-match rates, with what they accept.

    Args:
        same (ndarray): (P,) same-person distances. diff (ndarray): (Q,) different-person ones.
        rates (tuple[float]): false-match rates.
        nearest (tuple | None): ``nearest_distances``' output, for the open-set thresholds.
    Returns:
        dict: thresholds {str(rate): distance}, true_match_rate {str(rate): TMR at it},
        equal_error {distance, rate}, counts and medians, and with ``nearest`` open_set
        {thresholds, detection_rate, images}.
    """
    same, diff = np.sort(np.asarray(same, np.float64)), np.sort(np.asarray(diff, np.float64))
    thresholds, tmr = {}, {}
    for r in rates:
        t = _threshold_at(diff, r)
        thresholds[str(r)] = round(t, 6)
        tmr[str(r)] = round(float(np.searchsorted(same, t, side="right")) / len(same), 6)
    open_set = None
    if nearest is not None:
        own, impostor = (np.asarray(a, np.float64) for a in nearest)
        impostor = np.sort(impostor[np.isfinite(impostor)])
        scored = np.isfinite(own)
        if not len(impostor) or not scored.any():
            raise CalrError("open-set calibration needs images with another image of their person and of others")
        open_set = {"thresholds": {}, "detection_rate": {}, "images": int(scored.sum())}
        for r in rates:
            t = _threshold_at(impostor, r)
            open_set["thresholds"][str(r)] = round(t, 6)
            open_set["detection_rate"][str(r)] = round(float((own[scored] <= t).mean()), 6)
    grid = np.unique(np.r_[same, diff])
    fmr = np.searchsorted(diff, grid, side="right") / len(diff)
    fnmr = 1 - np.searchsorted(same, grid, side="right") / len(same)
    e = int(np.argmin(np.abs(fmr - fnmr)))
    result = {"thresholds": thresholds, "true_match_rate": tmr,
              "equal_error": {"distance": round(float(grid[e]), 6), "rate": round(float((fmr[e] + fnmr[e]) / 2), 6)},
              "pairs": {"same": len(same), "different": len(diff)},
              "median_distance": {"same": round(float(np.median(same)), 6),
                                  "different": round(float(np.median(diff)), 6)}}
    if open_set is not None:
        result["open_set"] = open_set
    return result


def write_calibration(out_dir, result, same, diff, meta=None):
    """``calibration.json`` (result + meta) and ``calibration.png`` (the two histograms and the
    thresholds) in ``out_dir``; returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "calibration.json")
    atomic_write_text(path, json.dumps({**(meta or {}), **result}, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.linspace(0, max(float(np.max(diff)), float(np.max(same))) * 1.02, 80)
    ax.hist(diff, bins=bins, density=True, alpha=0.55, label=f"different people ({len(diff)} pairs)")
    ax.hist(same, bins=bins, density=True, alpha=0.55, label=f"same person ({len(same)} pairs)")
    for (rate, t), style in zip(result["thresholds"].items(), ("-", "--", ":")):
        ax.axvline(t, color="black", linestyle=style,
                   label=f"{float(rate):.0%} false matches: d = {t:.3f} (accepts {result['true_match_rate'][rate]:.0%})")
    if "open_set" in result:  # the smallest rate only: the one search reads
        rate = min(result["open_set"]["thresholds"], key=float)
        t = result["open_set"]["thresholds"][rate]
        ax.axvline(t, color="tab:red", linestyle=":", label=f"search: {float(rate):.0%} of strangers matched: d = {t:.3f} "
                   f"(finds {result['open_set']['detection_rate'][rate]:.0%})")
    ax.set_xlabel("cosine distance (1 - cos)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = os.path.join(out_dir, "calibration.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return path, png


def load_threshold(spec, rate=None, kind="pairs"):
    """A distance threshold from a number ("0.27") or a calibration.json (its ``rate``, default
    the smallest false-match rate in it).

    Args:
        kind (str): "pairs" (a tracker's gate) or "open_set" ("no match" in a search: the
            "search" section's, computed on search's features, when the file has one).
    Raises:
        CalrError: neither a number nor a readable calibration file, or no such rate in it.
    """
    try:
        return float(spec)
    except (TypeError, ValueError):
        pass
    if not os.path.isfile(str(spec)):
        raise CalrError(f"threshold {spec}: neither a distance nor a calibration.json file")
    try:
        with open(spec) as f:
            data = json.load(f)
        # search's features (FastReID's transform) have their own section when the tool wrote one
        thresholds = data["thresholds"] if kind == "pairs" else data.get("search", data)["open_set"]["thresholds"]
    except (ValueError, KeyError, TypeError):
        raise CalrError(f"{spec}: not a calibration file of tools/calibrate.py (expected a JSON object with "
                        f"{'thresholds' if kind == 'pairs' else 'open_set.thresholds'})") from None
    key = str(rate) if rate is not None else min(thresholds, key=float)
    if key not in thresholds:
        raise CalrError(f"{spec}: no threshold at false-match rate {rate} (it has {', '.join(thresholds)})")
    return float(thresholds[key])
