"""Resume and saved stage-1 labels on camera folders of frame dumps (file names repeat across folders).

Layout used throughout: ``train/cam1/day1/0001.jpg ...`` next to ``train/cam1/day2/0001.jpg ...``
(the first camera, the one stage 1 finishes first), ``train/cam2/000001.jpg ...`` and
``train/cam3/000001.jpg ...`` (the same frame numbers).
A stage-1 label looked up by bare file name gives one camera's (or day's) image another's
local cluster; these tests fail when that happens.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from calr_plugin import ConfigError
from calr_plugin.data.datasets import ReIDFolder, TrainSet
from calr_plugin.engine.stage1 import load_local_labels
from conftest import REPO, TINY_OPTS, config_path, tiny_cfg
from tiny_calr import CPU_CALR

TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
# Stage 1: one epoch of 2 steps per camera; stage 2: 2 epochs of 2 steps (~10 s per run on one thread).
TINY_SCHEDULE = ["CALR.STAGE1.EPOCHS", "1", "CALR.STAGE1.ITERS", "2", "SOLVER.MAX_EPOCH", "2",
                 "CALR.ITERS_PER_EPOCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "CALR.CLUSTER.MIN_SIM", "0.5"]


def frame_dump(root, name="frames"):
    """The synthetic set (8 ids x 3 cameras x 2 images) as frame dumps with repeated names.

    Returns:
        str: the dataset folder (``<root>/<name>``, holding ``train/``).
    """
    from calr_plugin.data import synthetic

    market = str(root / "market")
    if not os.path.isdir(market):
        synthetic.generate(synthetic.SyntheticSpec(num_train_ids=8, num_test_ids=6, num_cameras=3,
                                                   images_per_id_per_camera=2, height=64, width=32), market)
    train = os.path.join(market, "bounding_box_train")
    by_cam = {}
    for f in sorted(os.listdir(train)):
        by_cam.setdefault(int(f.split("_c")[1][0]), []).append(f)
    out = root / name
    rng = np.random.default_rng(7)
    for cam, files in sorted(by_cam.items()):
        # Frames in shuffled order: a frame number (or its number on the other day) is another
        # person, so a label taken from the wrong folder is a wrong label.
        for i, f in zip(rng.permutation(len(files)), files):
            if cam == 1:  # two days, each numbered from 0001
                dst = out / "train" / f"cam{cam}" / f"day{i % 2 + 1}" / f"{i // 2 + 1:04d}.jpg"
            else:
                dst = out / "train" / f"cam{cam}" / f"{i + 1:06d}.jpg"
            os.makedirs(dst.parent, exist_ok=True)
            shutil.copyfile(os.path.join(train, f), dst)
    return str(out)


def frames_train_set(folder):
    return TrainSet(ReIDFolder(root="/nonexistent", folder=folder).train)


def same_partition(a, b):
    """Whether two (N,) label arrays group the images identically (numbering aside)."""
    pairs = np.unique(np.stack([a, b]), axis=1).shape[1]
    return pairs == len(np.unique(a)) == len(np.unique(b))


def train_net(out, folder, *extra, wait=True):
    cmd = [sys.executable, TRAIN_NET, "--config-file", config_path("CALR/Base-CALR.yml")]
    cmd += [a for a in extra if a.startswith("--")] + TINY_OPTS + CPU_CALR + TINY_SCHEDULE
    cmd += ["DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)', "DATASETS.FOLDER", folder,
            "OUTPUT_DIR", str(out)] + [a for a in extra if not a.startswith("--")]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def kill_when(proc, path, timeout=300):
    """SIGKILL the run as soon as ``path`` exists: no clean shutdown, as a crash or an OOM kill."""
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, f"run ended before {path} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def final_labels(out):
    files = sorted(f for f in os.listdir(os.path.join(out, "labels")) if f.startswith("epoch_"))
    return files, np.load(os.path.join(out, "labels", files[-1]))["labels"]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return frame_dump(tmp_path_factory.mktemp("frames"))


@pytest.fixture(scope="module")
def reference_run(frames, tmp_path_factory):
    """An uninterrupted run with SEED -1: it draws its seed and records it."""
    out = tmp_path_factory.mktemp("reference")
    run = train_net(out, frames, "SEED", "-1")
    return out, run


def test_frame_names_repeat_and_keys_tell_them_apart(frames):
    train_set = frames_train_set(frames)
    names = [os.path.basename(p) for p in train_set.paths]
    assert len(set(names)) < len(names)  # the layout under test: bare names repeat
    assert len(set(train_set.keys)) == len(train_set) == 48
    assert {"cam1/day1/0001.jpg", "cam1/day2/0001.jpg", "cam2/000001.jpg", "cam3/000001.jpg"} <= set(train_set.keys)


def test_kill_and_resume_on_frame_dumps_gives_the_uninterrupted_labels(frames, reference_run, tmp_path):
    """Killed in stage 1 after its first camera and again in stage 2, resumed twice with
    SEED -1: the stage-1 labels, the labels stage 2 reads back and the final labels are the
    uninterrupted run's (which drew the same seed)."""
    ref_out, ref_run = reference_run
    seed = json.loads((ref_out / "seed.json").read_text())["seed"]
    assert f"SEED -1: this run draws seed {seed}" in ref_run.stdout + ref_run.stderr
    out = tmp_path / "killed"
    kill_when(train_net(out, frames, "SEED", str(seed), wait=False), out / "stage1" / "cam0" / "local_labels.npz")
    assert not (out / "stage1" / "cam1" / "local_labels.npz").exists()
    # Resumed with SEED -1, as the user who started it would type it: the seed is the run's own.
    kill_when(train_net(out, frames, "--resume", "SEED", "-1", wait=False), out / "labels" / "epoch_000.npz")
    assert (out / "stage1" / "local_labels.npz").exists()
    run = train_net(out, frames, "--resume", "SEED", "-1")
    log = run.stdout + run.stderr
    assert f"SEED -1 with --resume: continuing with seed {seed}, the seed this run started with" in log
    assert "stage 1: reusing" in log
    a, b = np.load(ref_out / "stage1" / "local_labels.npz"), np.load(out / "stage1" / "local_labels.npz")
    assert np.array_equal(a["labels"], b["labels"]) and np.array_equal(a["cams"], b["cams"])
    assert list(b["keys"][:2]) == ["cam1/day1/0001.jpg", "cam1/day1/0002.jpg"]
    # Each camera's labels are the ones its encoder's label step made, image by image (the
    # hook's per-epoch file is in that camera's image order; SELECT final keeps the last).
    for c in range(3):
        made = np.load(out / "stage1" / f"cam{c}" / "labels" / "epoch_000.npz")["labels"]
        assert same_partition(b["labels"][b["cams"] == c], made), c
    # Stage 2, resumed from the saved stage-1 labels, refines with the same local clusters.
    (fa, la), (fb, lb) = final_labels(ref_out), final_labels(out)
    assert fa == fb == ["epoch_000.npz", "epoch_001.npz"] and np.array_equal(la, lb)
    train_set = frames_train_set(frames)
    assert np.array_equal(load_local_labels(str(out / "stage1" / "local_labels.npz"), train_set), b["labels"])


def test_stage1_labels_of_a_frame_layout_load_image_by_image(frames, reference_run, tmp_path):
    """CALR.STAGE1.LABELS: calr-reid's own file (after the dataset folder moved) and the
    authors' cam<k>/pseudo_label.npy (absolute paths of another machine) both give each
    image its own label."""
    from calr_plugin import CALRTrainer

    ref_out, _ = reference_run
    saved = str(ref_out / "stage1" / "local_labels.npz")
    moved = shutil.copytree(frames, tmp_path / "elsewhere" / "frames")
    train_set = frames_train_set(str(moved))
    want = np.load(saved)["labels"]
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path / "out", *CPU_CALR, "DATASETS.NAMES", '("ReIDFolder",)',
                   "DATASETS.FOLDER", str(moved), "CALR.STAGE1.LABELS", saved)
    trainer = CALRTrainer(cfg)
    assert np.array_equal(trainer._local_labels(), want)

    # The authors' layout: one file per camera, rows (path, label, camera), in their own order.
    rng = np.random.default_rng(0)
    intended = rng.integers(0, 4, len(train_set))  # 4 clusters per camera, image by image
    authors = tmp_path / "authors"
    for k, cam in enumerate(np.unique(train_set.cams)):
        idx = rng.permutation(np.flatnonzero(train_set.cams == cam))
        rows = np.array([[f"/home/author/data/frames/train/{train_set.keys[i]}", str(intended[i]), str(k + 1)]
                         for i in idx])
        os.makedirs(authors / f"cam{k}")
        np.save(authors / f"cam{k}" / "pseudo_label.npy", rows)
    got = load_local_labels(str(authors), train_set)
    grouped = intended * 10 + train_set.cams  # the intended clusters, never across cameras
    assert same_partition(got, grouped)

    # Rows named by file name alone cannot say which camera's 000001.jpg they are: an error, not a guess.
    bare = tmp_path / "bare"
    os.makedirs(bare / "cam0")
    np.save(bare / "cam0" / "pseudo_label.npy", np.array([[os.path.basename(k), "0", "1"] for k in train_set.keys]))
    with pytest.raises(ConfigError, match=r"cannot tell which row is training image 'cam1/day1/0001.jpg'"):
        load_local_labels(str(bare), train_set)


def test_an_old_labels_file_keyed_by_file_name_loads_only_when_names_are_unique(frames, tmp_path):
    train_set = frames_train_set(frames)
    old = tmp_path / "old.npz"
    np.savez(old, names=np.array([os.path.basename(p) for p in train_set.paths]),
             labels=np.arange(len(train_set)), cams=train_set.cams)
    with pytest.raises(ConfigError, match=r"names images by file name alone .* run stage 1 again"):
        load_local_labels(str(old), train_set)
    # A Market layout (unique names), as older runs wrote it: still read, by name, in any row order.
    from calr_plugin.data.build import train_items

    market = TrainSet(train_items(tiny_cfg("CALR/Base-CALR.yml", tmp_path / "m", *CPU_CALR)))
    order = np.random.default_rng(1).permutation(len(market))
    labels = np.arange(len(market)) // 2
    np.savez(old, names=np.array([os.path.basename(market.paths[i]) for i in order]), labels=labels[order],
             cams=market.cams[order])
    assert same_partition(load_local_labels(str(old), market), labels * 10 + market.cams)


def test_saved_cameras_that_differ_from_the_current_ones_stop_with_one_line(frames, tmp_path):
    train_set = frames_train_set(frames)
    labels = np.random.default_rng(0).integers(0, 4, len(train_set))
    saved = tmp_path / "saved.npz"
    np.savez(saved, keys=np.array(train_set.keys), labels=labels, cams=train_set.cams)
    assert same_partition(load_local_labels(str(saved), train_set), labels * 10 + train_set.cams)
    cams = train_set.cams.copy()
    cams[:3] = (cams[:3] + 1) % 3  # e.g. cameras inferred (or folders regrouped) differently since stage 1
    changed = tmp_path / "local_labels.npz"
    np.savez(changed, keys=np.array(train_set.keys), labels=labels, cams=cams)
    with pytest.raises(ConfigError) as e:
        load_local_labels(str(changed), train_set)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{changed}: the cameras these stage-1 labels were made with differ from the current ones "
                          f"for 3 of 48 images")

    # A finished camera's file that holds another camera's image: --resume stops before training.
    from calr_plugin import CALRTrainer
    from calr_plugin.engine.stage1 import run_stage1

    cam_file = tmp_path / "run" / "stage1" / "cam0" / "local_labels.npz"
    os.makedirs(cam_file.parent)
    mine = np.flatnonzero(train_set.cams == 0)
    rows = np.append(mine[1:], np.flatnonzero(train_set.cams == 1)[0])  # one image moved to camera 1
    np.savez(cam_file, keys=np.array(train_set.keys)[rows], labels=np.zeros(len(rows), np.int64),
             cams=np.zeros(len(rows), np.int64))
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path / "run", *CPU_CALR)
    with pytest.raises(ConfigError, match=rf"^{cam_file}: the cameras .* differ from the current ones for 2 of 16 "
                                          rf"images"):
        run_stage1(cfg, train_set, CALRTrainer, resume=True)


def test_resume_with_seed_minus_one_takes_the_runs_seed_and_reuses_its_auto_choice(tmp_path, caplog):
    """SEED -1: the first run draws a seed; --resume takes it (and so reuses auto_settings.json);
    another explicit SEED on resume is an error; a new run without --resume draws afresh."""
    import logging

    from calr_plugin import CALRTrainer, setup_run
    from calr_plugin.auto.settings import resolve
    from calr_plugin.data.build import train_items

    class Args:
        config_file = ""
        eval_only = False
        resume = False

    auto = ["CALR.CLUSTER.K", "auto", "CALR.CLUSTER.MIN_SIM", "auto", "DATALOADER.NUM_INSTANCE", "auto"]
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, *auto, "SEED", "-1")
    setup_run(cfg, Args())
    first = cfg.SEED
    assert first >= 0 and json.loads((tmp_path / "seed.json").read_text()) == {"seed": first}
    resolve(cfg, TrainSet(train_items(cfg)), CALRTrainer.build_model)

    Args.resume = True
    again = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, *auto, "SEED", "-1")
    with caplog.at_level(logging.INFO, logger="fastreid"):
        setup_run(again, Args())
        assert again.SEED == first
        assert "config.yaml" in os.listdir(tmp_path) and f"SEED: {first}" in (tmp_path / "config.yaml").read_text()
        resolve(again, TrainSet(train_items(again)), CALRTrainer.build_model)
    assert f"continuing with seed {first}" in caplog.text and "auto: reusing" in caplog.text

    other = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "SEED", str(first + 1))
    with pytest.raises(ConfigError, match=rf"SEED {first + 1} with --resume: .* started with seed {first} "):
        setup_run(other, Args())


def test_align_num_cameras_below_the_camera_count_is_a_config_error(tmp_path):
    """Below the camera count, the camera classifier's cross-entropy would get targets out of
    range (IndexError at the first step): a one-line error before training instead."""
    from calr_plugin import CALRTrainer

    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "CALR.ALIGN.NUM_CAMERAS", "1")
    with pytest.raises(ConfigError, match=r"^CALR.ALIGN.NUM_CAMERAS = 1: below the 2 training cameras \(given\); "
                                          r"expected 0 \(from the data\) or at least 2$"):
        CALRTrainer(cfg)
    assert CALRTrainer(tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "CALR.ALIGN.NUM_CAMERAS", "3"))
