"""CALR meta-architecture: FastReID's Baseline plus a cluster memory and a camera classifier.

Shape shorthand: B images in a batch, D feature dims, K clusters, C cameras.

In eval mode it *is* Baseline (same backbone, head and output feature), so a CALR
checkpoint loads into a plain ``Baseline`` config with the same backbone and gives
identical features: FastReID's own tools, demo and deployment work on it. In training
mode it returns the CALR losses (Eq. 9):

    loss_contrast = Eq. 3 (Eq. 6 with cluster weights) on the normalised head feature
    loss_domain   = beta * Eq. 8 on camera logits behind gradient reversal (Eq. 7)
"""
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline

from .domain_head import build_domain_head, domain_loss, grad_reverse
from .memory import ClusterMemory


@META_ARCH_REGISTRY.register()
class CALR(Baseline):
    """Baseline + ClusterMemory (Eq. 1-3, 6) + camera alignment (Eq. 7-9).

    The trainer's cluster hook sets the memory (``self.memory.reset``) and the current
    ``beta`` before every epoch. Batches carry pseudo labels in ``targets`` and camera
    indices in ``camids``.
    """

    @configurable
    def __init__(self, *, memory, domain_head=None, align_lambda=1.0, align_loss="ce", **kwargs):
        super().__init__(**kwargs)
        self.memory = memory
        self.domain_head = domain_head
        self.align_lambda = align_lambda
        self.align_loss = align_loss
        self.beta = 0.0
        # EmbeddingHead always owns an identity classifier; CALR never uses it. Frozen, it
        # is neither trained nor reported as an unused parameter by DDP.
        if hasattr(self.heads, "weight"):
            self.heads.weight.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        feat_dim = cfg.MODEL.HEADS.EMBEDDING_DIM or cfg.MODEL.BACKBONE.FEAT_DIM
        ret["memory"] = ClusterMemory(feat_dim, cfg.CALR.MEMORY.TEMP, cfg.CALR.MEMORY.MOMENTUM)
        align = cfg.CALR.ALIGN
        # NUM_CAMERAS is filled in by the trainer from the training set; eval-only
        # builds (0 cameras) get no classifier, which inference never uses.
        if align.ENABLED and align.NUM_CAMERAS > 0:
            ret["domain_head"] = build_domain_head(align.HEAD, feat_dim, align.NUM_CAMERAS,
                                                   align.HIDDEN_DIM, align.DROPOUT)
        ret["align_lambda"] = align.LAMBDA
        ret["align_loss"] = align.LOSS
        return ret

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        targets = batched_inputs["targets"]
        features = self.backbone(images)
        if bool((targets < 0).all()):
            # PreciseBN passes targets = -1 to refresh BN statistics: no memory update.
            self.heads(features, targets.clamp(min=0))
            return {}
        outputs = self.heads(features, targets)
        feats = F.normalize(outputs["features"], dim=1)
        losses = {"loss_contrast": self.memory(feats, targets)}
        if self.domain_head is not None:
            logits = self.domain_head(grad_reverse(feats, self.align_lambda))
            # beta = 0 still runs the head (x 0) so DDP sees every parameter used.
            losses["loss_domain"] = self.beta * domain_loss(logits, batched_inputs["camids"],
                                                            self.align_loss)
        return losses
