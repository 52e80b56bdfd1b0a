"""What the weight converters share: their error, reading a source file, writing the result.

``convert`` (MobileNetV2) and ``convert_effnet`` (EfficientNet-Lite) both import from here, so
neither imports the other at load time (``convert``'s ``SOURCES`` reaches ``convert_effnet``
only when an EfficientNet-Lite is asked for, to import timm only then).
"""
import torch

from ..utils.atomic import atomic_torch_save

__all__ = ["WeightConversionError", "save_weights", "torch_load"]


class WeightConversionError(RuntimeError):
    """Raised when a source checkpoint cannot be found, read or mapped."""


def torch_load(path):
    """A source checkpoint's tensors (``weights_only``: a weights file runs no pickled code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        return torch.load(path, map_location="cpu")


def save_weights(obj, out_path):
    """Write a converted state dict atomically, parent folders created, with the mode a plain
    open() gives (a shared weights file, unlike a run's checkpoints)."""
    atomic_torch_save(obj, out_path, umask_mode=True)
