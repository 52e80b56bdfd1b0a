"""Cluster memory (Eq. 1-2) and the cluster contrastive losses (Eq. 3, Eq. 6).

Shape shorthand: B images in a (per-rank) batch, W world size, K clusters, D feature dims.

The memory holds one L2-normalised centroid per pseudo-label cluster. It is
re-initialised from the refined clusters' centroids every epoch and updated by
momentum after every step from the batch features of *all* ranks, so every rank
holds a bit-identical memory without broadcasting it.
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def all_gather_no_grad(x):
    """Concatenate a tensor over ranks in rank order (no gradient); identity when W == 1.

    Args:
        x (Tensor): (B, ...) on this rank; every rank must pass the same B.
    Returns:
        Tensor: (W * B, ...).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def momentum_update(memory, feats, labels, momentum):
    """Eq. 2, as the authors apply it: for each sample in batch order,
    ``M[y] <- normalise(m * M[y] + (1 - m) * f)``.

    The update is sequential per sample (a cluster seen n times in a batch is updated
    n times), but samples of different clusters never interact, so the loop runs over
    the *rank of a sample within its cluster* (at most K instances per cluster, e.g. 16)
    and updates all clusters at once, not over the batch.

    Args:
        memory (Tensor): (K, D) float, L2-normalised rows; updated in place and returned.
        feats (Tensor): (B, D) L2-normalised features (detached).
        labels (Tensor): (B,) int64 in [0, K).
        momentum (float): m in Eq. 2.
    Returns:
        Tensor: memory.
    """
    if labels.numel() == 0:
        return memory
    feats = feats.to(memory.dtype)
    order = torch.argsort(labels, stable=True)  # batch order kept within each cluster
    sorted_labels = labels[order]
    starts = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank_in_cluster = torch.arange(len(labels), device=labels.device) - starts
    for r in range(int(rank_in_cluster.max()) + 1):
        sel = order[rank_in_cluster == r]
        y = labels[sel]
        memory[y] = F.normalize(momentum * memory[y] + (1.0 - momentum) * feats[sel], dim=1)
    return memory


def weighted_cross_entropy(logits, labels, weights=None):
    """Cross-entropy averaged with per-cluster weights (Eq. 6), never NaN.

    ``sum_i w[y_i] * CE_i / sum_i w[y_i]``, like ``F.cross_entropy(weight=w)``, but a
    batch whose samples all have zero weight (single-camera clusters) gives a loss of
    0 with zero gradients instead of 0/0 = NaN.

    Args:
        logits (Tensor): (B, K).
        labels (Tensor): (B,) int64 in [0, K).
        weights (Tensor | None): (K,) float cluster weights; None = plain mean (Eq. 3).
    Returns:
        Tensor: scalar loss.
    """
    ce = F.cross_entropy(logits, labels, reduction="none")
    if weights is None:
        return ce.mean()
    w = weights[labels].to(ce.dtype)
    return (w * ce).sum() / w.sum().clamp_min(torch.finfo(ce.dtype).tiny)


class ClusterMemory(nn.Module):
    """Memory of cluster centroids and the cluster contrastive loss (Eq. 1, 3, 6).

    ``memory`` and ``weights`` are non-persistent buffers: they change shape with the
    number of clusters every epoch and are rebuilt from the data on resume, so they do
    not belong in checkpoints (a CALR checkpoint then loads into a plain Baseline).
    """

    def __init__(self, feat_dim, temperature=0.1, momentum=0.2):
        super().__init__()
        self.temperature = temperature
        self.momentum = momentum
        self.register_buffer("memory", torch.zeros(0, feat_dim), persistent=False)
        self.register_buffer("weights", torch.zeros(0), persistent=False)
        self.use_weights = False

    @torch.no_grad()
    def reset(self, centroids, weights=None):
        """Start an epoch: memory <- L2-normalised centroids, optional Eq. 6 weights.

        Args:
            centroids (Tensor | ndarray): (K, D) cluster means of normalised features.
            weights (Tensor | ndarray | None): (K,) cluster weights, None = unweighted.
        """
        device = self.memory.device
        self.memory = F.normalize(torch.as_tensor(centroids, dtype=torch.float32), dim=1).to(device)
        self.use_weights = weights is not None
        w = weights if weights is not None else torch.ones(len(self.memory))
        self.weights = torch.as_tensor(w, dtype=torch.float32).to(device)

    def forward(self, feats, labels):
        """Contrastive loss of a batch, then the momentum update from every rank's batch.

        Args:
            feats (Tensor): (B, D) L2-normalised features (with gradient).
            labels (Tensor): (B,) int64 cluster ids in [0, K).
        Returns:
            Tensor: scalar loss (Eq. 3, or Eq. 6 when weights are in use).
        """
        memory = self.memory
        logits = feats.matmul(memory.to(feats.dtype).t()) / self.temperature
        loss = weighted_cross_entropy(logits, labels, self.weights if self.use_weights else None)
        # Out of place: autograd saved `memory` for the backward of the matmul above.
        updated = momentum_update(memory.clone(), all_gather_no_grad(feats.detach().float()),
                                  all_gather_no_grad(labels), self.momentum)
        self.memory = updated
        return loss
