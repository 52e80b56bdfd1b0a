#!/usr/bin/env python
"""CALR pseudo labels for saved features, with label-quality metrics.

Shape shorthand: N images, D feature dims.

    python tools/pseudo_labels.py --features F.npy --names names.txt --json out.json \\
        [--local-labels L.npy | --k1 15 --k2 4 --local-ratio 0.2] [--epoch 0 --max-epoch 50] \\
        [--preset default|paper|code] [--k 15 --min-sim 0.5 --min-size 5 --pivot-rule ... \\
         --refine-mode ... --decay ... --camera-centre --knn-method ... --seed 0] \\
        [--out-labels labels.npz]
    python tools/pseudo_labels.py --features F.npy --names names.txt --suggest [--cams cams.txt] \
        [--camera-centre --ims-per-batch 32 --stage1-ims-per-batch 32 --json out.json]

F.npy: (N, D) float features, one row per line of names.txt. names.txt: N Market-style image
names such as ``0001_c1s1_000151_01.jpg`` (id 1, camera 1); ids are used only for the
metrics and cameras become 0-based. The stage-1 step (per-camera Jaccard + average linkage)
runs unless ``--local-labels`` gives an (N,) integer array. Bad inputs give a one-line
``error:`` message and exit code 2.

``--suggest`` prints the values the ``auto`` config keys would take for these features (the
rules of ``calr_plugin/labels/auto.py``, which read no id); cameras come from the names, or
from ``--cams`` (one camera name per line, as ``tools/extract_features.py`` writes for
camera folders), and then the names need not be Market-style. With ``--k``, K is taken as
given and MIN_SIM is read at it (as a run does when ``CALR.CLUSTER.K`` is a number).

This script loads ``calr_plugin.labels`` without running ``calr_plugin/__init__`` (which
imports torch and fastreid), so it starts in about a second.
"""
import argparse
import dataclasses
import json
import math
import re
import sys
import time
import types
from importlib.util import find_spec
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if "calr_plugin" not in sys.modules:
    # A namespace stub for the parent package: ``calr_plugin.labels`` depends on nothing else
    # in calr_plugin, so its submodules import normally from the real package directory.
    sys.path.insert(0, str(ROOT))
    _spec = find_spec("calr_plugin")
    if _spec is None or not _spec.submodule_search_locations:
        sys.exit("error: cannot find the calr_plugin package next to tools/")
    _stub = types.ModuleType("calr_plugin")
    _stub.__path__ = list(_spec.submodule_search_locations)
    sys.modules["calr_plugin"] = _stub

from calr_plugin.labels.auto import suggest_settings  # noqa: E402
from calr_plugin.labels.knn import KNN_METHODS  # noqa: E402
from calr_plugin.labels.metrics import cluster_metrics  # noqa: E402
from calr_plugin.labels.pipeline import LabelParams, stage1_labels, stage2_labels  # noqa: E402
from calr_plugin.labels.pivots import MEAN_DIST_MODES, NEIGHBOUR_MODES, PIVOT_RULES  # noqa: E402
from calr_plugin.labels.refine import REFINE_MODES  # noqa: E402
from calr_plugin.labels.schedules import DECAY_KINDS  # noqa: E402

NAME_PATTERN = re.compile(r"([-\d]+)_c(\d+)")


class InputError(Exception):
    """A user-facing input problem: reported as one line, exit code 2."""


def parse_names(path: Path):
    """(N,) int64 ids and (N,) int64 0-based cameras from Market-style names."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(f"cannot read names file {path}: {e.strerror}")
    names = [ln.strip() for ln in lines]
    while names and not names[-1]:
        names.pop()
    ids = np.empty(len(names), dtype=np.int64)
    cams = np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        m = NAME_PATTERN.search(Path(name).name)
        if not name or m is None:
            raise InputError(
                f"{path}:{i + 1}: cannot parse image name {name!r}; expected Market-style "
                f"'<id>_c<camera>...' (regex {NAME_PATTERN.pattern}), e.g. 0001_c1s1_000151_01.jpg"
            )
        ids[i] = int(m.group(1))
        cams[i] = int(m.group(2))
    # 0..C-1 in sorted order of the numbers found: cameras may start at 0 or 1 or have gaps.
    cams = np.unique(cams, return_inverse=True)[1].astype(np.int64)
    return names, ids, cams


def load_array(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{what} file not found: {path}")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {what} file {path}: {str(e).splitlines()[0]}")


def build_params(args) -> LabelParams:
    base = {"code": LabelParams.official_code, "paper": LabelParams.paper}.get(args.preset, LabelParams.defaults)()
    overrides = {
        "k1": args.k1, "k2": args.k2, "local_ratio": args.local_ratio,
        "local_num_clusters": args.local_num_clusters, "k": args.k, "min_sim": args.min_sim,
        "min_size": args.min_size, "knn_method": args.knn_method, "pivot_rule": args.pivot_rule,
        "pivot_mean_dist": args.pivot_mean_dist, "pivot_neighbours": args.pivot_neighbours,
        "refine_mode": args.refine_mode, "decay": args.decay, "p_end": args.p_end,
        "seed": args.seed, "infomap_trials": args.infomap_trials,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.camera_centre:
        overrides["camera_centre"] = True
    if args.no_refine:
        overrides["refine_enabled"] = False
    for key in ("k", "k1", "k2", "min_size", "infomap_trials"):
        if key in overrides and overrides[key] < 1:
            raise InputError(f"--{key.replace('_', '-')} must be >= 1, got {overrides[key]}")
    try:
        return dataclasses.replace(base, **overrides)
    except ValueError as e:
        raise InputError(str(e))


def _clean(obj):
    # JSON has no NaN: undefined scores (e.g. NMI with nothing clustered) become null.
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def read_cams(path: Path, n: int) -> np.ndarray:
    """(N,) int64 0-based cameras from a text file of N camera names (any strings)."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise InputError(f"cannot read cameras file {path}: {e.strerror}")
    if len(lines) != n:
        raise InputError(f"{path} has {len(lines)} cameras but the features have {n} rows")
    return np.unique(lines, return_inverse=True)[1].astype(np.int64)


def suggest(args, feats: np.ndarray) -> dict:
    """The auto values for these features (no id is read)."""
    if args.cams:
        cams = read_cams(Path(args.cams), len(feats))
    else:
        names, _, cams = parse_names(Path(args.names))
        if len(names) != len(feats):
            raise InputError(f"{args.features} has {feats.shape[0]} rows but {args.names} has {len(names)} names")
    for flag in ("ims_per_batch", "stage1_ims_per_batch"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.k is not None and args.k < 2:
        raise InputError(f"--k must be >= 2 (self and one neighbour), got {args.k}")
    t0 = time.perf_counter()
    s = suggest_settings(feats, cams, args.ims_per_batch, args.stage1_ims_per_batch, args.camera_centre,
                         args.seed or 0, k=args.k)  # --k: MIN_SIM read at it
    return {"values": s.values, "rules": s.rules, "images_per_person_and_camera": s.m,
            "cameras_per_person": s.structure.cams_per_person, "warnings": s.warnings,
            "num_cameras": s.num_cameras, "kept_edge_fraction": s.kept_edge_fraction,
            "seconds": round(time.perf_counter() - t0, 3)}


def load_features(args) -> np.ndarray:
    feats = load_array(Path(args.features), "features")
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise InputError(f"features must be a non-empty (N, D) array, got shape {feats.shape} in {args.features}")
    if feats.dtype.kind not in "fiu":
        raise InputError(f"features must be numeric, got dtype {feats.dtype} in {args.features}")
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        raise InputError(f"features contain NaN/inf in {int(bad.sum())} rows (first: row {int(np.argmax(bad))}) "
                         f"in {args.features}")
    return feats


def run(args) -> dict:
    feats = load_features(args)
    names, ids, cams = parse_names(Path(args.names))
    if len(names) != feats.shape[0]:
        raise InputError(f"{args.features} has {feats.shape[0]} rows but {args.names} has {len(names)} names")
    if args.epoch < 0 or args.max_epoch < 1:
        raise InputError(f"need --epoch >= 0 and --max-epoch >= 1, got {args.epoch} and {args.max_epoch}")
    params = build_params(args)
    n = len(names)
    timings = {}

    t0 = time.perf_counter()
    silhouette = None
    if args.local_labels:
        local = load_array(Path(args.local_labels), "local labels")
        if local.shape != (n,) or local.dtype.kind not in "iu":
            raise InputError(f"local labels must be an (N,) = ({n},) integer array, got shape "
                             f"{local.shape} dtype {local.dtype} in {args.local_labels}")
        if (local < 0).any():
            raise InputError(f"local labels must be >= 0 (every image has a stage-1 label) in {args.local_labels}")
        local = local.astype(np.int64)
    else:
        res1 = stage1_labels(feats, cams, params, silhouette=True)
        local = res1.labels
        silhouette = {int(c): float(s) for c, s in zip(res1.cameras, res1.silhouette)}
    timings["intra_camera"] = time.perf_counter() - t0

    res = stage2_labels(feats, cams, local, args.epoch, args.max_epoch, params)
    timings.update(res.timings)
    t0 = time.perf_counter()
    report = {
        "n_images": n,
        "n_cameras": int(len(np.unique(cams))),
        "camera_centre": params.camera_centre,
        "params": dataclasses.asdict(params),
        "global": cluster_metrics(res.global_labels, ids),
        "local": cluster_metrics(local, ids, cams, within_camera=True),
        "refined": cluster_metrics(res.refined_labels, ids),
        "discard_ratio": res.discard_ratio,
        "kept_edge_fraction": res.kept_edge_fraction,
        "p": res.p,
        "num_pivots": int(res.pivots.sum()),
        "local_silhouette": silhouette,
    }
    timings["metrics"] = time.perf_counter() - t0
    if params.camera_centre:
        # Show the effect of centring: the same step on the raw features.
        plain = stage2_labels(feats, cams, local, args.epoch, args.max_epoch,
                              dataclasses.replace(params, camera_centre=False))
        report["without_camera_centre"] = {
            "global": cluster_metrics(plain.global_labels, ids),
            "refined": cluster_metrics(plain.refined_labels, ids),
            "discard_ratio": plain.discard_ratio,
            "kept_edge_fraction": plain.kept_edge_fraction,
        }
    report["timings"] = {k: round(v, 4) for k, v in timings.items()}

    if args.out_labels:
        np.savez(args.out_labels, global_labels=res.global_labels, refined_labels=res.refined_labels,
                 local_labels=local, weights=res.weights, pivots=res.pivots, scores=res.scores,
                 cams=cams, ids=ids)
    return report


def print_summary(report: dict) -> None:
    keys = ("precision", "recall", "fscore", "expansion", "nmi", "ari", "clustered_fraction", "num_clusters")
    rows = [("local", report["local"]), ("global", report["global"]), ("refined", report["refined"])]
    if "without_camera_centre" in report:
        w = report["without_camera_centre"]
        rows += [("global (no centring)", w["global"]), ("refined (no centring)", w["refined"])]
    print(f"{report['n_images']} images, {report['n_cameras']} cameras, camera_centre="
          f"{report['camera_centre']}, p={report['p']:.3f}, discard_ratio={report['discard_ratio']:.3f}, "
          f"kept_edge_fraction={report['kept_edge_fraction']:.3f}")
    print(f"{'labels':<24}" + "".join(f"{k[:12]:>13}" for k in keys))
    for name, m in rows:
        cells = "".join(f"{'nan':>13}" if m[k] is None else f"{m[k]:>13d}" if isinstance(m[k], int)
                        else f"{m[k]:>13.4f}" for k in keys)
        print(f"{name:<24}{cells}")
    print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["timings"].items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", required=True, help="(N, D) float .npy")
    ap.add_argument("--names", required=True, help="text file, N Market-style image names")
    ap.add_argument("--json", help="write metrics as JSON here")
    ap.add_argument("--out-labels", help="write label arrays (.npz) here")
    ap.add_argument("--local-labels", help="(N,) int .npy of stage-1 labels (skips the intra-camera step)")
    ap.add_argument("--preset", choices=["default", "paper", "code"], default="default",
                    help="calr-reid's defaults (as configs/CALR/Base-CALR.yml), the strict paper "
                         "reading, or the authors' code; flags below override it")
    ap.add_argument("--k1", type=int)
    ap.add_argument("--k2", type=int)
    ap.add_argument("--local-ratio", type=float, help="clusters per camera = floor(N_c * ratio) (0.2)")
    ap.add_argument("--local-num-clusters", type=int, help="fixed clusters per camera instead of the ratio")
    ap.add_argument("--epoch", type=int, default=0)
    ap.add_argument("--max-epoch", type=int, default=50)
    ap.add_argument("--k", type=int, help="kNN incl. self (15)")
    ap.add_argument("--min-sim", type=float)
    ap.add_argument("--min-size", type=int)
    ap.add_argument("--knn-method", choices=KNN_METHODS)
    ap.add_argument("--pivot-rule", choices=PIVOT_RULES)
    ap.add_argument("--pivot-mean-dist", choices=MEAN_DIST_MODES)
    ap.add_argument("--pivot-neighbours", choices=NEIGHBOUR_MODES)
    ap.add_argument("--refine-mode", choices=REFINE_MODES)
    ap.add_argument("--no-refine", action="store_true", help="skip Eq. 5 (refined = global)")
    ap.add_argument("--decay", choices=DECAY_KINDS)
    ap.add_argument("--p-end", type=float)
    ap.add_argument("--camera-centre", action="store_true",
                    help="subtract per-camera mean features (also reports the result without)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--infomap-trials", type=int)
    ap.add_argument("--suggest", action="store_true", help="print the values the auto config keys would take")
    ap.add_argument("--cams", help="with --suggest: text file, N camera names (instead of Market names)")
    ap.add_argument("--ims-per-batch", type=int, default=64, help="with --suggest: images per process and step")
    ap.add_argument("--stage1-ims-per-batch", type=int, default=64, help="with --suggest: stage-1 images per step")
    args = ap.parse_args(argv)
    try:
        report = suggest(args, load_features(args)) if args.suggest else run(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = _clean(report)
    if args.suggest:
        print(f"m = {report['images_per_person_and_camera']:g} images per person and camera, "
              f"{report['cameras_per_person']:g} cameras per person, {report['num_cameras']} cameras")
        for w in report["warnings"]:
            print(f"warning: {w}")
        for key, value in report["values"].items():
            print(f"{key} {value}    # {report['rules'][key]}")
    else:
        print_summary(report)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as e:
            print(f"error: cannot write {args.json}: {e.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
