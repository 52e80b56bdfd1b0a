"""CALR end to end on CPU: both stages, labels, resume after a kill, DDP, checkpoints."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from calr_plugin import CALRTrainer
from calr_plugin.hooks import unwrap
from conftest import REPO, TINY_OPTS, config_path, tiny_cfg
from tiny_calr import CPU_CALR, calr_cfg

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
TINY_CALR_ARGS = ["--config-file", config_path("CALR/Base-CALR.yml")] + TINY_OPTS + CPU_CALR


def train_net(out, *extra, wait=True):
    cmd = [sys.executable, TRAIN_NET] + TINY_CALR_ARGS + ["OUTPUT_DIR", str(out)]
    cmd = cmd[:2] + [a for a in extra if a.startswith("--")] + cmd[2:] + [a for a in extra if not a.startswith("--")]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def kill_when(proc, path, timeout=600):
    """SIGKILL the run as soon as `path` exists (a moment inside the stage we want)."""
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, f"run ended before {path} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def final_labels(out):
    files = sorted(f for f in os.listdir(os.path.join(out, "labels")) if f.startswith("epoch_"))
    return files, np.load(os.path.join(out, "labels", files[-1]))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calr_reference")
    run = train_net(out)
    return out, run


def test_two_stage_run_writes_labels_and_checkpoints(reference_run):
    out, run = reference_run
    local = np.load(out / "stage1" / "local_labels.npz")
    cams = local["cams"]
    for k in np.unique(local["labels"]):  # a local cluster never spans two cameras
        assert len(np.unique(cams[local["labels"] == k])) == 1
    files, last = final_labels(out)
    assert files == ["epoch_000.npz", "epoch_001.npz", "epoch_002.npz"]
    assert set(last.files) >= {"names", "labels", "cams", "global_labels"}
    assert (out / "model_final.pth").is_file() and (out / "model_last.pth").is_file()
    assert "refined/precision" in (out / "metrics.json").read_text()


def test_kill_and_resume_in_each_stage_reaches_the_same_labels(reference_run, tmp_path):
    ref_out, _ = reference_run
    out = tmp_path / "resumed"
    kill_when(train_net(out, wait=False), out / "stage1" / "cam0" / "labels" / "epoch_001.npz")
    assert not (out / "stage1" / "local_labels.npz").exists()
    kill_when(train_net(out, "--resume", wait=False), out / "labels" / "epoch_001.npz")
    assert (out / "stage1" / "local_labels.npz").exists()
    train_net(out, "--resume")
    a, b = np.load(ref_out / "stage1" / "local_labels.npz"), np.load(out / "stage1" / "local_labels.npz")
    assert np.array_equal(a["labels"], b["labels"])
    (fa, la), (fb, lb) = final_labels(ref_out), final_labels(out)
    assert fa == fb and np.array_equal(la["labels"], lb["labels"])
    wa = torch.load(ref_out / "model_final.pth", weights_only=False)["model"]
    wb = torch.load(out / "model_final.pth", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_eval_only_reproduces_the_training_end_metrics(reference_run):
    out, run = reference_run
    from test_train_baseline import _last_table_row

    trained = _last_table_row(run.stdout + run.stderr)
    ev = subprocess.run([sys.executable, TRAIN_NET, "--eval-only"] + TINY_CALR_ARGS
                        + ["OUTPUT_DIR", str(out / "eval"), "MODEL.WEIGHTS", str(out / "model_final.pth")],
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert _last_table_row(ev.stdout + ev.stderr) == trained


def test_calr_checkpoint_loads_into_a_plain_baseline_with_identical_features(reference_run, tmp_path):
    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    out, _ = reference_run
    weights = str(out / "model_final.pth")
    calr = build_model(calr_cfg(tmp_path, "MODEL.WEIGHTS", weights)).eval()
    Checkpointer(calr).load(weights)
    base_cfg = tiny_cfg("Base-bagtricks.yml", tmp_path, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                        "MODEL.HEADS.NECK_FEAT", "after", "MODEL.WEIGHTS", weights)
    base = build_model(base_cfg).eval()
    assert type(base).__name__ == "Baseline"
    Checkpointer(base).load(weights)
    images = torch.rand(3, 3, 64, 32) * 255
    with torch.no_grad():
        assert torch.equal(calr({"images": images}), base({"images": images}))


def test_two_process_ddp_keeps_identical_memory_labels_and_model(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "tiny_calr.py"), "ddp", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert r0["memory"].shape[0] > 0
    for key in ("memory", "weights", "params"):
        assert np.array_equal(r0[key], r1[key]), key


def test_preciseBN_batches_do_not_touch_the_memory(tmp_path):
    cfg = calr_cfg(tmp_path)
    os.makedirs(tmp_path, exist_ok=True)
    trainer = CALRTrainer(cfg)
    model = unwrap(trainer.model).train()
    model.memory.reset(np.eye(4, 512, dtype=np.float32))
    before = model.memory.memory.clone()
    out = model({"images": torch.rand(4, 3, 64, 32) * 255, "targets": torch.full((4,), -1),
                 "camids": torch.zeros(4, dtype=torch.long)})
    assert out == {} and torch.equal(model.memory.memory, before)
