"""The demo's claim, tested: CALR learns far past the zero-shot features on every seed, and refines.

The demo recipe (configs/CALR/demo_synthetic.yml), seeds 1 and 2, one thread per run so the
two share the 2 cores. Single seeds swing by up to 30 mAP on this small set and the Baseline
preset collapses on some seeds (docs/RESULTS.md), so a mean over two seeds against the
Baseline would hinge on whether one of them is a collapse. The test asserts what holds on
every seed: CALR ends at least 40 mAP above the zero-shot ImageNet features (measured at this
commit: zero-shot 10.29, CALR seed 2 68.83, the lowest CALR seed we have seen), and the
mechanism at every epoch: refinement discards images and the refined labels are at least as
precise as the global ones.
"""
import json
import os
import subprocess
import sys

import pytest

from calr_plugin.report.analysis import read_metrics
from conftest import REPO, config_path


def start(config, out, seed, weights):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                             config_path(config), "OUTPUT_DIR", str(out), "SEED", str(seed),
                             "MODEL.BACKBONE.PRETRAIN_PATH", weights],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def final_map(out):
    rows = read_metrics(out)
    return [r for r in rows if "mAP" in r][-1]["mAP"], rows


def zero_shot_map(tmp_path, weights):
    out = tmp_path / "zero_shot"
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                          config_path("CALR/demo_synthetic.yml"), "--eval-only", "OUTPUT_DIR", str(out),
                          "MODEL.BACKBONE.PRETRAIN_PATH", weights], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out / "eval_results.json") as f:
        return json.load(f)["mAP"]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, mobilenet_weights):
    """The demo recipe trained with seeds 1 and 2, side by side: {seed: OUTPUT_DIR}."""
    tmp = tmp_path_factory.mktemp("demo")
    runs = {seed: (tmp / f"calr{seed}", start("CALR/demo_synthetic.yml", tmp / f"calr{seed}", seed,
                                                mobilenet_weights)) for seed in (1, 2)}
    for seed, (out, proc) in runs.items():
        _, err = proc.communicate(timeout=1500)
        assert proc.returncode == 0, err[-3000:]
    return {seed: out for seed, (out, _) in runs.items()}


def test_calr_learns_far_past_zero_shot_on_the_demo_and_refines_every_epoch(tmp_path, mobilenet_weights, demo_runs):
    floor = zero_shot_map(tmp_path, mobilenet_weights) + 40.0
    for seed, out in demo_runs.items():
        m, rows = final_map(out)
        epochs = [r for r in rows if "refined/precision" in r]
        assert len(epochs) == 12
        assert all(r["refined/precision"] >= r["global/precision"] for r in epochs)
        assert max(r["calr/discard_ratio"] for r in epochs) > 0.1  # refinement really discarded
        assert m >= floor, f"seed {seed}: CALR {m:.2f} mAP, less than 40 above zero-shot"


def _market_folder(root, split_items):
    """A Market-layout folder of links: {split: [(path, pid, cam)]}."""
    for split, items in split_items.items():
        os.makedirs(root / split, exist_ok=True)
        for path, _, _ in items:
            os.symlink(path, root / split / os.path.basename(path))
    return root


def test_the_demo_models_calibrated_threshold_says_no_match_for_strangers_and_finds_the_others(tmp_path, demo_runs):
    # Seed 2's model (at one thread, as here, the lowest demo seed recorded above: 68.83 mAP).
    # Its threshold is calibrated on half of the test people (49-60); search runs on the other
    # half: 6 of them (strangers) have no image in the gallery, 6 have theirs. Same-camera search, as a tracker's re-identification is.
    # Measured on three demo models (seeds 1-3, 2 threads; mAP 76, 79, 59): the strangers' 18
    # queries get "no match" 16, 15, 16 times; the others' 18 find their person first within
    # the threshold 17, 18, 14 times. The test asks for 60 % of each, a bound set from those
    # measurements (and models trained at 2 threads, not this run's 1).
    from calr_plugin import load_config
    from calr_plugin.data.build import load_dataset

    data = load_dataset(load_config(config_path("CALR/demo_synthetic.yml"), [], check=False), "CALRSynthetic")
    query = [(p, pid, c) for p, pid, c, *_ in data.query]
    gallery = [(p, pid, c) for p, pid, c, *_ in data.gallery]
    ids = sorted({pid for _, pid, _ in query})
    calib_ids, strangers, present = set(ids[:12]), set(ids[12:18]), set(ids[18:])
    calib = _market_folder(tmp_path / "calib", {"query": [q for q in query if q[1] in calib_ids],
                                                "bounding_box_test": [g for g in gallery if g[1] in calib_ids]})
    search_gallery = _market_folder(tmp_path / "gallery", {"bounding_box_test": [g for g in gallery if g[1] in present]})
    model = demo_runs[2] / "model_final.pth"
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "calibrate.py"), "--weights", str(model),
                          "--data", str(calib), "--out", str(tmp_path / "cal")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "cal" / "calibration.png").stat().st_size > 10_000
    cal = json.load(open(tmp_path / "cal" / "calibration.json"))
    assert cal["images"] == 12 * 12 and cal["thresholds"]["0.01"] < cal["thresholds"]["0.05"]
    queries = [q for q in query if q[1] in strangers | present]
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "search.py"), "--config-file",
                          str(demo_runs[2] / "config.yaml"), "MODEL.WEIGHTS", str(model), "--gallery",
                          str(search_gallery), "--query", *[q[0] for q in queries], "--out", str(tmp_path / "s"),
                          "--same-camera", "--topk", "1", "--threshold", str(tmp_path / "cal" / "calibration.json")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    no_match = set(open(tmp_path / "s" / "no_match.txt").read().split())
    assert len(no_match) == run.stdout.count(": no match (nearest distance")
    with open(tmp_path / "s" / "matches.json") as f:
        top = {r["query"]: r["same_person"] for r in json.load(f)}
    stranger_q = [os.path.abspath(q[0]) for q in queries if q[1] in strangers]
    present_q = [os.path.abspath(q[0]) for q in queries if q[1] in present]
    assert sum(q in no_match for q in stranger_q) >= 0.6 * len(stranger_q), (len(no_match), run.stdout[-2000:])
    assert sum(top.get(q) is True for q in present_q) >= 0.6 * len(present_q), run.stdout[-2000:]
