"""Batched, eval-mode feature extraction of the training images, sharded over ranks.

Shape shorthand: N images, B batch, D feature dims, H x W = INPUT.SIZE_TEST.

Images go through FastReID's test transform and ``InferenceSampler`` (each rank gets a
contiguous shard); shards are gathered in rank order, so every rank ends with the same
(N, D) matrix in item order.

The label step re-extracts every training image each epoch, and on a CPU that is most of
the epoch. ``CALR.EXTRACT.ENGINE`` picks how the eval graph runs:

* ``onnxruntime``: the eval graph is exported to a temporary ONNX file (about 0.6 s for
  MobileNetV2) and run by ONNX Runtime; the features equal PyTorch's to float precision
  (cosine >= 0.99999). On 2 cores it is several times PyTorch's eager CPU speed
  (``bench/extract_speed.py``, docs/BENCHMARKS.md).
* ``torch``: a copy of the model in eval mode and channels-last memory format, under
  ``inference_mode`` (and float16 autocast on CUDA with SOLVER.AMP.ENABLED). The copy leaves
  the training model's memory format, mode and DDP buckets alone.
* ``auto``: ``onnxruntime`` on CPU when it is installed (``pip install -e .[deploy]``),
  ``torch`` otherwise and on CUDA. Before use, the ONNX graph is run on 3 images of the first
  batch and compared with PyTorch; a model that does not export, or whose graph fails or
  differs there (a traced graph can bake in the export's batch size), falls back to
  ``torch`` with a warning.

With DDP, each rank's BatchNorm running statistics drift apart during training (the
trainer wraps the model with ``broadcast_buffers=False``), and a shard extracted with
rank r's statistics would differ from the same images on rank 0; on Market-style names
the shards are id ranges, so the offset would line up with identity. ``broadcast_buffers``
gives every rank rank 0's buffers first: the features (and the evaluation) then equal a
one-process run of rank 0's checkpoint.
"""
import contextlib
import copy
import logging
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.data import build_reid_test_loader
from fastreid.data.common import CommDataset
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm

from .errors import CalrError

__all__ = ["ENGINES", "broadcast_buffers", "extract_features", "resolve_engine"]

logger = logging.getLogger("fastreid." + __name__)

ENGINES = ("auto", "torch", "onnxruntime")


class _Progress:
    """A loader seen through a tqdm bar (main process, interactive terminal only)."""

    def __init__(self, loader, desc):
        self.loader, self.desc = loader, desc

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


def _has_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine, device):
    """The engine ``CALR.EXTRACT.ENGINE`` means on ``device``.

    Args:
        engine (str): "auto", "torch" or "onnxruntime".
        device (torch.device): where the model's parameters are.
    Returns:
        str: "torch" or "onnxruntime".
    Raises:
        CalrError: an unknown engine, onnxruntime asked for a CUDA model or not installed.
    """
    if engine not in ENGINES:
        raise CalrError(f"CALR.EXTRACT.ENGINE must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "onnxruntime" if device.type == "cpu" and _has_onnxruntime() else "torch"
    if engine == "onnxruntime":
        if device.type != "cpu":
            raise CalrError(f"CALR.EXTRACT.ENGINE onnxruntime runs on CPU, the model is on {device}; use torch or auto")
        if not _has_onnxruntime():
            raise CalrError("CALR.EXTRACT.ENGINE onnxruntime: ONNX Runtime is not installed (pip install -e .[deploy])")
    return engine


def _torch_forward(module, cfg):
    """(B, 3, H, W) images -> (B, D) features with an eval, channels-last copy of ``module``."""
    device = next(module.parameters()).device
    net = copy.deepcopy(module).eval().to(memory_format=torch.channels_last)
    amp = cfg.SOLVER.AMP.ENABLED and device.type == "cuda"

    def forward(images):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return net(images).float().cpu()

    return forward, lambda: None


class _NotUsable(Exception):
    """The ONNX path cannot be used for this model; the message says why."""


def _onnx_forward(module, cfg, probe):
    """The same with ONNX Runtime on a temporary export of ``module``'s eval graph.

    A traced graph can bake in the export's batch size (ShuffleNet's channel shuffle does) and
    then fail, or worse, be wrong, on other batches, so ``probe`` (a few real images, not the
    export's 2) goes through both first, with ``export.max_difference`` (what
    ``tools/export_onnx.py`` checks a deployed graph with).

    Args:
        module (nn.Module): the unwrapped model. cfg (CfgNode): the run's config.
        probe (Tensor): (b, 3, H, W) images of the first batch.
    Returns:
        tuple: (forward, cleanup) callables.
    Raises:
        _NotUsable: the export fails, or its graph fails or differs on ``probe`` (the temporary
        folder is removed first).
    """
    import onnxruntime as ort

    from .export import export_onnx, max_difference

    tmp = tempfile.mkdtemp(prefix="calr_extract_")
    path = os.path.join(tmp, "model.onnx")
    height, width = cfg.INPUT.SIZE_TEST

    def cleanup():
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(tmp)

    step = "the model does not export to ONNX"
    try:
        net = copy.deepcopy(module)  # a copy: export and the check set eval mode
        export_onnx(net, path, height, width)
        step = f"its ONNX graph fails on {len(probe)} images"
        err, scale = max_difference(net, path, probe)
        if err > 1e-3 * max(scale, 1.0):
            raise _NotUsable(f"its ONNX graph differs from PyTorch on {len(probe)} images (max |difference| {err:.3g})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except _NotUsable:
        cleanup()
        raise
    except Exception as e:
        cleanup()
        raise _NotUsable(f"{step} ({type(e).__name__}: {e})") from e
    except BaseException:
        cleanup()
        raise

    def forward(images):
        out = session.run(["features"], {"images": images.numpy().astype(np.float32, copy=False)})[0]
        return torch.from_numpy(out)

    return forward, cleanup


def extract_features(model, paths, cfg, desc="features"):
    """L2-normalised eval features of images, identical on every rank (rank 0's buffers).

    Args:
        model (nn.Module): the (possibly DDP-wrapped) model; returns (B, D) in eval mode.
            Its mode, parameters and memory format are left as they were.
        paths (list[str]): N image paths.
        cfg (CfgNode): for INPUT.SIZE_TEST, TEST.IMS_PER_BATCH, DATALOADER.NUM_WORKERS,
            SOLVER.AMP.ENABLED and CALR.EXTRACT.ENGINE.
    Returns:
        ndarray: (N, D) float32.
    """
    broadcast_buffers(model)
    module = model.module if hasattr(model, "module") else model
    engine = resolve_engine(cfg.CALR.EXTRACT.ENGINE, next(module.parameters()).device)
    items = [(p, 0, 0) for p in paths]  # no identities: features only
    dataset = CommDataset(items, build_transforms(cfg, is_train=False), relabel=False)
    loader, _ = build_reid_test_loader(test_set=dataset, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)
    forward = cleanup = None
    local = []
    try:
        for batch in _Progress(loader, desc):
            images = batch["images"]
            if forward is None and engine == "onnxruntime":  # at the first batch: the check needs real images
                try:
                    forward, cleanup = _onnx_forward(module, cfg, images[:3])
                except _NotUsable as e:
                    if cfg.CALR.EXTRACT.ENGINE == "onnxruntime":
                        raise CalrError(f"CALR.EXTRACT.ENGINE onnxruntime: {e}") from e
                    logger.warning(f"feature extraction: {e}; using PyTorch")
                    engine = "torch"
            if forward is None:
                forward, cleanup = _torch_forward(module, cfg)
            local.append(forward(images))
    finally:
        if cleanup is not None:
            cleanup()
    local = torch.cat(local) if local else torch.zeros(0)
    shards = comm.all_gather(local) if comm.get_world_size() > 1 else [local]
    feats = torch.cat([s for s in shards if s.numel()])
    if len(feats) != len(paths):
        raise RuntimeError(f"extracted {len(feats)} features for {len(paths)} images")
    return F.normalize(feats.float(), dim=1).numpy().astype(np.float32, copy=False)
