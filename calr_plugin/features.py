"""Batched, eval-mode feature extraction of the training images, sharded over ranks.

Shape shorthand: N images, D feature dims.

Reuses FastReID's test pipeline: the test transform, ``InferenceSampler`` (each rank
gets a contiguous shard) and ``inference_on_dataset`` (eval mode, no_grad). Shards are
gathered in rank order, so every rank ends with the same (N, D) matrix in item order.

With DDP, each rank's BatchNorm running statistics drift apart during training (the
trainer wraps the model with ``broadcast_buffers=False``), and a shard extracted with
rank r's statistics would differ from the same images on rank 0; on Market-style names
the shards are id ranges, so the offset would line up with identity. ``broadcast_buffers``
gives every rank rank 0's buffers first: the features (and the evaluation) then equal a
one-process run of rank 0's checkpoint.
"""
import contextlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.data import build_reid_test_loader
from fastreid.data.common import CommDataset
from fastreid.data.transforms import build_transforms
from fastreid.evaluation import inference_on_dataset
from fastreid.evaluation.evaluator import DatasetEvaluator
from fastreid.utils import comm


class _Collector(DatasetEvaluator):
    def reset(self):
        self.feats = []

    def process(self, inputs, outputs):
        self.feats.append(outputs.detach().float().cpu())

    def evaluate(self):
        local = torch.cat(self.feats) if self.feats else torch.zeros(0)
        shards = comm.all_gather(local) if comm.get_world_size() > 1 else [local]
        return torch.cat([s for s in shards if s.numel()])


class _Progress:
    """A loader seen through a tqdm bar (main process, interactive terminal only; FastReID
    logs plain "Inference done i/n" lines otherwise)."""

    def __init__(self, loader, desc):
        self.loader, self.desc, self.dataset = loader, desc, loader.dataset

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        from tqdm import tqdm

        show = comm.is_main_process() and sys.stderr.isatty()
        return iter(tqdm(self.loader, desc=self.desc, unit="batch", leave=False, disable=not show))


def broadcast_buffers(model):
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank; no-op alone.

    Args:
        model (nn.Module): the possibly DDP-wrapped model; parameters are already equal.
    """
    if comm.get_world_size() == 1:
        return
    import torch.distributed as dist

    module = model.module if hasattr(model, "module") else model
    with torch.no_grad():
        for buf in module.buffers():
            if buf.numel():  # an empty cluster memory before the first epoch has nothing to send
                dist.broadcast(buf, src=0)


def extract_features(model, paths, cfg, desc="features"):
    """L2-normalised eval features of images, identical on every rank (rank 0's buffers).

    Args:
        model (nn.Module): the (possibly DDP-wrapped) model; returns (B, D) in eval mode.
        paths (list[str]): N image paths.
        cfg (CfgNode): for INPUT.SIZE_TEST, TEST.IMS_PER_BATCH, DATALOADER.NUM_WORKERS,
            SOLVER.AMP.ENABLED.
    Returns:
        ndarray: (N, D) float32.
    """
    broadcast_buffers(model)
    items = [(p, 0, 0) for p in paths]  # no identities: features only
    dataset = CommDataset(items, build_transforms(cfg, is_train=False), relabel=False)
    loader, _ = build_reid_test_loader(test_set=dataset, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)
    amp = cfg.SOLVER.AMP.ENABLED and torch.cuda.is_available()
    ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with ctx:
        feats = inference_on_dataset(model, _Progress(loader, desc), _Collector())
    if len(feats) != len(paths):
        raise RuntimeError(f"extracted {len(feats)} features for {len(paths)} images")
    return F.normalize(feats.float(), dim=1).numpy().astype(np.float32, copy=False)
