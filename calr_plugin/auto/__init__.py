"""Settings from the unlabeled training images: inferred cameras and the ``auto`` keys.

``settings`` runs the untrained model once and applies the rules of ``labels.auto`` and
``labels.cameras`` (pure numpy); ``camera_style`` gives the per-image style statistics
that inferred cameras are grouped by.
"""
