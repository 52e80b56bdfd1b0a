"""CALR end to end on CPU: both stages, labels, resume after a kill, DDP, checkpoints."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from calr_plugin import CALRTrainer
from calr_plugin.utils.dist import unwrap
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


def kill_when(proc, path, delay, timeout=600):
    """SIGKILL the run `delay` seconds after `path` appears (inside the stage we want, at a
    point that varies: the label step, a training step, a checkpoint write)."""
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, f"run ended before {path} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout
        time.sleep(0.02)
    time.sleep(delay)
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
    assert set(last.files) >= {"names", "labels", "cams", "global_labels", "held_out"}
    for f in files:  # the images the selection signal reads are never trained on
        saved = np.load(out / "labels" / f)
        assert saved["held_out"].sum() > 0 and (saved["labels"][saved["held_out"]] == -1).all()
    assert (out / "model_final.pth").is_file() and (out / "model_last.pth").is_file()
    assert "refined/precision" in (out / "metrics.json").read_text()


def test_model_selected_holds_the_model_whose_score_picked_it(reference_run, tmp_path):
    """selection.json scores the untrained start and every epoch; model_selected.pth is the
    start unless an epoch's paired gain beats its noise: re-extracting the training features with it
    gives its score again."""
    import json

    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    from calr_plugin.data.build import train_items
    from calr_plugin.data.datasets import TrainSet
    from calr_plugin.engine.features import extract_features
    from calr_plugin.labels.signals import SIGNALS, mean_of

    out, run = reference_run
    rec = json.loads((out / "selection.json").read_text())
    assert rec["signal"] == "cross_camera_mutual" and list(rec["history"]) == ["0", "1", "2", "3"]
    # The start, unless an epoch's gain beats 2 of its standard errors; then the (first) best such epoch.
    assert rec["start"] == rec["history"]["0"] and list(rec["paired"]) == ["1", "2", "3"]
    assert len(rec["start_values"]) == np.load(out / "labels" / "epoch_000.npz")["held_out"].sum()
    beats = [e for e, p in rec["paired"].items() if p["gain"] > 2 * p["se"]]
    best = max(beats, key=lambda e: rec["history"][e]) if beats else "0"
    assert rec["selected"]["epoch"] == int(best)
    weights = str(out / "model_selected.pth")
    cfg = calr_cfg(tmp_path, "MODEL.WEIGHTS", weights)
    model = build_model(cfg).eval()
    Checkpointer(model).load(weights)
    train = TrainSet(train_items(cfg))
    rows = np.flatnonzero(np.load(out / "labels" / "epoch_000.npz")["held_out"])
    score = mean_of(SIGNALS["cross_camera_mutual"](extract_features(model, train.paths, cfg), train.cams, rows))
    assert score == pytest.approx(rec["history"][best], abs=1e-6)
    assert "model_selected.pth: " in run.stdout + run.stderr


def test_the_run_records_its_extraction_engine(reference_run):
    """config.yaml names the engine the run resolved (still a loadable config); metrics.json
    says, every label step, whether ONNX Runtime made the features (a fallback shows)."""
    import json

    from calr_plugin import load_config

    out, run = reference_run
    engine = "torch"  # the default, on every install (docs/RESULTS.md section 1 says why)
    text = (out / "config.yaml").read_text()
    assert f"# calr-reid: feature extraction engine {engine}" in text
    assert load_config(str(out / "config.yaml"), check=False).CALR.EXTRACT.ENGINE == "torch"
    assert f"feature extraction (auto settings, label steps): {engine}" in run.stdout + run.stderr
    rows = [json.loads(line) for line in open(out / "metrics.json")]
    flags = [r["extract/onnxruntime"] for r in rows if "extract/onnxruntime" in r]
    assert len(flags) == 3 and set(flags) == {float(engine == "onnxruntime")}


def test_kill_and_resume_in_each_stage_reaches_the_same_labels(reference_run, tmp_path):
    ref_out, _ = reference_run
    out = tmp_path / "resumed"
    rng = random.Random(int(os.environ.get("CALR_TEST_KILL_SEED", "0")))
    kill_when(train_net(out, wait=False), out / "stage1" / "cam0" / "labels" / "epoch_001.npz", rng.uniform(0, 1))
    assert not (out / "stage1" / "local_labels.npz").exists()
    kill_when(train_net(out, "--resume", wait=False), out / "labels" / "epoch_001.npz", rng.uniform(0, 1.5))
    assert (out / "stage1" / "local_labels.npz").exists()
    train_net(out, "--resume")
    a, b = np.load(ref_out / "stage1" / "local_labels.npz"), np.load(out / "stage1" / "local_labels.npz")
    assert np.array_equal(a["labels"], b["labels"])
    (fa, la), (fb, lb) = final_labels(ref_out), final_labels(out)
    assert fa == fb and np.array_equal(la["labels"], lb["labels"])
    wa = torch.load(ref_out / "model_final.pth", weights_only=False)["model"]
    wb = torch.load(out / "model_final.pth", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # The selection record goes on where the kill left it: the same scores, the same pick.
    assert (ref_out / "selection.json").read_text() == (out / "selection.json").read_text()


def test_eval_only_reproduces_the_training_end_metrics(reference_run):
    out, run = reference_run
    from test_train_baseline import _last_table_row

    trained = _last_table_row(run.stdout + run.stderr)
    ev = subprocess.run([sys.executable, TRAIN_NET, "--eval-only"] + TINY_CALR_ARGS
                        + ["OUTPUT_DIR", str(out / "eval"), "MODEL.WEIGHTS", str(out / "model_final.pth")],
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert _last_table_row(ev.stdout + ev.stderr) == trained
    # eval_results.json (for scripts) holds the same numbers as the training's last evaluation.
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from compare_runs import final_metrics

    a, b = final_metrics(out), final_metrics(out / "eval")
    assert a.keys() == b.keys() == {"mAP", "Rank-1", "Rank-5", "Rank-10"}
    assert all(abs(a[k] - b[k]) < 1e-4 for k in a)


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
    """Two gloo ranks: the same model, BN statistics, features and evaluation on both, and the
    same as one process running rank 0's checkpoint (what --eval-only of it reports)."""
    run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "tiny_calr.py"), "ddp", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert r0["memory"].shape[0] > 0
    for key in ("memory", "weights", "params", "bn", "feats"):
        assert np.array_equal(r0[key], r1[key]), key
    from calr_plugin.engine.features import extract_features
    from calr_plugin.data.build import train_items
    from calr_plugin.data.datasets import TrainSet
    from fastreid.utils.checkpoint import Checkpointer

    cfg = calr_cfg(tmp_path, "CALR.ALIGN.NUM_CAMERAS", "2")
    model = CALRTrainer.build_model(cfg)
    Checkpointer(model).load(str(tmp_path / "model_final.pth"))
    bn = torch.cat([b.detach().double().flatten() for n, b in model.named_buffers() if "running" in n])
    assert np.array_equal(bn.numpy(), r0["bn"])
    feats = extract_features(model, TrainSet(train_items(cfg)).paths, cfg)
    assert np.abs(feats - r0["feats"]).max() < 1e-5
    results = CALRTrainer.test(cfg, model)
    assert abs(results["mAP"] - float(r0["mAP"])) < 1e-4 and abs(results["Rank-1"] - float(r0["rank1"])) < 1e-4


def test_one_failing_rank_stops_the_other_instead_of_hanging(tmp_path):
    t0 = time.time()
    run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "tiny_calr.py"), "ddp-fail", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode != 0 and "injected fault" in run.stderr
    assert not (tmp_path / "rank1.npz").exists()
    assert time.time() - t0 < 600


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


def test_ground_truth_ids_never_influence_training(tmp_path):
    """The same training images under other file names carrying other ids (every image its own
    person) train bit-identically: ids reach only the label-quality reports. The new names keep
    the sorted order, so nothing but the ids differs."""
    import shutil

    from fastreid.utils.env import seed_all_rng

    from calr_plugin.data import synthetic

    spec = synthetic.SyntheticSpec(num_train_ids=8, num_test_ids=6, num_cameras=2, images_per_id_per_camera=3,
                                   height=64, width=32)
    real = synthetic.generate(spec, str(tmp_path / "real"))
    renamed = tmp_path / "renamed"
    shutil.copytree(real, renamed)
    train = renamed / "bounding_box_train"
    for i, name in enumerate(sorted(os.listdir(train))):
        os.rename(train / name, train / (f"{i + 100:04d}_" + name.split("_", 1)[1]))

    def run(folder, out):
        seed_all_rng(5)
        os.makedirs(out, exist_ok=True)
        trainer = CALRTrainer(calr_cfg(out, "SOLVER.MAX_EPOCH", "2", "TEST.EVAL_PERIOD", "2",
                                       "DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)',
                                       "DATASETS.FOLDER", str(folder)))
        trainer.resume_or_load(resume=False)
        trainer.train()
        return {k: v.clone() for k, v in unwrap(trainer.model).state_dict().items()}, trainer

    plain, t1 = run(real, tmp_path / "plain")
    other, t2 = run(renamed, tmp_path / "other")
    assert len(np.unique(t1.train_set.gt)) == 8 and len(np.unique(t2.train_set.gt)) == len(t2.train_set)
    assert [os.path.basename(p) for p in t1.train_set.paths] != [os.path.basename(p) for p in t2.train_set.paths]
    assert plain.keys() == other.keys()
    assert all(torch.equal(plain[k], other[k]) for k in plain)
    a = np.load(tmp_path / "plain" / "labels" / "epoch_001.npz")["labels"]
    b = np.load(tmp_path / "other" / "labels" / "epoch_001.npz")["labels"]
    assert np.array_equal(a, b)


def test_analyze_writes_pictures_whose_values_match_metrics_json(reference_run):
    import csv
    import json

    from PIL import Image

    out, _ = reference_run
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "analyze.py"), str(out), "--tsne-points", "60"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    a = out / "analysis"
    for name in ("tsne.png", "quality.png", "curves.png", "ranked_lists.png"):
        img = np.asarray(Image.open(a / name).convert("L"))
        assert img.shape[0] > 100 and img.std() > 5, name  # a real picture, not a blank canvas
    report = (a / "report.md").read_text()
    assert "![t-SNE](tsne.png)" in report and "## Final evaluation" in report
    rows = [json.loads(line) for line in open(out / "metrics.json")]
    plotted = {}
    for r in csv.DictReader(open(a / "curves.csv")):
        plotted.setdefault(r["metric"], []).append(float(r["value"]))
    for key in ("calr/discard_ratio", "calr/num_clusters", "mAP"):
        logged = [r[key] for r in rows if key in r]
        assert logged and plotted[key] == pytest.approx(logged), key
    assert len(plotted["calr/num_clusters"]) == 3  # one point per stage-2 epoch


def test_eval_only_without_weights_evaluates_the_initial_model_and_says_so(tmp_path):
    out = tmp_path / "zero_shot"
    run = train_net(out, "--eval-only")
    assert "randomly initialised model (MODEL.BACKBONE.PRETRAIN is False)" in run.stdout + run.stderr
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from compare_runs import final_metrics

    metrics = final_metrics(out)
    assert 0 <= metrics["mAP"] <= 100 and not (out / "model_final.pth").exists()


def test_a_gem_checkpoint_into_a_gap_config_is_refused_with_the_key_to_set(reference_run, tmp_path):
    from fastreid.modeling import build_model

    from calr_plugin import ConfigError
    from calr_plugin.engine.checkpoint import check_head_matches

    out, _ = reference_run
    gem = build_model(calr_cfg(tmp_path, "MODEL.HEADS.POOL_LAYER", "GeneralizedMeanPoolingP"))
    path = str(tmp_path / "gem.pth")
    torch.save({"model": gem.state_dict()}, path)
    gap = build_model(calr_cfg(tmp_path))
    with pytest.raises(ConfigError, match=r"gem\.pth: the checkpoint's head does not match .*heads\.pool_layer\.p.*"
                                          r"Set MODEL\.HEADS\.POOL_LAYER"):
        check_head_matches(gap, path)
    check_head_matches(gap, str(out / "model_final.pth"))  # the same head: accepted
    check_head_matches(gem, path)


def test_stage1_encoders_start_from_the_pretrained_backbone_not_model_weights(reference_run, tmp_path):
    from calr_plugin.engine.stage1 import stage1_config

    out, _ = reference_run
    cfg = calr_cfg(tmp_path, "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert stage1_config(cfg, 0).MODEL.WEIGHTS == "" and cfg.MODEL.WEIGHTS
