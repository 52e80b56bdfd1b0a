"""Camera alignment: gradient reversal (Eq. 7), camera classifier and its loss (Eq. 8).

Shape shorthand: B images, D feature dims, C cameras.

The classifier learns to tell the camera of a feature; the gradient reversal layer
makes the encoder learn the opposite, i.e. camera-invariant features. Heads live in
``DOMAIN_HEAD_REGISTRY`` so a config can pick one with ``CALR.ALIGN.HEAD``.
"""
import torch
import torch.nn.functional as F
from fastreid.utils.registry import Registry
from torch import nn

DOMAIN_HEAD_REGISTRY = Registry("DOMAIN_HEAD")
DOMAIN_HEAD_REGISTRY.__doc__ = "Camera (domain) classifiers for CALR's alignment loss (Eq. 8)."


class GradReverse(torch.autograd.Function):
    """Eq. 7: identity forward; backward multiplies the gradient by -lambda."""

    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad, None


def grad_reverse(x, lambd=1.0):
    """Gradient reversal layer (Eq. 7).

    Args:
        x (Tensor): (B, D) features.
        lambd (float): lambda >= 0.
    Returns:
        Tensor: x, whose gradient is multiplied by -lambda on the way back.
    """
    return GradReverse.apply(x, float(lambd))


@DOMAIN_HEAD_REGISTRY.register()
class MLPDomainClassifier(nn.Module):
    """The authors' camera classifier: D -> 100 -> 100 -> C with BN, ReLU, Dropout.

    Returns logits (the authors' LogSoftmax is folded into the loss).
    """

    def __init__(self, feat_dim, num_cameras, hidden_dim=100, dropout=0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feat_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, num_cameras),
        )

    def forward(self, x):
        """Args: x (Tensor): (B, D). Returns: Tensor (B, C) logits."""
        return self.net(x)


def build_domain_head(name, feat_dim, num_cameras, hidden_dim=100, dropout=0.5):
    return DOMAIN_HEAD_REGISTRY.get(name)(feat_dim, num_cameras, hidden_dim, dropout)


def domain_loss(logits, cams, mode="ce"):
    """Camera classification loss (Eq. 8).

    Args:
        logits (Tensor): (B, C) classifier outputs.
        cams (Tensor): (B,) int64 camera ids in [0, C).
        mode (str): "ce" = standard cross-entropy on the logits (paper, default);
            "softmax_ce" = the authors' code, cross-entropy applied to softmax
            probabilities (a double softmax: bounded near ln C, tiny gradients).
    Returns:
        Tensor: scalar mean loss.
    """
    if mode == "ce":
        return F.cross_entropy(logits, cams)
    if mode == "softmax_ce":
        return F.cross_entropy(F.softmax(logits, dim=1), cams)
    raise ValueError(f"CALR.ALIGN.LOSS must be 'ce' or 'softmax_ce', got {mode!r}")
