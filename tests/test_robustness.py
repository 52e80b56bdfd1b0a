"""Bad data, degenerate clustering and numerical faults get a defined, tested behaviour."""
import logging
import os

import numpy as np
import pytest
import torch

from calr_plugin import CALRTrainer, DataError, load_config
from calr_plugin.data.build import check_test_split, load_dataset
from calr_plugin.engine.trainer import TrainingDiverged
from calr_plugin.utils.dist import unwrap
from tiny_calr import calr_cfg


def write_folder(root, train, query=("0009_c1_q.jpg",), gallery=None):
    from PIL import Image

    gallery = gallery or [f"{i:04d}_c2_g.jpg" for i in range(1, 11)] + ["0009_c2_g.jpg"]
    for split, names in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        os.makedirs(root / split, exist_ok=True)
        for name in names:
            Image.new("RGB", (16, 32), (200, 30, 30)).save(root / split / name)
    return root


def folder_cfg(root, *opts):
    return load_config("", ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "DATASETS.NAMES",
                            '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)', "DATASETS.FOLDER",
                            str(root)] + list(opts))


def test_truncated_and_non_image_files_are_skipped_with_a_warning(tmp_path, caplog):
    root = write_folder(tmp_path, ["0001_c1_a.jpg", "0001_c2_b.jpg", "0002_c1_c.jpg"])
    good = (root / "bounding_box_train" / "0001_c1_a.jpg").read_bytes()
    (root / "bounding_box_train" / "0002_c1_c.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "bounding_box_train" / "0003_c2_d.jpg").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(folder_cfg(root), "ReIDFolder")
    assert [os.path.basename(p) for p, _, _ in data.train] == ["0001_c1_a.jpg", "0001_c2_b.jpg"]
    assert "0002_c1_c.jpg" in caplog.text and "0003_c2_d.jpg" in caplog.text
    assert "skipped 2 unreadable image(s) of 4" in caplog.text
    with pytest.raises(DataError, match=r"0002_c1_c\.jpg: unreadable image"):
        load_dataset(folder_cfg(root, "DATASETS.IMAGE_CHECK", "strict"), "ReIDFolder")


def test_greyscale_and_odd_sized_images_become_normal_tensors(tmp_path):
    from PIL import Image

    from fastreid.data.common import CommDataset
    from fastreid.data.transforms import build_transforms

    root = write_folder(tmp_path, ["0001_c1_a.jpg", "0001_c2_b.jpg"])
    Image.new("L", (7, 301), 90).save(root / "bounding_box_train" / "0001_c1_a.jpg")
    cfg = folder_cfg(root, "INPUT.SIZE_TRAIN", "[64, 32]")
    items = load_dataset(cfg, "ReIDFolder").train
    sample = CommDataset(items, build_transforms(cfg, is_train=True))[0]
    assert sample["images"].shape == (3, 64, 32)


def test_queries_without_a_cross_camera_match(caplog):
    gallery = [(f"g{i}.jpg", i, 1) for i in range(10)]
    with caplog.at_level(logging.WARNING):
        check_test_split("X", [("q0.jpg", 0, 0), ("q5.jpg", 55, 0)], gallery)
    assert "1 of 2 queries have no gallery image" in caplog.text
    with pytest.raises(DataError, match="no query id appears in the gallery"):
        check_test_split("X", [("q.jpg", 55, 0)], gallery)
    with pytest.raises(DataError, match="gallery has 3 images"):
        check_test_split("X", [("q.jpg", 0, 0)], gallery[:3])


def single_camera_cfg(tmp_path, mode):
    root = write_folder(tmp_path / "data", [f"{i:04d}_c1_{j}.jpg" for i in range(1, 5) for j in range(3)])
    return calr_cfg(tmp_path / "out", "DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)',
                    "DATASETS.FOLDER", str(root), "CALR.SINGLE_CAMERA", mode)


def test_single_camera_is_an_error_or_the_baseline_by_key(tmp_path):
    with pytest.raises(DataError, match="single camera"):
        CALRTrainer(single_camera_cfg(tmp_path, "error"))
    trainer = CALRTrainer(single_camera_cfg(tmp_path, "baseline"))
    c = trainer.cfg.CALR
    assert not (c.REFINE.ENABLED or c.ALIGN.ENABLED or c.WEIGHTING.ENABLED)
    assert unwrap(trainer.model).domain_head is None


def test_every_image_an_outlier_skips_the_epoch(tmp_path, caplog):
    # MIN_SIZE larger than the data, the collapse guard off: no cluster survives; training
    # must not crash or loop.
    cfg = calr_cfg(tmp_path, "CALR.REFINE.ENABLED", "False", "CALR.CLUSTER.MIN_SIZE", "1000",
                   "CALR.CLUSTER.MAX_OUTLIERS", "1.0", "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "1")
    os.makedirs(tmp_path, exist_ok=True)
    trainer = CALRTrainer(cfg)
    before = {k: v.clone() for k, v in unwrap(trainer.model).state_dict().items()}
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert "every image is an outlier" in caplog.text
    after = unwrap(trainer.model).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k)


def test_the_collapse_guard_trains_the_epoch_and_says_what_it_lowered(tmp_path, caplog):
    """The same MIN_SIZE with the guard on (the default): it halves MIN_SIZE until at most a
    third of the images are outliers, logs each step, and the epoch trains."""
    import json

    cfg = calr_cfg(tmp_path, "CALR.REFINE.ENABLED", "False", "CALR.CLUSTER.MIN_SIZE", "1000",
                   "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "1")
    os.makedirs(tmp_path, exist_ok=True)
    trainer = CALRTrainer(cfg)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert "collapse guard: 100% of the images are outliers (> 33%): MIN_SIZE 1000 -> 500" in caplog.text
    assert "every image is an outlier" not in caplog.text
    rows = [json.loads(line) for line in open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))]
    epoch = next(r for r in rows if "calr/min_size" in r)
    assert epoch["calr/min_size"] < 1000 and epoch["calr/outlier_fraction"] <= 0.333


def test_nan_loss_stops_with_iteration_terms_and_checkpoint(tmp_path, monkeypatch):
    cfg = calr_cfg(tmp_path, "CALR.REFINE.ENABLED", "False", "SOLVER.MAX_EPOCH", "2")
    os.makedirs(tmp_path, exist_ok=True)
    trainer = CALRTrainer(cfg)
    memory = unwrap(trainer.model).memory
    calls = {"n": 0}
    real_forward = memory.forward

    def flaky(feats, labels):
        calls["n"] += 1
        loss = real_forward(feats, labels)
        return loss * float("nan") if calls["n"] > 4 else loss  # diverges in epoch 1

    monkeypatch.setattr(memory, "forward", flaky)
    with pytest.raises(TrainingDiverged) as e:
        trainer.train()
    msg = str(e.value)
    assert "iteration 4" in msg and "loss_contrast=nan" in msg and "epoch 1" in msg
    assert "model_last.pth" in msg and "--resume" in msg


def test_stage1_camera_smaller_than_a_batch(tmp_path):
    from calr_plugin.data.datasets import TrainSet
    from calr_plugin.engine.stage1 import run_stage1
    from calr_plugin.data.build import train_items

    cfg = calr_cfg(tmp_path, "CALR.STAGE1.IMS_PER_BATCH", "64", "CALR.STAGE1.EPOCHS", "1")  # cameras: 24 images
    os.makedirs(tmp_path, exist_ok=True)
    train_set = TrainSet(train_items(cfg))
    assert max(np.bincount(train_set.cams)) < 64
    labels = run_stage1(cfg, train_set, CALRTrainer)
    assert labels.shape == (len(train_set),) and labels.min() >= 0


def test_a_single_giant_cluster_trains_without_nan(tmp_path):
    # MIN_SIM -1 keeps every kNN edge: Infomap may put everything in one cluster.
    cfg = calr_cfg(tmp_path, "CALR.REFINE.ENABLED", "False", "CALR.CLUSTER.MIN_SIM", "-1.0", "CALR.CLUSTER.K", "48",
                   "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "1")
    os.makedirs(tmp_path, exist_ok=True)
    trainer = CALRTrainer(cfg)
    # fastreid's logger does not propagate to the root logger (caplog misses it) and its
    # stream handler may hold an earlier test's stdout (capfd misses it): listen directly.
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("fastreid").addHandler(handler)
    try:
        trainer.train()
    finally:
        logging.getLogger("fastreid").removeHandler(handler)
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert losses and np.isfinite(losses).all()
    assert len(unwrap(trainer.model).memory.memory) == 1
    assert any("a single cluster" in w for w in warnings)


def test_stage1_with_every_silhouette_undefined_keeps_the_final_epoch(tmp_path, caplog):
    import logging

    from calr_plugin.engine.hooks import Stage1LabelHook
    from calr_plugin.utils.atomic import atomic_savez
    from conftest import tiny_cfg

    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                   "CALR.STAGE1.SELECT", "silhouette")
    hook = Stage1LabelHook.__new__(Stage1LabelHook)
    hook.cfg, hook.label_dir = cfg, str(tmp_path / "labels")
    for epoch in range(3):
        atomic_savez(os.path.join(hook.label_dir, f"epoch_{epoch:03d}.npz"), labels=np.full(4, epoch),
                     silhouette=np.array(float("nan")))
    with caplog.at_level(logging.WARNING, logger="fastreid"):
        assert hook.selected_labels().tolist() == [2] * 4
    assert "silhouette is undefined at every epoch" in caplog.text
    atomic_savez(os.path.join(hook.label_dir, "epoch_001.npz"), labels=np.full(4, 1), silhouette=np.array(0.3))
    assert hook.selected_labels().tolist() == [1] * 4


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp makes 0600 files: without the chmod, weights, checkpoints and labels written
    for a shared folder would be unreadable by other users."""
    from calr_plugin.utils.atomic import atomic_torch_save, atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_torch_save({"w": torch.zeros(2)}, str(tmp_path / "w.pth"))
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(umask)
    plain = os.stat(tmp_path / "plain.txt").st_mode & 0o777
    assert plain == 0o644
    for name in ("w.pth", "a.txt"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == plain, name


def test_clusters_inside_cameras_are_warned_about_from_epoch_2(caplog):
    """The label-free cross-camera sign (engine/hooks.py): a share of multi-camera clusters
    below 0.25 from stage-2 epoch 2 on is a warning; the first epochs and good shares are not."""
    from types import SimpleNamespace

    from calr_plugin.engine.hooks import Stage2LabelHook

    hook = Stage2LabelHook.__new__(Stage2LabelHook)
    hook.train_set = SimpleNamespace(num_cameras=3)
    with caplog.at_level(logging.WARNING, logger="fastreid"):
        for epoch, share in ((1, 0.1), (2, 0.5), (3, 0.1)):
            hook.warn_within_camera(epoch, {"calr/cross_camera_share": share, "calr/cameras_per_cluster": 1.1})
    warned = [r.getMessage() for r in caplog.records if "span two or more cameras" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("epoch 3: only 10% of the clusters")
