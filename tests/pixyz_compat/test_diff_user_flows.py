"""Flows written the Pixyz way (a ``Flow`` subclass with ``forward(x, y=None, compute_jacobian=True)`` storing
``self._logdet_jacobian``, and ``inverse(z, y=None)``), under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

Before, here: a ``forward`` calling ``super().forward`` recursed forever; a subclass of a built-in flow that
overrides ``forward`` was ignored inside a ``FlowList`` and the flow distributions (silently the built-in map); a
``forward`` without ``y`` or with an extra keyword could not be called; a subclass computing ``logdet_jacobian`` in
its own property failed in a ``FlowList``; a flow without an inverse, given alone to a ``TransformedDistribution``,
lost the prior's variable from its draws and could not score them; and the layers of a ``FlowList`` never stored
their own ``logdet_jacobian``.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from pixyz_harness import assert_same, run_both


def prog_the_layers_of_a_flow_list_store_their_log_dets() -> Any:
    import torch
    from torch import nn
    from pixyz.flows import AffineCoupling, FlowList, PlanarFlow
    from pixyz.distributions import Normal, TransformedDistribution
    f = FlowList([PlanarFlow(2), AffineCoupling(2, scale_net=nn.Linear(2, 2), translate_net=nn.Linear(2, 2))])
    f(torch.randn(3, 2))
    after_forward = [layer.logdet_jacobian for layer in f.flow_list]
    g = FlowList([PlanarFlow(2), PlanarFlow(2)])
    q = TransformedDistribution(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2]),
                                g, var=["z"])
    q.sample(batch_n=3)
    after_sample = [layer.logdet_jacobian for layer in g.flow_list]
    return {"after FlowList.forward": after_forward, "after q.sample": after_sample}


def prog_a_user_flow_calling_super_forward() -> Any:
    import torch
    from torch import nn
    from pixyz.flows import Flow

    class Scale(Flow):
        def __init__(self, in_features):
            super().__init__(in_features)
            self.s = nn.Parameter(torch.tensor(0.3))

        def forward(self, x, y=None, compute_jacobian=True):
            x = super().forward(x, y, compute_jacobian)
            if compute_jacobian:
                self._logdet_jacobian = self.s * x.shape[-1] * torch.ones(x.shape[0])
            return x * self.s.exp()

        def inverse(self, z, y=None):
            return super().inverse(z, y) * (-self.s).exp()

    f = Scale(2)
    z = f(torch.ones(2, 2))
    return z, f.logdet_jacobian


def prog_a_subclass_of_a_built_in_flow_in_a_flow_list() -> Any:
    import math
    import torch
    from pixyz.flows import FlowList, PlanarFlow

    class DoubledPlanar(PlanarFlow):
        def forward(self, x, y=None, compute_jacobian=True):
            z = super().forward(x, y, compute_jacobian)
            if compute_jacobian:
                self._logdet_jacobian = self._logdet_jacobian + x.shape[-1] * math.log(2.0)
            return 2 * z

    x = torch.tensor([[0.0, 0.0], [0.5, -0.5]])
    alone = DoubledPlanar(2)
    in_list = FlowList([DoubledPlanar(2)])
    in_list.flow_list[0].load_state_dict(alone.state_dict())
    return {"alone": (alone(x), alone.logdet_jacobian), "in FlowList": (in_list(x), in_list.logdet_jacobian)}


def prog_a_user_forward_without_y() -> Any:
    import torch
    from pixyz.flows import Flow

    class Shift(Flow):
        def forward(self, x, compute_jacobian=True):
            if compute_jacobian:
                self._logdet_jacobian = torch.zeros(x.shape[0])
            return x + 1

    f = Shift(2)
    return f(torch.zeros(1, 2)), f(torch.zeros(1, 2), compute_jacobian=False)


def prog_a_user_forward_with_an_extra_keyword() -> Any:
    import torch
    from pixyz.flows import Flow

    class Tempered(Flow):
        def forward(self, x, y=None, compute_jacobian=True, temperature=1.0):
            if compute_jacobian:
                log_t = float(torch.log(torch.tensor(temperature)))
                self._logdet_jacobian = torch.full((x.shape[0],), x.shape[-1] * log_t)
            return x * temperature

    f = Tempered(2)
    return f(torch.ones(1, 2), temperature=2.0)


def prog_a_user_flow_with_its_own_logdet_property() -> Any:
    import torch
    from torch import nn
    from pixyz.flows import Flow, FlowList

    class Scale(Flow):
        def __init__(self, in_features):
            super().__init__(in_features)
            self.s = nn.Parameter(torch.tensor(0.2))
            self.ld = None

        def forward(self, x, y=None, compute_jacobian=True):
            if compute_jacobian:
                self.ld = self.s * x.shape[-1] * torch.ones(x.shape[0])
            return x * self.s.exp()

        def inverse(self, z, y=None):
            return z * (-self.s).exp()

        @property
        def logdet_jacobian(self):
            return self.ld

    f = FlowList([Scale(2), Scale(2)])
    z = f(torch.ones(2, 2))
    return z, f.logdet_jacobian


def prog_a_user_flow_without_an_inverse_given_to_a_distribution() -> Any:
    import torch
    from torch import nn
    from pixyz.flows import Flow
    from pixyz.distributions import Normal, TransformedDistribution

    class Radial(Flow):
        def __init__(self, in_features):
            super().__init__(in_features)
            self.x0 = nn.Parameter(torch.zeros(in_features))

        def forward(self, x, y=None, compute_jacobian=True):
            d = x - self.x0
            r = d.norm(dim=-1, keepdim=True)
            a, beta = 1.0, 0.5
            h = 1 / (a + r)
            z = x + beta * h * d
            if compute_jacobian:
                ld = (x.shape[-1] - 1) * torch.log1p(beta * h) + torch.log1p(beta * h - beta * h ** 2 * r)
                self._logdet_jacobian = ld.squeeze(-1)
            return z

        def inverse(self, z, y=None):
            raise NotImplementedError()

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2])
    q = TransformedDistribution(prior, Radial(2), var=["z"], name="q")
    s = q.sample(batch_n=3)
    out = {"sample keys": sorted(s)}
    try:
        out["log_prob"] = q.get_log_prob(s)
    except Exception as e:
        out["log_prob"] = f"{type(e).__name__}: {e!r}"
    return out



PROGRAMS = [prog_the_layers_of_a_flow_list_store_their_log_dets,
            prog_a_user_flow_calling_super_forward,
            prog_a_subclass_of_a_built_in_flow_in_a_flow_list,
            prog_a_user_forward_without_y,
            prog_a_user_forward_with_an_extra_keyword,
            prog_a_user_flow_with_its_own_logdet_property,
            prog_a_user_flow_without_an_inverse_given_to_a_distribution]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda f: f.__name__[5:])
def test_same_as_pixyz(program: Callable[[], Any]) -> None:
    assert_same(*run_both(program))
