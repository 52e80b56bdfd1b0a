"""What the weight converters share: their error and reading a source file.

``convert`` (MobileNetV2) and ``convert_effnet`` (EfficientNet-Lite) both import from here
(and write with ``utils.atomic.atomic_torch_save``), so neither imports the other at load time (``convert``'s ``SOURCES`` reaches ``convert_effnet``
only when an EfficientNet-Lite is asked for, to import timm only then).
"""
import torch

__all__ = ["WeightConversionError", "torch_load"]


class WeightConversionError(RuntimeError):
    """Raised when a source checkpoint cannot be found, read or mapped."""


def torch_load(path):
    """A source checkpoint's tensors (``weights_only``: a weights file runs no pickled code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        return torch.load(path, map_location="cpu")
