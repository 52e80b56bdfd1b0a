"""tools/search.py: FastReID's metrics on a split, a reused index, matches across cameras, errors."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
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
    assert r.returncode == 2 and "1 unreadable image: " in r.stderr and "bad: no readable image to search" in r.stderr
    r = run_search("--gallery", folder, "--out", str(tmp_path / "o"), *opts)
    assert r.returncode == 2 and "give --query IMAGE" in r.stderr


def test_large_galleries_use_hnsw_candidates_with_the_exact_top_k(tmp_path):
    """Past APPROXIMATE_ABOVE (lowered here) the search goes through a saved HNSW index; on a
    gallery of well-separated people it returns the exact search's matches, camera filter included."""
    import numpy as np

    from calr_plugin.deploy.gallery_index import GalleryIndex

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


def _tool():
    """tools/search.py as a module: its main() in this process (no interpreter start per run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_tool", os.path.join(REPO, "tools", "search.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def search_here(capsys, *args, config=None):
    """(exit code, stdout, stderr) of tools/search.py main() run in this process."""
    code = _tool().main(["--config-file", config or config_path("CALR/Base-CALR.yml"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_changed_config_or_weights_content_re_extracts_the_gallery(setup, tmp_path, capsys):
    """The index fingerprint covers INPUT.SIZE_TEST, the model settings (a config file that
    changes the pooling) and the weights' content (same path, size and mtime)."""
    root, folder, opts = setup
    weights = str(tmp_path / "w.pth")
    torch.save(torch.load(os.path.join(root, "model.pth")), weights)  # this file name: the same size when rewritten
    opts = opts[:opts.index("MODEL.WEIGHTS")] + ["MODEL.WEIGHTS", weights]
    index = str(tmp_path / "index")

    def run(*extra, config=None):
        code, out, err = search_here(capsys, "--gallery", folder, "--evaluate", "--out", str(tmp_path / "o"),
                                     "--index", index, *opts, *extra, config=config)
        assert code == 0, err[-3000:]
        return out

    assert "24 extracted now, 0 reused" in run()
    assert "0 extracted now, 24 reused" in run()
    out = run("INPUT.SIZE_TEST", "[32, 16]")
    assert "INPUT.SIZE_TEST [64, 32] -> [32, 16]" in out and "24 extracted now, 0 reused" in out
    assert "0 extracted now, 24 reused" in run("INPUT.SIZE_TEST", "[32, 16]")
    assert "24 extracted now" in run()  # back to the first size: extracted again, not mixed
    gem = tmp_path / "gem.yml"
    gem.write_text(f"_BASE_: {config_path('CALR/Base-CALR.yml')}\nMODEL:\n  HEADS:\n    POOL_LAYER: GeneralizedMeanPooling\n")
    out = run(config=str(gem))
    assert "MODEL.HEADS.POOL_LAYER" in out and "24 extracted now" in out
    assert "0 extracted now, 24 reused" in run(config=str(gem))
    # Retrained weights written to the same path with the same size and mtime: only the content differs.
    stat = os.stat(weights)
    state = torch.load(weights)
    for v in state["model"].values():  # in place: the same structure, so the same file size
        if v.is_floating_point():
            v.mul_(1.01)
    torch.save(state, weights)
    assert os.path.getsize(weights) == stat.st_size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    out = run(config=str(gem))
    assert "weights file" in out and "24 extracted now" in out


def test_bad_gallery_images_are_skipped_and_named(setup, tmp_path, capsys):
    root, folder, opts = setup
    gallery = tmp_path / "gallery"
    shutil.copytree(os.path.join(folder, "bounding_box_test"), gallery / "cam_a")
    good = sorted((gallery / "cam_a").iterdir())
    (gallery / "cam_b").mkdir()
    (gallery / "cam_b" / "broken.jpg").write_bytes(b"not a jpeg")
    (gallery / "cam_b" / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    shutil.copy(good[1], gallery / "cam_b" / "fine.jpg")
    for attempt in range(2):  # not remembered as done: named again on a rerun
        code, out, err = search_here(capsys, "--gallery", str(gallery), "--query", str(good[1]), "--out",
                                     str(tmp_path / "o"), "--topk", "3", *opts)
        assert code == 0, err[-3000:]
        warning = [line for line in err.splitlines() if "unreadable" in line]
        assert len(warning) == 1 and "left out 2 unreadable images" in warning[0]
        assert "broken.jpg" in warning[0] and "truncated.jpg" in warning[0]
        assert f"gallery: 25 images, {25 if attempt == 0 else 0} extracted now" in out
    rows = list(csv.DictReader(open(tmp_path / "o" / "matches.csv")))
    assert rows[0]["image"].endswith("fine.jpg")  # the same picture, from the other camera


def test_a_gallery_with_only_the_querys_camera_gives_a_clear_message(setup, tmp_path, capsys):
    root, folder, opts = setup
    gallery = tmp_path / "gallery"
    shutil.copytree(os.path.join(folder, "bounding_box_test"), gallery / "cam_a")
    query = str(sorted((gallery / "cam_a").iterdir())[0])
    code, out, err = search_here(capsys, "--gallery", str(gallery), "--query", query, "--out", str(tmp_path / "o"),
                                 *opts)
    assert code == 2 and "Traceback" not in err
    assert "error: 1 of 1 queries have no gallery image outside their own camera (gallery cameras: cam_a)" in err
    assert "--same-camera" in err
    # Market names, every image in camera 1: nothing for the Market protocol to score.
    market = tmp_path / "market"
    for split in ("query", "bounding_box_test"):
        os.makedirs(market / split)
        for f in os.listdir(os.path.join(folder, split)):
            shutil.copy(os.path.join(folder, split, f), market / split / f.replace("_c2s", "_c1s"))
    code, out, err = search_here(capsys, "--gallery", str(market), "--evaluate", "--out", str(tmp_path / "e"), *opts)
    assert code == 2 and "Traceback" not in err
    assert "error: no query has its person in another camera of the gallery (query cameras: c1; gallery " \
           "cameras: c1)" in err


def test_onnx_builds_one_session_per_run(setup, tmp_path, capsys, monkeypatch):
    """Gallery chunks, their batches and the queries all go through one ONNX Runtime session."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e .[deploy])")
    import calr_plugin.deploy.gallery_index
    from calr_plugin.engine.checkpoint import load_inference_model
    from calr_plugin.deploy.export import export_onnx

    root, folder, opts = setup
    cfg, model = load_inference_model(config_path("CALR/Base-CALR.yml"), opts)
    onnx = str(tmp_path / "m.onnx")
    export_onnx(model, onnx, *cfg.INPUT.SIZE_TEST)
    sessions = []
    original = ort.InferenceSession

    def counted(*args, **kwargs):
        sessions.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counted)
    monkeypatch.setattr(calr_plugin.deploy.gallery_index, "INDEX_CHUNK", 10)  # 3 gallery chunks
    code, out, err = search_here(capsys, "--gallery", folder, "--evaluate", "--onnx", onnx, "--out",
                                 str(tmp_path / "o"), *opts, "TEST.IMS_PER_BATCH", "4")
    assert code == 0, err[-3000:]
    assert "24 extracted now" in out and "(features: onnxruntime)" in out
    assert sessions == [onnx]


class _FakeEmbedder:
    """Features from the file name (no model): for the index's bookkeeping."""

    def __init__(self, fail_at_call=None):
        self.fingerprint, self.signature = "fake", {"model": "fake"}
        self.calls, self.fail_at_call, self.extracted = 0, fail_at_call, []

    def extract(self, paths, desc=""):
        from calr_plugin.engine.features import Extraction

        self.calls += 1
        if self.calls == self.fail_at_call:
            raise KeyboardInterrupt  # the run is killed during this chunk
        self.extracted += list(paths)
        feats = np.stack([np.random.default_rng(int(os.path.basename(p)[1:-4])).standard_normal(8) for p in paths])
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        return Extraction(feats.astype(np.float32), np.ones(len(paths), bool), [])


def test_a_killed_indexing_keeps_the_chunks_it_saved(tmp_path):
    from calr_plugin.deploy.gallery_index import INDEX_FILE, GalleryIndex

    images = tmp_path / "g"
    images.mkdir()
    items = []
    for i in range(23):
        (images / f"g{i}.jpg").write_bytes(b"x")
        items.append((str(images / f"g{i}.jpg"), None, f"cam{i % 2}"))
    folder = str(tmp_path / "index")
    with pytest.raises(KeyboardInterrupt):
        GalleryIndex(folder).update(items, _FakeEmbedder(fail_at_call=3), chunk=5)
    assert sorted(os.listdir(folder)) == ["part-000001.npz", "part-000002.npz"]  # 10 images saved, atomically
    embed = _FakeEmbedder()
    index = GalleryIndex(folder)
    done = index.update(items, embed, chunk=5)
    assert (done.extracted, done.reused) == (13, 10) and embed.extracted == [it[0] for it in items[10:]]
    assert sorted(os.listdir(folder)) == [INDEX_FILE]  # the parts are merged
    clean = GalleryIndex(str(tmp_path / "clean"))
    clean.update(items, _FakeEmbedder(), chunk=5)
    reread = GalleryIndex(folder)
    assert reread.items == clean.items == [tuple(it) for it in items]
    assert reread.feats.dtype == np.float32 and np.array_equal(reread.feats, clean.feats)
    # compact: the float32 matrix and a small JSON of names and stamps, no floats in text
    assert os.path.getsize(os.path.join(folder, INDEX_FILE)) < 23 * 8 * 4 + 23 * 200 + 2000


def test_hnsw_asks_for_enough_candidates_when_the_own_camera_dominates(tmp_path):
    """90 % of the gallery in the query's own camera: the top-k of the other cameras come from
    the HNSW candidates (no query falls back to exact search) and equal exact search's."""
    from calr_plugin.deploy.gallery_index import GalleryIndex

    rng = np.random.default_rng(0)
    people = rng.standard_normal((100, 64)).astype(np.float32)
    # each person: 18 images in cam0, one in cam1, one in cam2
    feats = np.repeat(people, 20, axis=0) + 0.05 * rng.standard_normal((2000, 64)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    cams = [("cam0", "cam1", "cam2")[max(0, i % 20 - 17)] for i in range(2000)]
    assert cams.count("cam0") == 1800
    index = GalleryIndex(str(tmp_path))
    index.items = [(f"g{i}.jpg", i // 20, cams[i]) for i in range(2000)]
    index.feats = feats
    index.save()
    rows = list(range(0, 2000, 41))
    queries = feats[rows] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exclude = [cams[i] for i in rows]
    assert exclude.count("cam0") > 0.8 * len(rows)
    exact = index.search(queries, 2, exclude)
    approx = index.search(queries, 2, exclude, approximate_above=100)
    assert index.exact_fallbacks == 0
    assert np.array_equal(exact[1], approx[1]) and np.allclose(exact[0], approx[0], atol=1e-5)
    for q, row in zip(rows, approx[1]):
        assert all(cams[j] != cams[q] for j in row)
        if cams[q] == "cam0":
            assert sorted(cams[j] for j in row) == ["cam1", "cam2"] and all(j // 20 == q // 20 for j in row)
