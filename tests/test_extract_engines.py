"""Label-step feature extraction (calr_plugin/engine/features.py, extract_engines.py): every engine gives FastReID's
features, leaves the training model as it was, and the selection falls back cleanly."""
import os
import sys
import tempfile

import numpy as np
import pytest
import torch

from calr_plugin.errors import CalrError, DataError
from conftest import REPO
from tiny_calr import calr_cfg

try:
    import onnxruntime  # noqa: F401

    HAS_ORT = True
except ImportError:
    HAS_ORT = False
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (pip install -e .[deploy])")


def _setup(tmp_path, *opts):
    from calr_plugin import CALRTrainer
    from calr_plugin.data.build import train_items
    from calr_plugin.data.datasets import TrainSet

    cfg = calr_cfg(tmp_path, "CALR.ALIGN.NUM_CAMERAS", "2", *opts)
    model = CALRTrainer.build_model(cfg).train()
    return cfg, model, TrainSet(train_items(cfg)).paths[:24]


def _fastreid_reference(model, paths, cfg):
    """The loop the label step used before the engines (bench/extract_speed.py's reference)."""
    sys.path.insert(0, os.path.join(REPO, "bench"))
    from extract_speed import fastreid_reference

    return fastreid_reference(model, paths, cfg)


@pytest.mark.parametrize("engine", ["torch", pytest.param("onnxruntime", marks=needs_ort), "auto"])
def test_engines_equal_fastreid_and_leave_the_model_alone(tmp_path, engine):
    from calr_plugin.engine.features import extract_features

    cfg, model, paths = _setup(tmp_path, "CALR.EXTRACT.ENGINE", engine, "TEST.IMS_PER_BATCH", "8",
                               "DATALOADER.NUM_WORKERS", "0")
    ref = _fastreid_reference(model, paths, cfg)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    feats = extract_features(model, paths, cfg)
    assert feats.shape == ref.shape and feats.dtype == np.float32
    assert np.abs(feats - ref).max() < 1e-4
    # the training model keeps its mode, weights and memory format
    assert model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.is_contiguous() for p in model.parameters())


@needs_ort
def test_auto_is_onnxruntime_on_cpu_when_installed():
    from calr_plugin.engine import extract_engines

    assert extract_engines.resolve_engine("auto", torch.device("cpu")) == "onnxruntime"


def test_engine_selection(monkeypatch):
    from calr_plugin.engine import extract_engines

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(extract_engines, "_has_onnxruntime", lambda: True)  # what follows holds either way
    assert extract_engines.resolve_engine("auto", cuda) == "torch"
    assert extract_engines.resolve_engine("torch", cpu) == "torch"
    with pytest.raises(CalrError, match="runs on CPU"):
        extract_engines.resolve_engine("onnxruntime", cuda)
    with pytest.raises(CalrError, match="must be one of"):
        extract_engines.resolve_engine("tensorrt", cpu)
    monkeypatch.setattr(extract_engines, "_has_onnxruntime", lambda: False)
    assert extract_engines.resolve_engine("auto", cpu) == "torch"
    with pytest.raises(CalrError, match="not installed"):
        extract_engines.resolve_engine("onnxruntime", cpu)


@needs_ort
def test_a_model_that_does_not_export_falls_back_to_torch(tmp_path, monkeypatch, caplog):
    import calr_plugin.deploy.export
    from calr_plugin.engine import features
    from calr_plugin.engine.features import extract_features

    def broken(*args, **kwargs):
        raise RuntimeError("no symbolic for an op")

    monkeypatch.setattr(calr_plugin.deploy.export, "export_onnx", broken)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    cfg, model, paths = _setup(tmp_path, "DATALOADER.NUM_WORKERS", "0", "CALR.EXTRACT.ENGINE", "auto")
    expected = _fastreid_reference(model, paths, cfg)
    model.train()
    with caplog.at_level("WARNING", logger="fastreid.calr_plugin.engine.features"):
        feats = extract_features(model, paths, cfg)  # auto: warns, then PyTorch
    assert "does not export to ONNX" in caplog.text
    assert os.listdir(tmp) == []  # the temporary export folder is removed
    assert np.abs(feats - expected).max() < 1e-4
    assert features.last_engine == "torch"  # the engine used, not the one asked for
    cfg.defrost()
    cfg.CALR.EXTRACT.ENGINE = "onnxruntime"  # asked for explicitly: an error naming the key
    with pytest.raises(CalrError, match="CALR.EXTRACT.ENGINE onnxruntime"):
        extract_features(model, paths, cfg)


@needs_ort
@pytest.mark.parametrize("fault,message", [("wrong", "differs from PyTorch"), ("raises", "fails on 3 images")])
def test_an_onnx_graph_that_is_wrong_or_fails_on_real_batches_is_not_used(tmp_path, monkeypatch, caplog, fault,
                                                                          message):
    """What a traced graph with the export's batch size baked in does (ShuffleNet's channel
    shuffle: the zoo test trains one): caught on real images before any feature is kept."""
    import calr_plugin.deploy.export
    from calr_plugin.engine import features

    def bad_onnx_features(path, images, threads=None):
        if fault == "raises":
            raise RuntimeError("Reshape: cannot reshape {3,116,8,4} to {2,58,2,8,4}")
        return np.ones((len(images), 512), np.float32)  # right shape, wrong values

    monkeypatch.setattr(calr_plugin.deploy.export, "onnx_features", bad_onnx_features)
    cfg, model, paths = _setup(tmp_path, "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "8",
                               "CALR.EXTRACT.ENGINE", "auto")
    expected = _fastreid_reference(model, paths, cfg)
    model.train()
    with caplog.at_level("WARNING", logger="fastreid.calr_plugin.engine.features"):
        feats = features.extract_features(model, paths, cfg)
    assert message in caplog.text and "using PyTorch" in caplog.text
    assert np.abs(feats - expected).max() < 1e-4
    cfg.defrost()
    cfg.CALR.EXTRACT.ENGINE = "onnxruntime"
    with pytest.raises(CalrError, match=message):
        features.extract_features(model, paths, cfg)


@pytest.mark.parametrize("engine", ["torch", pytest.param("auto", marks=needs_ort)])
def test_every_extraction_logs_and_exposes_its_engine(tmp_path, caplog, engine):
    from calr_plugin.engine import features

    cfg, model, paths = _setup(tmp_path, "CALR.EXTRACT.ENGINE", engine, "DATALOADER.NUM_WORKERS", "0")
    features.last_engine = None
    with caplog.at_level("INFO", logger="fastreid.calr_plugin.engine.features"):
        features.extract_features(model, paths, cfg, desc="train features")
    used = "onnxruntime" if engine == "auto" else "torch"
    assert features.last_engine == used
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train features:")]
    assert len(lines) == 1 and lines[0].startswith("train features: 24 images in ") and lines[0].endswith(
        f" s with {used}")


def test_an_unreadable_training_image_stops_with_one_line_naming_it(tmp_path):
    """Training keeps labels and cameras by image position: a skipped image would shift them."""
    from calr_plugin.engine.features import extract_features

    cfg, model, paths = _setup(tmp_path, "CALR.EXTRACT.ENGINE", "torch", "DATALOADER.NUM_WORKERS", "0",
                               "TEST.IMS_PER_BATCH", "8")
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(open(paths[0], "rb").read()[:200])  # truncated
    with pytest.raises(DataError) as e:
        extract_features(model, paths[:10] + [str(bad)] + paths[10:], cfg)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"1 unreadable image: {bad} (OSError: ")
    assert "every training image is needed" in message


def test_non_finite_features_stop_the_extraction(tmp_path):
    from calr_plugin.engine.features import extract_features

    cfg, model, paths = _setup(tmp_path, "CALR.EXTRACT.ENGINE", "torch", "DATALOADER.NUM_WORKERS", "0")
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "bn" in n).fill_(float("nan"))
    with pytest.raises(CalrError, match="24 features are not finite"):
        extract_features(model, paths, cfg)


def _gather_worker(out, paths):
    """One rank: the same (seeded) model, features gathered on rank 0 only and on every rank."""
    from fastreid.utils import comm

    from calr_plugin import CALRTrainer
    from calr_plugin.engine.features import extract_features

    cfg = calr_cfg(out, "CALR.EXTRACT.ENGINE", "torch", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "8")
    torch.manual_seed(0)
    model = CALRTrainer.build_model(cfg)
    main = extract_features(model, paths, cfg)
    every = extract_features(model, paths, cfg, gather="all")
    np.savez(os.path.join(out, f"rank{comm.get_rank()}.npz"), got_main=main is not None,
             main=main if main is not None else np.zeros(0), every=every)


def test_two_ranks_gather_the_features_on_rank_0_only(tmp_path):
    """The label step and auto settings read the features on rank 0 only: rank 1 gets None, and
    rank 0 the whole matrix in item order, as FastReID's loop in one process extracts it."""
    from fastreid.engine import launch

    from calr_plugin import CALRTrainer

    cfg, _, paths = _setup(tmp_path, "CALR.EXTRACT.ENGINE", "torch", "DATALOADER.NUM_WORKERS", "0",
                           "TEST.IMS_PER_BATCH", "8")
    paths = paths[:23]  # shards of 12 and 11 images
    launch(_gather_worker, 2, dist_url="auto", args=(str(tmp_path), paths))
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert bool(r0["got_main"]) and not bool(r1["got_main"])
    assert np.array_equal(r0["main"], r0["every"]) and np.array_equal(r0["every"], r1["every"])
    torch.manual_seed(0)
    alone = _fastreid_reference(CALRTrainer.build_model(cfg).eval(), paths, cfg)
    assert alone.shape == (23, 512) and np.abs(r0["main"] - alone).max() < 1e-5
