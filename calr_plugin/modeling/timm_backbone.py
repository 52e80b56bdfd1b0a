"""Any timm model as a FastReID backbone (``MODEL.BACKBONE.NAME build_timm_backbone``).

Shape shorthand: B images, C = MODEL.BACKBONE.FEAT_DIM channels, h x w the last feature map.

``MODEL.BACKBONE.TIMM_MODEL`` names the model (e.g. ``tf_efficientnet_lite2``,
``convnext_tiny``, ``resnet50``). The backbone returns the last stage's (B, C, h, w) map
(``forward_features``), which FastReID's heads pool (GAP, GeM) and neck. Token outputs
(B, N, C) of transformers become a (B, C, N, 1) map, so pooling averages the tokens.
``MODEL.BACKBONE.LAST_STRIDE 1`` asks timm for output stride 16 (dilated last stage) where
the architecture supports it, and is an error otherwise. Weights come only from
``MODEL.BACKBONE.PRETRAIN_PATH`` (timm's hub download is never used): a timm state_dict,
e.g. from ``tools/convert_weights.py efficientnet-lite2``; its classifier is dropped and
every other tensor must load.
"""
import os

import torch
import torch.nn as nn
from fastreid.modeling.backbones import BACKBONE_REGISTRY

from ..errors import ConfigError

__all__ = ["build_timm_backbone", "TimmBackbone"]


class TimmBackbone(nn.Module):
    """A timm model's ``forward_features`` as a (B, C, h, w) feature map."""

    def __init__(self, model):
        super().__init__()
        self.body = model

    def forward(self, x):
        x = self.body.forward_features(x)
        if x.dim() == 3:  # (B, N, C) tokens
            x = x.transpose(1, 2).unsqueeze(-1)
        return x


def _load(model, path, name):
    if not os.path.isfile(path):
        raise ConfigError(f"MODEL.BACKBONE.PRETRAIN_PATH = {path!r}: no such file (calr-reid never downloads "
                          f"weights; convert or copy a {name} state_dict there, or set MODEL.BACKBONE.PRETRAIN False)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    classifier = (model.pretrained_cfg or {}).get("classifier", "classifier")
    state = {k: v for k, v in state.items() if not k.startswith(classifier + ".")}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(f"MODEL.BACKBONE.PRETRAIN_PATH {path}: does not fit timm's {name} (missing "
                          f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}); was it made for "
                          f"another MODEL.BACKBONE.TIMM_MODEL?")


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg):
    """The timm model ``MODEL.BACKBONE.TIMM_MODEL`` without its classifier.

    Raises:
        ConfigError: no model name, an unknown one, FEAT_DIM different from the model's
            channels, LAST_STRIDE 1 on a model without output-stride control, or weights
            that do not fit.
    """
    import timm

    b = cfg.MODEL.BACKBONE
    name = b.TIMM_MODEL
    if not name:
        raise ConfigError("MODEL.BACKBONE.TIMM_MODEL is empty: name a timm model, e.g. tf_efficientnet_lite2")
    if name not in timm.list_models():
        raise ConfigError(f"MODEL.BACKBONE.TIMM_MODEL = {name!r}: not a timm model "
                          f"(timm.list_models('*{name.split('_')[0]}*') lists the close ones)")
    kwargs = {"pretrained": False, "num_classes": 0, "global_pool": ""}
    if b.LAST_STRIDE == 1:
        kwargs["output_stride"] = 16
    try:
        model = timm.create_model(name, **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        if b.LAST_STRIDE == 1:
            raise ConfigError(f"MODEL.BACKBONE.LAST_STRIDE = 1: timm's {name} cannot set its output stride "
                              f"({type(e).__name__}); set MODEL.BACKBONE.LAST_STRIDE 2") from None
        raise
    if model.num_features != b.FEAT_DIM:
        raise ConfigError(f"MODEL.BACKBONE.FEAT_DIM = {b.FEAT_DIM}: timm's {name} gives {model.num_features} "
                          f"channels; set MODEL.BACKBONE.FEAT_DIM {model.num_features}")
    if b.PRETRAIN:
        if not b.PRETRAIN_PATH:
            raise ConfigError("MODEL.BACKBONE.PRETRAIN_PATH is empty: timm backbones load local weights only "
                              "(tools/convert_weights.py makes them), or set MODEL.BACKBONE.PRETRAIN False")
        _load(model, b.PRETRAIN_PATH, name)
    return TimmBackbone(model)
