"""calr-reid config keys (``add_calr_config``) and start-up validation (``load_config``).

Call ``add_calr_config(cfg)`` before ``merge_from_file`` for training and for
``--eval-only`` alike: yacs rejects keys it does not know. ``load_config`` does the
whole FastReID ``setup`` dance (defaults, our keys, file, command-line opts) and turns
every mistake into a one-line ``ConfigError`` naming the file and the key.
"""
import difflib
import os
import re

from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg

from .errors import ConfigError


def add_calr_config(cfg):
    """Add every calr-reid key to a FastReID config, with the paper's defaults.

    Keys where the paper and the authors' code disagree follow the paper; the
    official-code preset (``configs/CALR/Base-CALR-official.yml``) switches them.
    """
    _C = cfg
    # Top-level seed. FastReID seeds every run at random; with SEED >= 0, sampling,
    # clustering, augmentation and training order are fixed on CPU.
    _C.SEED = -1

    # A Market-layout folder (bounding_box_train/, query/, bounding_box_test/) for
    # DATASETS.NAMES/TESTS ("ReIDFolder",). Absolute, or relative to the working
    # directory, or to $FASTREID_DATASETS.
    _C.DATASETS.FOLDER = ""
    # The embedded synthetic multi-camera set ("CALRSynthetic"), generated on first use
    # into $FASTREID_DATASETS/calr_synthetic/<hash of these values>.
    _C.DATASETS.SYNTHETIC = CN()
    _C.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = 48
    _C.DATASETS.SYNTHETIC.NUM_TEST_IDS = 24
    _C.DATASETS.SYNTHETIC.NUM_CAMERAS = 3
    _C.DATASETS.SYNTHETIC.IMAGES_PER_ID_PER_CAMERA = 4
    _C.DATASETS.SYNTHETIC.HEIGHT = 128
    _C.DATASETS.SYNTHETIC.WIDTH = 64
    _C.DATASETS.SYNTHETIC.SEED = 0
    return cfg


def _close_key(cfg, full_key):
    """The existing key most similar to a misspelt one, for the error message."""
    keys = []

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}{k}"
            if isinstance(v, CN):
                walk(v, name + ".")
            else:
                keys.append(name)

    walk(cfg, "")
    match = difflib.get_close_matches(full_key, keys, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _yacs_error(cfg, where, err):
    msg = str(err).strip("'\"")
    m = re.match(r"Non-existent (?:config )?key: (\S+)", msg)
    if m:
        key = m.group(1)
        return ConfigError(f"{where}: unknown config key {key}{_close_key(cfg, key)}")
    return ConfigError(f"{where}: {msg}")


def load_config(config_file="", opts=(), freeze=True):
    """FastReID config with calr-reid keys, merged from a file and ``KEY VALUE`` opts.

    Args:
        config_file (str): a yacs yml (``_BASE_`` supported); "" for defaults only.
        opts (list[str]): command-line overrides, alternating keys and values.
        freeze (bool): freeze the returned config.
    Returns:
        CfgNode: the validated config.
    Raises:
        ConfigError: a missing file, unknown key, wrong type or impossible value.
    """
    cfg = get_cfg()
    add_calr_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError) as e:
            raise _yacs_error(cfg, config_file, e) from None
        except Exception as e:  # YAML syntax errors, a missing _BASE_ file
            raise ConfigError(f"{config_file}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"command-line options must be KEY VALUE pairs, got an odd list: {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise _yacs_error(cfg, "command line", e) from None
    validate(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def validate(cfg):
    """Reject impossible values at start-up, naming the key.

    Raises:
        ConfigError
    """
    import torch

    def need(cond, key, expected):
        if not cond:
            value = cfg
            for part in key.split("."):
                value = value[part]
            raise ConfigError(f"{key} = {value!r}: expected {expected}")

    need(cfg.MODEL.DEVICE.startswith("cuda") is False or torch.cuda.is_available(), "MODEL.DEVICE",
         "'cpu' on a machine without CUDA (pass MODEL.DEVICE cpu)")
    need(not (cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda")), "SOLVER.AMP.ENABLED",
         "False when MODEL.DEVICE is cpu (AMP needs CUDA)")
    need(cfg.SOLVER.MAX_EPOCH >= 1, "SOLVER.MAX_EPOCH", "an integer >= 1")
    need(cfg.SOLVER.IMS_PER_BATCH >= 1, "SOLVER.IMS_PER_BATCH", "an integer >= 1")
    need(cfg.SOLVER.BASE_LR > 0, "SOLVER.BASE_LR", "a positive learning rate")
    need(cfg.TEST.EVAL_PERIOD >= 1, "TEST.EVAL_PERIOD", "an integer >= 1 (epochs between evaluations)")
    need(cfg.TEST.IMS_PER_BATCH >= 1, "TEST.IMS_PER_BATCH", "an integer >= 1")
    need(cfg.DATALOADER.NUM_WORKERS >= 0, "DATALOADER.NUM_WORKERS", "an integer >= 0")
    if cfg.DATALOADER.SAMPLER_TRAIN in ("NaiveIdentitySampler", "BalancedIdentitySampler"):
        need(cfg.DATALOADER.NUM_INSTANCE >= 1, "DATALOADER.NUM_INSTANCE", "an integer >= 1")
        need(cfg.SOLVER.IMS_PER_BATCH % cfg.DATALOADER.NUM_INSTANCE == 0, "SOLVER.IMS_PER_BATCH",
             f"a multiple of DATALOADER.NUM_INSTANCE ({cfg.DATALOADER.NUM_INSTANCE})")
    if cfg.MODEL.BACKBONE.PRETRAIN and cfg.MODEL.BACKBONE.PRETRAIN_PATH:
        need(os.path.isfile(cfg.MODEL.BACKBONE.PRETRAIN_PATH), "MODEL.BACKBONE.PRETRAIN_PATH",
             "an existing weights file (convert one with tools/convert_weights.py, or set "
             "MODEL.BACKBONE.PRETRAIN False)")
    if cfg.MODEL.WEIGHTS:
        need(os.path.isfile(cfg.MODEL.WEIGHTS), "MODEL.WEIGHTS", "an existing checkpoint file")
    from fastreid.data.datasets import DATASET_REGISTRY

    registered = sorted(DATASET_REGISTRY._obj_map)
    for key in ("DATASETS.NAMES", "DATASETS.TESTS"):
        for name in cfg.DATASETS[key.split(".")[1]]:
            if name not in registered:
                match = difflib.get_close_matches(name, registered, n=1)
                hint = f" (did you mean {match[0]}?)" if match else ""
                raise ConfigError(f"{key}: unknown dataset {name!r}{hint}")
    for name in tuple(cfg.DATASETS.NAMES) + tuple(cfg.DATASETS.TESTS):
        if name == "ReIDFolder":
            need(bool(cfg.DATASETS.FOLDER), "DATASETS.FOLDER",
                 "the folder of a Market-layout dataset when DATASETS uses ReIDFolder")
    syn = cfg.DATASETS.SYNTHETIC
    for key in ("NUM_TRAIN_IDS", "NUM_TEST_IDS", "IMAGES_PER_ID_PER_CAMERA", "HEIGHT", "WIDTH"):
        need(syn[key] >= 1, f"DATASETS.SYNTHETIC.{key}", "an integer >= 1")
    need(syn.NUM_CAMERAS >= 2, "DATASETS.SYNTHETIC.NUM_CAMERAS", "an integer >= 2")
