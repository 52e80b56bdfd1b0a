"""Style statistics for inferred cameras: which map is tapped on each backbone, and one pass
that returns the embedding unchanged with the style appended, on either extraction engine."""
import numpy as np
import pytest
import torch
from PIL import Image

from calr_plugin import CALRTrainer, ConfigError
from calr_plugin.auto.camera_style import extract_with_style, find_style_layer
from calr_plugin.engine.features import extract_features

from conftest import tiny_cfg
from test_backbone_zoo import ZOO, _opts
from tiny_calr import CPU_CALR

# Where the named backbones keep their stride-8 output (None: a ViT has no 4-D map).
# FastReID's ResNet runs layer2's blocks one by one (layer2 itself never runs as a module).
EXPECTED = {"resnet18": "backbone.layer2.1", "mobilenetv2": "backbone.features.6",
            "timm_lite0": "backbone.body.blocks.2", "vit_small": None}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_default_layer_is_the_stride8_output(name, tmp_path):
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, *_opts(name, tmp_path))
    model = CALRTrainer.build_model(cfg)
    layer = find_style_layer(model, cfg)
    if name in EXPECTED:
        assert layer == EXPECTED[name]
    if layer is None:
        assert name == "vit_small"
        return
    grabbed = []
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: grabbed.append(o))
    with torch.no_grad():
        model.eval()(torch.rand(2, 3, 64, 32) * 255)
    assert grabbed[-1].dim() == 4 and grabbed[-1].shape[2] == 64 // 8


def _images(tmp_path, n=6):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = str(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_one_pass_gives_the_embedding_and_the_style(engine, tmp_path):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "CALR.EXTRACT.ENGINE", engine)
    model = CALRTrainer.build_model(cfg)
    paths = _images(tmp_path)
    emb, style, layer = extract_with_style(model, paths, cfg)
    assert layer == "backbone.layer2.1" and style.shape == (6, 2 * 128)
    np.testing.assert_allclose(emb, extract_features(model, paths, cfg), atol=1e-5)
    # The style is the layer's channel mean and std, up to one scale per image.
    from fastreid.data.transforms import build_transforms

    x = torch.stack([build_transforms(cfg, is_train=False)(Image.open(p).convert("RGB")) for p in paths])
    grabbed = []
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: grabbed.append(o.flatten(2)))
    with torch.no_grad():
        model.eval()(x)
    ref = torch.cat([grabbed[0].mean(2), grabbed[0].std(2)], 1).numpy()
    cos = (ref * style).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(style, axis=1)
    assert cos.min() > 0.9999


def test_a_named_layer_and_a_missing_one(tmp_path):
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "DATASETS.CAMERA_LAYER", "backbone.layer3.1")
    model = CALRTrainer.build_model(cfg)
    assert find_style_layer(model, cfg) == "backbone.layer3.1"
    _, style, _ = extract_with_style(model, _images(tmp_path, 4), cfg)
    assert style.shape == (4, 2 * 256)
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "DATASETS.CAMERA_LAYER", "backbone.layer9")
    with pytest.raises(ConfigError, match=r"DATASETS.CAMERA_LAYER = 'backbone.layer9': the model has no such "
                                          r"module .*top-level: backbone, heads"):
        find_style_layer(CALRTrainer.build_model(cfg), cfg)
    # layer3 exists but never runs as a module (FastReID's ResNet calls its blocks one by one).
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "DATASETS.CAMERA_LAYER", "backbone.layer3")
    with pytest.raises(ConfigError, match=r"'backbone.layer3': it does not output a \(B, K, h, w\) map in the "
                                          r"eval forward; the stride-8 one is backbone.layer2.1"):
        find_style_layer(CALRTrainer.build_model(cfg), cfg)
    with pytest.raises(ConfigError, match="DATASETS.CAMERA_FEATURES = 'colour': expected style or embedding"):
        tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, "DATASETS.CAMERA_FEATURES", "colour")
