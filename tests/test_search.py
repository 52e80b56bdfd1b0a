"""tools/search.py: FastReID's metrics on a split, a reused index, matches across cameras, errors."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_OPTS, config_path
from tiny_calr import CPU_CALR, calr_cfg


def run_search(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "search.py"), "--config-file",
                           config_path("CALR/Base-CALR.yml"), *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny Market-layout set and a (random-weight) CALR checkpoint."""
    from calr_plugin import CALRTrainer
    from calr_plugin.data import synthetic

    root = tmp_path_factory.mktemp("search")
    folder = synthetic.generate(synthetic.SyntheticSpec(num_train_ids=8, num_test_ids=6, num_cameras=2,
                                                        images_per_id_per_camera=3, height=64, width=32),
                                str(root / "data"))
    torch.manual_seed(0)
    cfg = calr_cfg(root, "CALR.ALIGN.NUM_CAMERAS", "2")
    model = CALRTrainer.build_model(cfg).eval()
    weights = str(root / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    opts = CPU_CALR + TINY_OPTS + ["DATASETS.NAMES", '("ReIDFolder",)', "DATASETS.TESTS", '("ReIDFolder",)',
                                   "DATASETS.FOLDER", folder, "OUTPUT_DIR", str(root / "out"), "MODEL.WEIGHTS", weights]
    return root, folder, opts


def test_evaluate_gives_fastreids_metrics_and_a_rerun_reuses_the_index(setup, tmp_path):
    from fastreid.utils.checkpoint import Checkpointer

    from calr_plugin import CALRTrainer, load_config

    root, folder, opts = setup
    r = run_search("--gallery", folder, "--evaluate", "--out", str(tmp_path), *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "gallery: 24 images, 24 extracted now, 0 reused" in r.stdout
    ours = json.loads((tmp_path / "eval_results.json").read_text())
    cfg = load_config(config_path("CALR/Base-CALR.yml"), opts, freeze=False)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.CALR.ALIGN.NUM_CAMERAS = 0
    cfg.freeze()
    model = CALRTrainer.build_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    fastreid = CALRTrainer.test(cfg, model)
    for key in ("mAP", "Rank-1", "Rank-5", "Rank-10"):
        assert abs(ours[key] - fastreid[key]) < 1e-4, key
    r = run_search("--gallery", folder, "--evaluate", "--out", str(tmp_path), *opts)
    assert "24 images, 0 extracted now, 24 reused" in r.stdout
    assert json.loads((tmp_path / "eval_results.json").read_text()) == ours


def test_a_changed_gallery_is_reindexed_only_for_new_files(setup, tmp_path):
    root, folder, opts = setup
    gallery = tmp_path / "gallery"
    shutil.copytree(os.path.join(folder, "bounding_box_test"), gallery / "cam_a")
    index = str(tmp_path / "index")
    r = run_search("--gallery", str(gallery), "--query", str(next((gallery / "cam_a").iterdir())), "--out",
                   str(tmp_path / "o1"), "--index", index, "--same-camera", *opts)
    assert r.returncode == 0 and "24 extracted now" in r.stdout, r.stderr[-3000:]
    first = sorted((gallery / "cam_a").iterdir())
    os.makedirs(gallery / "cam_b")
    shutil.copy(first[0], gallery / "cam_b" / "new.jpg")
    os.remove(first[1])
    query = first[2]
    r = run_search("--gallery", str(gallery), "--query", str(query), "--out", str(tmp_path / "o2"), "--index", index,
                   "--topk", "5", *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "gallery: 24 images, 1 extracted now, 23 reused" in r.stdout
    rows = list(csv.DictReader(open(tmp_path / "o2" / "matches.csv")))
    # The query's camera (its Market name's c<N>) is left out: only the other folder remains.
    assert [row["camera"] for row in rows] == ["cam_b"] and rows[0]["image"].endswith("new.jpg")
    assert (tmp_path / "o2" / "matches.png").stat().st_size > 10_000


def test_onnx_gives_the_same_ranking(setup, tmp_path):
    pytest.importorskip("onnxruntime")
    root, folder, opts = setup
    onnx = str(tmp_path / "m.onnx")
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "export_onnx.py"), "--config-file",
                        config_path("CALR/Base-CALR.yml"), "--out", onnx, *opts], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a = run_search("--gallery", folder, "--evaluate", "--out", str(tmp_path / "t"), *opts)
    b = run_search("--gallery", folder, "--evaluate", "--onnx", onnx, "--out", str(tmp_path / "o"), *opts)
    assert a.returncode == b.returncode == 0, b.stderr[-3000:]
    ta, tb = (json.loads((tmp_path / d / "eval_results.json").read_text()) for d in ("t", "o"))
    assert all(abs(ta[k] - tb[k]) < 1e-3 for k in ta)


def test_clear_errors(setup, tmp_path):
    root, folder, opts = setup
    os.makedirs(tmp_path / "empty")
    r = run_search("--gallery", str(tmp_path / "empty"), "--query", "x.jpg", "--out", str(tmp_path / "o"), *opts)
    assert r.returncode == 2 and "empty: no images" in r.stderr
    bad = tmp_path / "bad"
    os.makedirs(bad)
    (bad / "broken.jpg").write_bytes(b"not a jpeg")
    r = run_search("--gallery", str(bad), "--query", str(bad / "broken.jpg"), "--out", str(tmp_path / "o"), *opts)
    assert r.returncode == 2 and "broken.jpg: cannot read this image" in r.stderr
    r = run_search("--gallery", folder, "--out", str(tmp_path / "o"), *opts)
    assert r.returncode == 2 and "give --query IMAGE" in r.stderr


def test_large_galleries_use_hnsw_candidates_with_the_exact_top_k(tmp_path):
    """Past APPROXIMATE_ABOVE (lowered here) the search goes through a saved HNSW index; on a
    gallery of well-separated people it returns the exact search's matches, camera filter included."""
    import numpy as np

    from calr_plugin.search import GalleryIndex

    rng = np.random.default_rng(0)
    people = rng.standard_normal((300, 64)).astype(np.float32)
    feats = np.repeat(people, 4, axis=0) + 0.05 * rng.standard_normal((1200, 64)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    index = GalleryIndex(str(tmp_path))
    index.items = [(f"g{i}.jpg", i // 4, f"cam{i % 4}") for i in range(1200)]
    index.feats = feats
    index.save()
    queries = feats[::97] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exclude = [f"cam{i % 4}" for i in range(0, 1200, 97)]
    exact = index.search(queries, 3, exclude)
    approx = index.search(queries, 3, exclude, approximate_above=100)
    assert (tmp_path / "hnsw.faiss").is_file()
    assert np.array_equal(exact[1], approx[1]) and np.allclose(exact[0], approx[0], atol=1e-5)
    cams = np.array([it[2] for it in index.items])
    assert all((cams[row] != exclude[q]).all() for q, row in enumerate(approx[1]))
