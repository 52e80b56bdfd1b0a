"""``python tests/chunk_bn_ddp.py OUT CHUNK WORLD``: a small BN net trained 3 steps on 16 images per
step, split over WORLD gloo processes, with MODEL.BN_CHUNK = CHUNK; writes OUT/rank<r>.npz for
tests/test_chunk_bn.py: ``out`` the outputs of its share of the last batch, ``stats`` every running
statistic at the end, and ``local<i>`` the (chunks, 2, C) mean and variance that BN layer i computed
on this rank in the last step, read before ``_update_running`` gathers them from every rank (after
the gather every rank holds the same statistics by construction, whatever each computed)."""
import os
import sys

import numpy as np
import torch
import torch.nn as nn

BATCH = 16


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4))


def batches():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(BATCH, 3, 8, 8, generator=g) * (i + 1) for i in range(3)]


def run(rank, world, chunk, out):
    import torch.distributed as dist

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import calr_plugin  # noqa: F401
    from calr_plugin.modeling.chunk_bn import ChunkedBatchNorm, convert_chunked_bn

    local = []  # this step's per-layer chunk statistics, before the gather
    update = ChunkedBatchNorm._update_running

    def recording_update(self, stats, span, *args, **kwargs):
        local.append(stats.detach().double().clone())
        return update(self, stats, span, *args, **kwargs)

    ChunkedBatchNorm._update_running = recording_update

    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    net = make_net()
    convert_chunked_bn(net, chunk)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    share = BATCH // world
    for x in batches():
        local.clear()
        y = net(x[rank * share:(rank + 1) * share])
        loss = (y ** 2).mean() * share / BATCH  # summed over ranks: the full batch's mean
        opt.zero_grad()
        loss.backward()
        for p in net.parameters():
            if world > 1:
                dist.all_reduce(p.grad)
        opt.step()
    stats = torch.cat([b.double().flatten() for n, b in net.named_buffers() if "running" in n])
    np.savez(os.path.join(out, f"rank{rank}.npz"), out=y.detach().numpy(), stats=stats.numpy(),
             **{f"local{i}": s.numpy() for i, s in enumerate(local)})
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    out, chunk, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if world == 1:
        run(0, 1, chunk, out)
    else:
        torch.multiprocessing.spawn(run, args=(world, chunk, out), nprocs=world)
