"""Style statistics of a mid-level feature map: what pseudo-cameras are grouped by.

Shape shorthand: N images, B batch, D embedding dims, K channels of the tapped map,
H x W = INPUT.SIZE_TEST.

The channel mean and std of a convolutional feature map describe an image's "style"
(colour, contrast, lighting: AdaIN, Huang & Belongie 2017; IBN-Net, Pan et al. 2018) more
than its content, and a camera's style is what sets its images apart before any
training. ``labels.cameras`` groups by these (N, 2K) statistics and counts cameras with the
embedding (N, D); both come from one extraction pass: ``StyleTap`` returns their
concatenation from the model's eval forward, so ``extract_features`` (either engine,
DDP sharding) runs it unchanged.

The tapped map is ``DATASETS.CAMERA_LAYER``, by default the backbone's stride-8 output:
of the backbone modules whose output is a 4-D map at 1/8 of the input height, those
nearest the backbone's top (fewest dots in their names), the last to run (FastReID
ResNet's last ``layer2`` block, MobileNetV2's ``features.6``, timm EfficientNet's
``blocks.2``; only modules that run count, hence the probe forward). Stride 8 is
below any last-stride change, and the stride-8 maps gave ARI 0.98 / 0.99 with the true
cameras on CUHK01 / PKU-Reid (MobileNetV2; 0.98 / 0.97 EfficientNet-Lite2); the stride-32
maps gave 0.78 / 0.91 and the stride-2 maps 0.11 / 0.69 (``bench/camera_features.py``,
docs/RESULTS.md 2b).
"""
import math

import numpy as np
import torch
import torch.nn as nn

from ..errors import ConfigError

__all__ = ["StyleTap", "extract_with_style", "find_style_layer", "layer_at_stride"]


def _eval_forward(module, height, width):
    """``module``'s eval output for 2 blank (H, W) images; its train/eval mode is kept."""
    was_training = module.training
    try:
        with torch.inference_mode():
            return module.eval()(torch.zeros(2, 3, height, width, device=next(module.parameters()).device))
    finally:
        module.train(was_training)


def _maps(model, height, width):
    """The 4-D maps the modules of ``model`` output in an eval forward, in the order they ran.

    Returns:
        list[(str, int, int)]: module name (for ``model.get_submodule``), its depth (dots
        in the name under the backbone), output height.
    """
    fired = []
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: fired.append((name, out)))
               for name, m in model.named_modules() if name]
    try:
        _eval_forward(model, height, width)
    finally:
        for h in handles:
            h.remove()
    return [(name, name.count(".") - name.startswith("backbone."), out.shape[2]) for name, out in fired
            if torch.is_tensor(out) and out.dim() == 4]


def layer_at_stride(model, height, width, stride=8):
    """The backbone's output at ``stride``: of its modules that output a 4-D map at 1/stride
    of the input height, those of the fewest dots in their names, the last to run.

    Args:
        model (nn.Module): a model with a ``backbone`` (not DDP-wrapped). height, width: input.
    Returns:
        str or None: a name for ``model.get_submodule``; None when no module outputs such a map.
    """
    maps = [m for m in _maps(model, height, width)
            if m[0].startswith("backbone.") and m[2] == math.ceil(height / stride)]
    top = [m[0] for m in maps if m[1] == min(x[1] for x in maps)]
    return top[-1] if top else None


def find_style_layer(model, cfg):
    """The module ``DATASETS.CAMERA_LAYER`` names, or the default one (stride 8).

    Args:
        model (nn.Module): the CALR/Baseline model (not DDP-wrapped).
        cfg (CfgNode): for DATASETS.CAMERA_LAYER and INPUT.SIZE_TEST.
    Returns:
        str or None: a name for ``model.get_submodule``; None when "auto" finds no
        stride-8 4-D map (e.g. a ViT), so the embedding is used instead.
    Raises:
        ConfigError: a named layer that the model does not have, or that outputs no 4-D map.
    """
    name = cfg.DATASETS.CAMERA_LAYER
    height, width = cfg.INPUT.SIZE_TEST
    if name == "auto":
        return layer_at_stride(model, height, width)
    try:
        model.get_submodule(name)
    except AttributeError:
        tops = ", ".join(n for n, _ in model.named_children())
        raise ConfigError(f"DATASETS.CAMERA_LAYER = {name!r}: the model has no such module "
                          f"(a dotted name under the model, e.g. backbone.layer2; top-level: {tops})") from None
    if name not in {m[0] for m in _maps(model, height, width)}:
        raise ConfigError(f"DATASETS.CAMERA_LAYER = {name!r}: it does not output a (B, K, h, w) map in the eval "
                          f"forward; the stride-8 one is {layer_at_stride(model, height, width)}")
    return name


class StyleTap(nn.Module):
    """The model's eval output with the tapped map's channel mean and std appended.

    forward: (B, 3, H, W) images -> (B, D + 2K) float.
    """

    def __init__(self, model, layer):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, images):
        grabbed = []
        # Registered per call (not in __init__): the engines deep-copy or trace this module,
        # and a hook made here belongs to whichever copy runs.
        handle = self.model.get_submodule(self.layer).register_forward_hook(
            lambda mod, inp, out: grabbed.append(out))
        try:
            emb = self.model(images)
        finally:
            handle.remove()
        if not grabbed or not torch.is_tensor(grabbed[-1]) or grabbed[-1].dim() != 4:
            raise ConfigError(f"DATASETS.CAMERA_LAYER = {self.layer!r}: its output is not a (B, K, h, w) map")
        fmap = grabbed[-1].float().flatten(2)
        return torch.cat([emb.float(), fmap.mean(2), fmap.std(2)], 1)


def extract_with_style(model, paths, cfg, desc="auto features"):
    """Embeddings and style statistics of images in one pass.

    Args:
        model (nn.Module): the (untrained) model, not DDP-wrapped.
        paths (list[str]): N image paths.
        cfg (CfgNode): as for ``engine.features.extract_features``, and DATASETS.CAMERA_LAYER.
    Returns:
        tuple: ndarray (N, D) float32 L2-normalised embeddings; ndarray (N, 2K) float32 style
        statistics, or None when no layer is found; the tapped layer's name or None. On ranks
        other than 0 both arrays are None (extract_features gathers on rank 0).
    """
    from ..engine.features import extract_features

    layer = find_style_layer(model, cfg)
    if layer is None:
        return extract_features(model, paths, cfg, desc=desc), None, None
    dim = _eval_forward(model, *cfg.INPUT.SIZE_TEST).shape[1]
    both = extract_features(StyleTap(model, layer), paths, cfg, desc=desc)
    if both is None:  # ranks other than 0: only rank 0 receives the features (and uses them)
        return None, None, layer
    # extract_features normalised the concatenation; each part is rescaled, so normalise the
    # embedding again (the style graph normalises its rows itself).
    emb = both[:, :dim] / np.maximum(np.linalg.norm(both[:, :dim], axis=1, keepdims=True), 1e-12)
    return emb.astype(np.float32), both[:, dim:].copy(), layer
