"""tools/pseudo_labels.py: JSON report and one-line errors (run as a subprocess)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "tools" / "pseudo_labels.py"
KEYS = {"precision", "recall", "fscore", "expansion", "nmi", "ari", "clustered_fraction", "num_clusters"}


def _write_inputs(tmp_path, n_ids=12, per_cam=5, n_cams=3):
    rng = np.random.default_rng(0)
    people = rng.standard_normal((n_ids, 32))
    offsets = 0.5 * rng.standard_normal((n_cams, 32))
    rows, names = [], []
    for pid in range(n_ids):
        for cam in range(n_cams):
            for j in range(per_cam):
                rows.append(people[pid] + offsets[cam] + 0.3 * rng.standard_normal(32))
                names.append(f"{pid + 1:04d}_c{cam + 1}s1_{len(names):06d}_01.jpg")
    feats = np.asarray(rows, dtype=np.float32)
    np.save(tmp_path / "f.npy", feats)
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    return feats, names


def _run(*args):
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_writes_json_report(tmp_path):
    _write_inputs(tmp_path)
    out = tmp_path / "out.json"
    proc = _run("--features", tmp_path / "f.npy", "--names", tmp_path / "names.txt", "--json", out,
                "--epoch", "10", "--max-epoch", "50", "--camera-centre", "--out-labels", tmp_path / "l.npz")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    for key in ("global", "local", "refined"):
        assert set(rep[key]) == KEYS
        for name in ("precision", "recall", "fscore", "clustered_fraction"):
            assert 0.0 <= rep[key][name] <= 1.0
        assert rep[key]["num_clusters"] >= 1
    assert rep["local"]["clustered_fraction"] == 1.0
    assert 0.0 <= rep["discard_ratio"] <= 1.0 and 0.0 <= rep["kept_edge_fraction"] <= 1.0
    assert 0.75 < rep["p"] < 1.0
    assert rep["camera_centre"] is True and set(rep["without_camera_centre"]["global"]) == KEYS
    assert {"intra_camera", "knn", "infomap", "pivots", "refine", "weights"} <= set(rep["timings"])
    labels = np.load(tmp_path / "l.npz")
    assert labels["refined_labels"].shape == (180,) and labels["cams"].max() == 2  # 0-based
    # The report is the library's result on the same inputs, not just numbers in range.
    from calr_plugin.labels import LabelParams, cluster_metrics, decay_p, stage1_labels, stage2_labels

    feats = np.load(tmp_path / "f.npy")
    ids, cams = np.repeat(np.arange(12), 15), np.tile(np.repeat(np.arange(3), 5), 12)
    params = LabelParams.defaults(camera_centre=True)
    local = stage1_labels(feats, cams, params).labels
    res = stage2_labels(feats, cams, local, 10, 50, params)
    assert np.array_equal(labels["local_labels"], local) and np.array_equal(labels["refined_labels"], res.refined_labels)
    assert rep["p"] == decay_p("cosine", 10, 50, 0.75) == res.p
    expected = cluster_metrics(res.refined_labels, ids)
    assert all(rep["refined"][k] == (expected[k] if not np.isnan(expected[k]) else None) for k in KEYS)
    assert rep["discard_ratio"] == res.discard_ratio and rep["kept_edge_fraction"] == res.kept_edge_fraction


def test_cli_local_labels_and_preset(tmp_path):
    feats, names = _write_inputs(tmp_path)
    local = np.arange(len(names)) // 5  # one local cluster per (id, camera) block
    np.save(tmp_path / "local.npy", local)
    out = tmp_path / "out.json"
    proc = _run("--features", tmp_path / "f.npy", "--names", tmp_path / "names.txt", "--json", out,
                "--local-labels", tmp_path / "local.npy", "--preset", "code")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    assert rep["params"]["pivot_rule"] == "one_per_cluster_last" and rep["p"] == 1.0
    assert rep["local"]["precision"] == 1.0


def test_cli_malformed_name_is_a_one_line_error(tmp_path):
    _, names = _write_inputs(tmp_path)
    names[6] = "img_without_camera.jpg"
    (tmp_path / "names.txt").write_text("\n".join(names))
    proc = _run("--features", tmp_path / "f.npy", "--names", tmp_path / "names.txt")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "names.txt:7" in err and "img_without_camera.jpg" in err and "_c(" in err


def test_cli_bad_inputs(tmp_path):
    feats, names = _write_inputs(tmp_path)
    np.save(tmp_path / "short.npy", feats[:-1])
    bad = feats.copy()
    bad[4, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "flat.npy", feats.ravel())
    for features, expect in (("missing.npy", "not found"), ("short.npy", "179 rows"),
                             ("nan.npy", "NaN"), ("flat.npy", "(N, D)")):
        proc = _run("--features", tmp_path / features, "--names", tmp_path / "names.txt")
        assert proc.returncode == 2, features
        assert len(proc.stderr.strip().splitlines()) == 1 and expect in proc.stderr, proc.stderr


def test_cli_does_not_import_torch_or_fastreid():
    code = (f"import sys; sys.argv = ['x']; sys.path.insert(0, {str(CLI.parent)!r}); "
            "import pseudo_labels; print('torch' in sys.modules, 'fastreid' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
