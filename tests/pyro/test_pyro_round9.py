"""Pyro's weighting handlers around pyro_dgm's own training (a fault-injection probe, round 3, and the attack on its
fix).

``poutine.scale``, ``poutine.mask`` and a subsampling ``pyro.plate`` around ``Model.train`` or ``Model.test`` were
ignored silently: the loss and the step were those without the handler, where Pyro's own ELBOs (the plain-Pyro twin
below) scale the sites they reach, and where ``SVI.step`` over the same pyro_dgm loss already refused them. They are
refused now, naming the model, the loss and the handler; handlers that weight by 1 pass. ``Loss.eval`` itself takes
them (the first fix refused them there too, which broke Pyro programs): inside a Pyro model a loss's value goes to a
site (``pyro.factor``), which the handler weights, and Pyro's ``Predictive`` runs the model under ``poutine.mask``.
"""
from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.models import Model


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.fc = nn.Linear(2, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.fc(y), "scale": torch.ones_like(y)}


DATA = {"y": torch.randn(8, 2, generator=torch.Generator().manual_seed(1)),
        "x": torch.randn(8, 2, generator=torch.Generator().manual_seed(2))}

HANDLERS: dict[str, tuple[Callable[[], Any], str]] = {
    "scale": (lambda: poutine.scale(scale=0.5), r"poutine\.scale"),
    "mask": (lambda: poutine.mask(mask=torch.tensor(False)), r"poutine\.mask"),
    "subsampling plate": (lambda: pyro.plate("b", 16, subsample_size=8),
                          r"pyro\.plate\('b'\) \(a subsample of 8 of 16"),
}


def _pyro_twin_loss(p: P) -> torch.Tensor:
    """The same negative log-likelihood as a plain-Pyro model under Trace_ELBO (no latent variable)."""
    def model() -> None:
        with pyro.plate("data", 8):
            pyro.sample("x", dist.Normal(p.fc(DATA["y"]), 1.0).to_event(1), obs=DATA["x"])
    return Trace_ELBO().differentiable_loss(model, lambda: None)


@pytest.mark.parametrize("name", list(HANDLERS))
def test_a_weighting_handler_around_train_or_test_is_refused_where_pyro_would_weight(name: str) -> None:
    handler, named = HANDLERS[name]
    p = P()
    loss = -p.log_prob().sum()
    if name == "scale":  # what the handler means to Pyro: its ELBO's value is weighted (ignoring it is wrong)
        with handler():
            weighted = _pyro_twin_loss(p)
        torch.testing.assert_close(weighted, 0.5 * _pyro_twin_loss(p))
        torch.testing.assert_close(_pyro_twin_loss(p), loss.eval(DATA))
    model = Model(loss, distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    w = p.fc.weight.detach().clone()
    for call, what in ((lambda: model.train(DATA), r"Model\.train: the loss"),
                       (lambda: model.test(DATA), r"Model\.test: the test loss")):
        with handler(), pytest.raises(ValueError, match=rf"NegLoss .*log p\(x\|y\).*: {what} inside {named}"):
            call()
    assert torch.equal(p.fc.weight, w) and model.step == 0


@pytest.mark.parametrize("handler", [lambda: pyro.plate("b", 8), lambda: poutine.scale(scale=1.0),
                                     lambda: poutine.mask(mask=True), lambda: poutine.scale(scale=torch.tensor(1.0)),
                                     lambda: poutine.mask(mask=torch.ones(8, dtype=torch.bool))],
                         ids=["plate of 8 of 8", "scale 1", "mask True", "scale tensor(1)", "mask all True"])
def test_a_handler_that_weights_by_one_is_let_through(handler: Callable[[], Any]) -> None:
    p = P()
    loss = -p.log_prob().sum()
    model = Model(loss, distributions=[p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1})
    with handler():
        inside = model.test(DATA)
    torch.testing.assert_close(inside, loss.eval(DATA))
    torch.testing.assert_close(inside, _pyro_twin_loss(p))  # Pyro weights by 1 there


def test_a_loss_value_as_a_factor_of_a_pyro_model_is_weighted_by_pyro() -> None:
    # Loss.eval inside handlers: its value goes to a site, which the handler weights, as Pyro's own densities are
    p = P()
    nll = -p.log_prob().sum()

    def model(weight: float = 1.0) -> None:
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        pyro.factor("lik", -nll.eval(DATA))
        pyro.deterministic("shifted", w + 0 * nll.eval(DATA))

    def guide(weight: float = 1.0) -> None:
        pyro.sample("w", dist.Normal(0.0, 1.0))

    pyro.set_rng_seed(0)
    plain = Trace_ELBO().differentiable_loss(model, guide)
    pyro.set_rng_seed(0)
    with poutine.scale(scale=0.5):
        halved = Trace_ELBO().differentiable_loss(model, guide)
    torch.testing.assert_close(halved, 0.5 * plain)
    torch.testing.assert_close(plain, nll.eval(DATA))  # -ELBO = the NLL: the guide of w is its prior
    samples = Predictive(model, guide=guide, num_samples=3)()  # Predictive runs the model under poutine.mask
    assert samples["shifted"].shape == (3,)
