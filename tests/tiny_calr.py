"""Tiny CALR runs for the tests: ~1 min on 2 CPU cores, both stages.

Also a script: ``python tests/tiny_calr.py ddp OUT`` trains with 2 processes (gloo)
through FastReID's launch and writes each rank's final memory, labels and weights.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import tiny_cfg  # noqa: E402  (sets FASTREID_DATASETS when run as a script)

CPU_CALR = [
    "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False", "SOLVER.CHANNELS_LAST", "False",
    "DATALOADER.NUM_INSTANCE", "4", "SOLVER.MAX_EPOCH", "3", "CALR.ITERS_PER_EPOCH", "3",
    "TEST.EVAL_PERIOD", "3", "SOLVER.STEPS", "[100]", "SOLVER.CHECKPOINT_PERIOD", "3",
    "CALR.STAGE1.EPOCHS", "2", "CALR.STAGE1.ITERS", "2", "CALR.STAGE1.IMS_PER_BATCH", "8",
    "CALR.STAGE1.K1", "6", "CALR.STAGE1.K2", "2", "CALR.CLUSTER.K", "6", "CALR.CLUSTER.MIN_SIZE", "2",
    "CALR.CLUSTER.MIN_SIM", "0.9", "SEED", "5",
]


def calr_cfg(output_dir, *opts, config="CALR/Base-CALR.yml"):
    return tiny_cfg(config, output_dir, *(CPU_CALR + list(opts)))


def _ddp_main(out, fail_rank=None):
    import numpy as np
    import torch
    from fastreid.utils import comm

    from calr_plugin import CALRTrainer, setup_run
    from calr_plugin.utils.dist import unwrap

    class Args:
        config_file = ""
        eval_only = False

    cfg = calr_cfg(out)
    setup_run(cfg, Args())
    if fail_rank is not None and comm.get_rank() == fail_rank:
        # A fault on one rank only, in the middle of stage 2's label step of epoch 1.
        from calr_plugin.engine import hooks

        original = hooks.Stage2LabelHook.make_labels

        def make_labels(self, feats, epoch):
            if epoch == 1:
                raise RuntimeError("injected fault")
            return original(self, feats, epoch)

        hooks.Stage2LabelHook.make_labels = make_labels
    trainer = CALRTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = unwrap(trainer.model)
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    # What the label step and the evaluation see after training: the same on every rank.
    from calr_plugin.engine.features import extract_features

    feats = extract_features(trainer.model, trainer.train_set.paths, cfg, gather="all")  # each rank's copy
    results = CALRTrainer.test(cfg, trainer.model)
    bn = torch.cat([b.detach().double().flatten() for n, b in model.named_buffers() if "running" in n])
    np.savez(os.path.join(out, f"rank{comm.get_rank()}.npz"), memory=model.memory.memory.numpy(),
             weights=model.memory.weights.numpy(), params=params.numpy(), bn=bn.numpy(), feats=feats,
             mAP=np.array(results.get("mAP", np.nan)), rank1=np.array(results.get("Rank-1", np.nan)))


if __name__ == "__main__" and sys.argv[1].startswith("ddp"):
    import calr_plugin  # noqa: F401
    from fastreid.engine import launch

    fail_rank = 0 if sys.argv[1] == "ddp-fail" else None  # rank 0 computes the labels
    launch(_ddp_main, 2, dist_url="auto", args=(sys.argv[2], fail_rank))
