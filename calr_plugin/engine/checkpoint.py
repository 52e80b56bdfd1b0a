"""Loading MODEL.WEIGHTS into a model whose head may not be the one it was trained with.

FastReID's Checkpointer loads with ``strict=False`` and only logs what it skipped, so a GeM
checkpoint loaded into a GAP config silently drops the pooling exponent and changes every
feature (and a GAP checkpoint into a GeM config leaves p at its initial value). What the
feature depends on is the backbone plus the head's pooling and BN neck; the identity
classifier, the cluster memory and the camera classifier are not part of it.
"""
import torch

from ..errors import ConfigError
from ..utils.dist import unwrap

# Head modules that shape the evaluated feature (EmbeddingHead: pool_layer -> bottleneck).
FEATURE_HEAD_PREFIXES = ("heads.pool_layer.", "heads.bottleneck.")


def check_head_matches(model, path):
    """Raise if the checkpoint's pooling/neck keys differ from the model's.

    Args:
        model (nn.Module): the model the weights are about to be loaded into.
        path (str): a FastReID checkpoint (``{"model": state_dict, ...}``) or a bare state_dict.
    Raises:
        ConfigError: naming the file, the keys on either side, and what to set.
    """
    model = unwrap(model)
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("model", state) if isinstance(state, dict) else {}
    mine = {k for k in model.state_dict() if k.startswith(FEATURE_HEAD_PREFIXES)}
    theirs = {k for k in weights if k.startswith(FEATURE_HEAD_PREFIXES)}
    if not theirs:
        return  # a backbone-only file (e.g. ImageNet weights): the head starts fresh by design
    only_theirs, only_mine = sorted(theirs - mine), sorted(mine - theirs)
    if only_theirs or only_mine:
        pooling = any("pool_layer" in k for k in only_theirs + only_mine)
        hint = ("MODEL.HEADS.POOL_LAYER (e.g. GeneralizedMeanPoolingP for a GeM checkpoint, GlobalAvgPool "
                "otherwise)" if pooling else "MODEL.HEADS.WITH_BNNECK / NECK_FEAT")
        raise ConfigError(f"MODEL.WEIGHTS {path}: the checkpoint's head does not match this config's "
                          f"(only in the checkpoint: {only_theirs or 'none'}; only in the model: "
                          f"{only_mine or 'none'}); its features would change. Set {hint} as in the config "
                          f"it was trained with")


def load_inference_model(config_file, opts=()):
    """A config's model on CPU in eval mode, with MODEL.WEIGHTS loaded (head checked first).

    The camera classifier (training-only) is not built; with MODEL.WEIGHTS the pretrained
    backbone file is not read (the checkpoint holds every weight).

    Args:
        config_file (str): a yacs config. opts (list[str]): KEY VALUE overrides.
    Returns:
        tuple: (frozen CfgNode, nn.Module).
    """
    from fastreid.utils.checkpoint import Checkpointer

    from ..config import load_config, validate
    from ..modeling.build import build_model

    cfg = load_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False"], freeze=False,
                      check=False)
    cfg.CALR.ALIGN.NUM_CAMERAS = 0
    if cfg.MODEL.WEIGHTS:
        # before validation: a run's config.yaml may name an ImageNet file this machine lacks
        cfg.MODEL.BACKBONE.PRETRAIN = False
    validate(cfg)
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        check_head_matches(model, cfg.MODEL.WEIGHTS)
        try:
            Checkpointer(model).load(cfg.MODEL.WEIGHTS)
        except KeyError as e:
            if e.args != ("model",):
                raise
            raise ConfigError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}: not a training checkpoint (no 'model' entry); "
                              f"a backbone's ImageNet weights go in MODEL.BACKBONE.PRETRAIN_PATH") from None
    return cfg, model
