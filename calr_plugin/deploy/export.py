"""ONNX export of the inference graph, checked against PyTorch with ONNX Runtime.

Shape shorthand: B images, H x W input size (INPUT.SIZE_TEST), D feature dims.

The graph is the model FastReID evaluates, in eval mode: images in, the feature out. Two
profiles (``PROFILES``):

``fastreid`` (the default, what FastReID's own deployment tools expect):

* input ``images``: (B, 3, H, W) float32, RGB, pixel values 0-255 (what FastReID's test
  transform gives: resize to INPUT.SIZE_TEST, no normalisation); B is dynamic;
* inside: subtract MODEL.PIXEL_MEAN, divide by MODEL.PIXEL_STD, backbone, pooling, BN neck;
* output ``features``: (B, D) float32, not normalised. FastReID's evaluator (cosine metric)
  L2-normalises it, so normalise before comparing features.

``tracker`` (what BoxMOT's ONNX ReID backend and most trackers feed a graph):

* input ``images``: (B, 3, H, W) float32 RGB already divided by 255 and normalised with the
  ImageNet mean and std (``TRACKER_MEAN``, ``TRACKER_STD``, fixed in BoxMOT); B is the
  dynamic axis ``batch``;
* inside: back to 0-255 pixels (x * std * 255 + mean * 255, exact in float32 up to
  rounding), then the model as above, then L2 normalisation;
* output ``output``: (B, D) float32 unit rows;
* a sidecar ``<file>.onnx.metadata.json`` (``tracker_metadata``): BoxMOT reads ``model_name``
  (an architecture token of its registry) and ``model_kwargs.img_size``; the rest says how
  to feed the graph.

A CALR checkpoint's cluster memory and camera classifier are training-only and not in the graph.
"""
import contextlib
import json

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CalrError
from ..utils.atomic import atomic_write_text

__all__ = ["PROFILES", "TRACKER_MEAN", "TRACKER_STD", "export_onnx", "onnx_features", "max_difference",
           "boxmot_token", "tracker_metadata", "write_tracker_metadata"]

PROFILES = ("fastreid", "tracker")
# BoxMOT's fixed input normalisation (boxmot/reid/backends/base_backend.py), on 0-1 RGB.
TRACKER_MEAN = (0.485, 0.456, 0.406)
TRACKER_STD = (0.229, 0.224, 0.225)
# FastReID backbone (NAME, DEPTH) -> the BoxMOT registry name of the same architecture.
_BOXMOT_TOKENS = {
    ("build_mobilenetv2_backbone", "1.0x"): "mobilenetv2_x1_0",
    ("build_mobilenetv2_backbone", "1.4x"): "mobilenetv2_x1_4",
    ("build_resnet_backbone", "18x"): "resnet18", ("build_resnet_backbone", "34x"): "resnet34",
    ("build_resnet_backbone", "50x"): "resnet50", ("build_resnet_backbone", "101x"): "resnet101",
    ("build_resnet_backbone", "152x"): "resnet152",
    ("build_osnet_backbone", "1x"): "osnet_x1_0",
}


@contextlib.contextmanager
def _on_cpu_in_eval(model):
    """``model`` on CPU in eval mode inside the block, then as the caller had it.

    Afterwards every parameter (and its gradient) and buffer is back on its device and every
    submodule in its own train/eval mode (a frozen BN in eval inside a training model stays
    so). The parameters stay the same objects, so an optimiser holding them keeps working.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.device) for p in model.parameters()]
    buffers = [(mod, name, buf.device) for mod in model.modules() for name, buf in mod._buffers.items()
               if buf is not None]
    try:
        yield model.cpu().eval()
    finally:
        with torch.no_grad():
            for p, device in params:
                if p.device != device:
                    p.data = p.data.to(device)
                    if p.grad is not None:
                        p.grad = p.grad.to(device)
            for mod, name, device in buffers:
                mod._buffers[name] = mod._buffers[name].to(device)
        for m, training in modes:
            m.training = training


class _TrackerGraph(torch.nn.Module):
    """ImageNet-normalised 0-1 RGB in, the model's L2-normalised feature out (the tracker profile)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(TRACKER_STD).view(1, 3, 1, 1) * 255)
        self.register_buffer("shift", torch.tensor(TRACKER_MEAN).view(1, 3, 1, 1) * 255)

    def forward(self, images):
        return F.normalize(self.model(images * self.scale + self.shift), dim=1)


def to_tracker_input(images):
    """(B, 3, H, W) 0-255 RGB -> the tracker profile's input (/255, ImageNet mean and std)."""
    mean = torch.tensor(TRACKER_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TRACKER_STD).view(1, 3, 1, 1)
    return (images / 255.0 - mean) / std


def export_onnx(model, path, height, width, opset=17, profile="fastreid"):
    """Write the eval-mode graph of ``model`` to ``path`` with a dynamic batch axis.

    The graph is traced on CPU in eval mode; ``model`` is left on its device(s) and in its
    mode(s) afterwards.

    Args:
        model (nn.Module): a FastReID meta-architecture (Baseline, CALR), on any device.
        path (str): the .onnx file to write.
        height, width (int): the input size the model was trained and evaluated at.
        opset (int): ONNX opset.
        profile (str): "fastreid" (0-255 in, ``features`` out) or "tracker" (normalised in,
            unit ``output`` out); see the module docstring.
    """
    if profile not in PROFILES:
        raise CalrError(f"export profile {profile!r}: expected one of {', '.join(PROFILES)}")
    output = "features" if profile == "fastreid" else "output"
    dummy = torch.rand(2, 3, height, width) * 255
    with _on_cpu_in_eval(model) as net, torch.no_grad():
        if profile == "tracker":
            net, dummy = _TrackerGraph(net).eval(), to_tracker_input(dummy)
        # The TorchScript exporter: it needs no onnxscript, and FastReID graphs (ResNet, IBN,
        # MobileNet, GAP and GeM) export with it as they are.
        torch.onnx.export(net, (dummy,), path, input_names=["images"], output_names=[output],
                          dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}}, opset_version=opset,
                          dynamo=False)


def boxmot_token(cfg):
    """The BoxMOT registry name of the config's backbone, or None when BoxMOT has none."""
    return _BOXMOT_TOKENS.get((cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.DEPTH))


def tracker_metadata(cfg, dim):
    """The sidecar of a tracker-profile graph, as a dict.

    BoxMOT (25) reads ``model_name`` (its registry's name for the architecture; without one,
    "resnet50", which only sets its default crop size, overridden by the graph's fixed H x W)
    and ``model_kwargs.img_size``; ``preprocess`` "resize" is its plain resize.
    """
    h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
    return {
        "model_name": boxmot_token(cfg) or "resnet50",
        "model_kwargs": {"img_size": [h, w]},
        "preprocess": "resize",
        "producer": "calr-reid tools/export_onnx.py --profile tracker",
        "input": {"name": "images", "shape": ["batch", 3, h, w], "dtype": "float32", "channels": "RGB",
                  "scale": "divide by 255", "mean": list(TRACKER_MEAN), "std": list(TRACKER_STD),
                  "resize": "cv2.resize bilinear to W x H, no letterbox"},
        "output": {"name": "output", "shape": ["batch", int(dim)], "normalised": "L2"},
        "backbone": {"name": cfg.MODEL.BACKBONE.NAME, "depth": cfg.MODEL.BACKBONE.DEPTH},
    }


def write_tracker_metadata(path, cfg, dim):
    """Write ``<path>.metadata.json`` (``tracker_metadata``) atomically; returns its path."""
    sidecar = path + ".metadata.json"
    atomic_write_text(sidecar, json.dumps(tracker_metadata(cfg, dim), indent=2) + "\n")
    return sidecar


def onnx_features(path, images, threads=None):
    """Run an exported graph in ONNX Runtime (CPU).

    Args:
        path (str): the .onnx file. images (ndarray): (B, 3, H, W) float32, what its profile
            takes (fastreid: RGB 0-255; tracker: ``to_tracker_input``).
        threads (int | None): intra-op threads (None: ONNX Runtime's default).
    Returns:
        ndarray: (B, D) float32 features.
    Raises:
        CalrError: ONNX Runtime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise CalrError("ONNX Runtime is not installed: pip install -e .[deploy]") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name  # "features" or "output", by profile
    return session.run([output], {"images": np.ascontiguousarray(images, dtype=np.float32)})[0]


def max_difference(model, path, images, profile="fastreid"):
    """Largest absolute difference between PyTorch's and ONNX Runtime's features.

    Args:
        model (nn.Module): the exported model; run on CPU in eval mode, then left on its
            device(s) and in its mode(s). path (str): its .onnx file.
        images (Tensor): (B, 3, H, W) float32, RGB 0-255.
        profile (str): the graph's profile; for "tracker" PyTorch's features are
            L2-normalised and the graph gets ``to_tracker_input(images)``.
    Returns:
        tuple: (max |torch - onnx| over all B x D values, max |torch|) as floats.
    """
    with _on_cpu_in_eval(model) as net, torch.no_grad():
        expected = net(images.cpu())
        if profile == "tracker":
            expected = F.normalize(expected, dim=1)
        expected = expected.numpy()
    graph_input = to_tracker_input(images.cpu()) if profile == "tracker" else images
    got = onnx_features(path, graph_input.numpy())
    if got.shape != expected.shape:
        raise CalrError(f"{path}: ONNX Runtime gave features of shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())
