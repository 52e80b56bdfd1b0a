"""Label-step feature extraction (calr_plugin/features.py): every engine gives FastReID's
features, leaves the training model as it was, and the selection falls back cleanly."""
import os
import sys
import tempfile

import numpy as np
import pytest
import torch

from calr_plugin.errors import CalrError
from conftest import REPO
from tiny_calr import calr_cfg


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


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "auto"])
def test_engines_equal_fastreid_and_leave_the_model_alone(tmp_path, engine):
    from calr_plugin.features import extract_features

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


def test_engine_selection(monkeypatch):
    from calr_plugin import features

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert features.resolve_engine("auto", cpu) == "onnxruntime"  # installed by make install
    assert features.resolve_engine("auto", cuda) == "torch"
    assert features.resolve_engine("torch", cpu) == "torch"
    with pytest.raises(CalrError, match="runs on CPU"):
        features.resolve_engine("onnxruntime", cuda)
    with pytest.raises(CalrError, match="must be one of"):
        features.resolve_engine("tensorrt", cpu)
    monkeypatch.setattr(features, "_has_onnxruntime", lambda: False)
    assert features.resolve_engine("auto", cpu) == "torch"
    with pytest.raises(CalrError, match="not installed"):
        features.resolve_engine("onnxruntime", cpu)


def test_a_model_that_does_not_export_falls_back_to_torch(tmp_path, monkeypatch, caplog):
    import calr_plugin.export
    from calr_plugin.features import extract_features

    def broken(*args, **kwargs):
        raise RuntimeError("no symbolic for an op")

    monkeypatch.setattr(calr_plugin.export, "export_onnx", broken)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    cfg, model, paths = _setup(tmp_path, "DATALOADER.NUM_WORKERS", "0")
    expected = _fastreid_reference(model, paths, cfg)
    model.train()
    with caplog.at_level("WARNING", logger="fastreid.calr_plugin.features"):
        feats = extract_features(model, paths, cfg)  # auto: warns, then PyTorch
    assert "does not export to ONNX" in caplog.text
    assert os.listdir(tmp) == []  # the temporary export folder is removed
    assert np.abs(feats - expected).max() < 1e-4
    cfg.defrost()
    cfg.CALR.EXTRACT.ENGINE = "onnxruntime"  # asked for explicitly: an error naming the key
    with pytest.raises(CalrError, match="CALR.EXTRACT.ENGINE onnxruntime"):
        extract_features(model, paths, cfg)


@pytest.mark.parametrize("fault,message", [("wrong", "differs from PyTorch"), ("raises", "fails on 3 images")])
def test_an_onnx_graph_that_is_wrong_or_fails_on_real_batches_is_not_used(tmp_path, monkeypatch, caplog, fault,
                                                                          message):
    """What a traced graph with the export's batch size baked in does (ShuffleNet's channel
    shuffle: the zoo test trains one): caught on real images before any feature is kept."""
    import calr_plugin.export
    from calr_plugin import features

    def bad_onnx_features(path, images, threads=None):
        if fault == "raises":
            raise RuntimeError("Reshape: cannot reshape {3,116,8,4} to {2,58,2,8,4}")
        return np.ones((len(images), 512), np.float32)  # right shape, wrong values

    monkeypatch.setattr(calr_plugin.export, "onnx_features", bad_onnx_features)
    cfg, model, paths = _setup(tmp_path, "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "8")
    expected = _fastreid_reference(model, paths, cfg)
    model.train()
    with caplog.at_level("WARNING", logger="fastreid.calr_plugin.features"):
        feats = features.extract_features(model, paths, cfg)
    assert message in caplog.text and "using PyTorch" in caplog.text
    assert np.abs(feats - expected).max() < 1e-4
    cfg.defrost()
    cfg.CALR.EXTRACT.ENGINE = "onnxruntime"
    with pytest.raises(CalrError, match=message):
        features.extract_features(model, paths, cfg)
