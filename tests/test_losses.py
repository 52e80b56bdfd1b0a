"""Memory (Eq. 2), contrastive loss (Eq. 3, 6), gradient reversal (Eq. 7), domain loss (Eq. 8)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from calr_plugin.modeling.domain_head import MLPDomainClassifier, domain_loss, grad_reverse
from calr_plugin.modeling.memory import ClusterMemory, momentum_update, weighted_cross_entropy


def test_gradient_reversal_flips_the_sign_and_scales_by_lambda():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    (grad_reverse(x, 0.5) * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)
    y = torch.randn(2, 3)
    assert torch.equal(grad_reverse(y, 2.0), y)  # identity forward


def test_momentum_update_matches_eq2_applied_sample_by_sample():
    g = torch.Generator().manual_seed(0)
    memory = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    feats = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    labels = torch.tensor([3, 0, 3, 3, 1, 0, 4, 3, 1, 0, 0, 3])
    expected = memory.clone()
    for f, y in zip(feats, labels):  # the authors' sequential loop, as reference
        expected[y] = F.normalize(0.2 * expected[y] + 0.8 * f, dim=0)
    out = momentum_update(memory.clone(), feats, labels, 0.2)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[2], memory[2])  # a cluster not in the batch is untouched


def test_weighted_loss_equals_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 2])
    weights = torch.tensor([0.0, math.log(1 + math.log(2)), 1.0])
    ce = [-math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(math.e / (math.e + 2)),
          -math.log(math.exp(3) / (math.exp(3) + 2))]
    expected = (weights[1] * ce[1] + weights[2] * ce[2]) / (weights[1] + weights[2])
    assert weighted_cross_entropy(logits, labels, weights).item() == pytest.approx(float(expected), rel=1e-6)
    assert weighted_cross_entropy(logits, labels).item() == pytest.approx(sum(ce) / 3, rel=1e-6)


def test_all_zero_weight_batch_gives_zero_loss_not_nan():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.tensor([0, 0, 1, 1]), torch.tensor([0.0, 0.0, 0.7]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0


def test_cluster_memory_loss_uses_the_memory_before_the_update():
    mem = ClusterMemory(4, temperature=0.1, momentum=0.2)
    centroids = torch.eye(4)[:3]
    mem.reset(centroids.numpy(), weights=None)
    feats = F.normalize(torch.tensor([[1.0, 0.2, 0, 0], [0, 1.0, 0.1, 0]]), dim=1).requires_grad_()
    labels = torch.tensor([0, 1])
    loss = mem(feats, labels)
    expected = F.cross_entropy(feats.detach() @ centroids.t() / 0.1, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()  # no in-place error: the saved memory was not modified
    assert torch.allclose(mem.memory[0], F.normalize(0.2 * centroids[0] + 0.8 * feats.detach()[0], dim=0))
    assert torch.equal(mem.memory[2], centroids[2])


def test_domain_loss_paper_ce_and_the_authors_double_softmax():
    logits = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    cams = torch.tensor([0, 1])
    assert domain_loss(logits, cams).item() == pytest.approx(F.cross_entropy(logits, cams).item())
    p = F.softmax(logits, dim=1)
    ref = -np.mean([math.log(math.exp(p[i, c]) / p[i].exp().sum().item()) for i, c in enumerate([0, 1])])
    assert domain_loss(logits, cams, "softmax_ce").item() == pytest.approx(float(ref), rel=1e-5)
    with pytest.raises(ValueError, match="CALR.ALIGN.LOSS"):
        domain_loss(logits, cams, "bce")


def test_reversed_domain_gradient_pushes_features_to_confuse_the_classifier():
    torch.manual_seed(0)
    head = MLPDomainClassifier(8, 2, hidden_dim=16, dropout=0.0).eval()
    x = torch.randn(6, 8, requires_grad=True)
    cams = torch.tensor([0, 1, 0, 1, 0, 1])
    domain_loss(head(grad_reverse(x, 1.0)), cams).backward()
    ascended = x.detach() - 0.1 * x.grad  # a gradient step on the encoder's side
    with torch.no_grad():
        assert domain_loss(head(ascended), cams) > domain_loss(head(x), cams)
