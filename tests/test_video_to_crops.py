"""tools/video_to_crops.py: camera videos to tracklet folders, crops.csv, resume, bad input;
the MOT parser and the offline detector (calr_plugin/data/video_io.py)."""
import csv
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA

TOOL = os.path.join(REPO, "tools", "video_to_crops.py")


def run_tool(*args):
    pytest.importorskip("boxmot", reason="make install installs BoxMOT (ByteTrack makes the tracklets)")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """3 generated cameras, 8 people each passing 1-3 of them, 90 frames, with true boxes."""
    from calr_plugin.data.synthetic_video import camera_network, write_network

    out = tmp_path_factory.mktemp("net")
    specs = camera_network(3, 8, seed=1, num_frames=90, width=480, height=270, speed=(0.008, 0.015))
    write_network(specs, str(out))
    return out, specs


def test_generated_video_gives_pure_bounded_tracklets_for_everyone(network, tmp_path):
    from calr_plugin.data.tracklets import true_people
    from calr_plugin.data.video_io import read_mot

    net, specs = network
    out = tmp_path / "crops"
    run = run_tool("--videos", str(net / "videos"), "--dets", str(net / "dets"), "--out", str(out),
                   "--max-per-tracklet", "8")
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(os.listdir(out / "train")) == ["c1", "c2", "c3"]
    for cam in ("c1", "c2", "c3"):
        assert f"camera {cam}: " in run.stdout and "over budget" in run.stdout
    rows = list(csv.DictReader(open(out / "crops.csv")))
    assert list(rows[0]) == ["camera", "tracklet", "frame", "x", "y", "w", "h", "score", "path"]
    files = sorted(os.path.relpath(p, out) for p in glob.glob(str(out / "train" / "*" / "*" / "*.jpg")))
    assert sorted(r["path"] for r in rows) == files  # the table is the files
    owners = {}
    gt_of = {c: read_mot(str(net / "gt" / f"{c}.txt")) for c in ("c1", "c2", "c3")}
    for r, pid in zip(rows, true_people(rows, gt_of)):
        owners.setdefault((r["camera"], r["tracklet"]), []).append(int(pid))
    assert max(len(v) for v in owners.values()) <= 8
    purity = [np.bincount(np.array(v) + 1).max() / len(v) for v in owners.values()]
    assert np.mean(purity) >= 0.97 and min(purity) >= 0.8, [v for v in owners.values() if len(set(v)) > 1]
    # nobody lost: every person with 10+ fully visible, unclipped boxes in a camera owns a tracklet there
    for spec in specs:
        cam = f"c{spec.camera}"
        gt = read_mot(str(net / "gt" / f"{cam}.txt"))
        inside = (gt[:, 2] > 3) & (gt[:, 3] > 3) & (gt[:, 2] + gt[:, 4] < spec.width - 3) \
            & (gt[:, 3] + gt[:, 5] < spec.height - 3) & (gt[:, 8] > 0.9)
        present = {int(p) for p in np.unique(gt[inside, 1]) if (gt[inside, 1] == p).sum() >= 10}
        found = {np.bincount(np.array(v) + 1).argmax() - 1 for (c, _), v in owners.items() if c == cam}
        assert present <= found, (cam, present - found)


def test_a_rerun_resumes_and_a_broken_video_is_named_and_skipped(network, tmp_path):
    net, _ = network
    videos = tmp_path / "videos"
    videos.mkdir()
    for cam in ("c1", "c2"):
        os.symlink(net / "videos" / f"{cam}.mp4", videos / f"{cam}.mp4")
    (videos / "c9.mp4").write_bytes(b"not a video" * 100)
    dets = tmp_path / "dets"
    dets.mkdir()
    for cam in ("c1", "c2", "c9"):
        (dets / f"{cam}.txt").write_text(open(net / "dets" / "c1.txt").read())
    out = tmp_path / "crops"
    run = run_tool("--videos", str(videos), "--dets", str(dets), "--out", str(out))
    assert run.returncode == 1 and "camera c9 skipped" in run.stderr and "c9.mp4" in run.stderr, run.stderr[-2000:]
    assert "skipped 1 unreadable: c9" in run.stdout
    first = open(out / "crops.csv").read()
    (out / ".cameras" / "c2.csv").unlink()  # as if killed during camera c2
    run = run_tool("--videos", str(videos), "--dets", str(dets), "--out", str(out))
    assert "camera c1: done in an earlier run" in run.stdout and "camera c2: " in run.stdout
    assert "camera c2: done" not in run.stdout
    assert open(out / "crops.csv").read() == first


def test_bad_detection_lines_and_folders_are_one_line_errors(network, tmp_path):
    net, _ = network
    dets = tmp_path / "dets"
    dets.mkdir()
    for cam in ("c1", "c2", "c3"):
        (dets / f"{cam}.txt").write_text("1,-1,10,10,30,80,0.9,-1,-1,-1\n2,-1,10,10,30\n")
    run = run_tool("--videos", str(net / "videos"), "--dets", str(dets), "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and "c1.txt:2: expected 'frame,id,x,y,w,h,score,...'" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    (dets / "c3.txt").unlink()
    run = run_tool("--videos", str(net / "videos"), "--dets", str(dets), "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and "no detection file for camera(s) c3" in run.stderr
    run = run_tool("--videos", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and "none: video folder not found" in run.stderr
    (tmp_path / "empty").mkdir()
    run = run_tool("--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert run.returncode == 2 and "no videos" in run.stderr


def test_the_offline_detector_finds_a_real_pedestrian_walking_across_frames(tmp_path):
    # HOG needs real people: a CUHK01 person (shared data) pasted at 2.5x, walking across a
    # grey frame folder; the tool without --dets must make a tracklet of it.
    import cv2

    files = sorted(glob.glob(os.path.join(SHARED_DATA, "cuhk01", "bounding_box_test", "*.jpg")))
    if not files:
        pytest.skip(f"real test data not found at {SHARED_DATA}/cuhk01")
    person = cv2.imread(files[0])
    person = cv2.resize(person, None, fx=1.25, fy=1.25)  # 200 px tall
    cam = tmp_path / "videos" / "hall"
    cam.mkdir(parents=True)
    for t in range(12):
        frame = np.full((320, 480, 3), 120, np.uint8)
        x = 60 + 25 * t
        frame[60:60 + person.shape[0], x:x + person.shape[1]] = person
        cv2.imwrite(str(cam / f"{t + 1:06d}.jpg"), frame)
    run = run_tool("--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "o"), "--min-score", "0.5")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "o" / "crops.csv")))
    assert len(rows) >= 6 and {r["camera"] for r in rows} == {"hall"}
    assert len({r["tracklet"] for r in rows}) <= 2
    xs = np.array([float(r["x"]) + float(r["w"]) / 2 - (60 + 25 * (int(r["frame"]) - 1) + person.shape[1] / 2)
                   for r in rows])
    assert np.abs(xs).max() < 40  # the boxes follow the person


def test_read_mot_pads_rows_and_names_bad_lines(tmp_path):
    from calr_plugin import DataError
    from calr_plugin.data.video_io import dets_by_frame, read_mot

    path = tmp_path / "det.txt"
    path.write_text("1,-1,10,20,30,40,0.9\n\n2, 3, 1, 2, 3, 4, 0.5, -1, -1, -1\n")
    rows = read_mot(str(path))
    assert rows.shape == (2, 10) and (rows[0, 7:] == -1).all() and rows[1, 1] == 3
    assert dets_by_frame(rows)[2].tolist() == [[1, 2, 3, 4, 0.5]]
    for bad, line in (("0,-1,1,1,5,5,1\n", 1), ("1,-1,1,1,5,5,1\n1,-1,1,1,0,5,1\n", 2), ("1,2,3\n", 1)):
        path.write_text(bad)
        with pytest.raises(DataError, match=f"det.txt:{line}: expected"):
            read_mot(str(path))


def test_stage1_keeps_tracklet_folders_whole_and_no_tracklet_folder_is_an_error(tmp_path):
    # The stage-1 label hook of a run with DATASETS.TRACKLETS folder: every tracklet folder in one
    # local cluster, even where the features say otherwise; a set without tracklet folders stops.
    from calr_plugin import DataError
    from calr_plugin.data.datasets import TrainSet, tracklets_of
    from calr_plugin.engine.hooks import Stage1LabelHook
    from tiny_calr import calr_cfg

    items = [(f"/x/train/c{c}/t{t}/{i}.jpg", None, f"reidfolder_c{c}") for c in (1, 2) for t in range(6) for i in range(4)]
    solo = TrainSet([(f"/x/train/solo/t{t}/{i}.jpg", None, "reidfolder_solo") for t in range(3) for i in range(2)])
    assert tracklets_of(solo).groups.tolist() == [0, 0, 1, 1, 2, 2]  # one camera folder: still its tracklets
    train = tracklets_of(TrainSet(items))
    assert len(np.unique(train.groups)) == 12
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((len(train), 16)).astype(np.float32)  # no structure: only the links hold them
    hook = Stage1LabelHook(calr_cfg(tmp_path, "DATASETS.TRACKLETS", "folder", "CALR.STAGE1.CLUSTER_RATIO", "0.5"),
                           train.subset(train.cams == 0))
    labels, _, _ = hook.make_labels(feats[train.cams == 0], 0)
    groups = train.groups[train.cams == 0]
    assert all(len(np.unique(labels[groups == g])) == 1 for g in np.unique(groups))
    assert len(np.unique(labels)) == 6  # one cluster per tracklet at most (the ratio asks for 12)
    loose = TrainSet([(f"/x/train/c{c}/{i}.jpg", None, f"reidfolder_c{c}") for c in (1, 2) for i in range(4)])
    with pytest.raises(DataError, match="DATASETS.TRACKLETS folder: no training image is in a tracklet folder"):
        tracklets_of(loose)


def test_with_tracklets_stage2_holds_out_whole_tracklets_and_scores_hits_by_tracklet(tmp_path):
    # A held-out frame whose neighbouring frames train is not out of sample (docs/RESULTS.md 2g):
    # with DATASETS.TRACKLETS folder, stage 2 holds out whole tracklets and the selection
    # counts a hit anywhere in the scored image's tracklet.
    from calr_plugin.data.datasets import TrainSet, tracklets_of
    from calr_plugin.engine.hooks import Stage2LabelHook
    from tiny_calr import calr_cfg

    items = [(f"/x/train/c{c}/t{t}/{f:06d}.jpg", None, f"reidfolder_c{c}")
             for c in (1, 2) for t in range(30) for f in range(10)]
    train = tracklets_of(TrainSet(items))
    cfg = calr_cfg(tmp_path, "DATASETS.TRACKLETS", "folder", "CALR.SELECT.HOLDOUT", "0.1")
    hook = Stage2LabelHook(cfg, train, np.zeros(len(train), np.int64))
    held = hook.held_out
    assert 60 <= held.sum() <= 80 and all(held[train.cams == c].any() for c in (0, 1))
    assert all(held[train.groups == g].all() or not held[train.groups == g].any() for g in np.unique(train.groups))
    assert hook.selector.groups is train.groups
    plain = Stage2LabelHook(cfg, TrainSet(items), np.zeros(len(train), np.int64))  # no tracklets: single frames
    assert plain.selector.groups is None
    assert not all(plain.held_out[train.groups == g].all() or not plain.held_out[train.groups == g].any()
                   for g in np.unique(train.groups))


def test_frame_numbers_in_crop_names_make_co_occurring_tracklets_cannot_links(tmp_path):
    # 4 tracklets of one camera in view at once (frames 10-13), named <frame>.jpg as
    # video_to_crops writes them; a 5th with other names has no frame numbers.
    from calr_plugin import ConfigError, load_config
    from calr_plugin.data.datasets import TrainSet, tracklets_of
    from calr_plugin.engine.hooks import Stage1LabelHook
    from tiny_calr import calr_cfg

    items = [(f"/x/train/c1/t{t}/{f:06d}.jpg", None, "reidfolder_c1") for t in range(4) for f in range(10, 14)]
    items += [(f"/x/train/c1/t9/frame{f}.jpg", None, "reidfolder_c1") for f in range(4)]
    train = tracklets_of(TrainSet(items))
    assert train.frames.tolist() == [10, 11, 12, 13] * 4 + [-1] * 4
    assert train.subset(train.groups == 1).frames.tolist() == [10, 11, 12, 13]
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((len(train), 16)).astype(np.float32)

    def clusters(*opts):
        hook = Stage1LabelHook(calr_cfg(tmp_path, "DATASETS.TRACKLETS", "folder", "CALR.STAGE1.CLUSTER_RATIO", "0.1",
                                        *opts), train)
        labels, _, _ = hook.make_labels(feats, 0)
        return len(np.unique(labels[:16])), len(np.unique(labels))
    # The 4 co-occurring tracklets stay 4 clusters, though the ratio asks for 2 in all;
    # with the cannot-links off, the ratio holds.
    assert clusters()[0] == 4
    assert clusters("CALR.STAGE1.CANNOT_LINKS", "False") == (2, 2)
    with pytest.raises(ConfigError, match="CALR.STAGE1.CANNOT_LINK_SHARE = 1.5: expected a share in"):
        load_config(os.path.join(REPO, "configs", "CALR", "demo_synthetic.yml"),
                    ["CALR.STAGE1.CANNOT_LINK_SHARE", "1.5", "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False"])


def test_split_rows_keeps_one_person_per_tracklet_and_one_query_per_person_and_camera():
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from video_test_split import split_rows

    rows = [{"camera": c, "tracklet": t, "frame": str(f), "path": f"{c}/{t}/{f}.jpg"}
            for c, t, f in [("b", "t1", 1), ("b", "t1", 2), ("b", "t1", 3), ("b", "t1", 4), ("a", "t9", 7),
                            ("a", "t9", 8), ("a", "t2", 9)]]
    pids = np.array([5, 5, 7, 5, 5, -1, 3])
    query, gallery, left = split_rows(rows, pids)
    assert left == {"no ground truth": 1, "not the tracklet's person": 1}  # frame 3 of t1 is person 7
    assert [name for *_, name in query] == ["0005_c1s1_000007_00.jpg", "0003_c1s1_000009_00.jpg",
                                            "0005_c2s1_000001_00.jpg"]  # camera a is c1: names sorted
    assert [name for *_, name in gallery] == ["0005_c2s1_000002_00.jpg", "0005_c2s1_000004_00.jpg"]


def test_a_test_split_from_video_leaves_the_querys_own_tracklet_out_of_its_gallery(network, tmp_path):
    """The split's tracklets are pure, so the Market rule ignores every frame of the query's
    tracklet: at distance 0 (near-duplicates) or far, the mAP is the same."""
    from fastreid.evaluation.rank import evaluate_rank

    net, _ = network
    crops = tmp_path / "crops"
    assert run_tool("--videos", str(net / "videos"), "--dets", str(net / "dets"), "--out", str(crops)).returncode == 0
    split = subprocess.run([sys.executable, os.path.join(REPO, "tools", "video_test_split.py"), "--crops", str(crops),
                            "--gt", str(net / "gt"), "--out", str(crops)], capture_output=True, text=True, timeout=300)
    assert split.returncode == 0, split.stderr
    assert "queries and" in split.stdout and "left out" in split.stdout
    rows = {r["path"]: r for r in csv.DictReader(open(crops / "crops.csv"))}

    def items(sub):
        names = sorted(os.listdir(crops / sub))
        pid = np.array([int(n[:4]) for n in names])
        cam = np.array([int(n.split("_")[1][1]) for n in names])
        return names, pid, cam

    qn, qp, qc = items("query")
    gn, gp, gc = items("bounding_box_test")
    assert len(qn) == len(set(zip(qp, qc))) and len(gn) > len(qn)
    # Which tracklet each split image came from: the crops are copies, so match by content.
    by_bytes = {open(crops / p, "rb").read(): (r["camera"], r["tracklet"]) for p, r in rows.items()}
    qt = [by_bytes[open(crops / "query" / n, "rb").read()] for n in qn]
    gt_ = [by_bytes[open(crops / "bounding_box_test" / n, "rb").read()] for n in gn]
    same = np.array([[a == b for b in gt_] for a in qt])
    assert same.any(axis=1).mean() > 0.5  # most queries have frames of their own tracklet in the gallery
    rng = np.random.default_rng(0)
    dist = rng.uniform(0.5, 1.0, (len(qn), len(gn)))
    near = np.where(same, 0.0, dist)
    far = np.where(same, 2.0, dist)
    cmc_a, ap_a, _ = evaluate_rank(near, qp, gp, qc, gc, max_rank=5, use_cython=False)
    cmc_b, ap_b, _ = evaluate_rank(far, qp, gp, qc, gc, max_rank=5, use_cython=False)
    assert np.allclose(ap_a, ap_b) and np.allclose(cmc_a, cmc_b)
    # FastReID's evaluation reads the split alone: a folder with only query/ and bounding_box_test/.
    alone = tmp_path / "split_alone"
    for split in ("query", "bounding_box_test"):
        shutil.copytree(crops / split, alone / split)
    ev = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file",
                         os.path.join(REPO, "configs", "CALR", "cuhk01_mobilenetv2.yml"), "--eval-only",
                         "DATASETS.FOLDER", str(alone), "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path / "eval"),
                             "MODEL.BACKBONE.PRETRAIN", "False"],  # CI has no converted weights; the split is what is read
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert 0 < json.load(open(tmp_path / "eval" / "eval_results.json"))["mAP"] <= 100


def test_the_split_tool_names_a_missing_table_or_ground_truth_file(tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from video_test_split import main

    assert main(["--crops", str(tmp_path), "--gt", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "no crops.csv" in capsys.readouterr().err
    with open(tmp_path / "crops.csv", "w") as f:
        f.write("camera,tracklet,frame,x,y,w,h,score,path\nc7,t1,1,0,0,10,20,0.9,train/c7/t1/000001.jpg\n")
    assert main(["--crops", str(tmp_path), "--gt", str(tmp_path / "gt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no ground truth for camera c7" in err and "c7.txt" in err
