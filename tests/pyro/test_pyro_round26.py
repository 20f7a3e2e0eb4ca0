"""Twenty-sixth round on the Pyro side (probes p290, p291, p292): a network two distributions share, frozen with
``poutine.block`` and under Pyro's JIT ELBOs, and the SVI path of a loss whose distribution was replaced after it was
made; against plain-Pyro twins and the same loss built afresh.
"""
from __future__ import annotations

import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, JitTraceGraph_ELBO, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb

D = 4


class _Q(Normal):
    def __init__(self, shared: nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.sh, self.l = shared, nn.Linear(D, 2)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"loc": self.l(torch.tanh(self.sh(x))), "scale": torch.ones(2)}


class _P(Normal):
    def __init__(self, shared: nn.Module) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.sh, self.l = shared, nn.Linear(2, D)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": self.sh(self.l(z)), "scale": torch.ones(D)}


def _shared_vae() -> tuple[nn.Module, _Q, _P]:
    torch.manual_seed(0)
    shared = nn.Linear(D, D)
    return shared, _Q(shared), _P(shared)


def _programs(q: _Q, p: _P, n: int) -> dict[str, tuple[Any, Any]]:
    """pyro_dgm's model and guide, and their plain-Pyro twin (one ``pyro.module`` per network)."""
    def ours_model(x):  # type: ignore[no-untyped-def]
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(n, 2), 1.).to_event(1))
            p.model(x=x, z=z)

    def ours_guide(x):  # type: ignore[no-untyped-def]
        with pyro.plate("data", n):
            q.guide(x=x)

    def twin_model(x):  # type: ignore[no-untyped-def]
        pyro.module("p(x|z)", p)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(n, 2), 1.).to_event(1))
            pyro.sample("x", dist.Normal(p.sh(p.l(z)), 1.).to_event(1), obs=x)

    def twin_guide(x):  # type: ignore[no-untyped-def]
        pyro.module("q(z|x)", q)
        with pyro.plate("data", n):
            pyro.sample("z", dist.Normal(q.l(torch.tanh(q.sh(x))), 1.).to_event(1))

    return {"twin": (twin_model, twin_guide), "ours": (ours_model, ours_guide)}


def test_a_shared_layer_hidden_by_each_distributions_own_names_is_frozen_as_in_plain_pyro() -> None:
    """Probe p292 (on a first fix of p290's, which gave a shared network's param sites one name, its first owner's,
    for Pyro's JIT ELBOs): a layer shared by the encoder and the decoder, frozen the plain-Pyro way, each function
    wrapped in ``poutine.block(hide=...)`` of its own network's names of it. The model's block then hid nothing and
    ``SVI`` trained the "frozen" layer. Each distribution's sites carry its own names, as ``pyro.module`` gives them:
    the layer stays put, and the losses and the other weights are the twin's."""
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(1))
    hide_q = ["q(z|x)$$$sh.weight", "q(z|x)$$$sh.bias"]
    hide_p = ["p(x|z)$$$sh.weight", "p(x|z)$$$sh.bias"]
    results = {}
    for tag in ("twin", "ours"):
        shared, q, p = _shared_vae()
        start = shared.weight.detach().clone()
        model, guide = _programs(q, p, 5)[tag]
        pyro.clear_param_store()
        svi = SVI(poutine.block(model, hide=hide_p), poutine.block(guide, hide=hide_q), pyro.optim.Adam({"lr": 0.05}),
                  Trace_ELBO())
        losses = []
        for i in range(3):
            pyro.set_rng_seed(i)
            losses.append(svi.step(x))
        assert torch.equal(shared.weight, start)  # frozen
        sites = sorted(poutine.trace(model, param_only=True).get_trace(x).nodes)
        results[tag] = (losses, q.l.weight.detach().clone(), p.l.weight.detach().clone(), sites)
    assert results["ours"][0] == pytest.approx(results["twin"][0], rel=1e-5)
    torch.testing.assert_close(results["ours"][1], results["twin"][1])
    torch.testing.assert_close(results["ours"][2], results["twin"][2])
    assert results["ours"][3] == results["twin"][3] == ["p(x|z)$$$l.bias", "p(x|z)$$$l.weight",
                                                        "p(x|z)$$$sh.bias", "p(x|z)$$$sh.weight"]


@pytest.mark.parametrize("elbo", [JitTrace_ELBO, JitTraceGraph_ELBO])
def test_the_jit_elbos_refuse_a_shared_network_as_they_refuse_the_plain_pyro_program(elbo: type) -> None:
    """Probe p290: the JIT ELBOs fail on a network two distributions share (Pyro's own ``AssertionError``: its trace
    takes each param site's tensor as a separate input, and the shared tensor is two sites, one per network, as two
    ``pyro.module`` calls make it). The plain-Pyro twin fails the same way; the same ELBOs without the JIT run both
    (``docs/design.md``, the Pyro paragraph)."""
    x = torch.randn(5, D, generator=torch.Generator().manual_seed(1))
    for tag in ("twin", "ours"):
        shared, q, p = _shared_vae()
        model, guide = _programs(q, p, 5)[tag]
        pyro.clear_param_store()
        assert torch.isfinite(Trace_ELBO().differentiable_loss(model, guide, x))
        with warnings.catch_warnings(), pytest.raises(AssertionError):
            warnings.simplefilter("ignore")
            SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo()).step(x)


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
