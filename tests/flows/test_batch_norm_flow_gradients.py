"""A flow batch norm in training mode scores its own draw with the statistics of the batch it drew, with their
graph (probe p349): the Monte Carlo KL of a flow posterior and its gradients against the same draw written in torch."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Normal, TransformedDistribution
from pyro_dgm.flows import BatchNorm1d, PlanarFlow
from pyro_dgm.flows.base import FlowList
from pyro_dgm.losses import KullbackLeibler


class Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.fc(x)
        return {"loc": o[:, :2], "scale": F.softplus(o[:, 2:]) + .1}


@pytest.mark.parametrize("planar_first", [False, True])
def test_the_monte_carlo_kl_through_a_training_batch_norm_has_the_gradients_of_the_draw(planar_first: bool) -> None:
    """Probe p349: the score of the flow's own draw inverted the batch norm with its batch statistics detached, so
    the inverse of the draw had another graph than the draw: the loss was right and the gradients wrong (the
    encoder's location got [-0.56, 0.25] where the batch norm removes every dependence on it: 0). The reference is
    the same draw and density written in torch: log q(z0) - log|det| - log N(zk; 0, I)."""
    torch.manual_seed(0)
    q = Q()
    planar = PlanarFlow(2)
    norm = BatchNorm1d(2)
    flow = FlowList([planar, norm]) if planar_first else norm
    tq = TransformedDistribution(q, flow, var=["zk"], name="tq")
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["zk"], features_shape=[2])
    loss = KullbackLeibler(tq, prior, analytical=False).mean()
    x = torch.rand(6, 3, generator=torch.Generator().manual_seed(1))
    params = [*q.parameters(), *flow.parameters()]

    torch.manual_seed(5)
    value = loss.eval({"x": x})
    grads = torch.autograd.grad(value, params, allow_unused=True)

    torch.manual_seed(5)
    o = q.fc(x)
    loc, scale = o[:, :2], F.softplus(o[:, 2:]) + .1
    z0 = loc + scale * torch.randn_like(loc)
    h, ld = z0, torch.zeros(6)
    if planar_first:  # (the planar layer's own map and log-det, checked against autograd's Jacobian elsewhere)
        h, ld = planar.forward_with_logdet(z0)
    mean, var = h.mean(0), (h - h.mean(0)).pow(2).mean(0) + norm.eps
    zk = torch.exp(norm.log_gamma) * (h - mean) / var.sqrt() + norm.beta
    ld = ld + (norm.log_gamma - 0.5 * var.log()).sum()
    log_q = torch.distributions.Normal(loc, scale).log_prob(z0).sum(-1) - ld
    ref = (log_q - torch.distributions.Normal(0., 1.).log_prob(zk).sum(-1)).mean()
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)

    torch.testing.assert_close(value, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g if g is not None else torch.zeros(()), r if r is not None else torch.zeros(()),
                                   rtol=1e-4, atol=1e-5)
    if not planar_first:
        assert grads[1][:2].abs().max() < 1e-5  # (the location's gradient: the batch norm removes it)


def test_a_draw_scored_after_a_shared_batch_norm_ran_again_is_scored_at_the_new_statistics() -> None:
    """Probe p357: a flow's last draw is mapped back from its memory only while its batch norms hold the draw's
    statistics; a batch norm shared with another flow that ran since (``Expectation(q1, Expectation(q2,
    LogProb(q1)))``) gave the draw's own density inside the evaluation and the inverse at the new statistics outside
    it. Both are the inverse at the new statistics now (as at the session's start), the same inside and outside."""
    from pyro_dgm.flows.base import FlowList
    from pyro_dgm.losses import Expectation, LogProb

    torch.manual_seed(0)
    bn = BatchNorm1d(2)
    f1, f2 = FlowList([bn, BatchNorm1d(2)]), FlowList([bn])
    with torch.no_grad():
        bn.log_gamma.fill_(0.3)
        bn.beta.fill_(0.2)
    p1 = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x1"], features_shape=[2], name="p1")
    p2 = Normal(loc=torch.ones(2) * 3, scale=torch.ones(2) * 2, var=["x2"], features_shape=[2], name="p2")
    q1 = TransformedDistribution(p1, f1, var=["z1"], name="q1")
    q2 = TransformedDistribution(p2, f2, var=["z2"], name="q2")
    torch.manual_seed(1)
    inside = Expectation(q1, Expectation(q2, LogProb(q1))).eval({}, batch_n=5)
    torch.manual_seed(1)
    s = q1.sample(batch_n=5)
    q2.sample(batch_n=5)
    outside = q1.get_log_prob(s)
    torch.testing.assert_close(inside, outside)
    # the inverse at the new statistics: x = f1^-1(z1), scored by p1, plus f1's log-det at x (torch by hand)
    norm2 = f1[1] if hasattr(f1, "__getitem__") else list(f1.modules())[2]
    z = s["z1"]
    h = (z - norm2.beta) / torch.exp(norm2.log_gamma) * norm2.batch_var.sqrt() + norm2.batch_mean
    x = (h - bn.beta) / torch.exp(bn.log_gamma) * bn.batch_var.sqrt() + bn.batch_mean
    logdet = sum((b.log_gamma - 0.5 * b.batch_var.log()).sum() for b in (bn, norm2))
    expected = torch.distributions.Normal(0., 1.).log_prob(x).sum(-1) - logdet
    torch.testing.assert_close(outside, expected, rtol=1e-4, atol=1e-4)
