"""Twenty-sixth round on the Pyro side (probes p290, p291): Pyro's JIT ELBOs on distributions that share a network or
a parameter, and the SVI path of a loss whose distribution was replaced after it was made; against plain-Pyro twins,
the non-JIT ELBOs and the same loss built afresh.
"""
from __future__ import annotations

import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, JitTraceEnum_ELBO, JitTraceGraph_ELBO, Trace_ELBO, TraceEnum_ELBO
from torch import nn

from pyro_dgm.distributions import Categorical, Normal
from pyro_dgm.losses import LogProb

K, D = 3, 2


def _mixture(shared: nn.ParameterDict) -> Any:
    """A Gaussian mixture ``p(x|y) p(y)`` whose two factors read one module: the centres and the weights."""
    class Px(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["y"], name="p")
            self.n = shared

        def forward(self, y):  # type: ignore[no-untyped-def]
            return {"loc": y @ self.n["mus"], "scale": torch.ones(D)}

    class Py(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], name="p", features_shape=[K], infer={"enumerate": "parallel"})
            self.n = shared

        def forward(self):  # type: ignore[no-untyped-def]
            return {"logits": self.n["logit"]}

    return Px() * Py()


def _exact_log_likelihood(shared: nn.ParameterDict, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of the mixture, summed over the rows (torch alone)."""
    comps = torch.distributions.Normal(shared["mus"], 1.).log_prob(x[:, None, :]).sum(-1)  # (N, K)
    return torch.logsumexp(comps + torch.log_softmax(shared["logit"], -1), -1).sum()


def test_the_jit_enumerated_elbo_of_factors_sharing_a_module_is_the_exact_likelihood() -> None:
    """Probe p290: two factors of a joint read one ``nn.ParameterDict``; each factor put its tensors in Pyro's param
    store under its own name, as ``pyro.module`` does, so one tensor was two param sites and ``JitTraceEnum_ELBO``
    failed with a bare ``AssertionError`` (Pyro's JIT takes each site's tensor as an input of its trace). The sites
    name a shared tensor once now; with nothing left to the guide the ELBO is the exact log-likelihood."""
    torch.manual_seed(1)
    shared = nn.ParameterDict({"mus": nn.Parameter(torch.randn(K, D)), "logit": nn.Parameter(torch.randn(K))})
    x = torch.randn(7, D, generator=torch.Generator().manual_seed(0)) * 2
    joint = _mixture(shared)
    exact = _exact_log_likelihood(shared, x)
    for elbo in (TraceEnum_ELBO, JitTraceEnum_ELBO):
        pyro.clear_param_store()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the JIT's tracer warnings)
            for _ in range(2):  # (the JIT's first call traces, the second runs the trace)
                loss = elbo(max_plate_nesting=1).differentiable_loss(joint.model, lambda x: None, x)
                torch.testing.assert_close(loss, -exact, rtol=1e-5, atol=1e-5)
    store = pyro.get_param_store()
    assert store["p(x|y)$$$n.mus"] is shared["mus"] is store["p(y)$$$n.mus"]  # both names, as pyro.module puts them
    sites = poutine.trace(joint.model, param_only=True).get_trace(x).nodes
    assert len(sites) == 2 and {id(store[n]) for n in sites} == {id(shared["mus"]), id(shared["logit"])}  # one
    # site per tensor, under its first owner's name


class _P(Normal):
    def __init__(self, net: nn.Module) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = net

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": self.net(z), "scale": torch.ones(D)}


class _Prior(Normal):
    """``p(z)`` centred at the shared layer's output for a constant input."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(var=["z"], name="p")
        self.net = net

    def forward(self):  # type: ignore[no-untyped-def]
        return {"loc": self.net(torch.ones(1, D)), "scale": torch.ones(1, D)}  # (one row, not D)


@pytest.mark.parametrize("elbo", [JitTrace_ELBO, JitTraceGraph_ELBO])
def test_a_jit_elbo_of_two_distributions_sharing_a_layer_is_the_non_jit_value(elbo: type) -> None:
    """Probe p290: two distributions holding one ``nn.Linear`` (an encoder and a decoder, here a decoder and a
    prior): ``JitTrace_ELBO`` and ``JitTraceGraph_ELBO`` failed with a bare ``AssertionError``. With ``z`` observed
    the ELBO is a deterministic function of the weights: the JIT ELBO's ``SVI`` steps give ``Trace_ELBO``'s losses and
    move the shared weights as it does (once per step: one optimizer state per tensor)."""
    x = torch.randn(7, D, generator=torch.Generator().manual_seed(0))
    z0 = torch.randn(7, D, generator=torch.Generator().manual_seed(1))
    results = []
    for e in (Trace_ELBO, elbo):
        pyro.clear_param_store()
        torch.manual_seed(3)
        net = nn.Linear(D, D)
        joint = _P(net) * _Prior(net)
        model = poutine.condition(joint.model, data={"z": z0})
        svi = SVI(model, lambda x: None, pyro.optim.SGD({"lr": 0.05}), e())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            losses = [svi.step(x) for _ in range(3)]
        results.append((losses, net.weight.detach().clone(), net.bias.detach().clone()))
    (l0, w0, b0), (l1, w1, b1) = results
    assert l1 == pytest.approx(l0, rel=1e-5)
    torch.testing.assert_close(w1, w0)
    torch.testing.assert_close(b1, b0)
    # the first step's value, -log p(x|z0) - log p(z0) at the initial weights, by torch alone
    torch.manual_seed(3)
    net = nn.Linear(D, D)
    normal = torch.distributions.Normal
    first = -(normal(net(z0), 1.).log_prob(x).sum() + normal(net(torch.ones(D)), 1.).log_prob(z0).sum())
    assert l0[0] == pytest.approx(float(first), rel=1e-5)


def test_svi_trains_the_distribution_put_in_a_loss_after_the_loss_was_used() -> None:
    """Probe p291: ``LogProb(p1)`` used by ``SVI``, then ``term.p = p2``: the loss evaluated ``p2`` but the SVI path
    kept registering ``p1``'s networks (its list of distributions was cached as fixed once built), so ``p2`` was never
    trained and the steps changed nothing. It trains ``p2`` now, as a loss built with ``p2`` does."""
    class P(Normal):
        def __init__(self, name: str) -> None:
            super().__init__(var=["x"], name=name)
            self.m = nn.Parameter(torch.zeros(D))

        def forward(self):  # type: ignore[no-untyped-def]
            return {"loc": self.m, "scale": torch.ones(D)}

    x = torch.ones(5, D)
    trained = []
    for replaced in (True, False):
        pyro.clear_param_store()
        p1, p2 = P("a"), P("b")
        term = LogProb(p1 if replaced else p2)
        loss = -term.mean()
        svi = SVI(lambda x: None, lambda x: None, pyro.optim.Adam({"lr": 0.1}), loss)
        if replaced:
            svi.step(x=x)  # (trains p1 once)
            p1.m.data.zero_()
            term.p = p2
        for _ in range(3):
            svi.step(x=x)
        trained.append(p2.m.detach().clone())
        assert "b(x)$$$m" in pyro.get_param_store()
    torch.testing.assert_close(trained[0], trained[1])
    assert (trained[1] > 0.2).all()  # Adam's three steps of 0.1 towards the data's 1
