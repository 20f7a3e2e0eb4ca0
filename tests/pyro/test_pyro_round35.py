"""Thirty-fifth round (probe p489): Pyro's ``ConditionalTransformedDistribution`` over a pyro_dgm conditional flow,
with a base of batch shape ``()`` conditioned on a batch of contexts. The flow broadcasts the base's draw over the
contexts; the flow's memory of that run answered the inverse of the draw with the base's unbroadcast draw, and the
score raised a shape error (the flow's log-det, written with dim 0 as the batch as Pixyz's flows are, was the one of
the unbroadcast run; before that, the score had the base's batch shape). A run whose output has more numbers than
its input is not answered from memory now: the inverse runs, as for a copy of the draw, and the scores are a
hand-written torch twin's. A flow without an inverse (Pixyz-style, scoring only its draws) answers the broadcast
input (p498: its fallback to the memory gave a score of the base's batch shape)."""
from __future__ import annotations

import pyro.distributions as pdist
import pytest
import torch
from pyro.distributions.conditional import ConditionalTransform
from torch.distributions import Transform, constraints

from pyro_dgm.flows import Flow

S0 = [0.5, -0.3]


class _Shift(Flow):
    """z = x exp(s) + y (y: the context), written as Pixyz's flows are: dim 0 of ``x`` is the batch."""

    def __init__(self) -> None:
        super().__init__(2)
        self.s = torch.nn.Parameter(torch.tensor(S0))

    def forward(self, x, y=None, compute_jacobian=True):
        if compute_jacobian:
            self._logdet_jacobian = self.s.sum().expand(x.shape[0])
        return x * torch.exp(self.s) + y

    def inverse(self, z, y=None):
        return (z - y) * torch.exp(-self.s)


class _NoInverse(_Shift):
    """The same map, its inverse not written (Pixyz's flows that score only their own draws)."""

    def inverse(self, z, y=None):
        raise NotImplementedError()


class _Twin(Transform):
    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, s, y) -> None:
        super().__init__()
        self.s, self.y = s, y

    def _call(self, x):
        return x * torch.exp(self.s) + self.y

    def _inverse(self, z):
        return (z - self.y) * torch.exp(-self.s)

    def log_abs_det_jacobian(self, x, z):
        return self.s.sum().expand(z.shape[:-1])


class _TwinC(ConditionalTransform):
    def __init__(self) -> None:
        self.s = torch.nn.Parameter(torch.tensor(S0))

    def condition(self, y):
        return _Twin(self.s, y)


def _score_own_draw(transform, base_batch: tuple) -> tuple:
    base = pdist.Normal(torch.zeros(base_batch + (2,)), torch.ones(base_batch + (2,))).to_event(1)
    y = torch.linspace(-1.0, 1.0, 8).reshape(4, 2)
    torch.manual_seed(1)
    cd = pdist.ConditionalTransformedDistribution(base, [transform]).condition(y)
    z = cd.rsample()
    lp = cd.log_prob(z)
    (grad,) = torch.autograd.grad(lp.sum(), transform.s)
    return z.detach(), lp.detach(), grad


@pytest.mark.parametrize("flow", [_Shift, _NoInverse])
@pytest.mark.parametrize("base_batch", [(), (4,)], ids=["broadcast", "batched"])
def test_conditional_transformed_draw_scored_as_torch_twin(base_batch, flow):
    ours = flow()
    z, lp, grad = _score_own_draw(ours, base_batch)
    z_t, lp_t, grad_t = _score_own_draw(_TwinC(), base_batch)
    assert z.shape == z_t.shape == (4, 2)
    assert lp.shape == (4,)
    torch.testing.assert_close(z, z_t)
    torch.testing.assert_close(lp, lp_t)
    torch.testing.assert_close(grad, grad_t)


class _WithInverse(Flow):
    """z = x exp(0.3) + 0.5 per feature, written for Pixyz with its inverse."""

    def __init__(self) -> None:
        super().__init__(3)
        self.a = torch.nn.Parameter(torch.full((3,), 0.3))
        self.c = torch.nn.Parameter(torch.full((3,), 0.5))

    def forward(self, x, y=None, compute_jacobian=True):
        if compute_jacobian:
            self._logdet_jacobian = (self.a * torch.ones_like(x)).sum(-1)
        return x * self.a.exp() + self.c

    def inverse(self, z, y=None):
        return (z - self.c) * (-self.a).exp()


class _WithoutInverse(Flow):
    """z = x exp(a) + c + net(y), written for Pixyz without an inverse (its default, the identity, stands for it)."""

    def __init__(self) -> None:
        super().__init__(3)
        self.a = torch.nn.Parameter(torch.full((3,), -0.2))
        self.c = torch.nn.Parameter(torch.full((3,), 1.0))
        self.net = torch.nn.Linear(2, 3)

    def forward(self, x, y=None, compute_jacobian=True):
        if compute_jacobian:
            self._logdet_jacobian = (self.a * torch.ones_like(x)).sum(-1)
        return x * self.a.exp() + self.c + (0 if y is None else self.net(y))


def _closed_form(u: torch.Tensor, flows: list) -> torch.Tensor:
    return torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(-1) - sum(f.a.sum() for f in flows)


@pytest.mark.parametrize("order", ["with first", "without first"])
def test_a_flow_list_with_and_without_a_pixyz_inverse_scores_its_own_draw(order):
    """p500: the list's inverse written for Pixyz ran on the draw, the identity standing for the missing one, and its
    value was scored (log-probs off by up to 1.5); the draw's input is scored."""
    from pyro_dgm.flows import FlowList

    torch.manual_seed(0)
    layers = [_WithInverse(), _WithoutInverse()]
    flow = FlowList(layers if order == "with first" else layers[::-1])
    base = pdist.Normal(torch.zeros(4, 3), torch.ones(4, 3)).to_event(1)
    d = pdist.TransformedDistribution(base, [flow])
    torch.manual_seed(1)
    z = d.rsample()
    torch.manual_seed(1)
    u = base.sample()
    lp = d.log_prob(z)
    torch.testing.assert_close(lp, _closed_form(u, layers))
    grads = torch.autograd.grad(lp.sum(), [layers[0].a, layers[1].a])
    for grad in grads:  # -sum(a) over 4 rows; nothing through u, the draw's input (as torch's cached transforms)
        torch.testing.assert_close(grad, torch.full((3,), -4.0))


def test_a_conditional_flow_without_inverse_scores_its_draw_over_a_broadcast_base():
    """p500: a base of batch shape () over 5 contexts: the draw missed the flow's memory (its input broadcast) and the
    identity standing for the missing inverse was scored; each row is the base's density minus the log-det."""
    torch.manual_seed(0)
    flow = _WithoutInverse()
    y = torch.randn(5, 2)
    base = pdist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    d = pdist.ConditionalTransformedDistribution(base, [flow]).condition(y)
    torch.manual_seed(1)
    z = d.rsample()
    torch.manual_seed(1)
    u = base.sample()
    lp = d.log_prob(z)
    assert lp.shape == (5,)
    torch.testing.assert_close(lp, _closed_form(u, [flow]).expand(5))
    (grad,) = torch.autograd.grad(lp.sum(), flow.a)
    torch.testing.assert_close(grad, torch.full((3,), -5.0))
