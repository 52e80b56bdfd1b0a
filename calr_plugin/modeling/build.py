"""The one ``build_model``: FastReID's meta-architecture of a config, with chunked BatchNorm.

The trainer (``CALRTrainer.build_model``, which the auto settings also build with) and
``engine.checkpoint.load_inference_model`` (export, search) both build through it, so a model
is the same wherever it is made.

``check_model_keys`` validates the keys that need torch or the model code (CUDA for
MODEL.DEVICE, a registered CALR.ALIGN.HEAD); importing this module adds it to
``config.MODEL_CHECKS``, which ``load_config`` runs, so config.py itself imports no torch.
"""
import functools
import logging

import torch
from fastreid.modeling import build_model as build_fastreid_model

from ..config import MODEL_CHECKS, _need
from .chunk_bn import convert_chunked_bn
from .domain_head import DOMAIN_HEAD_REGISTRY

logger = logging.getLogger("fastreid." + __name__)  # shares FastReID's console and log.txt


def build_model(cfg):
    """FastReID's model of ``cfg`` (MODEL.META_ARCHITECTURE), on MODEL.DEVICE.

    With MODEL.BN_CHUNK > 0 every BatchNorm layer becomes a ``ChunkedBatchNorm`` of that
    many images (``modeling.chunk_bn``).

    Args:
        cfg (CfgNode): a config from ``load_config``.
    Returns:
        nn.Module: in training mode, as FastReID builds it.
    """
    model = build_fastreid_model(cfg)
    if cfg.MODEL.BN_CHUNK:
        n = convert_chunked_bn(model, cfg.MODEL.BN_CHUNK)
        logger.info(f"MODEL.BN_CHUNK {cfg.MODEL.BN_CHUNK}: {n} BatchNorm layers normalise "
                    f"{cfg.MODEL.BN_CHUNK}-image chunks")
    return model


def check_model_keys(cfg):
    """MODEL.DEVICE cuda needs CUDA on this machine; CALR.ALIGN.HEAD a registered domain head.

    Raises:
        ConfigError: naming the key.
    """
    need = functools.partial(_need, cfg)
    need(cfg.MODEL.DEVICE.startswith("cuda") is False or torch.cuda.is_available(), "MODEL.DEVICE",
         "'cpu' on a machine without CUDA (pass MODEL.DEVICE cpu)")
    heads = tuple(sorted(DOMAIN_HEAD_REGISTRY._obj_map))
    need(cfg.CALR.ALIGN.HEAD in heads, "CALR.ALIGN.HEAD", "one of " + ", ".join(heads))


MODEL_CHECKS["model"] = check_model_keys
