"""tools/export_onnx.py: the exported graph gives PyTorch's features in ONNX Runtime."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_OPTS, config_path
from tiny_calr import CPU_CALR, calr_cfg

pytest.importorskip("onnxruntime", reason="make install installs the deploy extra (onnx, onnxruntime)")


def test_a_calr_checkpoint_exports_and_matches_pytorch_in_onnx_runtime(tmp_path):
    from calr_plugin import CALRTrainer
    from calr_plugin.deploy.export import export_onnx, onnx_features

    torch.manual_seed(0)
    model = CALRTrainer.build_model(calr_cfg(tmp_path, "CALR.ALIGN.NUM_CAMERAS", "2")).eval()
    weights = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "calr.onnx"
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "export_onnx.py"), "--config-file",
                          config_path("CALR/Base-CALR.yml"), "--out", str(out), "--check-images", "6"]
                         + CPU_CALR + TINY_OPTS + ["OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", str(weights)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "input images (B, 3, 64, 32) float32 RGB 0-255" in run.stdout
    assert "ONNX Runtime vs PyTorch on 6 real images: max |difference|" in run.stdout
    # Dynamic batch, and the same features as the checkpoint in PyTorch (not just the tool's own check).
    for batch in (1, 5):
        images = torch.rand(batch, 3, 64, 32) * 255
        with torch.no_grad():
            expected = model(images).numpy()
        got = onnx_features(str(out), images.numpy())
        assert got.shape == (batch, 512) and np.abs(got - expected).max() < 1e-4
    # The file is a graph of its own: exporting another model gives other features.
    other = CALRTrainer.build_model(calr_cfg(tmp_path)).eval()
    export_onnx(other, str(tmp_path / "other.onnx"), 64, 32)
    images = torch.rand(2, 3, 64, 32) * 255
    assert np.abs(onnx_features(str(tmp_path / "other.onnx"), images.numpy())
                  - onnx_features(str(out), images.numpy())).max() > 1e-3


EXPORT_TOOL = os.path.join(REPO, "tools", "export_onnx.py")


def _tool_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_onnx_tool", EXPORT_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("diff, fails", [(2e-3, True), (5e-4, False)])
def test_export_fails_above_the_tolerance(tmp_path, monkeypatch, capsys, diff, fails):
    # ONNX Runtime and PyTorch may agree exactly, so the measured difference is set here: the
    # tool must exit 1 and name the difference above --tolerance 1e-3, and pass below it.
    import calr_plugin.deploy.export

    monkeypatch.setattr(calr_plugin.deploy.export, "max_difference", lambda model, path, images, **kw: (diff, 1.0))
    rc = _tool_main()(["--config-file", config_path("CALR/Base-CALR.yml"), "--out", str(tmp_path / "m.onnx"),
                       "--check-images", "2", "--tolerance", "1e-3"] + CPU_CALR + TINY_OPTS
                      + ["OUTPUT_DIR", str(tmp_path)])
    err = capsys.readouterr().err
    if fails:
        assert rc == 1 and f"ONNX Runtime differs from PyTorch by {diff:.3g} > 0.001" in err, err
    else:
        assert rc == 0 and "differs" not in err, err


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    # export_onnx and max_difference trace / run on CPU in eval mode, then give the model back
    # in its modes (a frozen BN stays in eval inside a training model) with the same parameter
    # objects and values, so training can go on after an export.
    from calr_plugin import CALRTrainer
    from calr_plugin.deploy.export import export_onnx, max_difference

    torch.manual_seed(0)
    model = CALRTrainer.build_model(calr_cfg(tmp_path)).train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    params = {name: p for name, p in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = str(tmp_path / "m.onnx")
    export_onnx(model, path, 64, 32)
    err, _ = max_difference(model, path, torch.rand(2, 3, 64, 32) * 255)
    assert err < 1e-3
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert model.training and not frozen.training
    assert all(p is params[name] for name, p in model.named_parameters())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
