"""``auto`` settings and inferred cameras at start-up: they follow the data and never read an id."""
import json
import logging
import os
import shutil

import numpy as np
import pytest

from calr_plugin import CALRTrainer, ConfigError, load_config
from calr_plugin.auto.settings import FILE, resolve
from calr_plugin.data.datasets import TrainSet
from calr_plugin.data.build import train_items
from conftest import config_path, tiny_cfg

AUTO = ["CALR.CLUSTER.K", "auto", "CALR.CLUSTER.MIN_SIM", "auto", "CALR.CLUSTER.MIN_SIZE", "auto",
        "CALR.STAGE1.CLUSTER_RATIO", "auto", "CALR.STAGE1.NUM_INSTANCE", "auto", "DATALOADER.NUM_INSTANCE", "auto"]


def resolved(cfg):
    train_set = TrainSet(train_items(cfg))
    out = resolve(cfg, train_set, CALRTrainer.build_model)
    with open(os.path.join(cfg.OUTPUT_DIR, FILE)) as f:
        return out, train_set, json.load(f)


def test_auto_is_accepted_where_documented_and_nowhere_else():
    cfg = load_config(config_path("CALR/Base-CALR.yml"), ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                                                          "MODEL.BACKBONE.PRETRAIN", "False"] + AUTO)
    assert cfg.CALR.CLUSTER.K == "auto" and cfg.DATALOADER.NUM_INSTANCE == "auto"
    cfg = load_config(config_path("CALR/cuhk01_mobilenetv2.yml"), ["CALR.CLUSTER.K", "7"], check=False)
    assert cfg.CALR.CLUSTER.K == 7  # a number still overrides an auto in a file
    with pytest.raises(ConfigError, match=r"many\) for config key: CALR.CLUSTER.K"):
        load_config(config_path("CALR/Base-CALR.yml"), ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                                                        "CALR.CLUSTER.K", "many"])
    with pytest.raises(ConfigError, match="CALR.CLUSTER.K = 'many': expected a number or auto"):
        load_config(config_path("CALR/Base-CALR.yml"), ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                                                        "CALR.CLUSTER.K", "auto", "CALR.CLUSTER.K", "many"])
    with pytest.raises(ConfigError, match="SOLVER.BASE_LR"):
        load_config("", ["SOLVER.BASE_LR", "auto"])
    with pytest.raises(ConfigError, match="DATALOADER.NUM_INSTANCE = 'auto': expected a number .auto is chosen by "
                                          "CALR"):
        load_config(config_path("Base-bagtricks.yml"), ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                                                        "DATALOADER.NUM_INSTANCE", "auto"])
    with pytest.raises(ConfigError, match="DATASETS.CAMERAS = 'guess': expected one of given, infer"):
        load_config("", ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "DATASETS.CAMERAS", "guess"])


def _rename_ids(src, dst, mapping):
    """Copy a Market folder with every person id in the file names replaced by mapping[id]."""
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        os.makedirs(os.path.join(dst, split))
        for f in os.listdir(os.path.join(src, split)):
            pid, rest = f.split("_", 1)
            shutil.copyfile(os.path.join(src, split, f), os.path.join(dst, split, f"{mapping[int(pid)]:04d}_{rest}"))


def test_auto_values_read_no_person_id(tmp_path):
    """Same images with ids permuted in the names, or with no ids at all: identical choices."""
    import sys

    from calr_plugin.data import synthetic

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    from camera_folders import _digest, make_camera_folders

    spec = synthetic.SyntheticSpec(num_train_ids=8, num_test_ids=6, num_cameras=2, images_per_id_per_camera=3,
                                   height=64, width=32)
    market = synthetic.generate(spec, str(tmp_path / "market"))
    ids = sorted({int(f.split("_")[0]) for f in os.listdir(os.path.join(market, "bounding_box_train"))}
                 | {int(f.split("_")[0]) for f in os.listdir(os.path.join(market, "query"))})
    perm = dict(zip(ids, np.random.default_rng(0).permutation(ids) + 1000))
    _rename_ids(market, str(tmp_path / "permuted"), perm)
    make_camera_folders(market, str(tmp_path / "cameras"))
    # Each copy's file name -> the original Market name, to compare the copies image by image.
    unpermute = {v: k for k, v in perm.items()}
    original = {"market": lambda f: f,
                "permuted": lambda f: f"{unpermute[int(f.split('_', 1)[0])]:04d}_{f.split('_', 1)[1]}",
                "cameras": {_digest(f) + ".jpg": f
                            for f in os.listdir(os.path.join(market, "bounding_box_train"))}.__getitem__}
    choices = []
    for name in ("market", "permuted", "cameras"):
        cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path / f"out_{name}", "MODEL.DEVICE", "cpu",
                       "SOLVER.AMP.ENABLED", "False", "DATASETS.NAMES", '("ReIDFolder",)',
                       "DATASETS.FOLDER", str(tmp_path / name), "DATASETS.CAMERAS", "infer", "SEED", "3", *AUTO)
        out, train_set, saved = resolved(cfg)
        assert (train_set.gt is None) == (name == "cameras")
        cams = dict(zip((original[name](os.path.basename(p)) for p in train_set.paths), train_set.cams))
        choices.append((saved["values"], saved["images_per_person_and_camera"], cams))
        assert out.CALR.CLUSTER.K == saved["values"]["CALR.CLUSTER.K"]
    assert choices[0][0] == choices[1][0] == choices[2][0]
    assert choices[0][1] == choices[1][1] == choices[2][1]
    # Pseudo-cameras agree image by image (matched by the original name; a pseudo-camera's
    # number depends on the images' order, which the names change, so the groups are compared).
    names = sorted(choices[0][2])
    assert sorted(choices[1][2]) == sorted(choices[2][2]) == names
    first = np.array([choices[0][2][n] for n in names])
    for _, _, cams in choices[1:]:
        other = np.array([cams[n] for n in names])
        pairs = np.unique(np.stack([first, other]), axis=1).shape[1]
        assert pairs == len(np.unique(first)) == len(np.unique(other)), "pseudo-cameras group other images"


@pytest.fixture(scope="module")
def synthetic_choices(tmp_path_factory, mobilenet_weights):
    """The auto choice on the demo's synthetic set with 2 and with 6 images per person and camera."""
    out = {}
    for m in (2, 6):
        d = tmp_path_factory.mktemp(f"auto_m{m}")
        cfg = load_config(config_path("CALR/demo_synthetic.yml"),
                          ["MODEL.BACKBONE.PRETRAIN_PATH", mobilenet_weights, "OUTPUT_DIR", str(d),
                           "DATASETS.SYNTHETIC.IMAGES_PER_ID_PER_CAMERA", str(m), "DATASETS.CAMERAS", "infer",
                           "DATALOADER.NUM_WORKERS", "0"] + AUTO)
        out[m] = resolved(cfg)
    return out


@pytest.mark.parametrize("m", [2, 6])
def test_auto_stage1_cluster_count_follows_images_per_person(synthetic_choices, m):
    cfg, train_set, saved = synthetic_choices[m]
    cells = 48 * 3  # the demo set: 48 training ids x 3 cameras
    ratio = cfg.CALR.STAGE1.CLUSTER_RATIO
    count = sum(int(np.floor(n * ratio + 1e-9)) for n in np.bincount(train_set.cams))
    assert abs(count - cells) <= 0.25 * cells, (m, ratio, count)
    assert set(saved["rules"]) == set(saved["values"])  # every value says which rule chose it


def test_auto_values_move_with_the_data(synthetic_choices):
    two, six = synthetic_choices[2][2]["values"], synthetic_choices[6][2]["values"]
    assert two["CALR.STAGE1.CLUSTER_RATIO"] > six["CALR.STAGE1.CLUSTER_RATIO"]
    assert two["CALR.CLUSTER.K"] < six["CALR.CLUSTER.K"]
    assert two["CALR.CLUSTER.MIN_SIZE"] < six["CALR.CLUSTER.MIN_SIZE"]
    assert two["DATALOADER.NUM_INSTANCE"] <= six["DATALOADER.NUM_INSTANCE"]


@pytest.mark.parametrize("m", [2, 6])
def test_inferred_cameras_match_the_true_ones(synthetic_choices, m):
    """The demo set's camera effect (strength 0.45) is its images' style: grouped by the
    stride-8 style statistics the pseudo-cameras are the true ones (measured ARI 1.000 at m=2
    and m=6). Grouped by the embedding they were not (ARI 0.939 and 0.979, purity 0.979 and
    0.993), so 0.99 / 0.995 fail if the style is not what groups them; splitting by anything
    but the camera (e.g. by person) scores near 0."""
    cfg, train_set, saved = synthetic_choices[m]
    cams = saved["cameras"]
    assert cams["num_cameras"] == 3 and cams["chosen_by"] == "eigengap"
    assert cams["grouped_by"] == "style of backbone.features.6"
    assert cams["ari"] > 0.99 and cams["purity"] > 0.995
    assert train_set.num_cameras == 3 and train_set.given_cams is not None
    assert cfg.CALR.ALIGN.NUM_CAMERAS == 0  # the trainer sets it from the (inferred) cameras


def test_a_k_given_in_the_config_is_where_auto_min_sim_is_read(tmp_path):
    given = list(AUTO)
    given[given.index("CALR.CLUSTER.K") + 1] = "4"
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", *given)
    out, _, saved = resolved(cfg)
    assert out.CALR.CLUSTER.K == 4 and "CALR.CLUSTER.K" not in saved["values"]
    assert "at K=4" in saved["rules"]["CALR.CLUSTER.MIN_SIM"]


def test_a_rerun_reuses_the_saved_choice_and_a_changed_input_does_not(tmp_path, caplog):
    opts = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", *AUTO]
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *opts)
    first = resolved(cfg)[2]
    with caplog.at_level(logging.INFO, logger="fastreid"):
        again = resolved(cfg)[2]
    assert "auto: reusing" in caplog.text and again == first
    caplog.clear()
    # A file from before K was an input (K auto then) is still reused by a resumed run.
    old = dict(first, inputs={k: v for k, v in first["inputs"].items() if k != "k"})
    with open(os.path.join(cfg.OUTPUT_DIR, FILE), "w") as f:
        json.dump(old, f)
    with caplog.at_level(logging.INFO, logger="fastreid"):
        resolved(cfg)
    assert "auto: reusing" in caplog.text
    caplog.clear()
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *opts, "SOLVER.IMS_PER_BATCH", "24")
    with caplog.at_level(logging.INFO, logger="fastreid"):
        third = resolved(cfg)[2]
    assert "auto: reusing" not in caplog.text
    assert third["inputs"]["ims_per_batch"] == 24 and 24 % third["values"]["DATALOADER.NUM_INSTANCE"] == 0


def test_inferred_cameras_are_reused_and_an_old_file_only_for_embedding_grouping(tmp_path, caplog):
    opts = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "DATASETS.CAMERAS", "infer", *AUTO]
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *opts)
    first = resolved(cfg)[2]
    assert first["cameras"]["grouped_by"] == "style of backbone.layer2.1"
    with caplog.at_level(logging.INFO, logger="fastreid"):
        assert resolved(cfg)[2] == first
    assert "auto: reusing" in caplog.text
    # A file from before camera_features was an input grouped by the embedding: a resumed run
    # reuses it only when it still asks for that.
    old = dict(first, inputs={k: v for k, v in first["inputs"].items() if k != "camera_features"})
    for features, reused in (("style", False), ("embedding", True)):
        with open(os.path.join(cfg.OUTPUT_DIR, FILE), "w") as f:
            json.dump(old, f)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fastreid"):
            resolved(tiny_cfg("CALR/Base-CALR.yml", tmp_path, *opts, "DATASETS.CAMERA_FEATURES", features))
        assert ("auto: reusing" in caplog.text) == reused, features


def test_pseudo_labels_suggest_prints_the_auto_values(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16))
    feats = np.repeat(centres, 3, axis=0) + 0.05 * rng.standard_normal((60, 16))
    np.save(tmp_path / "f.npy", feats.astype(np.float32))
    (tmp_path / "names.txt").write_text("".join(f"img{i}.jpg\n" for i in range(60)))
    (tmp_path / "cams.txt").write_text("".join(("gate\n" if i % 2 else "hall\n") for i in range(60)))
    r = subprocess.run([sys.executable, "tools/pseudo_labels.py", "--features", str(tmp_path / "f.npy"),
                        "--names", str(tmp_path / "names.txt"), "--cams", str(tmp_path / "cams.txt"), "--suggest",
                        "--json", str(tmp_path / "s.json")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert "CALR.CLUSTER.K " in r.stdout and "# clip(ceil(n) + 1" in r.stdout and "cameras per person" in r.stdout
    assert report["num_cameras"] == 2
    bad = subprocess.run([sys.executable, "tools/pseudo_labels.py", "--features", str(tmp_path / "f.npy"),
                          "--names", str(tmp_path / "names.txt"), "--suggest"], cwd=REPO, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "cannot parse image name 'img0.jpg'" in bad.stderr
    args = ["tools/pseudo_labels.py", "--features", str(tmp_path / "f.npy"), "--names", str(tmp_path / "names.txt"),
            "--cams", str(tmp_path / "cams.txt"), "--suggest"]
    given = subprocess.run([sys.executable, *args, "--k", "4"], cwd=REPO, capture_output=True, text=True)
    assert given.returncode == 0 and "at K=4" in given.stdout and "given (not auto)" in given.stdout, given.stderr
    bad_k = subprocess.run([sys.executable, *args, "--k", "1"], cwd=REPO, capture_output=True, text=True)
    assert bad_k.returncode == 2 and "--k must be >= 2" in bad_k.stderr


def test_min_sim_is_read_at_the_k_in_use():
    """An explicit K (not auto) is the graph MIN_SIM's median is taken on, and the K rule is
    ceil(n) + 1 (n = m x 2 cameras per person here) when K is auto."""
    from calr_plugin.labels.auto import suggest_settings
    from calr_plugin.labels.knn import knn_search, l2_normalize

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(120, 16)).astype(np.float32)
    cams = np.repeat([0, 1], 60)
    chosen = suggest_settings(feats, cams, 32, 32, m=2.2)
    assert chosen.values["CALR.CLUSTER.K"] == 6  # ceil(2 * 2.2) + 1
    for k in (4, 12):
        s = suggest_settings(feats, cams, 32, 32, m=2.2, k=k)
        sims, _ = knn_search(l2_normalize(feats), k, normalize=False)
        assert s.values["CALR.CLUSTER.MIN_SIM"] == round(float(np.median(sims[:, 1:])), 4)
        assert f"at K={k}" in s.rules["CALR.CLUSTER.MIN_SIM"] and s.rules["CALR.CLUSTER.K"] == "given (not auto)"


def test_the_auto_probe_and_camera_inference_use_the_configured_knn(tmp_path, monkeypatch):
    """CALR.CLUSTER.KNN hnsw (or ivf): the auto choice's and the camera inference's kNN graphs
    are built with it and its settings, as the per-epoch label step builds its graph, not
    exact whatever the config says; the mode is an input of the saved choice."""
    from calr_plugin.auto import settings as auto_settings
    from calr_plugin.labels import auto, cameras, knn

    calls = []

    def recording(x, k, **kwargs):
        calls.append(kwargs)
        return knn.knn_search(x, k, **kwargs)

    monkeypatch.setattr(auto, "knn_search", recording)
    monkeypatch.setattr(cameras, "knn_search", recording)
    rng = np.random.default_rng(0)
    feats = (np.repeat(rng.normal(size=(30, 16)), 4, axis=0) + 0.1 * rng.normal(size=(120, 16))).astype(np.float32)
    train_set = TrainSet([(f"/data/c{i % 2}/{i:03d}.jpg", None, f"c{i % 2}") for i in range(120)])
    for method, settings in (("hnsw", {"hnsw_m": 8, "hnsw_ef_construction": 20, "hnsw_ef_search": 16}),
                             ("ivf", {"ivf_nlist": 2, "ivf_nprobe": 1})):
        calls.clear()
        cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                       "DATASETS.CAMERAS", "infer", "CALR.CLUSTER.KNN", method,
                       *[x for k, v in settings.items() for x in (f"CALR.CLUSTER.{k.upper()}", str(v))], *AUTO)
        out = auto_settings.choose(cfg, train_set, feats, ["CALR.CLUSTER.K", "CALR.CLUSTER.MIN_SIM"])
        assert out["cameras"]["num_cameras"] >= 2 and "CALR.CLUSTER.MIN_SIM" in out["values"]
        assert len(calls) == 2  # the camera graph and the MIN_SIM graph
        assert all(c["method"] == method and all(c[k] == v for k, v in settings.items()) for c in calls), calls
        assert auto_settings._inputs(cfg, train_set, [])["knn"] == [method, *settings.values()]


def test_an_old_file_hashed_by_file_name_matches_only_when_the_names_are_distinct(tmp_path):
    """Files from before images were hashed by relative path (and before the kNN mode was an
    input) stay reusable when the bare names identify the images, not when frame dumps
    repeat them (cam1/000001.jpg, cam2/000001.jpg: the old hash cannot tell cameras apart)."""
    import hashlib

    from calr_plugin.auto.settings import _inputs, _with_old_defaults

    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", *AUTO)
    for frame_names, reusable in ((False, True), (True, False)):
        train_set = TrainSet([(f"/data/train/cam{c}/" + (f"{i:06d}.jpg" if frame_names else f"c{c}_{i:06d}.jpg"),
                               None, f"cam{c}") for c in (1, 2) for i in range(5)])
        inputs = _inputs(cfg, train_set, ["CALR.CLUSTER.K"])
        by_name = hashlib.sha1("\n".join(os.path.basename(p) for p in train_set.paths).encode()).hexdigest()
        assert inputs["images"] != by_name  # relative paths now: cam1/..., cam2/...
        old = dict({k: v for k, v in inputs.items() if k != "knn"}, images=by_name)
        assert (_with_old_defaults(old, inputs, train_set) == inputs) == reusable, frame_names
        assert _with_old_defaults(dict(old, seed=inputs["seed"] + 1), inputs, train_set) != inputs


def test_with_tracklets_m_comes_from_the_cannot_link_cut(tmp_path):
    """DATASETS.TRACKLETS folder with frame-numbered crops: m (and the values read from it)
    come from the tracklets seen at the same time, and the saved choice says so; without
    frame numbers the neighbour spacings are read as before."""
    from calr_plugin.auto import settings as auto_settings
    from tracklet_people import people_in_one_camera

    cams_feats = [people_in_one_camera(seed) for seed in (0, 1)]
    feats = np.concatenate([f for f, *_ in cams_feats])
    items = [(f"/data/train/cam{c}/t{g:02d}/{fr:06d}.jpg", None, f"cam{c}")
             for c, (_, _, groups, frames) in enumerate(cams_feats) for g, fr in zip(groups, frames)]
    train_set = TrainSet(items)  # sorted by path: cam0 then cam1, tracklet, frame, as generated
    train_set.groups = np.concatenate([g + 100 * c for c, (_, _, g, _) in enumerate(cams_feats)])
    train_set.frames = np.concatenate([fr for *_, fr in cams_feats])
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                   "CALR.STAGE1.K1", "8", "CALR.STAGE1.K2", "2", *AUTO)
    out = auto_settings.choose(cfg, train_set, feats, ["CALR.CLUSTER.K", "CALR.STAGE1.CLUSTER_RATIO"])
    assert out["images_per_person_and_camera"] == 12.0
    assert out["structure"]["evidence"]["m"]["from"] == "tracklets"
    assert out["values"]["CALR.STAGE1.CLUSTER_RATIO"] == round(1 / 12, 4)
    assert auto_settings._inputs(cfg, train_set, [])["tracklets"] == [True, 0.01]
    train_set.frames = np.full(len(items), -1)  # no frame numbers: no cannot-links
    out = auto_settings.choose(cfg, train_set, feats, ["CALR.CLUSTER.K"])
    assert "from" not in out["structure"]["evidence"]["m"]
