"""Tests for the embedded synthetic dataset (calr_plugin/data/synthetic.py, synthetic_render.py, synthetic_looks.py)."""
import ast
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(REPO, "calr_plugin", "data")
MODULE_PATH = os.path.join(DATA_DIR, "synthetic.py")
RENDER_PATH = os.path.join(DATA_DIR, "synthetic_render.py")
LOOKS_PATH = os.path.join(DATA_DIR, "synthetic_looks.py")
PATTERN = re.compile(r"([-\d]+)_c(\d+)")  # FastReID's Market-1501 regex


def _load():
    # Load by path: the modules must work without torch/fastreid/the calr_plugin package. A
    # stand-in package over calr_plugin/data/ lets synthetic.py import synthetic_render and
    # synthetic_looks without running calr_plugin's (or calr_plugin.data's) __init__.
    pkg = types.ModuleType("calr_synthetic_under_test")
    pkg.__path__ = [DATA_DIR]
    sys.modules[pkg.__name__] = pkg
    return importlib.import_module(pkg.__name__ + ".synthetic")


syn = _load()
render = sys.modules["calr_synthetic_under_test.synthetic_render"]

# The same in a child process: ``m`` is synthetic.py of the folder sys.argv[1].
_LOAD = textwrap.dedent(
    """
    import importlib, sys, types
    pkg = types.ModuleType("m"); pkg.__path__ = [sys.argv[1]]; sys.modules["m"] = pkg
    m = importlib.import_module("m.synthetic")
    """)

# Small spec for the file-system tests (fast); the default spec for the property tests.
SMALL = syn.SyntheticSpec(num_train_ids=5, num_test_ids=3, num_cameras=3, images_per_id_per_camera=2)


def _parse_dir(d):
    out = []
    for name in sorted(os.listdir(d)):
        assert name.endswith(".jpg"), name
        m = PATTERN.search(name)
        assert m is not None, name
        out.append((name, int(m.group(1)), int(m.group(2))))
    return out


def _tree_bytes(root):
    res = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                res[os.path.relpath(p, root)] = fh.read()
    return res


def _mtimes(root):
    res = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            res[os.path.relpath(p, root)] = os.stat(p).st_mtime_ns
    return res


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    spec = syn.SyntheticSpec()
    out = str(tmp_path_factory.mktemp("synth") / "default")
    t0 = time.time()
    syn.generate(spec, out)
    elapsed = time.time() - t0
    # Measured ~2.5 s on 2 shared cores; the bound only catches a gross slowdown.
    assert elapsed < 60, elapsed
    return spec, out


# --------------------------------------------------------------------------- module


def test_module_imports_only_numpy_pil_stdlib():
    # The only siblings allowed: synthetic.py's renderer and looks, and the renderer's looks.
    siblings = {(MODULE_PATH, "synthetic_render"), (MODULE_PATH, "synthetic_looks"), (RENDER_PATH, "synthetic_looks")}
    for path in (MODULE_PATH, RENDER_PATH, LOOKS_PATH):
        tree = ast.parse(open(path).read())
        tops = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1 and (path, node.module) in siblings, ("relative import", path, node.module)
                    continue
                tops.add(node.module.split(".")[0])
        extra = {t for t in tops if t not in sys.stdlib_module_names} - {"numpy", "PIL"}
        assert not extra, (path, extra)
    # and loading them really does not pull in torch / fastreid / calr_plugin
    code = _LOAD + textwrap.dedent(
        """
        bad = [k for k in sys.modules if k.split(".")[0] in ("torch", "fastreid", "calr_plugin")]
        bad += [k for k in ("m.synthetic_render", "m.synthetic_looks") if k not in sys.modules]  # all three ran
        print(bad); sys.exit(1 if bad else 0)
        """)
    r = subprocess.run([sys.executable, "-c", code, DATA_DIR], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_spec_validation():
    with pytest.raises(ValueError):
        syn.SyntheticSpec(images_per_id_per_camera=1).validate()
    with pytest.raises(ValueError):
        syn.SyntheticSpec(num_cameras=1).validate()
    with pytest.raises(ValueError):
        syn.SyntheticSpec(num_train_ids=9000, num_test_ids=1000).validate()
    syn.SyntheticSpec().validate()


def test_cache_dir_for(tmp_path):
    a = syn.cache_dir_for(syn.SyntheticSpec(), str(tmp_path))
    assert a == syn.cache_dir_for(syn.SyntheticSpec(), str(tmp_path))
    assert os.path.dirname(a) == os.path.join(str(tmp_path), "calr_synthetic")
    assert a != syn.cache_dir_for(syn.SyntheticSpec(seed=1), str(tmp_path))
    assert a != syn.cache_dir_for(syn.SyntheticSpec(camera_strength=0.5), str(tmp_path))
    assert len(os.path.basename(a)) >= 8


# --------------------------------------------------------------------------- layout


def test_layout_counts_and_ids(default_set):
    spec, out = default_set
    assert sorted(os.listdir(out)) == sorted(["bounding_box_train", "query", "bounding_box_test", "SPEC.json"])
    n, C = spec.images_per_id_per_camera, spec.num_cameras
    train = _parse_dir(os.path.join(out, "bounding_box_train"))
    query = _parse_dir(os.path.join(out, "query"))
    gallery = _parse_dir(os.path.join(out, "bounding_box_test"))
    assert len(train) == spec.num_train_ids * C * n
    assert len(query) == spec.num_test_ids * C
    assert len(gallery) == spec.num_test_ids * C * (n - 1)
    for name, _, _ in train + query + gallery:  # full Market name format
        assert re.fullmatch(r"\d{4}_c\d+s1_\d{6}_00\.jpg", name), name

    train_ids = {p for _, p, _ in train}
    test_ids = {p for _, p, _ in query} | {p for _, p, _ in gallery}
    assert train_ids == set(range(1, spec.num_train_ids + 1))
    assert len(test_ids) == spec.num_test_ids
    assert not train_ids & test_ids
    assert {c for _, _, c in train} == set(range(1, C + 1))
    # every train id appears in every camera n times
    for pid in train_ids:
        for c in range(1, C + 1):
            assert sum(1 for _, p, cc in train if p == pid and cc == c) == n

    # query: exactly one image of each test id in each camera, the lowest-numbered one
    assert sorted((p, c) for _, p, c in query) == sorted((p, c) for p in test_ids for c in range(1, C + 1))
    for qname, p, c in query:
        frames = [int(g.split("_")[2]) for g, gp, gc in gallery if gp == p and gc == c]
        assert frames and int(qname.split("_")[2]) < min(frames)
    # every query has a same-id gallery image in another camera (FastReID asserts this)
    gal = {(p, c) for _, p, c in gallery}
    for _, p, c in query:
        assert any((p, c2) in gal for c2 in range(1, C + 1) if c2 != c), (p, c)

    img = Image.open(os.path.join(out, "query", query[0][0]))
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (spec.width, spec.height)
    assert syn.is_complete(spec, out)


# --------------------------------------------------------------------------- determinism


def test_determinism_and_seed(tmp_path):
    a = syn.generate(SMALL, str(tmp_path / "a"))
    b = syn.generate(SMALL, str(tmp_path / "b"))
    ta, tb = _tree_bytes(a), _tree_bytes(b)
    assert ta.keys() == tb.keys() and len(ta) > 1
    assert all(ta[k] == tb[k] for k in ta)

    import dataclasses
    c = syn.generate(dataclasses.replace(SMALL, seed=1), str(tmp_path / "c"))
    tc = _tree_bytes(c)
    jpgs = [k for k in ta if k.endswith(".jpg")]
    assert set(jpgs) <= set(tc)
    differ = sum(ta[k] != tc[k] for k in jpgs)
    assert differ == len(jpgs)
    # and different in content, not just in JPEG bytes
    k = jpgs[0]
    xa = np.asarray(Image.open(os.path.join(a, k)), dtype=np.float32)
    xc = np.asarray(Image.open(os.path.join(c, k)), dtype=np.float32)
    assert np.abs(xa - xc).mean() > 5


def test_train_images_do_not_depend_on_num_test_ids(tmp_path):
    import dataclasses
    a = _tree_bytes(syn.generate(SMALL, str(tmp_path / "a")))
    b = _tree_bytes(syn.generate(dataclasses.replace(SMALL, num_test_ids=SMALL.num_test_ids + 2), str(tmp_path / "b")))
    train = [k for k in a if k.startswith("bounding_box_train")]
    assert train and all(a[k] == b[k] for k in train)


# --------------------------------------------------------------------------- idempotence / atomicity


def test_second_call_does_not_rewrite(tmp_path, monkeypatch):
    out = str(tmp_path / "set")
    assert syn.generate(SMALL, out) == os.path.abspath(out)
    before = _mtimes(out)
    time.sleep(0.02)

    def boom(*a, **k):
        raise AssertionError("regenerated a complete set")

    monkeypatch.setattr(syn, "_write_all", boom)
    syn.generate(SMALL, out)
    assert _mtimes(out) == before


def test_leftover_tmp_dir_is_not_complete_and_is_cleaned(tmp_path):
    full = syn.generate(SMALL, str(tmp_path / "scratch"))
    out = str(tmp_path / "set")
    leftover = str(tmp_path / ".set.tmp-12345-deadbeef")
    shutil.copytree(full, leftover)  # even a tmp dir with a manifest must not count
    assert not os.path.exists(out)
    assert not syn.is_complete(SMALL, out)
    syn.generate(SMALL, out)
    assert syn.is_complete(SMALL, out)
    assert not os.path.exists(leftover)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]


def test_folder_without_manifest_is_regenerated(tmp_path):
    out = syn.generate(SMALL, str(tmp_path / "set"))
    os.remove(os.path.join(out, "SPEC.json"))
    victim = os.path.join(out, "bounding_box_train", sorted(os.listdir(os.path.join(out, "bounding_box_train")))[0])
    with open(victim, "wb") as f:
        f.write(b"truncated")
    assert not syn.is_complete(SMALL, out)
    syn.generate(SMALL, out)
    assert syn.is_complete(SMALL, out)
    assert Image.open(victim).size == (SMALL.width, SMALL.height)


def test_manifest_with_missing_files_or_other_spec_is_regenerated(tmp_path):
    import dataclasses
    out = syn.generate(SMALL, str(tmp_path / "set"))
    q = os.path.join(out, "query")
    os.remove(os.path.join(q, sorted(os.listdir(q))[0]))
    assert not syn.is_complete(SMALL, out)
    syn.generate(SMALL, out)
    assert syn.is_complete(SMALL, out)

    other = dataclasses.replace(SMALL, seed=3)
    assert not syn.is_complete(other, out)
    syn.generate(other, out)
    assert syn.is_complete(other, out) and not syn.is_complete(SMALL, out)


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    out = tmp_path / "Market-1501"
    (out / "bounding_box_train").mkdir(parents=True)
    (out / "readme.txt").write_text("real data")
    with pytest.raises(FileExistsError):
        syn.generate(SMALL, str(out))
    assert (out / "readme.txt").read_text() == "real data"


def test_failed_generation_leaves_nothing_complete(tmp_path, monkeypatch):
    out = str(tmp_path / "set")
    real = syn._render
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(syn, "_render", flaky)
    with pytest.raises(RuntimeError):
        syn.generate(SMALL, out)
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


_CHILD = _LOAD + textwrap.dedent(
    """
    spec = m.SyntheticSpec(num_train_ids=int(sys.argv[3]), num_test_ids=3, num_cameras=3, images_per_id_per_camera=2)
    print(m.generate(spec, sys.argv[2]))
    """)


def test_killed_generation_is_not_complete_and_recovers(tmp_path):
    out = str(tmp_path / "set")
    n_train = 60
    p = subprocess.Popen([sys.executable, "-c", _CHILD, DATA_DIR, out, str(n_train)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until the child is writing images
            tmps = [n for n in os.listdir(tmp_path) if n.startswith(".set.tmp-")]
            if tmps:
                d = os.path.join(tmp_path, tmps[0], "bounding_box_train")
                if os.path.isdir(d) and len(os.listdir(d)) >= 10:
                    break
            time.sleep(0.01)
        else:
            pytest.fail("child never started writing")
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    assert p.returncode == -signal.SIGKILL  # it did not finish first
    spec = syn.SyntheticSpec(num_train_ids=n_train, num_test_ids=3, num_cameras=3, images_per_id_per_camera=2)
    assert not os.path.exists(out) and not syn.is_complete(spec, out)
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # the half-written build is left over
    syn.generate(spec, out)
    assert syn.is_complete(spec, out)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_racing_processes(tmp_path):
    out = str(tmp_path / "set")
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, DATA_DIR, out, "8"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (so, se) in zip(procs, results):
        assert p.returncode == 0, se
        assert so.strip() == os.path.abspath(out)
    spec = syn.SyntheticSpec(num_train_ids=8, num_test_ids=3, num_cameras=3, images_per_id_per_camera=2)
    assert syn.is_complete(spec, out)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".old-" in n]
    for dirpath, _, files in os.walk(out):
        for f in files:
            if f.endswith(".jpg"):
                Image.open(os.path.join(dirpath, f)).load()


def test_lost_rename_race_accepts_winner(tmp_path):
    # Without the lock (e.g. a file system without flock) the loser's rename fails;
    # it must keep the winner's complete set and leave it intact.
    out = syn.generate(SMALL, str(tmp_path / "set"))
    before = _mtimes(out)
    tmp = str(tmp_path / ".set.tmp-1-x")
    syn._write_all(SMALL, tmp)
    syn._install(SMALL, tmp, out)
    assert os.path.isdir(tmp)  # not moved in; generate()'s finally removes it
    assert _mtimes(out) == before and syn.is_complete(SMALL, out)


# --------------------------------------------------------------------------- camera bias


def _features(paths):
    """Raw features: 16x8 RGB thumbnail, flattened, standardised per dimension, L2-normalised."""
    X = np.stack([np.asarray(Image.open(p).convert("RGB").resize((8, 16), Image.BILINEAR), dtype=np.float64).ravel()
                  for p in paths])
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _bias_stats(X, pids, cams, k=5):
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    nn = np.argsort(-S, axis=1)[:, :k]
    same_cam = cams[nn] == cams[:, None]
    same_id = pids[nn] == pids[:, None]
    frac_same_cam = same_cam.mean()
    frac_id_in_cam = (same_cam & same_id).sum() / max(1, same_cam.sum())
    Sx = np.where(cams[:, None] == cams[None, :], -np.inf, S)
    cross_r1 = (pids[Sx.argmax(1)] == pids).mean()
    Sw = np.where(cams[:, None] != cams[None, :], -np.inf, S)
    within_r1 = (pids[Sw.argmax(1)] == pids).mean()
    return frac_same_cam, frac_id_in_cam, cross_r1, within_r1


def test_camera_bias_on_raw_features(default_set):
    spec, out = default_set
    items = syn.list_split(out, "bounding_box_train")
    X = _features([p for p, _, _ in items])
    pids = np.array([p for _, p, _ in items])
    cams = np.array([c for _, _, c in items])
    frac_same_cam, frac_id_in_cam, cross_r1, within_r1 = _bias_stats(X, pids, cams)
    n = spec.images_per_id_per_camera
    chance_id_in_cam = (n - 1) / (spec.num_train_ids * n - 1)  # 3/191 = 0.016
    # Measured on the default spec (seed 0): 1.000 / 0.355 / 0.061 / 0.715.
    assert frac_same_cam > 0.9, frac_same_cam  # images cluster by camera
    assert frac_id_in_cam > max(0.2, 10 * chance_id_in_cam), frac_id_in_cam  # identity is there within a camera
    assert within_r1 > 0.5, within_r1
    assert cross_r1 < 0.2, cross_r1  # but raw cross-camera retrieval is poor


def test_camera_strength_zero_removes_most_bias():
    # The bias comes from the camera effects: without them (viewpoint only) the same
    # raw features retrieve the same id across cameras far better.
    # Measured (24 ids, in memory): strength 1 -> cross r1 0.10; strength 0 -> 0.75.
    res = {}
    for s in (0.0, 1.0):
        spec = syn.SyntheticSpec(num_train_ids=24, camera_strength=s)
        imgs, pids, cams = [], [], []
        for pid in range(1, 25):
            for c in range(1, 4):
                for k in range(spec.images_per_id_per_camera):
                    imgs.append(np.asarray(render.render_image(spec, pid, c, k).resize((8, 16), Image.BILINEAR),
                                           dtype=np.float64).ravel())
                    pids.append(pid)
                    cams.append(c)
        X = np.stack(imgs)
        X = (X - X.mean(0)) / (X.std(0) + 1e-6)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        res[s] = _bias_stats(X, np.array(pids), np.array(cams))
    assert res[1.0][2] < 0.2, res
    assert res[0.0][2] > res[1.0][2] + 0.25, res


# --------------------------------------------------------------------------- preview


def test_preview_script(tmp_path):
    out = tmp_path / "preview.png"
    r = subprocess.run([sys.executable, os.path.join(REPO, "bench", "synthetic_preview.py"), str(out),
                        "--ids", "2", "--images", "2", "--zoom", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    img = Image.open(out)
    assert img.format == "PNG"
    assert img.size[0] > 3 * 2 * 64 and img.size[1] > 2 * 128
