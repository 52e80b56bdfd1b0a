"""DDP helpers: one rank's object on every rank, rank 0's buffers, every rank's shard, the bare model.

Each is the identity (or a one-element list) in a single process, so the callers need no
``if distributed`` branch. Rank 0 computes what needs one answer (labels, auto settings, the
run's seed) and ``broadcast_from_main`` hands it to the others.
"""
import torch
import torch.distributed as dist
from fastreid.utils import comm

__all__ = ["broadcast_buffers", "broadcast_from_main", "gather_to", "unwrap"]


def unwrap(model):
    """The module inside a DDP wrapper (the model itself when it is not wrapped)."""
    return model.module if hasattr(model, "module") else model


def broadcast_from_main(obj):
    """rank 0's object on every rank (identity in a single process)."""
    if comm.get_world_size() == 1:
        return obj
    box = [obj if comm.is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model):
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank; no-op alone.

    Args:
        model (nn.Module): the possibly DDP-wrapped model; parameters are already equal.
    """
    if comm.get_world_size() == 1:
        return
    with torch.no_grad():
        for buf in unwrap(model).buffers():
            if buf.numel():  # an empty cluster memory before the first epoch has nothing to send
                dist.broadcast(buf, src=0)


def gather_to(obj, where="main"):
    """Every rank's ``obj``, in rank order.

    Args:
        obj: this rank's picklable part (e.g. a shard of features).
        where (str): "main": the list on rank 0, None on the others (they send and keep
            nothing); "all": the list on every rank.
    Returns:
        list | None: one entry per rank ([obj] in a single process).
    """
    if where not in ("main", "all"):
        raise ValueError(f"where={where!r}")
    if comm.get_world_size() == 1:
        return [obj]
    if where == "all":
        return comm.all_gather(obj)
    shards = comm.gather(obj, dst=0)
    return shards if comm.is_main_process() else None
