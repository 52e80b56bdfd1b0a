"""FastReID's backbone zoo with CALR: every backbone the wheel registers trains one stage-2 step on
tiny images as MODEL.META_ARCHITECTURE CALR, and its checkpoint loads into a plain Baseline."""
import os

import pytest
import torch

import calr_plugin  # noqa: F401  (registers build_timm_backbone)

from conftest import tiny_cfg
from tiny_calr import CPU_CALR

# name -> MODEL.BACKBONE.* overrides (FEAT_DIM is read from the built backbone).
ZOO = {
    "resnet18": ["NAME", "build_resnet_backbone", "DEPTH", "18x"],
    "resnet50_ibn_se_nl": ["NAME", "build_resnet_backbone", "DEPTH", "50x", "WITH_IBN", "True", "WITH_SE", "True",
                           "WITH_NL", "True"],
    "resnest50": ["NAME", "build_resnest_backbone", "DEPTH", "50x"],
    "resnext50": ["NAME", "build_resnext_backbone", "DEPTH", "50x"],
    "regnetx200": ["NAME", "build_regnet_backbone", "DEPTH", "200x"],
    "effnet_b0": ["NAME", "build_effnet_backbone", "DEPTH", "b0"],
    "osnet": ["NAME", "build_osnet_backbone", "DEPTH", "x1_0"],
    "mobilenetv2": ["NAME", "build_mobilenetv2_backbone", "DEPTH", "1.0x"],
    "mobilenetv3": ["NAME", "build_mobilenetv3_backbone", "DEPTH", "Large"],
    "repvgg_a0": ["NAME", "build_repvgg_backbone", "DEPTH", "A0"],
    "shufflenetv2": ["NAME", "build_shufflenetv2_backbone", "DEPTH", "1.0x"],
    "vit_small": ["NAME", "build_vit_backbone", "DEPTH", "small"],
    "timm_lite0": ["NAME", "build_timm_backbone", "TIMM_MODEL", "tf_efficientnet_lite0"],
}


def _opts(name, tmp_path):
    from fastreid.modeling.backbones import build_backbone

    opts = ["MODEL.BACKBONE.PRETRAIN", "False"]
    for k, v in zip(ZOO[name][::2], ZOO[name][1::2]):
        opts += [f"MODEL.BACKBONE.{k}", v]
    probe = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, *opts, "MODEL.BACKBONE.FEAT_DIM", "1280")
    with torch.no_grad():
        feat_dim = build_backbone(probe).eval()(torch.rand(1, 3, 64, 32)).shape[1]
    return opts + ["MODEL.BACKBONE.FEAT_DIM", str(feat_dim)]


def test_the_zoo_covers_every_registered_backbone():
    from fastreid.modeling.backbones import BACKBONE_REGISTRY

    covered = {opts[1] for opts in ZOO.values()}
    assert covered == set(BACKBONE_REGISTRY._obj_map)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_backbone_trains_as_calr_and_loads_into_baseline(name, tmp_path):
    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer
    from fastreid.utils.env import seed_all_rng

    from calr_plugin import CALRTrainer

    opts = _opts(name, tmp_path)
    seed_all_rng(0)
    cfg = tiny_cfg("CALR/Base-CALR.yml", tmp_path, *CPU_CALR, *opts, "SOLVER.MAX_EPOCH", "1",
                   "CALR.ITERS_PER_EPOCH", "1", "TEST.EVAL_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
                   "CALR.REFINE.ENABLED", "False", "CALR.CLUSTER.MIN_SIM", "-1.0")
    os.makedirs(tmp_path, exist_ok=True)
    trainer = CALRTrainer(cfg)
    before = [p.detach().clone() for p in trainer.model.backbone.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.backbone.parameters()))
    weights = str(tmp_path / "model_final.pth")
    base = build_model(tiny_cfg("Base-bagtricks.yml", tmp_path, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
                                "MODEL.HEADS.NECK_FEAT", "after", *opts, "MODEL.WEIGHTS", weights)).eval()
    Checkpointer(base).load(weights)
    images = torch.rand(2, 3, 64, 32) * 255
    with torch.no_grad():
        assert torch.allclose(trainer.model.eval()({"images": images}), base({"images": images}), atol=1e-5)
