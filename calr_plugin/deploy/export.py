"""ONNX export of the inference graph, checked against PyTorch with ONNX Runtime.

Shape shorthand: B images, H x W input size (INPUT.SIZE_TEST), D feature dims.

The graph is the model FastReID evaluates, in eval mode: images in, the feature out.

* input ``images``: (B, 3, H, W) float32, RGB, pixel values 0-255 (what FastReID's test
  transform gives: resize to INPUT.SIZE_TEST, no normalisation); B is dynamic;
* inside: subtract MODEL.PIXEL_MEAN, divide by MODEL.PIXEL_STD, backbone, pooling, BN neck;
* output ``features``: (B, D) float32, not normalised. FastReID's evaluator (cosine metric)
  L2-normalises it, so normalise before comparing features.

A CALR checkpoint's cluster memory and camera classifier are training-only and not in the graph.
"""
import contextlib

import numpy as np
import torch

from ..errors import CalrError

__all__ = ["export_onnx", "onnx_features", "max_difference"]


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


def export_onnx(model, path, height, width, opset=17):
    """Write the eval-mode graph of ``model`` to ``path`` with a dynamic batch axis.

    The graph is traced on CPU in eval mode; ``model`` is left on its device(s) and in its
    mode(s) afterwards.

    Args:
        model (nn.Module): a FastReID meta-architecture (Baseline, CALR), on any device.
        path (str): the .onnx file to write.
        height, width (int): the input size the model was trained and evaluated at.
        opset (int): ONNX opset.
    """
    dummy = torch.rand(2, 3, height, width) * 255
    with _on_cpu_in_eval(model) as net, torch.no_grad():
        # The TorchScript exporter: it needs no onnxscript, and FastReID graphs (ResNet, IBN,
        # MobileNet, GAP and GeM) export with it as they are.
        torch.onnx.export(net, (dummy,), path, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=opset,
                          dynamo=False)


def onnx_features(path, images, threads=None):
    """Run an exported graph in ONNX Runtime (CPU).

    Args:
        path (str): the .onnx file. images (ndarray): (B, 3, H, W) float32, RGB 0-255.
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
    return session.run(["features"], {"images": np.ascontiguousarray(images, dtype=np.float32)})[0]


def max_difference(model, path, images):
    """Largest absolute difference between PyTorch's and ONNX Runtime's features.

    Args:
        model (nn.Module): the exported model; run on CPU in eval mode, then left on its
            device(s) and in its mode(s). path (str): its .onnx file.
        images (Tensor): (B, 3, H, W) float32, RGB 0-255.
    Returns:
        tuple: (max |torch - onnx| over all B x D values, max |torch|) as floats.
    """
    with _on_cpu_in_eval(model) as net, torch.no_grad():
        expected = net(images.cpu()).numpy()
    got = onnx_features(path, images.numpy())
    if got.shape != expected.shape:
        raise CalrError(f"{path}: ONNX Runtime gave features of shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())
