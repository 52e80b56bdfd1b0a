"""The one ``build_model``: FastReID's meta-architecture of a config, with chunked BatchNorm.

The trainer (``CALRTrainer.build_model``, which the auto settings also build with) and
``engine.checkpoint.load_inference_model`` (export, search) both build through it, so a model
is the same wherever it is made.
"""
import logging

from fastreid.modeling import build_model as build_fastreid_model

from .chunk_bn import convert_chunked_bn

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
