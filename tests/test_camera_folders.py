"""Unlabeled camera folders: train/<camera>/**/*.jpg, optional labeled test split, no ids read."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from calr_plugin import DataError
from calr_plugin.data.datasets import ReIDFolder, TrainSet
from conftest import REPO, TINY_OPTS, tiny_cfg

sys.path.insert(0, os.path.join(REPO, "bench"))
from camera_folders import make_camera_folders  # noqa: E402


def _image(path):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 16)).save(path)


def make_cameras(root, layout):
    """layout: {relative path under train/: number of images}."""
    for folder, n in layout.items():
        os.makedirs(root / "train" / folder, exist_ok=True)
        for i in range(n):
            _image(str(root / "train" / folder / f"img{i:03d}.png"))
    return str(root)


def test_camera_folder_names_nesting_and_no_ids(tmp_path):
    folder = make_cameras(tmp_path, {"entrance": 3, "Lobby 2/morning": 2, "Lobby 2/evening/x": 2, "cam07": 2})
    data = ReIDFolder(root="/nonexistent", folder=folder)
    assert data.layout == "cameras" and not data.has_test_split
    assert len(data.train) == 9
    assert {pid for _, pid, _ in data.train} == {None}
    by_cam = {}
    for path, _, cam in data.train:
        by_cam.setdefault(cam, []).append(path)
    # Cameras are the top-level folders, in sorted order; nested images belong to their camera.
    assert sorted(by_cam) == ["reidfolder_Lobby 2", "reidfolder_cam07", "reidfolder_entrance"]
    assert len(by_cam["reidfolder_Lobby 2"]) == 4
    assert data.query == [] and data.gallery == []
    train_set = TrainSet(data.train)
    assert train_set.gt is None and train_set.num_cameras == 3


def test_empty_and_single_image_cameras_are_skipped_with_a_warning(tmp_path, caplog):
    folder = make_cameras(tmp_path, {"a": 3, "b": 2, "lonely": 1, "empty": 0})
    with caplog.at_level(logging.WARNING, logger="fastreid"):
        data = ReIDFolder(root="/nonexistent", folder=folder)
    assert {cam for _, _, cam in data.train} == {"reidfolder_a", "reidfolder_b"}
    text = caplog.text
    assert os.path.join("train", "lonely") + ": camera folder has a single image" in text
    assert os.path.join("train", "empty") + ": camera folder has no images" in text


def test_images_directly_under_train_and_no_usable_camera_are_errors(tmp_path):
    folder = make_cameras(tmp_path / "loose", {"a": 2})
    _image(os.path.join(folder, "train", "stray.jpg"))
    with pytest.raises(DataError, match=r"train: 1 images directly under train/ \(e\.g\. stray\.jpg\)"):
        ReIDFolder(root="/nonexistent", folder=folder)
    folder = make_cameras(tmp_path / "one", {"a": 1})
    with pytest.raises(DataError, match="no camera sub-folder with at least 2 images"):
        ReIDFolder(root="/nonexistent", folder=folder)


def test_both_layouts_or_half_a_test_split_are_errors(tmp_path):
    folder = make_cameras(tmp_path / "both", {"a": 2})
    os.makedirs(os.path.join(folder, "bounding_box_train"))
    with pytest.raises(DataError, match="holds both train/ .* and bounding_box_train/"):
        ReIDFolder(root="/nonexistent", folder=folder)
    folder = make_cameras(tmp_path / "half", {"a": 2})
    _image(os.path.join(folder, "query", "0001_c1s1_000001_00.jpg"))
    with pytest.raises(DataError, match="has query/ but not bounding_box_test/"):
        ReIDFolder(root="/nonexistent", folder=folder)


def synthetic_folder(root, test=True, **spec):
    """The embedded synthetic set rebuilt as camera folders (ids and names hidden)."""
    from calr_plugin.data import synthetic

    fields = dict(num_train_ids=8, num_test_ids=6, num_cameras=2, images_per_id_per_camera=3, height=64, width=32)
    fields.update(spec)
    market = str(root / "market")
    synthetic.generate(synthetic.SyntheticSpec(**fields), market)
    out = str(root / "cameras")
    make_camera_folders(market, out, test=test, nested=True)
    return market, out


def test_labeled_test_split_keeps_its_own_cameras(tmp_path):
    market, folder = synthetic_folder(tmp_path)
    cams_data = ReIDFolder(root="/nonexistent", folder=folder)
    market_data = ReIDFolder(root="/nonexistent", folder=market)
    assert cams_data.has_test_split
    for split in ("query", "gallery"):
        assert [(os.path.basename(p), pid, c) for p, pid, c in getattr(cams_data, split)] == \
            [(os.path.basename(p), pid, c) for p, pid, c in getattr(market_data, split)]
    assert len(cams_data.train) == len(market_data.train)


def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def test_training_without_test_split_runs_to_the_end_and_eval_only_refuses(tmp_path):
    _, folder = synthetic_folder(tmp_path, test=False)
    out = tmp_path / "run"
    from tiny_calr import CPU_CALR

    opts = CPU_CALR + TINY_OPTS + ["DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)',
                                   "DATASETS.FOLDER", folder, "OUTPUT_DIR", str(out)]
    r = run_tool("tools/train_net.py", "--config-file", "configs/CALR/Base-CALR.yml", *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "has no labeled test split: mAP and Rank-k need query/ and bounding_box_test/" in log
    assert "unlabeled training images from 2 camera folders" in log
    assert os.path.isfile(out / "model_final.pth")
    assert len(os.listdir(out / "labels")) == 3  # a label file per stage-2 epoch
    assert not any("precision" in line for line in open(out / "metrics.json"))  # no ids, no label quality
    rows = [json.loads(line) for line in open(out / "metrics.json")]
    knn = [r["signal/cross_camera_knn"] for r in rows if "signal/cross_camera_knn" in r]
    agree = [r["signal/agreement_with_previous"] for r in rows if "signal/agreement_with_previous" in r]
    assert len(knn) == 3 and len(agree) == 2  # the label-free signals, every epoch (agreement from the 2nd)
    assert all(0 <= v <= 1 for v in knn) and all(-1 <= v <= 1 for v in agree)  # a share; an ARI
    r = run_tool("tools/analyze.py", str(out), "--tsne-points", "40")
    assert r.returncode == 0, r.stderr[-3000:]
    made = set(os.listdir(out / "analysis"))
    assert {"tsne.png", "curves.png", "curves.csv", "report.md"} <= made and "ranked_lists.png" not in made
    report = (out / "analysis" / "report.md").read_text()
    assert "No labeled test split" in report and "No person ids in the training set" in report
    curves = (out / "analysis" / "curves.csv").read_text()
    assert "calr/cameras_per_cluster" in curves and "calr/cross_camera_share" in curves
    r = run_tool("tools/train_net.py", "--config-file", "configs/CALR/Base-CALR.yml", "--eval-only", *opts,
                 "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert r.returncode == 2
    assert "error: --eval-only: nothing to evaluate" in r.stderr and "labeled test split" in r.stderr


def test_supervised_baseline_on_unlabeled_folders_is_a_clear_error(tmp_path):
    from calr_plugin import CALRTrainer

    _, folder = synthetic_folder(tmp_path, test=False)
    cfg = tiny_cfg("Base-bagtricks.yml", tmp_path / "sup", "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                   "DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.FOLDER", folder)
    with pytest.raises(DataError, match="trains on person ids and the training images have none"):
        CALRTrainer.build_train_loader(cfg)


def test_given_cameras_stay_when_cameras_are_not_inferred(tmp_path):
    _, folder = synthetic_folder(tmp_path, test=False)
    data = ReIDFolder(root="/nonexistent", folder=folder)
    train_set = TrainSet(data.train)
    names = sorted({c for _, _, c in data.train})
    assert names == ["reidfolder_Lobby 2", "reidfolder_entrance"]
    assert np.bincount(train_set.cams).tolist() == [8 * 3, 8 * 3]
