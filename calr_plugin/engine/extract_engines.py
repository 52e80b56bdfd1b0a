"""How the eval graph runs for feature extraction: ``CALR.EXTRACT.ENGINE`` resolved, and each engine's forward.

Shape shorthand: B batch, D feature dims, H x W = INPUT.SIZE_TEST.

Each engine is a ``forward`` callable, (B, 3, H, W) images -> (B, D) float32 CPU features
(and a cleanup, for the temporary export). ``features.Extractor`` picks the engine with ``resolve_engine`` and
builds it once; this module is apart from ``features`` because choosing and building an
engine (ONNX export, the check against PyTorch, ONNX Runtime sessions) is a concern of its own,
while ``features`` owns the loader, the sharding and the gathering. ``engine_record`` is what a
run records of the choice (``run_setup.setup_run``).

The label step re-extracts every training image each epoch. ``CALR.EXTRACT.ENGINE`` picks
how the eval graph runs (default ``torch``, docs/RESULTS.md section 1 says why):

* ``onnxruntime``: the eval graph is exported to a temporary ONNX file (about 0.6 s for
  MobileNetV2) and run by ONNX Runtime; the features equal PyTorch's to float precision
  (cosine >= 0.99999). On 2 cores it is several times PyTorch's eager CPU speed
  (``bench/extract_speed.py``, docs/BENCHMARKS.md).
* ``torch`` (the default): a copy of the model in eval mode and channels-last memory format, under
  ``inference_mode`` (and float16 autocast on CUDA with SOLVER.AMP.ENABLED). The copy leaves
  the training model's memory format, mode and DDP buckets alone.
* ``auto``: ``onnxruntime`` on CPU when it is installed (``pip install -e .[deploy]``),
  ``torch`` otherwise and on CUDA. Before use, the ONNX graph is run on 3 images of the first
  batch and compared with PyTorch; a model that does not export, or whose graph fails or
  differs there (a traced graph can bake in the export's batch size), falls back to
  ``torch`` with a warning.
"""
import contextlib
import copy
import os
import tempfile

import numpy as np
import torch

from ..config import ENGINES
from ..errors import CalrError

__all__ = ["ENGINES", "engine_record", "resolve_engine"]


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


def engine_record(cfg):
    """What ``CALR.EXTRACT.ENGINE`` resolves to for this config on this machine, with versions.

    Recorded in config.yaml and the log at start-up (``setup_run``), since the engine changes
    the features by float rounding and so the labels and the final mAP of a run
    (docs/RESULTS.md): a number is reproducible only with the engine it was measured with.
    A model that does not export falls back to torch at the first extraction; that, and the
    engine of every label step, is in metrics.json (``extract/onnxruntime``).

    Args:
        cfg (CfgNode): CALR.EXTRACT.ENGINE and MODEL.DEVICE.
    Returns:
        str: e.g. "onnxruntime 1.23.2 (CALR.EXTRACT.ENGINE auto; torch 2.14.1, cpu)".
    """
    device = torch.device(cfg.MODEL.DEVICE.split(":")[0] if cfg.MODEL.DEVICE else "cpu")
    engine = resolve_engine(cfg.CALR.EXTRACT.ENGINE, device)
    version = ""
    if engine == "onnxruntime":
        import onnxruntime

        version = " " + onnxruntime.__version__
    return f"{engine}{version} (CALR.EXTRACT.ENGINE {cfg.CALR.EXTRACT.ENGINE}; torch {torch.__version__}, {device.type})"


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


def _session_forward(path):
    """(B, 3, H, W) images -> (B, D) features with one ONNX Runtime session of ``path``.

    Raises:
        CalrError: ONNX Runtime cannot load the file, or its graph lacks the input ``images``
        or the output ``features`` (what tools/export_onnx.py writes).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  (onnxruntime's own exception types are not importable by name)
        raise CalrError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != ["images"] or "features" not in outputs:
        raise CalrError(f"{path}: the graph has inputs {inputs} and outputs {outputs}; expected the input 'images' "
                        f"and the output 'features' (what tools/export_onnx.py writes)")

    def forward(images):
        out = session.run(["features"], {"images": images.cpu().numpy().astype(np.float32, copy=False)})[0]
        return torch.from_numpy(out)

    return forward


def _onnx_forward(module, cfg, probe):
    """The same with ONNX Runtime on a temporary export of ``module``'s eval graph.

    A traced graph can bake in the export's batch size (ShuffleNet's channel shuffle does) and
    then fail, or worse, be wrong, on other batches, so ``probe`` (a few real images, not the
    export's 2) goes through both first, with ``deploy.export.max_difference`` (what
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
    from ..deploy.export import export_onnx, max_difference

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
        if not err <= 1e-3 * max(scale, 1.0):  # NaN included
            raise _NotUsable(f"its ONNX graph differs from PyTorch on {len(probe)} images (max |difference| {err:.3g})")
        forward = _session_forward(path)
    except _NotUsable:
        cleanup()
        raise
    except Exception as e:
        cleanup()
        raise _NotUsable(f"{step} ({type(e).__name__}: {e})") from e
    except BaseException:
        cleanup()
        raise
    return forward, cleanup
