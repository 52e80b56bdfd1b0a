"""Chunked BatchNorm: every BN statistic over a fixed number of images, on any number of GPUs.

Shape shorthand: B images on this process, c images per chunk (``MODEL.BN_CHUNK``), W
processes, C channels.

The published unsupervised Re-ID recipes (the CALR authors', Cluster-Contrast, SpCL) ran
``nn.DataParallel`` on 4 GPUs: a 256-image batch was cut into 4 contiguous 64-image chunks
and every BatchNorm layer normalised each chunk with that chunk's own mean and variance.
One GPU with plain BN normalises over all 256 images, DDP over each process's share: the
same recipe trains a different model (the peers' trackers are full of "one GPU gives 59
mAP, four give 82"). With ``MODEL.BN_CHUNK c`` every BN layer of the model normalises
contiguous chunks of c images, whatever W and the per-process batch are:

* c <= B (B a multiple of c): each process cuts its batch into B / c chunks;
* c > B (c a multiple of B, W > 1, c / B dividing W): a chunk spans c / B consecutive
  processes, whose sums are all-reduced with gradients (synchronised BN within that group
  of processes);
* any other B (a batch the config check did not see: stage 1's batch, a last partial
  batch, c > B on one process): contiguous chunks of c images and a last, smaller one of
  B mod c (a last single image joins the chunk before it); with B < c that is plain BN over
  this process's batch. A warning names the first such B. Which case applies depends on B,
  so every process must get the same B in a step (FastReID's samplers do).

The running statistics are updated once per chunk, chunk after chunk in batch order, as c-
image BN calls one after another would: the chunks' (mean, unbiased variance) are gathered
from every process (no gradient) so every rank holds the same running statistics. (In
DataParallel only the first GPU's replica kept its update; the per-chunk updates here use
every image.) In eval mode the layer is plain BN. Parameters and buffers keep BN's names,
so a checkpoint loads into a model with plain BN and gives the same features.
"""
import logging

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from fastreid.utils import comm

from ..errors import ConfigError

__all__ = ["ChunkedBatchNorm", "convert_chunked_bn", "check_chunk"]


def check_chunk(chunk, batch, world, key="SOLVER.IMS_PER_BATCH"):
    """Raise unless ``chunk`` tiles the per-process batch or whole groups of processes.

    Args:
        chunk (int): images per BN statistic. batch (int): images per step, all processes.
        world (int): processes. key (str): the batch's config key, for the message.
    Raises:
        ConfigError
    """
    per = batch // world
    if per % chunk == 0:
        return
    if chunk % per == 0 and world % (chunk // per) == 0:
        return
    raise ConfigError(f"MODEL.BN_CHUNK = {chunk}: expected a divisor of the {per} images each of {world} "
                      f"process(es) gets ({key} {batch}), or a multiple of it that spans a whole number of "
                      f"processes dividing {world}")


_GROUPS = {}
_WARNED = set()
logger = logging.getLogger("fastreid." + __name__)


def _span_group(span):
    """The process group of this rank's ``span`` consecutive ranks (created on every rank once)."""
    world = comm.get_world_size()
    if span not in _GROUPS:
        groups = [dist.new_group(list(range(g, g + span))) for g in range(0, world, span)]
        _GROUPS[span] = groups
    return _GROUPS[span][comm.get_rank() // span]


class ChunkedBatchNorm(nn.BatchNorm2d):
    """BatchNorm over contiguous chunks of ``chunk`` images (see the module docstring).

    Works for 2-D, 3-D and 4-D inputs (BatchNorm1d/2d layers converted by
    ``convert_chunked_bn``); statistics are per channel (dim 1).
    """

    chunk = 0

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {input.dim()}-D)")

    def forward(self, x):
        if not self.training or not self.track_running_stats or self.chunk <= 0:
            return super().forward(x)
        b = x.shape[0]
        dims = [0] + list(range(2, x.dim()))
        world = comm.get_world_size()
        spans = b < self.chunk and self.chunk % b == 0 and world > 1 and world % (self.chunk // b) == 0
        if not spans:
            sizes = [self.chunk] * (b // self.chunk) + ([b % self.chunk] if b % self.chunk else [])
            if len(sizes) > 1 and sizes[-1] == 1:  # BN of one image fails (one value per channel of a neck)
                sizes[-2:] = [self.chunk + 1]
            uneven = b % self.chunk != 0
            if uneven and (b, self.chunk) not in _WARNED:
                _WARNED.add((b, self.chunk))
                how = ("statistics over this process's whole batch" if len(sizes) == 1 else
                       f"chunks of {sizes[0]} images and a last one of {sizes[-1]}")
                logger.warning(f"MODEL.BN_CHUNK {self.chunk}: a batch of {b} images per process, of {world} "
                               f"process(es), neither tiles into chunks nor spans whole processes; BN uses {how}")
            parts = x.split(sizes)
            out = torch.cat([F.batch_norm(part, None, None, self.weight, self.bias, True, 0.0, self.eps)
                             for part in parts])
            with torch.no_grad():
                stats = torch.stack([torch.stack([part.mean(dim=dims), part.var(dim=dims, unbiased=True)])
                                     for part in parts])
            self._update_running(stats, 1, same_count=not uneven)
            return out
        span = self.chunk // b
        group = _span_group(span)
        import torch.distributed.nn.functional as dist_fn

        n = x.numel() // x.shape[1] * span
        s1 = dist_fn.all_reduce(x.sum(dim=dims), group=group)
        s2 = dist_fn.all_reduce((x * x).sum(dim=dims), group=group)
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(0)
        shape = [1, -1] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        stats = torch.stack([mean.detach(), var.detach() * n / max(n - 1, 1)])[None]
        self._update_running(stats, span)
        return out

    @torch.no_grad()
    def _update_running(self, stats, span, same_count=True):
        """Apply each chunk's update in global batch order (rank 0's chunks first).

        Args:
            stats (Tensor): (chunks on this process, 2, C) mean and unbiased variance.
            span (int): processes per chunk; every rank of a group holds its group's stats.
            same_count (bool): every process has as many chunks (the batch tiles into chunks);
                False first gathers the counts and pads, as all_gather needs equal shapes.
        """
        world = comm.get_world_size()
        if world > 1:
            stats = stats.contiguous()
            counts = [len(stats)] * world
            if not same_count:
                mine = torch.tensor([len(stats)], dtype=torch.long, device=stats.device)
                all_counts = [torch.empty_like(mine) for _ in range(world)]
                dist.all_gather(all_counts, mine)
                counts = [int(c) for c in all_counts]
                pad = stats.new_zeros((max(counts) - len(stats),) + tuple(stats.shape[1:]))
                stats = torch.cat([stats, pad])
            gathered = [torch.empty_like(stats) for _ in range(world)]
            dist.all_gather(gathered, stats)
            gathered = [g[:c] for g, c in zip(gathered, counts)]
            stats = torch.cat(gathered[::span])  # one copy of each group's chunk
        momentum = 0.1 if self.momentum is None else self.momentum
        for mean, var in stats:
            self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(var, alpha=momentum)
            self.num_batches_tracked.add_(1)


def convert_chunked_bn(module, chunk):
    """Make every BatchNorm1d/2d of ``module`` (FastReID's BatchNorm included) chunked, in place.

    Parameters, buffers and their names (and frozen flags) stay; only the forward changes.

    Args:
        module (nn.Module): a model. chunk (int): images per BN statistic; 0 leaves it alone.
    Returns:
        int: the number of converted layers.
    Raises:
        ConfigError: the model has SyncBN or GhostBN layers, which decide their statistics
            themselves.
    """
    if chunk <= 0:
        return 0
    converted = 0
    for name, m in module.named_modules():
        if isinstance(m, (nn.SyncBatchNorm,)) or type(m).__name__ == "GhostBatchNorm":
            raise ConfigError(f"MODEL.BN_CHUNK = {chunk}: layer {name} is {type(m).__name__}, which sets its own "
                              f"statistics; use MODEL.BACKBONE.NORM BN with MODEL.BN_CHUNK")
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.track_running_stats:
            m.__class__ = ChunkedBatchNorm
            m.chunk = int(chunk)
            converted += 1
    return converted
