#!/usr/bin/env python
"""The real-data results of docs/RESULTS.md: runs each row's training, then prints the tables.

    python bench/real_data.py cuhk01 [--seeds 1 2 3] [--rows zero_shot baseline calr ...]
    python bench/real_data.py pku --rows zero_shot baseline calr supervised

Every row is one `tools/train_net.py` command (printed, with its wall time) on the recipe
configs/CALR/<set>_mobilenetv2*.yml. The rows calr, baseline and calr_infer run the `auto`
recipe on the set rebuilt as unlabeled camera folders (bench/camera_folders.py, made on
first use in output/camfolders/<set>); the *_tuned rows and the ablations the hand-tuned
preset (<set>_mobilenetv2_tuned.yml) on the Market-layout set. Outputs go to output/real/<set>/<row>_s<seed>/; a row
whose folder holds a finished run (wall.json) is read, not rerun, so an interrupted bench
resumes where it stopped. Ablation and preset rows of seed s use the stage-1 labels of the
calr_tuned row of seed s (CALR.STAGE1.LABELS), so they differ from that row in stage 2 only.
Only the headline rows run every seed given, unless --every-seed.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from compare_runs import final_metrics  # noqa: E402

# row -> (recipe suffix, extra opts, stage-1 labels of seed s from: False (own stage 1),
#         True (the calr_tuned row) or a row name, title)
TUNED_BASELINE = ["CALR.REFINE.ENABLED", "False", "CALR.ALIGN.ENABLED", "False", "CALR.WEIGHTING.ENABLED", "False"]
ROWS = {
    "zero_shot": ("", ["--eval-only"], False, "zero-shot ImageNet features"),
    # The auto recipe on unlabeled camera folders (CAMERA_FOLDER_ROWS).
    "calr": ("", [], False, "CALR, auto settings, camera folders"),
    "baseline": ("_baseline", [], False, "Baseline preset, auto settings, camera folders"),
    "calr_infer": ("", ["DATASETS.CAMERAS", "infer"], False, "CALR, auto settings, inferred cameras"),
    # The calr row with PyTorch extraction (the calr row runs ONNX Runtime where it is installed).
    "calr_torch": ("", ["CALR.EXTRACT.ENGINE", "torch"], False, "CALR, auto settings, camera folders, PyTorch extraction"),
    "calr_infer_emb": ("", ["DATASETS.CAMERAS", "infer", "DATASETS.CAMERA_FEATURES", "embedding"], False,
                       "CALR, auto settings, cameras inferred from the embedding"),
    # The recipe's lr, 3x: the Lite2 supervised bound under-fits at 3.5e-4 (docs/RESULTS.md 2c).
    "calr_lr3x": ("", ["SOLVER.BASE_LR", "0.00105"], "calr",
                  "CALR, auto settings, stage-2 lr 1.05e-3 (same stage-1 labels)"),
    "supervised_lr3x": ("_supervised", ["SOLVER.BASE_LR", "0.00105"], False, "supervised upper bound, lr 1.05e-3"),
    "calr_q50": ("", ["CALR.CLUSTER.MIN_SIM_QUANTILE", "0.5"], "calr",
                 "CALR, auto settings, MIN_SIM re-read every epoch (median edge)"),
    # The hand-tuned preset (ground truth and test mAP chose its clustering knobs).
    "calr_tuned": ("_tuned", [], False, "CALR, hand-tuned preset"),
    "baseline_tuned": ("_tuned", TUNED_BASELINE, False, "Baseline preset, hand-tuned values"),
    "supervised": ("_supervised", [], False, "supervised upper bound (true ids)"),
    "calr_paper": ("_tuned", ["@paper"], True, "CALR paper preset (Base-CALR-paper.yml)"),
    "calr_official": ("_tuned", ["@official"], True,
                      "CALR official-code preset (stage-2 keys of Base-CALR-official.yml)"),
    "refine_only": ("_tuned", ["CALR.ALIGN.ENABLED", "False", "CALR.WEIGHTING.ENABLED", "False"], True,
                    "refinement only"),
    "align_only": ("_tuned", ["CALR.REFINE.ENABLED", "False", "CALR.WEIGHTING.ENABLED", "False"], False,
                   "alignment only"),
    "decay_none": ("_tuned", ["CALR.REFINE.DECAY", "none"], True, "CALR, decay none (p = 1)"),
    "decay_linear": ("_tuned", ["CALR.REFINE.DECAY", "linear"], True, "CALR, decay linear"),
    "decay_exp": ("_tuned", ["CALR.REFINE.DECAY", "exp"], True, "CALR, decay exp"),
    "decay_poly": ("_tuned", ["CALR.REFINE.DECAY", "poly"], True, "CALR, decay poly"),
    "p_end_05": ("_tuned", ["CALR.REFINE.P_END", "0.5"], True, "CALR, cosine decay to P_END 0.5"),
    "p_end_0": ("_tuned", ["CALR.REFINE.P_END", "0.0"], True, "CALR, cosine decay to P_END 0"),
    # Tuning rows: the settings the zero-shot label sweep favours, end to end.
    "min_sim_05": ("_tuned", ["CALR.CLUSTER.MIN_SIM", "0.5"], True, "CALR, MIN_SIM 0.5"),
    "temp_005": ("_tuned", ["CALR.MEMORY.TEMP", "0.05"], True, "CALR, temperature 0.05"),
    "lr_7e-4": ("_tuned", ["SOLVER.BASE_LR", "0.0007"], True, "CALR, lr 7e-4"),
    "k4_min_sim_05": ("_tuned", ["CALR.CLUSTER.K", "4", "CALR.CLUSTER.MIN_SIM", "0.5"], True,
                      "CALR, k 4, MIN_SIM 0.5"),
}
CAMERA_FOLDER_ROWS = ("calr", "calr_torch", "baseline", "calr_infer", "calr_infer_emb", "calr_q50", "calr_lr3x")
SHARED = {"cuhk01": "../shared/data/cuhk01", "pku": "../shared/data/pku_reid74", "viper": "../shared/data/viper",
          "prid": "../shared/data/prid", "grid": "../shared/data/grid", "caviar": "../shared/data/caviar"}
# Sets without recipes of their own run CUHK01's (the issue's "fixed recipe it replaces" is
# cuhk01_mobilenetv2_tuned.yml), with DATASETS.FOLDER pointing at them.
RECIPE_OF = {"viper": "cuhk01", "prid": "cuhk01", "grid": "cuhk01", "caviar": "cuhk01"}
SEEDED = ("baseline", "calr", "calr_torch", "calr_infer", "calr_infer_emb", "calr_q50", "calr_lr3x", "calr_tuned", "baseline_tuned")  # run for every seed


def preset_opts(name):
    """The keys where configs/CALR/Base-CALR-<name>.yml departs from Base-CALR.yml, as opts.

    Stage-1 keys are left out: preset rows reuse the CALR row's stage-1 labels. So is
    MODEL.BN_CHUNK: its 64-image chunks need batches of 64 or more, and the CPU recipes use 32.
    """
    from calr_plugin import load_config

    def read(path):  # unchecked: these bases name CUDA, which this machine may lack
        return load_config(os.path.join(ROOT, "configs/CALR", path), check=False)

    base, preset = read("Base-CALR.yml"), read(f"Base-CALR-{name}.yml")
    opts = []

    def walk(a, b, prefix):
        for key in b:
            name_ = prefix + key
            if hasattr(b[key], "keys"):
                walk(a[key], b[key], name_ + ".")
            elif a[key] != b[key] and not name_.startswith("CALR.STAGE1.") and name_ != "MODEL.BN_CHUNK":
                opts.extend([name_, str(b[key])])

    walk(base, preset, "")
    return opts


def camera_folders(dataset, make=False):
    """output/camfolders/<set>: the set as unlabeled camera folders (made once when ``make``)."""
    out = os.path.join("output", "camfolders", dataset)
    if make and not os.path.isdir(os.path.join(ROOT, out)):
        from camera_folders import make_camera_folders

        make_camera_folders(os.path.join(ROOT, SHARED[dataset]), os.path.join(ROOT, out))
    return out


def stage1_source(row):
    """The row whose stage-1 labels ``row`` reuses (seed by seed), or None."""
    source = ROWS[row][2]
    return "calr_tuned" if source is True else (source or None)


def command(dataset, row, seed, out, recipe="mobilenetv2", extra_opts=()):
    suffix, extra, _, _ = ROWS[row]
    config = f"configs/CALR/{RECIPE_OF.get(dataset, dataset)}_{recipe}{suffix}.yml"
    if not os.path.isfile(os.path.join(ROOT, config)):
        raise SystemExit(f"real_data.py: row {row} with --recipe {recipe} needs {config}, which does not exist")
    cmd = [sys.executable, "tools/train_net.py", "--config-file", config]
    opts = []
    if "--eval-only" not in extra:
        cmd.append("--resume")  # a row killed half-way goes on from its last checkpoint
    for item in extra:
        if item == "--eval-only":
            cmd.append(item)
        elif item.startswith("@"):
            opts += preset_opts(item[1:])
        else:
            opts.append(item)
    source = stage1_source(row)
    if source:
        opts += ["CALR.STAGE1.LABELS",
                 os.path.join(os.path.dirname(out), f"{source}_s{seed}", "stage1", "local_labels.npz")]
    if row in CAMERA_FOLDER_ROWS:
        opts += ["DATASETS.FOLDER", camera_folders(dataset)]
    elif dataset in RECIPE_OF:
        opts += ["DATASETS.FOLDER", SHARED[dataset]]
    return cmd + opts + list(extra_opts) + ["SEED", str(seed), "OUTPUT_DIR", out]


def run_dir(dataset, row, seed, recipe="mobilenetv2"):
    """output/real/<set>/[<recipe>/]<row>_s<seed> (the MobileNetV2 rows have no recipe folder)."""
    sub = [] if recipe == "mobilenetv2" else [recipe]
    return os.path.join("output", "real", dataset, *sub, f"{row}_s{seed}")


def run_row(dataset, row, seed, recipe="mobilenetv2", extra_opts=()):
    """Run (or read) one row; returns its record: command, wall seconds, final metrics."""
    out = run_dir(dataset, row, seed, recipe)
    done = os.path.join(out, "wall.json")
    cmd = command(dataset, row, seed, out, recipe, extra_opts)
    if os.path.isfile(done):
        with open(done) as f:
            record = json.load(f)
        # --opts are not in the folder name: say when a finished row ran with another command
        # (other --opts, or a row recorded by an older version of this script), not silently reuse it
        if record["command"] != " ".join(cmd[1:]):
            print(f"warning: {out}: reusing a finished run whose command differs from this call's:\n  ran:  "
                  f"{record['command']}\n  now:  {' '.join(cmd[1:])}\n  move that folder to rerun it",
                  file=sys.stderr)
        return record
    if row in CAMERA_FOLDER_ROWS:
        camera_folders(dataset, make=True)
    print("$ " + " ".join(cmd), flush=True)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    with open(os.path.join(out, "stdout.log"), "w") as log:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        raise SystemExit(f"real_data.py: {row} seed {seed} failed (exit {rc}); see {out}/stdout.log")
    record = {"command": " ".join(cmd[1:]), "seconds": time.time() - t0, "metrics": final_metrics(out)}
    tmp = done + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, done)
    return record


def label_quality(out):
    """Global/local/refined label quality at the first and last stage-2 epoch, from metrics.json."""
    from calr_plugin.report.analysis import read_metrics

    rows = [r for r in read_metrics(out) if "global/precision" in r]
    local = next((r for r in rows if "local/precision" in r), None)
    # Local (stage-1) labels are fixed through stage 2: one row, not one per epoch.
    entries = [("-", "local", local)] if local else []
    entries += [(tag, kind, r) for tag, r in (("first", rows[0]), ("last", rows[-1])) for kind in ("global", "refined")]
    table = [(tag, kind, r[f"{kind}/precision"], r[f"{kind}/recall"], r[f"{kind}/fscore"], r[f"{kind}/expansion"],
              r[f"{kind}/clustered_fraction"], r.get("calr/discard_ratio", float("nan")) if kind == "refined"
              else float("nan")) for tag, kind, r in entries]
    return table, [(r["iteration"], r["global/precision"], r.get("refined/precision")) for r in rows]


def folder_label_quality(dataset, out):
    """Stage-1, first- and last-epoch label quality of a camera-folder run (ids from the hashed names).

    Training never saw these ids: the bench maps each camera-folder file back to its Market
    name (bench/camera_folders.py) only to score the labels the run saved. Each epoch file holds
    the global (Infomap) labels and the ones the epoch trained on (refined, unless refinement is
    off; -1: outlier or discarded).
    Returns:
        dict: "stage 1" / "first epoch, global" / "first epoch, trained on" / "last epoch, global" /
        "last epoch, trained on" -> cluster_metrics dict, for the files that exist; no "trained on"
        entry where it equals the global labels.
    """
    import glob

    from camera_folders import original_ids
    from calr_plugin.labels.metrics import cluster_metrics

    ids = original_ids(SHARED[dataset])
    files = [("stage 1", os.path.join(out, "stage1", "local_labels.npz"), "labels")]
    epochs = sorted(glob.glob(os.path.join(out, "labels", "epoch_*.npz")))
    for when, path in (("first", epochs[0]), ("last", epochs[-1])) if epochs else ():
        files += [(f"{when} epoch, global", path, "global_labels"), (f"{when} epoch, trained on", path, "labels")]
    scores = {}
    for tag, path, key in files:
        if os.path.isfile(path):
            saved = np.load(path)
            if key == "labels" and "global_labels" in saved and np.array_equal(saved["labels"], saved["global_labels"]):
                continue  # refinement off (Baseline): it trained on the global labels, scored once
            gt = [ids[os.path.splitext(os.path.basename(n))[0]] for n in saved["names"]]
            scores[tag] = cluster_metrics(saved[key], np.asarray(gt))
    return scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=sorted(SHARED))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--every-seed", action="store_true", help="run every seed for every row, not only the headline")
    p.add_argument("--recipe", default="mobilenetv2",
                   help="configs/CALR/<set>_<recipe><row suffix>.yml, e.g. effnetlite2_128x64 (default mobilenetv2)")
    p.add_argument("--opts", nargs="+", default=[],
                   help="config overrides added to every training row, e.g. TEST.EVAL_PERIOD 1 (mAP every epoch)")
    args = p.parse_args(argv)
    for row in list(args.rows):  # rows reusing another row's stage-1 labels need that row first
        source = stage1_source(row)
        if source and source not in args.rows:
            args.rows = [source] + args.rows
    results = {}
    for row in args.rows:
        for seed in (args.seeds if row in SEEDED or args.every_seed else [args.seeds[0]]):
            results[(row, seed)] = run_row(args.dataset, row, seed, args.recipe,
                                           [] if row == "zero_shot" else args.opts)

    print("\n| row | seeds | mAP | Rank-1 | Rank-5 | Rank-10 | wall (min, per run) |")
    print("|---|---|---|---|---|---|---|")
    for row in args.rows:
        recs = [results[k] for k in results if k[0] == row]
        cells = []
        for key in ("mAP", "Rank-1", "Rank-5", "Rank-10"):
            v = np.array([r["metrics"][key] for r in recs])
            cells.append(f"{v.mean():.2f} +- {v.std():.2f}" if len(v) > 1 else f"{v[0]:.2f}")
        per_seed = " / ".join(f"{r['metrics']['mAP']:.2f}" for r in recs)
        wall = np.mean([r["seconds"] for r in recs]) / 60
        seeds = ",".join(str(k[1]) for k in results if k[0] == row)
        print(f"| {ROWS[row][3]} | {seeds} | " + " | ".join(cells) + f" | {wall:.1f} |"
              + (f" <!-- mAP per seed {per_seed} -->" if len(recs) > 1 else ""))

    # Rows sharing another row's stage-1 labels differ from it in stage 2 only: compare per seed.
    for row in args.rows:
        source = stage1_source(row)
        pairs = [(r["metrics"]["mAP"], results[(source, k[1])]["metrics"]["mAP"]) for k, r in results.items()
                 if k[0] == row and source and (source, k[1]) in results]
        if len(pairs) > 1:
            d = np.array([a - b for a, b in pairs])
            print(f"{row} minus {source}, same stage-1 labels: {d.mean():+.2f} +- {d.std():.2f} mAP "
                  f"({' / '.join(f'{x:+.2f}' for x in d)})")

    # What the auto rows chose, from their auto_settings.json (no id was read to choose it).
    for row in [r for r in args.rows if r in CAMERA_FOLDER_ROWS]:
        for (r, seed) in [k for k in results if k[0] == row]:
            path = os.path.join(run_dir(args.dataset, row, seed, args.recipe), "auto_settings.json")
            if not os.path.isfile(path):
                continue
            with open(path) as f:
                auto = json.load(f)
            values = ", ".join(f"{k.split('.')[-1] if 'STAGE1' not in k else 'STAGE1.' + k.split('.')[-1]} "
                               f"{v}" for k, v in auto.get("values", {}).items())
            cams = auto.get("cameras")
            cam_text = (f"; {cams['num_cameras']} pseudo-cameras ({cams['chosen_by']}), ARI {cams['ari']:.3f}, "
                        f"purity {cams['purity']:.3f}" if cams and "ari" in cams else "")
            print(f"auto {row} seed {seed}: m = {auto.get('images_per_person_and_camera', float('nan')):.2f}; "
                  f"{values}{cam_text}")

    # Label quality of the camera-folder rows (ids read back from the hashed names, for reporting).
    quality = [(row, tag, seed, q) for (row, seed) in results if row in CAMERA_FOLDER_ROWS
               for tag, q in folder_label_quality(args.dataset, run_dir(args.dataset, row, seed, args.recipe)).items()]
    if quality:
        print("\n| row | labels | seeds | pairwise precision | recall | F | ARI | clustered |")
        print("|---|---|---|---|---|---|---|---|")
        for row, tag in dict.fromkeys((q[0], q[1]) for q in quality):
            sel = [q for q in quality if q[0] == row and q[1] == tag]
            cells = [f"{np.mean([q[3][k] for q in sel]):.3f}" for k in ("precision", "recall", "fscore", "ari", "clustered_fraction")]
            print(f"| {ROWS[row][3]} | {tag} | {','.join(str(q[2]) for q in sel)} | " + " | ".join(cells) + " |")

    print("\nCommands:")
    for (row, seed), r in results.items():
        print(f"  {row} seed {seed}: python {r['command']}")

    for seed in args.seeds:
        out = run_dir(args.dataset, "calr_tuned", seed, args.recipe)
        if ("calr_tuned", seed) not in results:
            continue  # camera-folder rows have no ids, so no label quality
        table, per_epoch = label_quality(out)
        print(f"\nLabel quality, calr_tuned seed {seed} (pairwise precision / recall / F, expansion, clustered, discard):")
        print("| epoch | labels | precision | recall | F | expansion | clustered | discarded |")
        print("|---|---|---|---|---|---|---|---|")
        for tag, kind, *v in table:
            print(f"| {tag} | {kind} | " + " | ".join("-" if np.isnan(x) else f"{x:.3f}" for x in v) + " |")
        above = all(ref is not None and ref > glob for _, glob, ref in per_epoch)
        print(f"refined precision above global at every epoch: {above} "
              f"({', '.join(f'{g:.3f}->{r:.3f}' for _, g, r in per_epoch)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
