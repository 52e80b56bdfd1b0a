"""CALRReID inside real trackers (BoxMOT, deep-sort-realtime), the tracker ONNX profile in
BoxMOT's own ONNX backend, tracking scores and the MOT feature dump."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from tiny_calr import CPU_CALR

pytest.importorskip("onnxruntime", reason="make install installs the deploy extra (onnx, onnxruntime)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny CALR checkpoint as a run leaves it: model_final.pth and config.yaml, the config
    naming an ImageNet file that does not exist (loading must not need it)."""
    from calr_plugin import CALRTrainer

    out = tmp_path_factory.mktemp("run")
    cfg = tiny_cfg("CALR/Base-CALR.yml", out, *(CPU_CALR + ["CALR.ALIGN.NUM_CAMERAS", "2"]), freeze=False)
    torch.manual_seed(0)
    model = CALRTrainer.build_model(cfg).eval()
    torch.save({"model": model.state_dict()}, out / "model_final.pth")
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = str(out / "no_such_imagenet.pth")
    cfg.CALR.ALIGN.NUM_CAMERAS = 0
    (out / "config.yaml").write_text(cfg.dump())
    return out


@pytest.fixture(scope="module")
def video():
    from calr_plugin.data.synthetic_video import VideoSpec, frames

    spec = VideoSpec(num_people=5, num_frames=40, width=320, height=180, seed=3, speed=(0.02, 0.03))
    fr = list(frames(spec))
    gt = np.concatenate([np.c_[np.full(len(g), t), g] for t, _, g, _ in fr])
    return [(t, img, d) for t, img, _, d in fr], gt


class Counting:
    """Counts the boxes a tracker asked features for."""

    def __init__(self, reid):
        self.reid, self.boxes = reid, 0

    def get_features(self, xyxy, img):
        self.boxes += len(xyxy)
        return self.reid.get_features(xyxy, img)


def test_boxmot_botsort_tracks_with_our_embedder(run_dir, video):
    boxmot = pytest.importorskip("boxmot", reason="make install installs BoxMOT (the tracker extra)")
    from calr_plugin import CALRReID
    from calr_plugin.deploy.tracking import idf1, track_boxmot

    reid = CALRReID(str(run_dir / "model_final.pth"), device="cpu")  # config.yaml next to it
    assert reid.engine == "torch" and reid.size == (64, 32) and reid.embedding_dim == 512
    seq, gt = video
    counting = Counting(reid)
    rows = track_boxmot(seq, boxmot.BotSort(reid_model=counting, use_cmc=False))
    assert counting.boxes >= sum(len(d) for _, _, d in seq) * 0.5  # BoxMOT asked our embedder
    assert len(rows) > 0.5 * len(gt) and len(np.unique(rows[:, 1])) >= 5
    score = idf1(gt, rows)
    assert score["idf1"] > 0.5 and score["mota"] > 0.5, score


def test_boxmot_pipeline_calls_encode_of_the_appearance_encoder_protocol(run_dir, video):
    pytest.importorskip("boxmot", reason="make install installs BoxMOT (the tracker extra)")
    from boxmot import BotSort
    from boxmot.pipelines import TrackingPipeline
    from boxmot.reid.protocols import AppearanceEncoder
    from boxmot.structures import Boxes, Detections, Frame

    from calr_plugin import CALRReID

    reid = CALRReID(str(run_dir / "model_final.pth"), device="cpu")
    assert isinstance(reid, AppearanceEncoder)
    calls, encode = [], reid.encode
    reid.encode = lambda frames, dets: calls.append(len(dets[0])) or encode(frames, dets)
    pipe = TrackingPipeline(detector=None, tracker=BotSort(use_cmc=False), reid=reid)
    seq, _ = video
    ids, frames_, dets_ = set(), [], []
    for t, img, d in seq:
        d = d[(d[:, 2] > 1) & (d[:, 3] > 1)]
        sid = f"seq:{t:06d}"
        frame = Frame(image=torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))), sample_id=sid)
        xyxy = np.c_[d[:, 0], d[:, 1], d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]].astype(np.float32)
        dets = Detections(geometry=Boxes(torch.from_numpy(xyxy)), scores=torch.from_numpy(d[:, 4].astype(np.float32)),
                          class_ids=torch.zeros(len(d), dtype=torch.int64), sample_id=sid)
        ids.update(pipe.step_detections(frame, dets).tracks.track_ids.tolist())
        frames_.append(frame)
        dets_.append(dets)
        img_bgr = img
    assert sum(calls) == sum(len(d) for d in dets_) > 0  # the pipeline encoded every box through us
    assert len(ids) >= 5
    # encode: one float32 (N, D) unit-row CPU tensor per frame, the same rows as get_features
    out = reid.encode(frames_[-3:], dets_[-3:])
    assert [tuple(o.shape) for o in out] == [(len(d), 512) for d in dets_[-3:]]
    assert all(o.dtype == torch.float32 and o.is_contiguous() for o in out)
    np.testing.assert_allclose(out[-1].norm(dim=1).numpy(), 1, atol=1e-5)
    np.testing.assert_allclose(out[-1].numpy(), reid.get_features(dets_[-1].geometry.values.numpy(), img_bgr),
                               atol=1e-6)


def test_deep_sort_realtime_tracks_with_our_embeddings(run_dir, video):
    pytest.importorskip("deep_sort_realtime")
    from calr_plugin import CALRReID
    from calr_plugin.deploy.tracking import idf1, track_deepsort

    reid = CALRReID(str(run_dir / "model_final.pth"), device="cpu")
    seq, gt = video
    # a box of no area, which deep-sort-realtime drops without its embedding, must not shift the others
    seq = [(t, img, np.r_[d, [[5, 5, 0, 10, 0.9]]]) for t, img, d in seq]
    counting = Counting(reid)
    rows = track_deepsort(seq, counting.get_features, max_cosine_distance=0.3)
    assert counting.boxes == sum(len(d) - 1 for _, _, d in seq)
    assert idf1(gt, rows)["idf1"] > 0.5


def test_the_tracker_onnx_profile_loads_in_boxmots_onnx_backend_with_pytorchs_features(run_dir, video, tmp_path):
    pytest.importorskip("boxmot", reason="make install installs BoxMOT (the tracker extra)")
    from boxmot.reid.core import ReID

    from calr_plugin import CALRReID
    from calr_plugin.engine.checkpoint import load_inference_model
    from calr_plugin.deploy.export import export_onnx, write_tracker_metadata

    cfg, model = load_inference_model(str(run_dir / "config.yaml"), ["MODEL.WEIGHTS", str(run_dir / "model_final.pth")])
    path = str(tmp_path / "calr_resnet18.onnx")
    export_onnx(model, path, 64, 32, profile="tracker")
    sidecar = write_tracker_metadata(path, cfg, 512)
    meta = json.load(open(sidecar))
    assert meta["model_name"] == "resnet18" and meta["model_kwargs"] == {"img_size": [64, 32]}
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, out.name, out.shape) == ("images", ["batch", 3, 64, 32], "output", ["batch", 512])

    seq, _ = video
    _, frame, d = seq[20]
    xyxy = np.c_[d[:, 0], d[:, 1], d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]].astype(np.float32)
    torch_rows = CALRReID(str(run_dir / "model_final.pth"), device="cpu").get_features(xyxy, frame)
    onnx_rows = CALRReID(path).get_features(xyxy, frame)
    boxmot_rows = np.asarray(ReID(weights=path, device=torch.device("cpu"), half=False).model.get_features(xyxy, frame))
    # Unit rows; float32 PyTorch vs ONNX Runtime kernels differ by rounding, ~1e-6 per value
    # here (the export check's tolerance on raw features is 1e-3). 1e-4 is far below what moves
    # a ranking: the nearest other person is at cosine distance > 1e-2.
    assert boxmot_rows.shape == torch_rows.shape == (len(xyxy), 512)
    assert np.abs(boxmot_rows - torch_rows).max() < 1e-4
    assert np.abs(onnx_rows - boxmot_rows).max() < 1e-6  # the same graph and the same crops


def test_the_feature_dump_is_det_rows_then_features(run_dir, video):
    from calr_plugin import CALRReID
    from calr_plugin.data.boxes import xywh_to_xyxy
    from calr_plugin.deploy.tracking import feature_dump

    reid = CALRReID(str(run_dir / "model_final.pth"), device="cpu")
    seq, _ = video
    t, frame, d = seq[10]
    det_rows = np.c_[np.full(len(d), t), -np.ones(len(d)), d]
    dump = feature_dump(det_rows, reid.get_features(xywh_to_xyxy(d), frame))
    assert dump.shape == (len(d), 10 + 512) and dump.dtype == np.float32
    np.testing.assert_allclose(dump[:, 2:6], d[:, :4], rtol=1e-6)
    np.testing.assert_allclose(dump[:, 7:10], -1)
    np.testing.assert_allclose(np.linalg.norm(dump[:, 10:], axis=1), 1, atol=1e-5)


def test_embedder_errors_name_the_file_and_empty_frames_give_no_rows(run_dir, tmp_path):
    from calr_plugin import CALRReID, CalrError

    with pytest.raises(CalrError, match="nope.pth: weights file not found"):
        CALRReID(str(tmp_path / "nope.pth"))
    (tmp_path / "m.pth").write_bytes(b"")
    with pytest.raises(CalrError, match="no config_file given and no config.yaml next to it"):
        CALRReID(str(tmp_path / "m.pth"))
    # a backbone's bare state dict (e.g. ImageNet weights) is not a checkpoint
    state = torch.load(run_dir / "model_final.pth", weights_only=False)["model"]
    torch.save({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}, tmp_path / "bb.pth")
    with pytest.raises(CalrError, match="bb.pth: not a training checkpoint .* MODEL.BACKBONE.PRETRAIN_PATH"):
        CALRReID(str(tmp_path / "bb.pth"), config_file=str(run_dir / "config.yaml"))
    reid = CALRReID(str(run_dir / "model_final.pth"), device="cpu")
    frame = np.zeros((90, 160, 3), np.uint8)
    assert reid.get_features(np.zeros((0, 4)), frame).shape == (0, 512)
    assert reid.get_features(np.array([[200, 100, 260, 180]]), frame).shape == (1, 512)  # outside: a black crop


def test_the_readme_tracker_snippets_run_as_written(run_dir, video, tmp_path, monkeypatch):
    # The ```python blocks of README's "Use it in a tracker", run in order in one namespace that
    # holds what the comments say a user has: dets/frame (BoxMOT), raw_dets/xyxy (deep-sort).
    import re

    from conftest import REPO

    text = open(os.path.join(REPO, "README.md")).read()
    section = text[text.index("### Use it in a tracker"):]
    section = section[:section.index("\n## ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    (tmp_path / "logs").mkdir()
    os.symlink(run_dir, tmp_path / "logs" / "cuhk01")
    monkeypatch.chdir(tmp_path)
    seq, _ = video
    # each block: its setup lines once, then its last line (the tracker's update) per frame
    setups = [compile("\n".join(b.strip().splitlines()[:-1]), "README.md", "exec") for b in blocks]
    steps = [compile(b.strip().splitlines()[-1], "README.md", "exec") for b in blocks]
    namespace, counts = {}, [0, 0]
    for setup, step, i in zip(setups, steps, (0, 1)):
        if i == 1:
            namespace["boxmot_tracker"] = namespace["tracker"]
        exec(setup, namespace)
    trackers = [namespace.pop("boxmot_tracker"), namespace["tracker"]]
    for t, frame, d in seq:
        d = d[(d[:, 2] > 1) & (d[:, 3] > 1)]
        xyxy = np.c_[d[:, 0], d[:, 1], d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]]
        namespace.update(frame=frame, xyxy=xyxy, dets=np.c_[xyxy, d[:, 4], np.zeros(len(d))],
                         raw_dets=[([x, y, w, h], s, 0) for x, y, w, h, s in d])
        for i, step in enumerate(steps):
            namespace["tracker"] = trackers[i]
            exec(step, namespace)
            counts[i] += len(namespace["tracks"])
    assert namespace["reid"].embedding_dim == 512
    assert counts[0] > len(seq) and counts[1] > len(seq)  # both trackers kept tracks


def test_match_says_no_match_beyond_the_threshold():
    from calr_plugin import CALRReID

    gallery = np.eye(3, dtype=np.float32)
    queries = np.array([[0.99, 0.141, 0], [0.6, 0.8, 0], [0, 0, 1]], np.float32)
    idx, dist = CALRReID.match(queries, gallery, threshold=0.1)
    assert idx.tolist() == [0, -1, 2]
    np.testing.assert_allclose(dist, [0.01, 0.2, 0.0], atol=1e-6)
    assert CALRReID.match(queries, gallery[:0], 0.1)[0].tolist() == [-1, -1, -1]


def test_mot_features_writes_deepsorts_offline_file_and_names_a_bad_line(run_dir, tmp_path):
    import subprocess
    import sys

    import cv2

    from conftest import REPO
    from calr_plugin import CALRReID
    from calr_plugin.data.synthetic_video import VideoSpec, write_sequence
    from calr_plugin.data.boxes import xywh_to_xyxy

    seq = write_sequence(VideoSpec(num_people=4, num_frames=12, width=320, height=180, seed=3, speed=(0.03, 0.04)), str(tmp_path / "seq"))
    tool = [sys.executable, os.path.join(REPO, "tools", "mot_features.py"), "--weights", str(run_dir / "model_final.pth"),
            "--sequence", seq]
    run = subprocess.run(tool + ["--out", str(tmp_path / "seq.npy")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    dump = np.load(tmp_path / "seq.npy")
    det = np.loadtxt(os.path.join(seq, "det", "det.txt"), delimiter=",", ndmin=2)
    assert dump.shape == (len(det), 10 + 512) and len(det) > 3
    np.testing.assert_allclose(dump[:, :10], det, atol=1e-4)
    last = det[:, 0] == det[-1, 0]
    frame = cv2.imread(os.path.join(seq, "img1", f"{int(det[-1, 0]):06d}.jpg"))
    want = CALRReID(str(run_dir / "model_final.pth"), device="cpu").get_features(xywh_to_xyxy(det[last, 2:6]), frame)
    np.testing.assert_allclose(dump[last, 10:], want, atol=1e-5)
    with open(os.path.join(seq, "det", "det.txt"), "a") as f:
        f.write("7,-1,10,10,abc,40,0.9,-1,-1,-1\n")
    run = subprocess.run(tool + ["--out", str(tmp_path / "bad.npy")], capture_output=True, text=True, timeout=300)
    n = len(det) + 1
    assert run.returncode == 2 and f"det.txt:{n}: expected 'frame,id,x,y,w,h,score,...'" in run.stderr, run.stderr
    assert not (tmp_path / "bad.npy").exists()
