#!/usr/bin/env python
"""Train or evaluate with calr-reid, FastReID style.

    python tools/train_net.py --config-file configs/CALR/market_ibn.yml
    python tools/train_net.py --config-file configs/CALR/market_ibn.yml --resume
    python tools/train_net.py --config-file configs/CALR/market_ibn.yml --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file configs/CALR/market_ibn.yml --eval-only   # zero-shot (pretrained backbone)
    python tools/train_net.py --config-file configs/CALR/market_ibn.yml --num-gpus 4
"""
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import calr_plugin  # noqa: E402,F401  (applies the FastReID shims, registers our modules)
from calr_plugin import CALRTrainer, CalrError, load_config, setup_run  # noqa: E402
from calr_plugin.engine.checkpoint import check_head_matches  # noqa: E402
from calr_plugin.data.build import NoTestSplit  # noqa: E402
from calr_plugin.utils.atomic import atomic_write_text  # noqa: E402
from calr_plugin.utils.cli import parse_args  # noqa: E402
from fastreid.engine import default_argument_parser, launch  # noqa: E402
from fastreid.utils import comm  # noqa: E402
from fastreid.utils.checkpoint import Checkpointer  # noqa: E402


def setup(args):
    cfg = load_config(args.config_file, args.opts, freeze=False)
    if args.eval_only and cfg.MODEL.WEIGHTS:
        cfg.MODEL.BACKBONE.PRETRAIN = False  # the checkpoint holds every weight
    cfg.freeze()
    setup_run(cfg, args)
    return cfg


def main(args):
    try:
        cfg = setup(args)
        if args.eval_only:
            model = CALRTrainer.build_model(cfg)
            if cfg.MODEL.WEIGHTS:
                check_head_matches(model, cfg.MODEL.WEIGHTS)
                Checkpointer(model).load(cfg.MODEL.WEIGHTS)
            else:
                logging.getLogger("fastreid").warning(
                    "--eval-only without MODEL.WEIGHTS: evaluating "
                    + ("the pretrained backbone (zero-shot)" if cfg.MODEL.BACKBONE.PRETRAIN
                       else "a randomly initialised model (MODEL.BACKBONE.PRETRAIN is False)"))
            results = CALRTrainer.test(cfg, model)
            if not results:
                raise NoTestSplit(f"--eval-only: nothing to evaluate in DATASETS.TESTS {tuple(cfg.DATASETS.TESTS)}: "
                                  f"mAP needs a labeled test split (query/ and bounding_box_test/ with Market names)")
            if comm.is_main_process():
                # For scripts (tools/compare_runs.py, bench/real_data.py): eval-only writes no metrics.json.
                atomic_write_text(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"),
                                  json.dumps(results, default=float, indent=1))
            return results
        trainer = CALRTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        return trainer.train()
    except CalrError as e:
        # One line instead of a traceback; in a spawned DDP worker the exit code stops
        # the other ranks through mp.spawn.
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    # FastReID's parser, but --resume / --eval-only / --num-gpus may also follow the KEY VALUE
    # overrides (its REMAINDER opts would take them as config keys).
    args = parse_args(default_argument_parser())
    try:
        load_config(args.config_file, args.opts)  # fail fast, before spawning workers
    except CalrError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except Exception as e:  # a spawned worker failed; it already printed its own error
        if type(e).__name__ == "ProcessExitedException":
            sys.exit(getattr(e, "exit_code", 1) or 1)
        raise
