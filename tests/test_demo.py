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


def test_calr_learns_far_past_zero_shot_on_the_demo_and_refines_every_epoch(tmp_path, mobilenet_weights):
    runs = {seed: (tmp_path / f"calr{seed}", start("CALR/demo_synthetic.yml", tmp_path / f"calr{seed}", seed,
                                                     mobilenet_weights)) for seed in (1, 2)}
    for seed, (out, proc) in runs.items():
        _, err = proc.communicate(timeout=1500)
        assert proc.returncode == 0, err[-3000:]
    floor = zero_shot_map(tmp_path, mobilenet_weights) + 40.0
    for seed, (out, _) in runs.items():
        m, rows = final_map(out)
        epochs = [r for r in rows if "refined/precision" in r]
        assert len(epochs) == 12
        assert all(r["refined/precision"] >= r["global/precision"] for r in epochs)
        assert max(r["calr/discard_ratio"] for r in epochs) > 0.1  # refinement really discarded
        assert m >= floor, f"seed {seed}: CALR {m:.2f} mAP, less than 40 above zero-shot"
