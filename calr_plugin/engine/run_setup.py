"""How a run starts: ``setup_run`` (FastReID's default_setup plus the seed), ``save_config`` and ``SEED_FILE``.

``setup_run`` runs before any trainer exists, for training and ``--eval-only`` alike
(tools/train_net.py): FastReID's logger and config dump, the run's seed (drawn for ``SEED -1``,
or on ``--resume`` read back from ``SEED_FILE`` or an older config.yaml) and
OUTPUT_DIR/config.yaml with the feature extraction engine. That is a concern of its own, apart
from ``trainer``, which builds and runs CALR's two stages; ``trainer`` imports only
``save_config`` from here, to write config.yaml again once ``CALRTrainer`` has filled in what it
reads from the data.
"""
import logging
import os

import torch
from fastreid.utils import comm

from ..errors import ConfigError
from ..utils.atomic import atomic_write_text
from ..utils.dist import broadcast_from_main
from .extract_engines import engine_record

__all__ = ["SEED_FILE", "save_config", "setup_run"]


SEED_FILE = "seed.json"


def save_config(cfg):
    """Write OUTPUT_DIR/config.yaml (rank 0): the config in use and, for CALR, the engine.

    The extraction engine is a YAML comment, so the file stays a loadable config: the engine
    changes the features by float rounding, and a number reproduces only with its engine.
    """
    text = cfg.dump()
    if cfg.MODEL.META_ARCHITECTURE == "CALR":
        text += f"# calr-reid: feature extraction engine {engine_record(cfg)}\n"
    atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), text)


def _started_with(output_dir):
    """The seed a run in ``output_dir`` started with (rank 0), or None when there is none.

    ``seed.json`` records it; a run from before that file existed has it in config.yaml,
    read here before FastReID's default_setup overwrites that file.
    """
    import json

    path = os.path.join(output_dir, SEED_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            return int(json.load(f)["seed"]), path
    path = os.path.join(output_dir, "config.yaml")
    if os.path.isfile(path):
        import yaml

        with open(path) as f:
            seed = (yaml.safe_load(f) or {}).get("SEED", -1)
        if isinstance(seed, int) and seed >= 0:
            return seed, path
    return None, None


def setup_run(cfg, args):
    """FastReID's default_setup (logger, config dump) plus the calr-reid seed.

    With ``SEED >= 0`` every rank seeds python, numpy and torch with ``SEED + rank``;
    FastReID's samplers draw their shared seed from the seeded numpy RNG, so sampling,
    augmentation and training order repeat on CPU. ``SEED -1`` draws a fresh seed, logs it
    and writes it into ``cfg.SEED`` (and config.yaml), so the run can be repeated.
    A training run records its seed in ``OUTPUT_DIR/seed.json``; ``--resume`` continues
    with that seed (with ``SEED -1`` it is taken from there; another explicit SEED is a
    ConfigError), so stage 1, the auto settings and the label steps stay the run's own.
    """
    from fastreid.engine import default_setup
    from fastreid.utils.env import seed_all_rng

    resume = getattr(args, "resume", False)
    training = not getattr(args, "eval_only", False)
    drawn = source = None
    if comm.is_main_process():
        recorded, source = _started_with(cfg.OUTPUT_DIR) if (resume and training and cfg.OUTPUT_DIR) else (None, None)
        if recorded is not None and cfg.SEED >= 0 and cfg.SEED != recorded:
            drawn = ConfigError(f"SEED {cfg.SEED} with --resume: {cfg.OUTPUT_DIR} is a run that started with seed "
                                f"{recorded} ({source}); resume it with SEED {recorded} (or -1), or train into "
                                f"another OUTPUT_DIR")
        elif cfg.SEED < 0:
            # A fresh seed for this run, the same on every rank; without it the refinement
            # draws and the sampler (seeded from SEED) would repeat seed 0 in every run.
            import numpy as np

            drawn = recorded if recorded is not None else int(np.random.SeedSequence().entropy % (2 ** 31))
    drawn, source = broadcast_from_main((drawn, source))
    if isinstance(drawn, ConfigError):
        raise drawn
    asked = cfg.SEED
    if drawn is not None:
        cfg.defrost()
        cfg.SEED = drawn
        cfg.freeze()
    default_setup(cfg, args)  # config.yaml and the logged config show the seed in use
    log = logging.getLogger("fastreid")
    if cfg.MODEL.META_ARCHITECTURE == "CALR":
        log.info(f"feature extraction (auto settings, label steps): {engine_record(cfg)}")
    if comm.is_main_process() and cfg.OUTPUT_DIR and training:
        import json

        atomic_write_text(os.path.join(cfg.OUTPUT_DIR, SEED_FILE), json.dumps({"seed": cfg.SEED}))
        save_config(cfg)
    if asked < 0 and source:
        log.info(f"SEED -1 with --resume: continuing with seed {cfg.SEED}, the seed this run started with "
                 f"(read from {source})")
    elif asked < 0:
        log.info(f"SEED -1: this run draws seed {cfg.SEED} (pass SEED {cfg.SEED} to repeat it; config.yaml and "
                 f"{SEED_FILE} record it)")
    seed_all_rng(cfg.SEED + comm.get_rank())
    if asked >= 0:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
