"""Every shipped config loads, validates and builds its model on CPU (pretrained weights off)."""
import glob
import os

import pytest
import torch

from calr_plugin import load_config
from conftest import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yml"), recursive=True))
CPU = ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "MODEL.BACKBONE.PRETRAIN", "False"]


def test_the_promised_configs_exist():
    names = {os.path.relpath(p, os.path.join(REPO, "configs")) for p in CONFIGS}
    for ds in ("market", "duke", "msmt17", "veri"):
        for suffix in ("", "_ibn", "_ibn_gem"):
            assert f"CALR/{ds}{suffix}.yml" in names
    assert {"CALR/Base-CALR.yml", "CALR/Base-CALR-official.yml", "CALR/Base-Baseline.yml",
            "CALR/demo_synthetic.yml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_config_loads_and_builds_its_model(path):
    from fastreid.modeling import build_model

    cfg = load_config(path, CPU, freeze=False)
    cfg.CALR.ALIGN.NUM_CAMERAS = 3  # filled from the data at training time
    model = build_model(cfg).eval()
    with torch.no_grad():  # a small input keeps 19 ResNet-50 forwards cheap on CPU
        feats = model({"images": torch.rand(2, 3, 64, 32) * 255})
    dim = cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM
    assert feats.shape == (2, dim)
    if cfg.MODEL.META_ARCHITECTURE == "CALR":
        assert (model.domain_head is not None) == cfg.CALR.ALIGN.ENABLED
